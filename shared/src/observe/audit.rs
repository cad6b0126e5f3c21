//! The audit trail: one structured event for every tool call, listing,
//! prompt or resource read, consent start, completion and refusal,
//! disconnect, refresh failure and admin change. Who (the user's `sub`,
//! the agent's `client_id`), what (event, target, item), the outcome, the
//! latency and the request id; never results or tokens, and arguments only
//! for the targets an operator lists in `AUDIT_ARGUMENTS_TARGETS`.
//!
//! Events go to their own CloudWatch Logs log group (`AUDIT_LOG_GROUP`)
//! with PutLogEvents, signed with the function's role, one request per
//! handled request, before the answer is returned; without a group (local
//! runs), to standard output. An event that cannot be written to the group
//! is written to standard output instead, so the function's own log keeps
//! it.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

mod sink;

pub use sink::{AuditSink, CloudWatchLogs};

/// The audit format's name and version (the `audit` member of each event).
pub const FORMAT: &str = "mcp-oauth-gateway/audit/1";

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Always [`FORMAT`].
    pub audit: &'static str,
    /// When (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The event: an MCP method (`tools/call`, `tools/list`, ...),
    /// `consent.start`, `consent.completed`, `consent.refused`,
    /// `disconnect`, `refresh.failed`, or `admin.<change>`.
    pub event: Cow<'static, str>,
    /// The platform's request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The user's subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The agent's OAuth client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The tool or prompt (upstream name), or the resource URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// `ok`, `tool_error`, `consent_required`, `error:<JSON-RPC code>`,
    /// `http:<status>`, or the event's own outcome.
    pub outcome: Cow<'static, str>,
    /// Time to answer, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The call's arguments, only for the targets an operator opted in
    /// (`AUDIT_ARGUMENTS_TARGETS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

impl AuditEvent {
    /// An event at `now_ms` with nothing but its name and outcome.
    pub fn new(
        event: impl Into<Cow<'static, str>>,
        outcome: impl Into<Cow<'static, str>>,
        now_ms: i64,
    ) -> Self {
        AuditEvent {
            audit: FORMAT,
            time: rfc3339_ms(now_ms),
            event: event.into(),
            request_id: None,
            user: None,
            client: None,
            target: None,
            item: None,
            outcome: outcome.into(),
            latency_ms: None,
            arguments: None,
        }
    }
}

/// The methods whose requests are audited (calls and listings; not
/// `ping`, `initialize` and the like).
const AUDITED: &[&str] = &[
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "completion/complete",
];

/// The gateway's own tool that disconnects a target.
const DISCONNECT_TOOL: &str = "gateway___disconnect";

/// The audit events of one request to the MCP endpoint: the call or
/// listing (a `disconnect` for the gateway's disconnect tool), and a
/// `refresh.failed` for each refresh it needed that failed.
///
/// Takes the record whole: its names move into the call's event (the
/// usual request has one event and no failed refresh, so no name is
/// copied; audited arguments are).
pub fn of_request(
    record: super::Record,
    status: u16,
    latency: std::time::Duration,
    request_id: Option<String>,
    now_ms: i64,
) -> Vec<AuditEvent> {
    // A failed refresh names its own user and target (and the request's
    // id and client).
    let failed = record
        .refreshes
        .into_iter()
        .filter(|(_, _, outcome)| matches!(*outcome, "needs_consent" | "transient_failure"));
    let mut refreshes = Vec::new();
    for (user, target, outcome) in failed {
        let mut e = AuditEvent::new("refresh.failed", outcome, now_ms);
        e.request_id = request_id.clone();
        e.client = record.client.clone();
        e.user = Some(user);
        e.target = Some(target);
        refreshes.push(e);
    }
    let audited = record
        .method
        .as_deref()
        .and_then(|m| AUDITED.iter().find(|a| **a == m));
    let Some(method) = audited else {
        return refreshes;
    };
    let outcome: Cow<'static, str> = if record.consent_required {
        "consent_required".into()
    } else if let Some(code) = record.error_code {
        format!("error:{code}").into()
    } else if status >= 400 {
        format!("http:{status}").into()
    } else if record.tool_error {
        "tool_error".into()
    } else {
        "ok".into()
    };
    let disconnect = record.item.as_deref() == Some(DISCONNECT_TOOL);
    let mut e = AuditEvent::new(
        if disconnect { "disconnect" } else { *method },
        outcome,
        now_ms,
    );
    e.request_id = request_id;
    e.user = record.user;
    e.client = record.client;
    e.target = record.target;
    e.item = record.item.filter(|_| !disconnect);
    e.latency_ms = Some(super::metrics::ms(latency));
    e.arguments = record.arguments.map(bounded_arguments);
    let mut events = Vec::with_capacity(1 + refreshes.len());
    events.push(e);
    events.append(&mut refreshes);
    events
}

