//! Parsing one `hosts.toml`: the upstream `server` with its settings, then the
//! `[host."<url>"]` mirrors in file order. Unknown keys and ill-typed values are errors.

use std::path::{Path, PathBuf};

use reqwest::header::{HeaderName, HeaderValue};
use toml::de::{DeTable, DeValue};

use super::{
    API_ROOT, Capability, HostsError, RegistryHost, Settings, default_upstream, is_loopback,
    origin_of,
};

pub(super) fn parse_hosts_file(
    file: &Path,
    text: &str,
    registry: &str,
) -> Result<Vec<RegistryHost>, HostsError> {
    let ctx = Ctx {
        file,
        dir: file.parent().unwrap_or(Path::new(".")),
    };
    let doc = DeTable::parse(text).map_err(|e| HostsError::Syntax {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut server = None;
    let mut server_settings = Settings::default();
    let mut hosts = Vec::new();
    for (key, value) in doc.get_ref() {
        let key: &str = key.get_ref();
        match key {
            "server" => server = Some(ctx.string(key, value.get_ref())?),
            "host" => hosts = ctx.mirrors(value.get_ref())?,
            _ => server_settings.apply(&ctx, key, key, value.get_ref())?,
        }
    }
    if server_settings.send_credentials {
        return Err(ctx.invalid(
            "send_credentials",
            "only a [host.\"<url>\"] mirror takes it: the server always gets the \
             credentials meant for its registry",
        ));
    }
    let upstream = match server {
        Some(url) => ctx.host_from_url("server", &url, server_settings)?,
        None => default_upstream(registry, server_settings),
    };
    hosts.push(upstream);
    Ok(hosts)
}

impl Settings {
    /// Applies `key` (spelled `key_path` in errors); unknown keys are errors
    /// so that typos do not silently change where images come from.
    fn apply(
        &mut self,
        ctx: &Ctx,
        key_path: &str,
        key: &str,
        value: &DeValue,
    ) -> Result<(), HostsError> {
        match key {
            "capabilities" => self.capabilities = ctx.capabilities(key_path, value)?,
            "skip_verify" => self.skip_verify = ctx.bool(key_path, value)?,
            "override_path" => self.override_path = ctx.bool(key_path, value)?,
            "ca" => self.ca = ctx.paths(key_path, value)?,
            "client" => self.client = ctx.client_pairs(key_path, value)?,
            "header" => self.header = ctx.headers(key_path, value)?,
            "send_credentials" => self.send_credentials = ctx.bool(key_path, value)?,
            "token_realms" => self.token_realms = ctx.token_realms(key_path, value)?,
            "dial_timeout" => {
                // A containerd key we accept so shared files keep working;
                // connections use the client's fixed connect timeout.
                let timeout = ctx.string(key_path, value)?;
                tracing::warn!(
                    file = %ctx.file.display(),
                    key = key_path,
                    %timeout,
                    "dial_timeout is not supported; ignored"
                );
            }
            _ => return Err(ctx.unknown(key_path)),
        }
        Ok(())
    }
}

/// The file being parsed, for resolving relative paths and naming it in errors.
struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
}

impl Ctx<'_> {
    fn unknown(&self, key: &str) -> HostsError {
        HostsError::UnknownKey {
            path: self.file.to_path_buf(),
            key: key.to_string(),
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> HostsError {
        HostsError::InvalidValue {
            path: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// `[host."<url>"]` tables, in the order they appear in the file.
    fn mirrors(&self, value: &DeValue) -> Result<Vec<RegistryHost>, HostsError> {
        let DeValue::Table(table) = value else {
            return Err(self.invalid("host", "must be a table of [host.\"<url>\"] tables"));
        };
        // The parsed table is sorted by name, but each key remembers where
        // it was written, and mirror order is priority order.
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(url, _)| url.span().start);
        entries
            .into_iter()
            .map(|(url, value)| self.mirror(url.get_ref(), value.get_ref()))
            .collect()
    }

    fn mirror(&self, url: &str, value: &DeValue) -> Result<RegistryHost, HostsError> {
        let prefix = format!("host.{url:?}");
        let DeValue::Table(table) = value else {
            return Err(self.invalid(&prefix, "must be a table"));
        };
        let mut settings = Settings::default();
        for (key, value) in table {
            let key: &str = key.get_ref();
            settings.apply(self, &format!("{prefix}.{key}"), key, value.get_ref())?;
        }
        let host = self.host_from_url(&prefix, url, settings)?;
        if host.send_credentials && host.scheme == "http" && !is_loopback(&host.host) {
            return Err(self.invalid(
                &format!("{prefix}.send_credentials"),
                "credentials are never sent over plain http to another host; use https",
            ));
        }
        Ok(host)
    }

    /// "https://mirror:5000/some/path" → scheme, host and API root. Without
    /// a scheme, https (as containerd).
    fn host_from_url(
        &self,
        key: &str,
        url: &str,
        settings: Settings,
    ) -> Result<RegistryHost, HostsError> {
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_string(), url),
        };
        if scheme != "https" && scheme != "http" {
            return Err(self.invalid(key, format!("{url:?}: scheme must be https or http")));
        }
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || "@?#".contains(c);
        if host.is_empty() || host.contains(bad_char) || path.contains(bad_char) {
            return Err(self.invalid(key, format!("{url:?} is not a valid registry URL")));
        }
        let path = api_root(path, settings.override_path);
        Ok(settings.into_host(&scheme, host, path))
    }

    fn string(&self, key: &str, value: &DeValue) -> Result<String, HostsError> {
        match value {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(self.invalid(key, format!("must be a string, not {}", other.type_str()))),
        }
    }

    fn bool(&self, key: &str, value: &DeValue) -> Result<bool, HostsError> {
        match value {
            DeValue::Boolean(b) => Ok(*b),
            other => Err(self.invalid(key, format!("must be a boolean, not {}", other.type_str()))),
        }
    }

    fn strings(&self, key: &str, value: &DeValue) -> Result<Vec<String>, HostsError> {
        let DeValue::Array(items) = value else {
            return Err(self.invalid(key, format!("must be an array, not {}", value.type_str())));
        };
        items
            .iter()
            .map(|item| self.string(key, item.get_ref()))
            .collect()
    }

    /// A string or an array of strings.
    fn one_or_many(&self, key: &str, value: &DeValue) -> Result<Vec<String>, HostsError> {
        match value {
            DeValue::String(s) => Ok(vec![s.to_string()]),
            DeValue::Array(_) => self.strings(key, value),
            other => Err(self.invalid(
                key,
                format!(
                    "must be a string or an array of strings, not {}",
                    other.type_str()
                ),
            )),
        }
    }

    fn capabilities(&self, key: &str, value: &DeValue) -> Result<Vec<Capability>, HostsError> {
        let mut capabilities = Vec::new();
        for name in self.strings(key, value)? {
            let capability = match name.to_ascii_lowercase().as_str() {
                "pull" => Capability::Pull,
                "resolve" => Capability::Resolve,
                "push" => Capability::Push,
                _ => {
                    return Err(self.invalid(
                        key,
                        format!("unknown capability {name:?} (pull, resolve, push)"),
                    ));
                }
            };
            if !capabilities.contains(&capability) {
                capabilities.push(capability);
            }
        }
        Ok(capabilities)
    }

    fn paths(&self, key: &str, value: &DeValue) -> Result<Vec<PathBuf>, HostsError> {
        Ok(self
            .one_or_many(key, value)?
            .iter()
            .map(|p| self.resolve(p))
            .collect())
    }

    /// containerd's forms: "both.pem", ["both.pem", ...], or
    /// [["cert.pem", "key.pem"], ...]. Note that a flat pair of strings is
    /// two combined cert+key files, not a cert and its key.
    fn client_pairs(
        &self,
        key: &str,
        value: &DeValue,
    ) -> Result<Vec<(PathBuf, Option<PathBuf>)>, HostsError> {
        let items = match value {
            DeValue::String(s) => return Ok(vec![(self.resolve(s), None)]),
            DeValue::Array(items) => items,
            other => {
                return Err(self.invalid(
                    key,
                    format!("must be a string or an array, not {}", other.type_str()),
                ));
            }
        };
        let mut pairs = Vec::new();
        for item in items.iter() {
            let item = item.get_ref();
            if let DeValue::String(both) = item {
                pairs.push((self.resolve(both), None));
                continue;
            }
            match self.strings(key, item)?.as_slice() {
                [cert, key_file] => pairs.push((self.resolve(cert), Some(self.resolve(key_file)))),
                _ => return Err(self.invalid(key, "a client pair must be [\"<cert>\", \"<key>\"]")),
            }
        }
        Ok(pairs)
    }

    /// A table of header name to a value or an array of values, checked to
    /// be valid HTTP now rather than at request time.
    fn headers(&self, key: &str, value: &DeValue) -> Result<Vec<(String, String)>, HostsError> {
        let DeValue::Table(table) = value else {
            return Err(self.invalid(key, format!("must be a table, not {}", value.type_str())));
        };
        let mut headers = Vec::new();
        for (name, values) in table {
            let name: &str = name.get_ref();
            let key_path = format!("{key}.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(self.invalid(&key_path, "not a valid HTTP header name"));
            }
            for value in self.one_or_many(&key_path, values.get_ref())? {
                if HeaderValue::from_str(&value).is_err() {
                    return Err(self.invalid(&key_path, "not a valid HTTP header value"));
                }
                headers.push((name.to_string(), value));
            }
        }
        Ok(headers)
    }

    /// Token servers as origins: "https://auth.example" (https when no scheme
    /// is given), no path. Plain http only on loopback: the credentials would
    /// cross the network in the clear.
    fn token_realms(&self, key: &str, value: &DeValue) -> Result<Vec<String>, HostsError> {
        let mut origins = Vec::new();
        for realm in self.one_or_many(key, value)? {
            let with_scheme = if realm.contains("://") {
                realm.clone()
            } else {
                format!("https://{realm}")
            };
            let invalid = |why: &str| self.invalid(key, format!("{realm:?}: {why}"));
            let url = reqwest::Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(invalid("scheme must be https or http"));
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    "give the token server's origin only, without a path",
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid("must not carry credentials"));
            }
            let origin = origin_of(&url).ok_or_else(|| invalid("has no host"))?;
            if url.scheme() == "http" && !is_loopback(origin.trim_start_matches("http://")) {
                return Err(invalid(
                    "credentials are never sent over plain http to another host; use https",
                ));
            }
            origins.push(origin);
        }
        Ok(origins)
    }

    /// Relative file names are relative to the directory of hosts.toml.
    fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }
}

/// The API root for a URL path: "/v2" appended unless already there, or the
/// path as given with `override_path` (for registries with a non-standard
/// root).
pub(super) fn api_root(path: &str, override_path: bool) -> String {
    let path = path.trim_end_matches('/');
    if override_path || path.ends_with(API_ROOT) {
        path.to_string()
    } else {
        format!("{path}{API_ROOT}")
    }
}
