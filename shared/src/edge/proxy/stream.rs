//! Answers that carry what upstreams said during the call.
//!
//! For a call that can hear from its upstream (`tools/call`,
//! `prompts/get`, `resources/read`) from a client that accepts
//! `text/event-stream`, the gateway starts an event stream at the first
//! notification (progress, log messages) and passes each on as it comes,
//! the result last. A call that ends before any notification is answered
//! as usual. Where the platform streams responses (a local server, a Lambda
//! function URL with `RESPONSE_STREAM`), the client sees progress while the
//! call runs; behind API Gateway, which answers once, the same events
//! arrive together with the result.
//!
//! The request's metrics and audit event are written when the stream ends
//! (after its last event, before the stream closes), so they cover the
//! whole call; a stream dropped early (the client went away) is recorded
//! with status 499.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::AppState;

tokio::task_local! {
    /// How the current request is recorded when it ends; taken by a
    /// streamed answer, which ends later than its handler.
    static FINISH: Arc<Mutex<Option<Finish>>>;
}

/// What it takes to record a request when it ends.
pub(super) struct Finish {
    pub(super) state: AppState,
    pub(super) started: Instant,
    pub(super) request_id: Option<String>,
    pub(super) record: crate::observe::Shared,
}

impl Finish {
    /// Writes the request's metric line and audit events.
    pub(super) async fn emit(self, status: u16) {
        use crate::observe::{AuditSink, LineSink};
        let observe = &self.state.observe;
        let audit_on = !matches!(observe.audit, AuditSink::Off);
        if !observe.metrics_on && !audit_on {
            return;
        }
        let latency = self.started.elapsed();
        let now = crate::observe::now_ms();
        // Usually the request's futures have ended and the record is
        // this request's alone: it is taken rather than copied. A stream
        // dropped early records before the call's own future is dropped,
        // and copies it then. A record whose lock was poisoned (a panic
        // while noting, in a build that unwinds) is still written.
        let record = match Arc::try_unwrap(self.record) {
            Ok(only) => only.into_inner().unwrap_or_else(PoisonError::into_inner),
            Err(shared) => shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        let mut lines = String::new();
        if observe.metrics_on {
            lines = crate::observe::metrics::request_line(
                &observe.gateway,
                &record,
                status,
                latency,
                now,
            );
            lines.push('\n');
            if !record.refreshes.is_empty() {
                // Refreshes the request needed (made on use, before calling).
                crate::observe::refresh_metrics(observe, &record, now);
            }
        }
        let events = if audit_on {
            crate::observe::audit::of_request(record, status, latency, self.request_id, now)
        } else {
            vec![]
        };
        // Both on standard output (Lambda's log): one write for the request.
        if let (LineSink::Stdout, AuditSink::Lines(LineSink::Stdout)) =
            (&observe.metrics, &observe.audit)
        {
            for e in &events {
                lines.push_str(&crate::observe::audit::line_of(e));
                lines.push('\n');
            }
            LineSink::Stdout.write_block(&lines);
            return;
        }
        if !lines.is_empty() {
            observe.metrics.write(lines.trim_end_matches('\n'));
        }
        observe.audit.write(&self.state.upstream, &events).await;
    }
}

/// Runs `handle` (one request to `/mcp`) and records it when it ends: at
/// once, or when its streamed answer ends.
///
/// A combinator, not an `async fn`: an `async fn` would keep `handle` in
/// its state beside the future it awaits, twice the size, and every
/// request's future is allocated and moved whole.
pub(super) fn observed<F: Future<Output = Response>>(
    finish: Finish,
    handle: F,
) -> impl Future<Output = Response> {
    use futures::FutureExt;
    let record = finish.record.clone();
    let slot = Arc::new(Mutex::new(Some(finish)));
    FINISH
        .scope(slot.clone(), crate::observe::within(record, handle))
        .then(move |response| async move {
            let left = slot.lock().ok().and_then(|mut f| f.take());
            if let Some(finish) = left {
                finish.emit(response.status().as_u16()).await;
            }
            response
        })
}

/// True when the client accepts an event stream.
pub(super) fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            // Compared only where a `t` starts a window: this runs for
            // every call.
            v.as_bytes().windows(17).any(|w| {
                w[0].eq_ignore_ascii_case(&b't') && w.eq_ignore_ascii_case(b"text/event-stream")
            })
        })
}

/// One SSE event carrying `message`: a `data:` field per line of it (a
/// result passed on as the upstream wrote it may span lines, and a line
/// break would otherwise end the field, or with a blank line the event).
fn event(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 24);
    out.push_str("event: message\n");
    for line in message.split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

pub(super) type Work = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A streamed request's recording, made exactly once: when the stream
/// ends, or, if the stream is dropped first (the client went away, the
/// invocation ended), from a task of its own with status 499.
struct Pending(Option<Finish>);