/// The largest arguments written into an event (JSON bytes); larger ones
/// are replaced by a note of their size (a log event holds 256 KB).
pub const MAX_ARGUMENTS_BYTES: usize = 32 * 1024;

fn bounded_arguments(arguments: Value) -> Value {
    let size = serde_json::to_string(&arguments)
        .map(|s| s.len())
        .unwrap_or(0);
    if size <= MAX_ARGUMENTS_BYTES {
        arguments
    } else {
        Value::String(format!("(not written: {size} bytes of arguments)"))
    }
}

/// `now_ms` as RFC 3339 UTC with milliseconds.
///
/// Written digit by digit: this runs for every audited request, and the
/// formatting machinery costs ten times as much for the same 24 bytes.
pub fn rfc3339_ms(now_ms: i64) -> String {
    let (year, month, day, rem, millis) = civil(now_ms);
    if !(0..=9999).contains(&year) {
        return rfc3339_ms_formatted(now_ms);
    }
    let mut text = *b"0000-00-00T00:00:00.000Z";
    for (at, value, digits) in [
        (0, year, 4),
        (5, month, 2),
        (8, day, 2),
        (11, rem / 3600, 2),
        (14, rem % 3600 / 60, 2),
        (17, rem % 60, 2),
        (20, millis, 3),
    ] {
        let mut value = value;
        for place in text[at..at + digits].iter_mut().rev() {
            // Each value is within 0..10^digits here.
            *place = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// (year, month, day, seconds into the day, milliseconds) of `now_ms`.
fn civil(now_ms: i64) -> (i64, i64, i64, i64, i64) {
    let secs = now_ms.div_euclid(1000);
    let (year, month, day) = crate::telemetry::civil_date(secs.div_euclid(86_400));
    (
        year,
        month,
        day,
        secs.rem_euclid(86_400),
        now_ms.rem_euclid(1000),
    )
}

/// [`rfc3339_ms`] through the formatter: years outside 0-9999 (a clock
/// gone wrong) get as many digits as they need.
fn rfc3339_ms_formatted(now_ms: i64) -> String {
    let (year, month, day, rem, millis) = civil(now_ms);
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    out
}

/// An event as one JSON line, written into a buffer sized for it.
pub fn line_of(event: &AuditEvent) -> String {
    let mut out = Vec::with_capacity(512);
    match serde_json::to_writer(&mut out, event) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_record() -> crate::observe::Record {
        crate::observe::Record {
            method: Some("tools/call".into()),
            user: Some("alice".into()),
            client: Some("agent".into()),
            target: Some("crm".into()),
            item: Some("find".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_request_is_one_event_then_one_per_failed_refresh() {
        let mut record = call_record();
        // A refresh names its own user: "bob" differs from the request's
        // user on purpose, so the test tells which one an event carries.
        record.refreshes = vec![
            ("alice".into(), "crm".into(), "refreshed"),
            ("bob".into(), "crm".into(), "needs_consent"),
            ("alice".into(), "mail".into(), "transient_failure"),
        ];
        // Kept only for targets an operator lists; the call's event carries them.
        record.arguments = Some(serde_json::json!({"q": "x"}));
        let ms = std::time::Duration::from_millis(12);
        let events = of_request(record, 200, ms, Some("req-1".into()), 0);
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.event.as_ref(), e.outcome.as_ref(), e.target.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("tools/call", "ok", Some("crm")),
                ("refresh.failed", "needs_consent", Some("crm")),
                ("refresh.failed", "transient_failure", Some("mail")),
            ]
        );
        for e in &events {
            assert_eq!(e.request_id.as_deref(), Some("req-1"));
            assert_eq!(e.client.as_deref(), Some("agent"));
        }
        let users: Vec<_> = events.iter().map(|e| e.user.as_deref()).collect();
        assert_eq!(users, [Some("alice"), Some("bob"), Some("alice")]);
        assert_eq!(events[0].item.as_deref(), Some("find"));
        assert_eq!(events[0].latency_ms, Some(12.0));
        assert_eq!(events[0].arguments, Some(serde_json::json!({"q": "x"})));
        assert_eq!((&events[1].item, &events[1].arguments), (&None, &None));
    }

    #[test]
    fn a_scheduled_run_is_one_event_per_failed_refresh() {
        // What the scheduled refresh records: no method, no caller.
        let record = crate::observe::Record {
            refreshes: vec![
                ("bob".into(), "crm".into(), "needs_consent"),
                ("carol".into(), "crm".into(), "refreshed"),
            ],
            ..Default::default()
        };
        let events = of_request(record, 200, Default::default(), None, 0);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.event.as_ref(), e.outcome.as_ref()),
            ("refresh.failed", "needs_consent")
        );
        assert_eq!(
            (e.user.as_deref(), e.target.as_deref()),
            (Some("bob"), Some("crm"))
        );
        assert_eq!((e.client.as_deref(), e.request_id.as_deref()), (None, None));
        assert_eq!((e.item.as_deref(), e.latency_ms), (None, None));
    }

    #[test]
    fn outcomes_and_unaudited_methods() {
        let outcome = |f: &dyn Fn(&mut crate::observe::Record), status: u16| {
            let mut r = call_record();
            f(&mut r);
            of_request(r, status, Default::default(), None, 0)
                .first()
                .map(|e| (e.event.to_string(), e.outcome.to_string(), e.item.clone()))
        };
        let ev = |event: &str, outcome: &str, item: Option<&str>| {
            Some((
                event.to_owned(),
                outcome.to_owned(),
                item.map(str::to_owned),
            ))
        };
        assert_eq!(outcome(&|_| {}, 200), ev("tools/call", "ok", Some("find")));
        assert_eq!(
            outcome(&|r| r.consent_required = true, 200),
            ev("tools/call", "consent_required", Some("find"))
        );
        assert_eq!(
            outcome(&|r| r.error_code = Some(-32602), 400),
            ev("tools/call", "error:-32602", Some("find"))
        );
        assert_eq!(
            outcome(&|_| {}, 502),
            ev("tools/call", "http:502", Some("find"))
        );
        assert_eq!(
            outcome(&|r| r.tool_error = true, 200),
            ev("tools/call", "tool_error", Some("find"))
        );
        assert_eq!(
            outcome(&|r| r.item = Some(DISCONNECT_TOOL.into()), 200),
            ev("disconnect", "ok", None)
        );
        // Precedence: a consent first, then the JSON-RPC error, then the
        // HTTP status, then a tool's own error.
        assert_eq!(
            outcome(
                &|r| {
                    r.consent_required = true;
                    r.error_code = Some(-32042);
                },
                502
            ),
            ev("tools/call", "consent_required", Some("find"))
        );
        assert_eq!(
            outcome(&|r| r.tool_error = true, 502),
            ev("tools/call", "http:502", Some("find"))
        );
        assert_eq!(outcome(&|r| r.method = Some("ping".into()), 200), None);
        assert_eq!(outcome(&|r| r.method = None, 200), None);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_135_696_123), "2026-12-01T14:34:56.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        // Digit by digit as the formatter writes it, over the years 0-9999
        // in steps that touch every field, and outside them.
        let mut t = -62_167_219_200_000; // 0000-01-01
        while t < 253_402_300_800_000 {
            assert_eq!(rfc3339_ms(t), rfc3339_ms_formatted(t), "{t}");
            t += 86_399_999 * 37 + 1_234;
        }
        assert_eq!(rfc3339_ms(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-62_167_219_200_001), "-001-12-31T23:59:59.999Z");
    }

    #[test]
    fn large_arguments_are_replaced_by_their_size() {
        let small = serde_json::json!({"q": "hello"});
        assert_eq!(bounded_arguments(small.clone()), small);
        let large = serde_json::json!({"q": "x".repeat(MAX_ARGUMENTS_BYTES)});
        assert!(bounded_arguments(large)
            .as_str()
            .unwrap()
            .starts_with("(not written: "));
    }

    #[test]
    fn events_leave_out_what_they_do_not_know() {
        let mut e = AuditEvent::new("tools/call", "ok", 0);
        e.user = Some("alice".into());
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"audit":"mcp-oauth-gateway/audit/1","time":"1970-01-01T00:00:00.000Z","event":"tools/call","user":"alice","outcome":"ok"}"#
        );
    }
}
