//! Reading an upstream's answer: JSON, or an SSE stream scanned once, up to
//! a size limit, until the response to our request id.

use serde_json::Value;

use super::{Answer, UpstreamError, MAX_RESPONSE_BYTES};

pub(crate) async fn read_response(res: super::Reply, id: u64) -> Result<Value, UpstreamError> {
    read_response_relaying(res, id, None, |_| async {})
        .await?
        .into_value()
}

/// The most notifications kept from one response stream for the client.
pub(crate) const MAX_RELAYED: usize = 1000;
/// The most bytes of notifications kept for the client (an answer must
/// stay well within Lambda's 6 MB).
pub(crate) const MAX_RELAYED_BYTES: usize = 1024 * 1024;

/// [`read_response`], keeping in `relay` the notifications the upstream
/// sent on the response's stream before the response (progress, log
/// messages), at most [`MAX_RELAYED`], and handing each request it sends
/// there (a 2025 server's sampling, elicitation or roots request) to
/// `on_request`, which answers it, before reading on.
pub(crate) async fn read_response_relaying<F, Fut>(
    mut res: super::Reply,
    id: u64,
    relay: Option<&super::Relay>,
    mut on_request: F,
) -> Result<Answer, UpstreamError>
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sse = is_event_stream(&res);
    let mut events = Events::default();
    // A JSON answer usually comes in one chunk, read where it lies; a
    // second chunk starts a copy.
    let mut first: Option<bytes::Bytes> = None;
    let mut body: Vec<u8> = Vec::new();
    let mut total = 0usize;
    loop {
        let chunk = res.chunk().await?;
        let Some(chunk) = chunk else { break };
        total += chunk.len();
        if total > MAX_RESPONSE_BYTES {
            return Err(UpstreamError::Protocol(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        if !sse {
            match first.take() {
                None if body.is_empty() => first = Some(chunk),
                held => {
                    if let Some(held) = held {
                        body.extend_from_slice(&held);
                    }
                    body.extend_from_slice(&chunk);
                }
            }
            continue;
        }
        // Look at complete events only; stop at the response.
        events.push(&chunk);
        while let Some((message, size)) = events.next_message() {
            if is_response_to(&message, id) {
                return Ok(Answer::Tree(message));
            }
            if is_request(&message) {
                on_request(message).await;
                continue;
            }
            if let Some(r) = relay {
                if is_notification(&message) {
                    r.push(message, size);
                }
            }
        }
    }
    if sse {
        if let Some(message) = events.rest() {
            if is_response_to(&message, id) {
                return Ok(Answer::Tree(message));
            }
        }
        return Err(UpstreamError::Protocol(
            "the event stream ended without a response".into(),
        ));
    }
    let body = first.unwrap_or_else(|| body.into());
    if body.is_empty() {
        return Ok(Answer::Tree(Value::Null));
    }
    // Kept as text when it is an answer (see `Answer`); anything else is
    // parsed to say what is wrong with it.
    if let Some(answer) = Answer::from_body(&body) {
        return Ok(answer);
    }
    let message: Value = serde_json::from_slice(&body)
        .map_err(|e| UpstreamError::Protocol(format!("not JSON: {e}")))?;
    if message.get("result").is_none() && message.get("error").is_none() {
        return Err(UpstreamError::Protocol("not a JSON-RPC response".into()));
    }
    Ok(Answer::Tree(message))
}

/// True when a response is an event stream.
pub(crate) fn is_event_stream(res: &super::Reply) -> bool {
    res.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The complete events of an SSE byte stream as it arrives, each byte
/// looked at about once however the stream is chunked.
#[derive(Default)]
pub(crate) struct Events {
    buf: Vec<u8>,
    /// Where the events not yet taken start.
    start: usize,
    /// How much of `buf` (from its beginning) is known to hold no
    /// complete event past `start`.
    scanned: usize,
}

impl Events {
    /// Adds the next bytes of the stream.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start.min(self.scanned);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The JSON message of the next complete event, and the event's size
    /// (events without JSON data are skipped); none until more bytes come.
    pub(crate) fn next_message(&mut self) -> Option<(Value, usize)> {
        loop {
            let rest = &self.buf[self.start..];
            let Some(len) = find_event_end_from(rest, self.scanned.saturating_sub(self.start))
            else {
                self.scanned = self.buf.len();
                return None;
            };
            let event = &rest[..len];
            self.start += len;
            self.scanned = self.start;
            if let Some(message) = sse_data(event) {
                return Some((message, len));
            }
        }
    }

    /// Bytes held that are not a complete event yet.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The message of a last event the stream ended without a blank line after.
    pub(crate) fn rest(&self) -> Option<Value> {
        sse_data(&self.buf[self.start..])
    }
}

/// A JSON-RPC notification (a `notifications/...` method, no id).
fn is_notification(message: &Value) -> bool {
    message.get("id").is_none()
        && message
            .get("method")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("notifications/"))
}

/// A JSON-RPC request (a method and an id).
pub(crate) fn is_request(message: &Value) -> bool {
    message.get("id").is_some_and(|id| !id.is_null())
        && message.get("method").and_then(Value::as_str).is_some()
}

pub(crate) fn is_response_to(message: &Value, id: u64) -> bool {
    message.get("id").and_then(Value::as_u64) == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// End (exclusive) of the first complete SSE event, including its blank line.
#[cfg(test)]
pub(crate) fn find_event_end(buf: &[u8]) -> Option<usize> {
    find_event_end_from(buf, 0)
}

/// [`find_event_end`] when `buf[..from]` is known to hold no complete
/// event: one pass over the bytes from `from - 3` on (a separator may
/// straddle), ending at the first `\n\n` or `\r\n\r\n`.
pub(crate) fn find_event_end_from(buf: &[u8], from: usize) -> Option<usize> {
    let skip = from.saturating_sub(3).min(buf.len());
    buf[skip..]
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| skip + i)
        .find(|&p| (p >= 1 && buf[p - 1] == b'\n') || (p >= 3 && &buf[p - 3..=p] == b"\r\n\r\n"))
        .map(|p| p + 1)
}

/// The JSON of an SSE event's `data:` lines.
pub(crate) fn sse_data(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events() {
        let stream = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n\n";
        let end = find_event_end(stream).unwrap();
        let first = sse_data(&stream[..end]).unwrap();
        assert_eq!(first["method"], "notifications/progress");
        let second = sse_data(&stream[end..]).unwrap();
        assert!(is_response_to(&second, 7));
        assert!(!is_response_to(&first, 7));
        assert!(sse_data(b": comment only\n\n").is_none());
        assert!(sse_data(b"data: not json\n\n").is_none());
        assert_eq!(find_event_end(b"data: x\r\n\r\nrest"), Some(11));
        assert_eq!(find_event_end(b"data: x\r\n\nrest"), Some(10));
        assert_eq!(find_event_end(b"data: x\r\n"), None);
    }

    #[test]
    fn events_are_found_however_the_stream_is_chunked() {
        let mut text = String::new();
        for i in 0..50 {
            let end = if i % 2 == 0 { "\n\n" } else { "\r\n\r\n" };
            text.push_str(&format!(": note\ndata: {{\"n\": {i}}}{end}"));
        }
        text.push_str("data: {\"last\": true}");
        for chunk_size in [1, 2, 3, 7, 64, text.len()] {
            let mut events = Events::default();
            let mut seen = vec![];
            for chunk in text.as_bytes().chunks(chunk_size) {
                events.push(chunk);
                while let Some((message, _)) = events.next_message() {
                    seen.push(message["n"].as_i64().unwrap());
                }
            }
            assert_eq!(seen, (0..50).collect::<Vec<_>>(), "chunks of {chunk_size}");
            assert_eq!(events.rest(), Some(serde_json::json!({"last": true})));
        }
    }
}
