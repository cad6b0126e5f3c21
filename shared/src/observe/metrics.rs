//! CloudWatch Embedded Metric Format documents: one per request of the MCP
//! endpoint, one per consent outcome, one per refresh outcome.
//!
//! Dimensions are chosen for a bounded bill: every request metric by
//! `Gateway` and by `Gateway, Method` (methods outside the protocol's are
//! counted as `other`), and four of them by `Gateway, Target` (targets are
//! registered by operators). No user, client or tool is ever a dimension.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{Record, NAMESPACE};
use crate::wire::codes;

/// The methods counted under their own name; any other is `other`.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "completion/complete",
    "logging/setLevel",
];

/// The `Method` dimension's value for `method`.
pub fn method_dimension(method: Option<&str>) -> &'static str {
    match method {
        None => "invalid",
        Some(m) if m.starts_with("notifications/") => "notification",
        Some(m) => METHODS
            .iter()
            .find(|k| **k == m)
            .copied()
            .unwrap_or("other"),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The request's error class: (system, user, throttled).
pub fn error_class(status: u16, error_code: Option<i64>) -> (bool, bool, bool) {
    let throttled = status == 429;
    let system = status >= 500
        || matches!(
            error_code,
            Some(codes::INTERNAL_ERROR) | Some(codes::RETRY_LATER)
        );
    let user = !system
        && !throttled
        && ((400..500).contains(&status)
            || error_code.is_some_and(|c| c != codes::URL_ELICITATION_REQUIRED));
    (system, user, throttled)
}

/// The EMF document of one request to the MCP endpoint.
pub fn request(
    gateway: &str,
    record: &Record,
    status: u16,
    latency: Duration,
    now_ms: i64,
) -> Value {
    // An upstream's own error, passed on, is the upstream's.
    let code = record.error_code.filter(|_| !record.error_from_upstream);
    let (system, user, throttled) = error_class(status, code);
    let upstream = record.upstream_time.min(latency);
    let count = |b: bool| u32::from(b);
    let metrics = [
        ("Invocations", "Count"),
        ("SystemErrors", "Count"),
        ("UserErrors", "Count"),
        ("Throttles", "Count"),
        ("Latency", "Milliseconds"),
        ("Duration", "Milliseconds"),
        ("TargetExecutionTime", "Milliseconds"),
        ("ConsentRequired", "Count"),
        ("UpstreamErrors", "Count"),
    ];
    let by_method = json!({
        "Namespace": NAMESPACE,
        "Dimensions": [["Gateway"], ["Gateway", "Method"]],
        "Metrics": metrics.iter().map(|(n, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
    });
    let mut directives = vec![by_method];
    let mut doc = Map::new();
    doc.insert("Gateway".into(), json!(gateway));
    doc.insert(
        "Method".into(),
        json!(method_dimension(record.method.as_deref())),
    );
    if let Some(target) = &record.target {
        directives.push(json!({
            "Namespace": NAMESPACE,
            "Dimensions": [["Gateway", "Target"]],
            "Metrics": [
                {"Name": "Invocations", "Unit": "Count"},
                {"Name": "SystemErrors", "Unit": "Count"},
                {"Name": "TargetExecutionTime", "Unit": "Milliseconds"},
                {"Name": "UpstreamErrors", "Unit": "Count"},
            ],
        }));
        doc.insert("Target".into(), json!(target));
    }
    doc.insert("Invocations".into(), json!(1));
    doc.insert("SystemErrors".into(), json!(count(system)));
    doc.insert("UserErrors".into(), json!(count(user)));
    doc.insert("Throttles".into(), json!(count(throttled)));
    doc.insert("Latency".into(), json!(ms(latency)));
    doc.insert("Duration".into(), json!(ms(latency - upstream)));
    doc.insert("TargetExecutionTime".into(), json!(ms(upstream)));
    doc.insert(
        "ConsentRequired".into(),
        json!(count(record.consent_required)),
    );
    doc.insert(
        "UpstreamErrors".into(),
        json!(record.upstream_errors + u32::from(record.error_from_upstream)),
    );
    doc.insert(
        "_aws".into(),
        json!({"Timestamp": now_ms, "CloudWatchMetrics": directives}),
    );
    Value::Object(doc)
}

/// One count by `Gateway` and by `Gateway, Target` (consent outcomes:
/// `ConsentStarted`, `ConsentCompleted`, `ConsentRefused`).
pub fn count_by_target(gateway: &str, metric: &str, target: &str, now_ms: i64) -> Value {
    json!({
        "_aws": {"Timestamp": now_ms, "CloudWatchMetrics": [{
            "Namespace": NAMESPACE,
            "Dimensions": [["Gateway"], ["Gateway", "Target"]],
            "Metrics": [{"Name": metric, "Unit": "Count"}],
        }]},
        "Gateway": gateway,
        "Target": target,
        metric: 1,
    })
}

/// `RefreshOutcome`: how many refreshes came to `outcome`, by `Gateway` and
/// by `Gateway, Outcome`.
pub fn refresh_outcome(gateway: &str, outcome: &str, count: usize, now_ms: i64) -> Value {
    json!({
        "_aws": {"Timestamp": now_ms, "CloudWatchMetrics": [{
            "Namespace": NAMESPACE,
            "Dimensions": [["Gateway"], ["Gateway", "Outcome"]],
            "Metrics": [{"Name": "RefreshOutcome", "Unit": "Count"}],
        }]},
        "Gateway": gateway,
        "Outcome": outcome,
        "RefreshOutcome": count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classed_by_status_and_code() {
        assert_eq!(error_class(200, None), (false, false, false));
        assert_eq!(
            error_class(200, Some(codes::INVALID_PARAMS)),
            (false, true, false)
        );
        assert_eq!(
            error_class(200, Some(codes::RETRY_LATER)),
            (true, false, false)
        );
        assert_eq!(error_class(502, None), (true, false, false));
        assert_eq!(error_class(401, None), (false, true, false));
        assert_eq!(error_class(429, None), (false, false, true));
        // A consent link is not an error.
        assert_eq!(
            error_class(200, Some(codes::URL_ELICITATION_REQUIRED)),
            (false, false, false)
        );
    }

    #[test]
    fn methods_outside_the_protocol_do_not_grow_the_dimension() {
        assert_eq!(method_dimension(Some("tools/call")), "tools/call");
        assert_eq!(method_dimension(Some("x/y-1234")), "other");
        assert_eq!(
            method_dimension(Some("notifications/initialized")),
            "notification"
        );
        assert_eq!(method_dimension(None), "invalid");
    }
}
