//! CloudWatch Embedded Metric Format documents: one per request of the MCP
//! endpoint, one per consent outcome, one per refresh outcome.
//!
//! Dimensions are chosen for a bounded bill: every request metric by
//! `Gateway` and by `Gateway, Method` (methods outside the protocol's are
//! counted as `other`), and four of them by `Gateway, Target` (targets are
//! registered by operators). No user, client or tool is ever a dimension.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Record, NAMESPACE};
use crate::wire::codes;

/// The `Method` dimension's value for `method`: its own name for the
/// methods the gateway knows (`Method::NAMES`), any other is `other`.
pub fn method_dimension(method: Option<&str>) -> &'static str {
    match method {
        None => "invalid",
        Some(m) if m.starts_with("notifications/") => "notification",
        Some(m) => crate::wire::envelope::Method::NAMES
            .iter()
            .find(|k| **k == m)
            .copied()
            .unwrap_or("other"),
    }
}

/// Milliseconds, rounded to the microsecond.
pub(crate) fn ms(d: Duration) -> f64 {
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

/// The metrics of every request, by `Gateway` and by `Gateway, Method`.
const BY_METHOD: &str = r#"{"Namespace":"McpOAuthGateway","Dimensions":[["Gateway"],["Gateway","Method"]],"Metrics":[{"Name":"Invocations","Unit":"Count"},{"Name":"SystemErrors","Unit":"Count"},{"Name":"UserErrors","Unit":"Count"},{"Name":"Throttles","Unit":"Count"},{"Name":"Latency","Unit":"Milliseconds"},{"Name":"Duration","Unit":"Milliseconds"},{"Name":"TargetExecutionTime","Unit":"Milliseconds"},{"Name":"ConsentRequired","Unit":"Count"},{"Name":"UpstreamErrors","Unit":"Count"}]}"#;
/// The metrics also kept by `Gateway, Target`.
const BY_TARGET: &str = r#"{"Namespace":"McpOAuthGateway","Dimensions":[["Gateway","Target"]],"Metrics":[{"Name":"Invocations","Unit":"Count"},{"Name":"SystemErrors","Unit":"Count"},{"Name":"TargetExecutionTime","Unit":"Milliseconds"},{"Name":"UpstreamErrors","Unit":"Count"}]}"#;

/// The constant part of a request's document (its directives), parsed once.
fn directives(with_target: bool) -> &'static serde_json::value::RawValue {
    use std::sync::OnceLock;
    static WITHOUT: OnceLock<Box<serde_json::value::RawValue>> = OnceLock::new();
    static WITH: OnceLock<Box<serde_json::value::RawValue>> = OnceLock::new();
    let cell = if with_target { &WITH } else { &WITHOUT };
    cell.get_or_init(|| {
        let text = if with_target {
            format!("[{BY_METHOD},{BY_TARGET}]")
        } else {
            format!("[{BY_METHOD}]")
        };
        serde_json::value::RawValue::from_string(text).unwrap_or_default()
    })
}

#[derive(serde::Serialize)]
struct Aws {
    #[serde(rename = "Timestamp")]
    timestamp: i64,
    #[serde(rename = "CloudWatchMetrics")]
    directives: &'static serde_json::value::RawValue,
}

/// One request's EMF document, serialized straight from its parts.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestLine<'a> {
    gateway: &'a str,
    method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    invocations: u32,
    system_errors: u32,
    user_errors: u32,
    throttles: u32,
    latency: f64,
    duration: f64,
    target_execution_time: f64,
    consent_required: u32,
    upstream_errors: u32,
    #[serde(rename = "_aws")]
    aws: Aws,
}

/// The EMF line of one request to the MCP endpoint (JSON text, one line).
pub fn request_line(
    gateway: &str,
    record: &Record,
    status: u16,
    latency: Duration,
    now_ms: i64,
) -> String {
    // An upstream's own error, passed on, is the upstream's.
    let code = record.error_code.filter(|_| !record.error_from_upstream);
    let (system, user, throttled) = error_class(status, code);
    let upstream = record.upstream_time.min(latency);
    let line = RequestLine {
        gateway,
        method: method_dimension(record.method.as_deref()),
        target: record.target.as_deref(),
        invocations: 1,
        system_errors: u32::from(system),
        user_errors: u32::from(user),
        throttles: u32::from(throttled),
        latency: ms(latency),
        duration: ms(latency - upstream),
        target_execution_time: ms(upstream),
        consent_required: u32::from(record.consent_required),
        upstream_errors: record.upstream_errors + u32::from(record.error_from_upstream),
        aws: Aws {
            timestamp: now_ms,
            directives: directives(record.target.is_some()),
        },
    };
    // Sized for a line (about 700 bytes), so it is written without growing.
    let mut out = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut out, &line) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
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
        // Every method the gateway knows is counted by its name.
        for name in crate::wire::envelope::Method::NAMES {
            assert_eq!(method_dimension(Some(name)), *name);
        }
        assert_eq!(
            method_dimension(Some("notifications/initialized")),
            "notification"
        );
        assert_eq!(method_dimension(None), "invalid");
    }
}
