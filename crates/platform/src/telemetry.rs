//! Telemetry initialisation: `tracing` events to stderr (text or JSON lines), filtered by
//! `RUST_LOG`-style directives, and spans exported over OTLP (HTTP, protobuf) when an endpoint is
//! set.
//!
//! Span export follows the standard OpenTelemetry variables: it is on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and neither
//! `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns it off); `OTEL_SERVICE_NAME`
//! overrides the service name, `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` choose the
//! sampler (default: follow the caller's sampled flag, sample new traces), `OTEL_BSP_*` tune the
//! batching. Which spans are exported is `[telemetry] span_filter`, separately from the log
//! filter. The guard flushes what is pending when it is dropped.
//!
//! One request is one trace: each service continues the `traceparent` it received with a span of
//! its own ([`continue_trace`]) and sends that span on as the next hop's parent.

use std::io::IsTerminal;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use synergai_contract::trace::TraceContext;
use tracing_opentelemetry::OpenTelemetrySpanExt;
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
    /// Which spans are exported over OTLP (filter directives), when export is on.
    pub span_filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_filter: "info".into(),
            log_format: LogFormat::Text,
            span_filter: "synergai=info".into(),
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
    /// The OTLP exporter could not be built.
    #[error("OTLP span exporter: {0}")]
    Exporter(String),
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
    spans: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.spans.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("{}: spans not flushed: {e}", self.service);
        }
        tracing::debug!(service = %self.service, "telemetry shut down");
    }
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans: attributes that cost something to build (the scheduler's
/// candidate list) are only built then.
pub fn spans_exported() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the standard OpenTelemetry variables in `env` turn span export on.
pub fn otlp_enabled(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn span_provider(service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Continues the trace of `parent` (the `traceparent` received; `None` starts a trace) with
/// `span`, and returns the context to send on to the next hop: `span`'s own ids when spans are
/// exported, so the next hop's span is its child; otherwise a fresh span id in the same trace.
/// Call it before `span` is first entered.
pub fn continue_trace(span: &tracing::Span, parent: Option<&TraceContext>) -> TraceContext {
    if let Some(p) = parent {
        let remote = SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.span_id),
            TraceFlags::new(p.flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let cx = span.context();
    let own = cx.span().span_context().clone();
    if own.is_valid() {
        TraceContext {
            trace_id: own.trace_id().to_bytes(),
            span_id: own.span_id().to_bytes(),
            flags: own.trace_flags().to_u8(),
        }
    } else {
        crate::nats::next_span(parent)
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
    let mut layers = vec![output.with_filter(filter).boxed()];
    let spans = if otlp_enabled(&|k| std::env::var(k).ok()) {
        let span_filter =
            EnvFilter::try_new(&cfg.span_filter).map_err(|source| TelemetryError::Filter {
                filter: cfg.span_filter.clone(),
                source,
            })?;
        let provider = span_provider(service)?;
        let tracer = provider.tracer(service.to_owned());
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(span_filter)
                .boxed(),
        );
        Some(provider)
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInit(e.to_string()))?;
    EXPORTING.store(spans.is_some(), std::sync::atomic::Ordering::Relaxed);
    Ok(TelemetryGuard {
        service: service.to_owned(),
        spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn span_export_follows_the_standard_variables() {
        assert!(!otlp_enabled(&env(&[])));
        assert!(otlp_enabled(&env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://jaeger:4318"
        )])));
        assert!(otlp_enabled(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://jaeger:4318/v1/traces"
        )])));
        assert!(!otlp_enabled(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert!(!otlp_enabled(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
                off,
            ])));
        }
    }

    #[test]
    fn without_an_exporter_the_trace_still_continues() {
        // No OpenTelemetry layer here: a fresh span id in the caller's trace, flags kept.
        let parent = TraceContext::root([7; 24]);
        let next = continue_trace(&tracing::Span::none(), Some(&parent));
        assert_eq!(next.trace_id, parent.trace_id);
        assert_eq!(next.flags, parent.flags);
        assert_ne!(next.span_id, parent.span_id);
        let root = continue_trace(&tracing::Span::none(), None);
        assert_ne!(root.trace_id, [0; 16]);
    }
}
