//! Where resource updates come from upstreams: a 2025 session's
//! standalone event stream (the GET of Streamable HTTP), or a 2026-07-28
//! upstream's `subscriptions/listen` stream.

use serde_json::Value;
use tokio::sync::mpsc;

use super::sse::{find_event_end_from, sse_data};
use super::{legacy_session_key, Call, UpstreamClient, UpstreamError};
use crate::wire::MODERN;

/// The notifications of a standalone stream passed on to clients.
const PASSED_ON: &[&str] = &["notifications/resources/updated"];

/// Largest event read from a standalone stream (bytes); a longer one ends
/// the stream.
const MAX_EVENT_BYTES: usize = 64 * 1024;

impl UpstreamClient {
    /// The user's 2025 session with `target` (session id, version): the
    /// one kept beside a 2026-07-28 one for subscriptions, or the only
    /// one of a 2025 upstream.
    pub async fn legacy_session(&self, sub: &str, target: &str) -> Option<(String, String)> {
        for key in [target.to_owned(), legacy_session_key(target)] {
            if let Some(super::Link::Legacy {
                version,
                session: Some(session),
            }) = self.links.read().await.get(&(sub.to_owned(), key.clone()))
            {
                return Some((session.clone(), version.clone()));
            }
            let now = self.clock.now();
            if let Ok(Some(s)) = self.sessions.get(sub, &key, now).await {
                if s.protocol_version != MODERN && !s.session_id.is_empty() {
                    return Some((s.session_id, s.protocol_version));
                }
            }
        }
        None
    }

    /// Passes the resource updates the upstream sends on `session`'s
    /// standalone stream to `out`, until the stream ends, fails, or `out`
    /// closes.
    pub async fn relay_standalone(
        &self,
        call: &Call<'_>,
        session: &str,
        version: &str,
        out: &mpsc::Sender<Value>,
    ) -> Result<(), UpstreamError> {
        let res = self.open_stream(call, session, version).await?;
        pass_updates(res, out, |_| true).await
    }

    /// True when the user's exchanges with the call's target are
    /// 2026-07-28 ones (stateless, with `subscriptions/listen`).
    pub async fn speaks_modern(&self, call: &Call<'_>) -> Result<bool, UpstreamError> {
        let key = (call.sub.to_owned(), call.target.to_owned());
        Ok(self.link(call, &key).await? == super::Link::Modern)
    }

    /// Listens (2026-07-28 `subscriptions/listen`) for updates of `uris`
    /// at a 2026-07-28 upstream, passing each update of one of them to
    /// `out` (without the upstream's `_meta`: the client's subscription id
    /// goes there), until the stream ends or `out` closes.
    pub async fn listen(
        &self,
        call: &Call<'_>,
        uris: &[String],
        out: &mpsc::Sender<Value>,
    ) -> Result<(), UpstreamError> {
        let params = crate::wire::envelope::Params::from_value(
            &serde_json::json!({"notifications": {"resourceSubscriptions": uris}}),
        )
        .unwrap_or_default();
        let out_request = super::OutRequest {
            jsonrpc: "2.0",
            id: self.id(),
            method: "subscriptions/listen",
            params: Some(super::OutParams::Modern(Some(&params), None, None)),
        };
        let body = serde_json::to_string(&out_request)
            .map_err(|e| UpstreamError::Protocol(format!("request not serializable: {e}")))?;
        let res = self
            .post(
                call,
                None,
                Some(MODERN),
                Some(("subscriptions/listen", None)),
                body,
            )
            .await?;
        pass_updates(res, out, |m| {
            m.get("params")
                .and_then(|p| p.get("uri"))
                .and_then(Value::as_str)
                .is_some_and(|u| uris.iter().any(|x| x == u))
        })
        .await
    }
}

/// Passes the resource updates (those `keep` keeps) of an event stream to
/// `out`, until the stream ends, fails, or `out` closes.
async fn pass_updates(
    mut res: reqwest::Response,
    out: &mpsc::Sender<Value>,
    keep: impl Fn(&Value) -> bool,
) -> Result<(), UpstreamError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0usize;
    loop {
        let chunk = tokio::select! {
            chunk = res.chunk() => chunk.map_err(super::transport)?,
            _ = out.closed() => return Ok(()),
        };
        let Some(chunk) = chunk else { return Ok(()) };
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(len) = find_event_end_from(&buf[start..], scanned.saturating_sub(start)) {
            let event = &buf[start..start + len];
            start += len;
            let Some(mut message) = sse_data(event) else {
                continue;
            };
            let passed = message.get("id").is_none()
                && message
                    .get("method")
                    .and_then(Value::as_str)
                    .is_some_and(|m| PASSED_ON.contains(&m))
                && keep(&message);
            if let Some(p) = message.get_mut("params").and_then(Value::as_object_mut) {
                p.remove("_meta");
            }
            if passed && out.send(message).await.is_err() {
                return Ok(());
            }
        }
        buf.drain(..start);
        scanned = buf.len();
        if buf.len() > MAX_EVENT_BYTES {
            return Err(UpstreamError::Protocol(format!(
                "an event longer than {MAX_EVENT_BYTES} bytes on the standalone stream"
            )));
        }
    }
}
