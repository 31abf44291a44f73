//! Telemetry initialisation: `tracing` events and spans to stderr (text or JSON lines), filtered
//! by `RUST_LOG`-style directives.
//!
//! Layers are collected in one list before the subscriber is installed; exporting spans over
//! OTLP adds one more layer there, and the returned guard is where it gets flushed.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Telemetry settings (`[telemetry]`, `SYNERGAI_TELEMETRY__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Filter directives, e.g. `info,synergai_worker=debug`.
    pub log_filter: String,
    /// Output format.
    pub log_format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_filter: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directives do not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The directives.
        filter: String,
        /// The parse error.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("telemetry already initialised: {0}")]
    AlreadyInit(String),
}

/// Keeps telemetry running; drop it last, after the service has drained, so that everything
/// recorded during shutdown is still written.
#[must_use = "telemetry stops being flushed when the guard is dropped"]
#[derive(Debug)]
pub struct TelemetryGuard {
    service: String,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        tracing::debug!(service = %self.service, "telemetry shut down");
    }
}

/// Installs the global subscriber for `service`.
pub fn init(service: &str, cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&cfg.log_filter).map_err(|source| TelemetryError::Filter {
        filter: cfg.log_filter.clone(),
        source,
    })?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let output: Box<dyn Layer<Registry> + Send + Sync> = match cfg.log_format {
        LogFormat::Text => Box::new(fmt),
        LogFormat::Json => Box::new(fmt.json().flatten_event(true)),
    };
    let layers = vec![output];
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInit(e.to_string()))?;
    Ok(TelemetryGuard {
        service: service.to_owned(),
    })
}
