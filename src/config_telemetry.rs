//! The `[metrics]` and `[tracing]` config tables (see config/config.toml).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Prometheus metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` serving `/metrics`; empty means off. Loopback only.
    pub address: String,
}

impl MetricsConfig {
    /// The address to listen on, None when metrics are off. Only a loopback
    /// address is accepted: the endpoint has no authentication and reveals what
    /// runs on the node, so exposing it is left to something that can guard it
    /// (a scraping agent on the node, or a proxy with TLS and auth).
    pub fn socket_address(&self) -> Result<Option<SocketAddr>, String> {
        if self.address.is_empty() {
            return Ok(None);
        }
        let address: SocketAddr = self.address.parse().map_err(|_| {
            format!(
                "{:?} is not an IP:port (e.g. \"127.0.0.1:1338\", \"[::1]:1338\")",
                self.address
            )
        })?;
        if !address.ip().is_loopback() {
            return Err(format!(
                "{address} is not a loopback address: the metrics endpoint has no \
                 authentication; listen on 127.0.0.1 or [::1] and let a local agent or \
                 an authenticating proxy expose it"
            ));
        }
        Ok(Some(address))
    }
}

/// OTLP trace export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// An OTLP/HTTP traces URL (protobuf), e.g. `http://127.0.0.1:4318/v1/traces`;
    /// empty means off.
    pub endpoint: String,
    /// The share of new traces recorded, 0.0 to 1.0; a call inside a sampled
    /// trace follows its parent's decision.
    pub sampling_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            endpoint: String::new(),
            sampling_ratio: 1.0,
        }
    }
}

impl TracingConfig {
    /// Checks the keys; on failure the key's name and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err((
                "tracing.sampling_ratio",
                format!("{} is not between 0.0 and 1.0", self.sampling_ratio),
            ));
        }
        if self.endpoint.is_empty() {
            return Ok(());
        }
        let url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| ("tracing.endpoint", format!("{:?}: {e}", self.endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err((
                "tracing.endpoint",
                format!("{:?} is not an http(s) URL with a host", self.endpoint),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("x.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn metrics_are_off_by_default_and_loopback_only() {
        assert_eq!(Config::default().metrics.socket_address(), Ok(None));
        let c = parse("[metrics]\naddress = \"127.0.0.1:1338\"\n").unwrap();
        assert_eq!(
            c.metrics.socket_address().unwrap().unwrap().to_string(),
            "127.0.0.1:1338"
        );
        assert!(parse("[metrics]\naddress = \"[::1]:0\"\n").is_ok());
        for bad in ["0.0.0.0:1338", "10.1.2.3:9100", "[::]:1338"] {
            let err = parse(&format!("[metrics]\naddress = \"{bad}\"\n")).unwrap_err();
            assert!(
                err.contains("metrics.address") && err.contains("loopback"),
                "{err}"
            );
        }
        let err = parse("[metrics]\naddress = \"localhost\"\n").unwrap_err();
        assert!(
            err.contains("metrics.address") && err.contains("IP:port"),
            "{err}"
        );
    }

    #[test]
    fn tracing_keys_are_checked() {
        let c = Config::default();
        assert!(c.tracing.endpoint.is_empty());
        assert!(parse("[tracing]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\n").is_ok());
        let err = parse("[tracing]\nendpoint = \"127.0.0.1:4318\"\n").unwrap_err();
        assert!(err.contains("tracing.endpoint"), "{err}");
        let err = parse("[tracing]\nendpoint = \"ftp://host/x\"\n").unwrap_err();
        assert!(err.contains("tracing.endpoint"), "{err}");
        let err = parse("[tracing]\nsampling_ratio = 1.5\n").unwrap_err();
        assert!(err.contains("tracing.sampling_ratio"), "{err}");
        let err = parse("[tracing]\nsampling_ratio = nan\n").unwrap_err();
        assert!(err.contains("tracing.sampling_ratio"), "{err}");
    }
}
