//! Operations: per-request metrics (CloudWatch Embedded Metric Format) and
//! the audit trail.
//!
//! A request runs inside [`scope`], which gives it a [`Record`]; the parts
//! of the gateway that learn something about the request (its method,
//! target and item, the upstream's time, a consent handed out, a refresh)
//! [`note`] it there. When the request ends, the edge turns the record into
//! one EMF line ([`metrics`]) and, for the events operators audit, one
//! audit event ([`audit`]). Outside a scope (unit tests, the admin CLI),
//! notes go nowhere.

pub mod audit;
pub mod metrics;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use audit::{AuditEvent, AuditSink};

/// The metrics namespace.
pub const NAMESPACE: &str = "McpOAuthGateway";

tokio::task_local! {
    static RECORD: Shared;
}

/// A request's record, shared by the futures that handle it (a streamed
/// answer keeps handling the request after the handler returned).
pub type Shared = Arc<Mutex<Record>>;

/// What one request came to, noted as it is handled.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record {
    /// The MCP method (or the web event: `consent.start`, ...).
    pub method: Option<std::borrow::Cow<'static, str>>,
    /// The user's subject.
    pub user: Option<String>,
    /// The agent's OAuth client id.
    pub client: Option<String>,
    /// The target the request went to.
    pub target: Option<String>,
    /// The tool or prompt (upstream name) or resource URI.
    pub item: Option<String>,
    /// Time spent waiting for upstreams.
    pub upstream_time: Duration,
    /// Upstream requests that failed (transport, HTTP or protocol errors).
    pub upstream_errors: u32,
    /// A consent (or interaction) link was handed out.
    pub consent_required: bool,
    /// The JSON-RPC error code of the answer, if it was an error.
    pub error_code: Option<i64>,
    /// That error was the upstream's own answer, passed on (counted as an
    /// upstream error, not the gateway's).
    pub error_from_upstream: bool,
    /// The answer was a tool result with `isError`.
    pub tool_error: bool,
    /// Refreshes made while handling the request: (user, target, outcome).
    pub refreshes: Vec<(String, String, &'static str)>,
    /// Why a web event did not succeed (`other_browser`, an authorization
    /// server's error code, ...).
    pub outcome: Option<String>,
    /// The call's arguments, kept only for targets whose operator opted in
    /// (`AUDIT_ARGUMENTS_TARGETS`).
    pub arguments: Option<serde_json::Value>,
}

/// Runs `f` with a fresh [`Record`], and returns its output with the record.
pub async fn scope<F: std::future::Future>(f: F) -> (F::Output, Record) {
    let shared = Shared::default();
    let out = within(shared.clone(), f).await;
    let record = shared.lock().map(|r| r.clone()).unwrap_or_default();
    (out, record)
}

/// Runs `f` noting into `shared`.
pub fn within<F: std::future::Future>(
    shared: Shared,
    f: F,
) -> tokio::task::futures::TaskLocalFuture<Shared, F> {
    RECORD.scope(shared, f)
}

/// The current request's record, if any.
pub fn current() -> Option<Shared> {
    RECORD.try_with(Arc::clone).ok()
}

/// Notes something about the current request (nothing outside a scope).
pub fn note(f: impl FnOnce(&mut Record)) {
    let _ = RECORD.try_with(|r| {
        if let Ok(mut r) = r.lock() {
            f(&mut r)
        }
    });
}

/// Where metric lines go: standard output (where Lambda's log pipeline
/// reads EMF), or a buffer.
#[derive(Clone, Default)]
pub enum LineSink {
    /// Standard output, one line per write.
    #[default]
    Stdout,
    /// Kept (for tests and tools that read them back).
    Memory(Arc<Mutex<Vec<String>>>),
    /// Made and dropped (benchmarks: the cost of making the lines, not of
    /// a terminal reading them).
    Discard,
}

impl LineSink {
    /// Writes lines that already end with a newline, at once.
    pub fn write_block(&self, lines: &str) {
        if lines.is_empty() {
            return;
        }
        match self {
            LineSink::Stdout => {
                use std::io::Write;
                let _ = std::io::stdout().lock().write_all(lines.as_bytes());
            }
            LineSink::Memory(_) => {
                for line in lines.lines() {
                    self.write(line);
                }
            }
            LineSink::Discard => {}
        }
    }

    /// Writes one line.
    pub fn write(&self, line: &str) {
        match self {
            LineSink::Stdout => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            LineSink::Memory(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line.to_owned());
                }
            }
            LineSink::Discard => {}
        }
    }
}

/// The observer of one function: its gateway name (the metrics'
/// `Gateway` dimension), where metrics and audit events go.
#[derive(Clone)]
pub struct Observer {
    /// The gateway's name (`GATEWAY_NAME`, else the function's name).
    pub gateway: Arc<str>,
    /// Metric lines.
    pub metrics: LineSink,
    /// Audit events.
    pub audit: AuditSink,
    /// Whether metrics are written at all (`METRICS=off` stops them).
    pub metrics_on: bool,
}

impl Observer {
    /// Writes an EMF document.
    pub fn metric(&self, doc: &serde_json::Value) {
        if self.metrics_on {
            self.metrics.write(&doc.to_string());
        }
    }
}

/// Records a consent web event (`consent.start`, or the callback's
/// `consent.completed` / `consent.refused`): its metric and audit event,
/// attributed to the pending authorization's user and target (a request
/// that named no authorization the gateway knows is neither).
pub async fn consent_event(
    state: &crate::AppState,
    callback: bool,
    record: &Record,
    status: u16,
    latency: Duration,
    request_id: Option<String>,
) {
    let Some(target) = &record.target else {
        return;
    };
    let ok = status < 400;
    let (event, metric) = match (callback, ok) {
        (false, _) => ("consent.start", "ConsentStarted"),
        (true, true) => ("consent.completed", "ConsentCompleted"),
        (true, false) => ("consent.refused", "ConsentRefused"),
    };
    let now = now_ms();
    let observe = &state.observe;
    observe.metric(&metrics::count_by_target(
        &observe.gateway,
        metric,
        target,
        now,
    ));
    let outcome = match (&record.outcome, ok) {
        (Some(o), _) => o.clone(),
        (None, true) => "ok".to_owned(),
        (None, false) => format!("http:{status}"),
    };
    let mut e = AuditEvent::new(event, outcome, now);
    e.request_id = request_id;
    e.user = record.user.clone();
    e.target = Some(target.clone());
    e.latency_ms = Some(metrics::ms(latency));
    observe.audit.write(&state.upstream, &[e]).await;
}

/// Writes `RefreshOutcome` lines for the refreshes `record` holds, one per
/// outcome.
pub fn refresh_metrics(observe: &Observer, record: &Record, now: i64) {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, _, outcome) in &record.refreshes {
        *counts.entry(outcome).or_default() += 1;
    }
    for (outcome, count) in counts {
        observe.metric(&metrics::refresh_outcome(
            &observe.gateway,
            outcome,
            count,
            now,
        ));
    }
}

/// Records what a scheduled refresh run's record holds: `RefreshOutcome`
/// per outcome, and a `refresh.failed` audit event per failed refresh.
pub async fn scheduled_refreshes(state: &crate::AppState, record: Record) {
    let now = now_ms();
    let observe = &state.observe;
    refresh_metrics(observe, &record, now);
    let events = audit::of_request(record, 200, Duration::ZERO, None, now);
    observe.audit.write(&state.upstream, &events).await;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
