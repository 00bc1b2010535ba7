//! Logs (JSON or pretty), OpenTelemetry traces over OTLP/HTTP, and the Prometheus recorder.
//!
//! Logs go to stderr, whatever the command: stdout carries only a command's result (a key, a
//! table, `--json`), so it can be piped or captured with `$(…)` while logs stay visible.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

/// Flushes buffered spans when dropped (at the end of `main`).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("could not flush traces: {err}");
        }
    }
}

/// Installs the global subscriber. Called once by `main`; tests use [`init_for_tests`].
pub fn init(config: &Config) -> anyhow::Result<TelemetryGuard> {
    // PostgreSQL notices arrive at INFO (e.g. `relation "_sqlx_migrations" already exists,
    // skipping` on every start): noise unless they warn. A LOG_LEVEL naming the target wins.
    let filter = EnvFilter::try_new(format!("sqlx::postgres::notice=warn,{}", config.log_level))
        .context("LOG_LEVEL")?;
    let fmt_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .boxed(),
        // Colour codes only for a terminal: piped into a file or a log collector they are noise.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .compact()
            .fmt_fields(WithoutOtelFields)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
    };

    let (otel_layer, provider) = match &config.otel_endpoint {
        Some(base) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
                .build()
                .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter")?;
            // The async-runtime processor exports on our tokio runtime, where the HTTP client lives.
            let processor =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(config.otel_service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("cloud-optimizer");
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer).boxed()),
                Some(provider),
            )
        }
        None => (None, None),
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("a global tracing subscriber is already installed")?;
    Ok(TelemetryGuard { provider })
}

/// The pretty formatter's fields without those meant for the OpenTelemetry exporter: `otel.*`
/// name and classify the span (`otel.name`, `otel.kind`, …), and the request span's
/// `http.response.status_code` (the semantic-convention attribute of traces) repeats the
/// `status` of the request's own log line. Either would otherwise repeat on every line a request
/// logs. The JSON format keeps them (a log pipeline may want them).
struct WithoutOtelFields;

impl<'writer> FormatFields<'writer> for WithoutOtelFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = SkipOtel(DefaultVisitor::new(writer, true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }

    // The default pads with a space before formatting, which a record of `otel.*` fields
    // alone (the route's span name) would leave dangling.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let is_empty = current.fields.is_empty();
        let mut visitor = SkipOtel(DefaultVisitor::new(current.as_writer(), is_empty));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

/// The span field of the HTTP status, named as OpenTelemetry's HTTP conventions name it.
pub const HTTP_STATUS_FIELD: &str = "http.response.status_code";

fn for_the_exporter(name: &str) -> bool {
    name.starts_with("otel.") || name == HTTP_STATUS_FIELD
}

struct SkipOtel<V>(V);

impl<V: Visit> Visit for SkipOtel<V> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !for_the_exporter(field.name()) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !for_the_exporter(field.name()) {
            self.0.record_error(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !for_the_exporter(field.name()) {
            self.0.record_debug(field, value);
        }
    }
}

/// Logs for `cargo test`: shown only with `TEST_LOG=1`.
pub fn init_for_tests() {
    crate::ensure_crypto_provider();
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok_and(|v| v != "0" && !v.is_empty()) {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                ))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The process-wide Prometheus recorder (the `metrics` facade is global by design).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Described on our recorder itself: in tests another global recorder may exist
            // already, and the handle still renders ours, with its `# HELP` lines.
            metrics::with_local_recorder(&recorder, describe_metrics);
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `# HELP` (and the unit) of every metric we define, so `/metrics` explains itself. Described
/// once with the recorder; a metric described here appears as soon as it is first recorded.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "notifications_connections",
        "Open notification WebSockets on this instance."
    );
    describe_counter!(
        "notifications_messages_sent_total",
        "Events written to notification WebSockets."
    );
    describe_counter!(
        "notifications_clients_cut_total",
        "Notification WebSockets closed by the server, by reason (too_slow, dead, bad_message, revoked, error)."
    );
    describe_histogram!(
        "notifications_fanout_latency_seconds",
        Unit::Seconds,
        "From an event's commit to its broadcast on this instance."
    );
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method, route template and status"
    );
    describe_counter!(
        "http_rate_limited_total",
        "Requests refused with 429, by the budget that refused them (key or ip)"
    );
    describe_gauge!(
        "db_pool_connections",
        "PostgreSQL pool connections by state (idle, active)"
    );
    describe_gauge!(
        "db_pool_max_connections",
        "Largest size of the PostgreSQL pool (DATABASE_MAX_CONNECTIONS)"
    );
    describe_gauge!(
        "redis_up",
        "1 while Redis answers, 0 while limits use the in-process fallback"
    );
    describe_gauge!(
        "cloud_optimizer_active_trials",
        "1 while this deployment runs under trial limits"
    );
    describe_gauge!(
        "cloud_optimizer_license_status",
        "1 for the current license status, 0 for the others"
    );
    describe_counter!(
        "cloud_optimizer_usage_events_total",
        "Billable actions recorded in the usage ledger, by dimension"
    );
    describe_counter!(
        "cloud_optimizer_usage_reports_total",
        "Usage reports sent to AWS Marketplace, by dimension and outcome"
    );
    describe_gauge!(
        "cloud_optimizer_usage_pending_events",
        "Usage events not yet confirmed by AWS, by dimension"
    );
    describe_gauge!(
        "cloud_optimizer_usage_unconfirmed_units",
        "Units AWS may have billed that nobody can confirm (never resent), by dimension"
    );
    describe_gauge!(
        "cloud_optimizer_scans_running",
        "Account scans running on this instance"
    );
    describe_counter!(
        "cloud_optimizer_scans_total",
        "Account scans ended, by final status"
    );
    describe_histogram!(
        "cloud_optimizer_scan_duration_seconds",
        Unit::Seconds,
        "Time from a scan's start to its end, by final status"
    );
    describe_counter!(
        "cloud_optimizer_scan_findings_total",
        "Scan findings recorded, by status and severity"
    );
    describe_counter!(
        "cloud_optimizer_scan_aws_calls_total",
        "AWS API requests scans made (each attempt and page), by service"
    );
    describe_counter!(
        "cloud_optimizer_scan_aws_errors_total",
        "Scan findings with status error (an AWS call a check needed failed), by service"
    );
    describe_histogram!(
        "cloud_optimizer_chat_response_seconds",
        Unit::Seconds,
        "Time from a chat question's arrival to the end of its answer, by status and answerer"
    );
    describe_histogram!(
        "cloud_optimizer_chat_first_event_seconds",
        Unit::Seconds,
        "Time from a chat question's arrival to its first answer event"
    );
    describe_counter!(
        "cloud_optimizer_chat_questions_total",
        "Chat questions answered (whatever the end), by intent"
    );
    describe_gauge!(
        "cloud_optimizer_chat_streams_open",
        "Chat event streams open on this instance"
    );
    describe_histogram!(
        "cloud_optimizer_document_analysis_seconds",
        Unit::Seconds,
        "Time from the start of a document's analysis to its end, by outcome"
    );
    describe_counter!(
        "cloud_optimizer_documents_total",
        "Document analyses ended, by outcome (analyzed, failed)"
    );
    describe_counter!(
        "cloud_optimizer_document_enrichments_total",
        "LLM enrichment passes over prose documents, by result (ok or the error code)"
    );
    describe_counter!(
        "cloud_optimizer_document_enrichment_findings_total",
        "Findings the LLM proposed for documents, by fate (kept, dropped)"
    );
}
