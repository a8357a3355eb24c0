//! berthd's tracing subscriber: logs to stderr and, with `[tracing] endpoint`,
//! spans exported over OTLP/HTTP (protobuf) through tracing-opentelemetry.
//!
//! The export runs on the SDK's own batch thread with a blocking HTTP client, so
//! a slow or absent collector never holds up a CRI call; spans beyond the batch
//! queue are dropped, not buffered without bound.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::TracingConfig;
use crate::error::{Error, Result};

/// A collector that does not answer an export in this long loses that batch;
/// also the bound on the flush at shutdown.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the exporter; `shutdown` flushes the spans still queued.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Flushes and stops the exporter. Call it outside the async runtime: the
    /// blocking HTTP client must not run on it.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            eprintln!("berthd: flushing traces: {e}");
        }
    }
}

/// Installs the global subscriber. Call it before the async runtime starts.
pub fn init(log_filter: &str, config: &TracingConfig) -> Result<Tracing> {
    // Colours only for a person at a terminal: not into the journal or a file,
    // and not paid for on every span of every call.
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(EnvFilter::new(log_filter));
    let provider = if config.endpoint.is_empty() {
        None
    } else {
        Some(provider(config)?)
    };
    // berth's own spans at info and above, whatever the log level: the per-RPC
    // span, a pull's layers, CNI calls. Dependencies' spans stay out.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("berthd"))
            .with_filter(Targets::new().with_target("berth", tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| Error::Internal(format!("installing the tracing subscriber: {e}")))?;
    Ok(Tracing { provider })
}

fn provider(config: &TracingConfig) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("tracing.endpoint: {e}")))?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(Resource::builder().with_service_name("berthd").build())
        .build())
}