impl Pending {
    async fn emit(mut self, status: u16) {
        if let Some(finish) = self.0.take() {
            finish.emit(status).await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(finish) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(finish.emit(499));
            }
        }
    }
}

enum Step {
    Running(
        tokio::sync::mpsc::UnboundedReceiver<Value>,
        Work,
        Box<Pending>,
    ),
    /// The last event went out: record the request, then end.
    Record(Box<Pending>, u16),
}

/// Answers with `work`'s response, or, if a notification comes on `notes`
/// first, with an event stream of the notifications as they come and the
/// response last. `work` notes into the request's record itself (it runs
/// on after the handler returns).
pub(super) async fn answer(
    mut work: Work,
    mut notes: tokio::sync::mpsc::UnboundedReceiver<Value>,
) -> Response {
    let first = tokio::select! {
        biased;
        response = &mut work => {
            // Done before any notification went out; any that came
            // meanwhile are still in the channel.
            let mut kept = vec![];
            while let Ok(n) = notes.try_recv() {
                kept.push(n);
            }
            return written_whole(response, kept).await;
        }
        Some(first) = notes.recv() => first,
    };
    let finish = FINISH
        .try_with(|f| f.lock().ok().and_then(|mut f| f.take()))
        .ok()
        .flatten();
    let head = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(event(&first.to_string()))
    });
    let pending = Box::new(Pending(finish));
    let rest = futures::stream::unfold(Step::Running(notes, work, pending), |step| async move {
        let (mut notes, mut work, finish) = match step {
            Step::Running(notes, work, finish) => (notes, work, finish),
            Step::Record(pending, status) => {
                // The stream ends only after this: the recording is part of
                // the invocation, after the client has its result.
                pending.emit(status).await;
                return None;
            }
        };
        tokio::select! {
            biased;
            Some(note) = notes.recv() => {
                Some((Ok(event(&note.to_string())), Step::Running(notes, work, finish)))
            }
            response = &mut work => {
                let mut out = String::new();
                while let Ok(note) = notes.try_recv() {
                    out.push_str(&event(&note.to_string()));
                }
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap_or_default();
                out.push_str(&event(&String::from_utf8_lossy(&body)));
                Some((Ok(out), Step::Record(finish, status)))
            }
        }
    });
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(head, rest));
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The answer, with the notifications that came before it written first
/// as events when there are any.
pub(super) async fn written_whole(answer: Response, notes: Vec<Value>) -> Response {
    if notes.is_empty() {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
    };
    let mut out = String::new();
    for note in notes {
        out.push_str(&event(&note.to_string()));
    }
    out.push_str(&event(&String::from_utf8_lossy(&bytes)));
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

/// How often an idle standalone stream says it is alive (a comment), which
/// also finds clients that went away.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// A standalone event stream of the messages on `rx`, until it closes.
pub(super) fn standalone(rx: tokio::sync::mpsc::Receiver<Value>) -> Response {
    let body = futures::stream::unfold(rx, |mut rx| async move {
        tokio::select! {
            m = rx.recv() => m.map(|v| (Ok::<_, std::convert::Infallible>(event(&v.to_string())), rx)),
            _ = tokio::time::sleep(KEEPALIVE) => Some((Ok(": keepalive\n\n".to_owned()), rx)),
        }
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::sse::{find_event_end, sse_data};

    #[test]
    fn an_event_stream_is_accepted_in_any_case_anywhere_in_accept() {
        let accepts = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::ACCEPT, v.parse().unwrap());
            }
            accepts_sse(&headers)
        };
        assert!(accepts(&["application/json, text/event-stream"]));
        assert!(accepts(&["TEXT/Event-Stream;q=0.9"]));
        assert!(accepts(&["application/json", "text/event-stream"]));
        assert!(accepts(&["ttext/event-stream"]));
        assert!(!accepts(&["application/json"]));
        assert!(!accepts(&["text/event-strea", "text/plain, */*"]));
        assert!(!accepts(&[]));
    }

    #[test]
    fn a_message_written_over_lines_is_one_event() {
        // An upstream's result passed on as written may span lines (JSON
        // allows white space between tokens); each line needs its own
        // `data:` field, or the event ends at the first line.
        let message = "{\n  \"content\": [\r\n\r\n  ],\r  \"isError\": false\n}";
        let text = event(message);
        assert_eq!(
            find_event_end(text.as_bytes()),
            Some(text.len()),
            "{text:?}"
        );
        let read = sse_data(text.as_bytes()).expect("JSON in the event");
        assert_eq!(read, serde_json::json!({"content": [], "isError": false}));
        assert_eq!(event("{}"), "event: message\ndata: {}\n\n");
    }
}
