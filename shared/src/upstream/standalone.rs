//! Where resource updates come from upstreams: a 2025 session's
//! standalone event stream (the GET of Streamable HTTP), or a 2026-07-28
//! upstream's `subscriptions/listen` stream.

use serde_json::Value;
use tokio::sync::mpsc;

use super::sse::{is_event_stream, is_request, Events};
use super::{legacy_session_key, Call, UpstreamClient, UpstreamError};
use crate::wire::MODERN;

/// The notifications of a standalone stream passed on to clients.
const PASSED_ON: &[&str] = &["notifications/resources/updated"];

/// Largest event read from a standalone stream (bytes); a longer one ends
/// the stream.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A user's 2025 session with a target, as kept.
#[derive(Debug, Clone)]
pub struct FoundSession {
    /// Where it is kept (user, key).
    key: (String, String),
    /// The upstream's `Mcp-Session-Id`.
    pub session: String,
    /// Its protocol version.
    pub version: String,
}

impl UpstreamClient {
    /// The user's 2025 session with `target` (session id, version): the
    /// one kept beside a 2026-07-28 one for subscriptions, or the only
    /// one of a 2025 upstream.
    pub async fn legacy_session(&self, sub: &str, target: &str) -> Option<FoundSession> {
        for key in [target.to_owned(), legacy_session_key(target)] {
            let found = |session: String, version: String| FoundSession {
                key: (sub.to_owned(), key.clone()),
                session,
                version,
            };
            match self.links().get(&(sub.to_owned(), key.clone())) {
                Some(super::Link::Legacy {
                    version,
                    session: Some(session),
                }) => return Some(found(session.clone(), version.clone())),
                // A 2026-07-28 link: the 2025 session, if any, is the other key.
                Some(_) => continue,
                None => {}
            }
            let now = self.clock.now();
            if let Ok(Some(s)) = self.sessions.get(sub, &key, now).await {
                if s.protocol_version != MODERN && !s.session_id.is_empty() {
                    return Some(found(s.session_id, s.protocol_version));
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
        found: &FoundSession,
        out: &mpsc::Sender<Value>,
    ) -> Result<(), UpstreamError> {
        let (session, version) = (found.session.as_str(), found.version.as_str());
        let res = match self.open_stream(call, session, version).await {
            Err(e @ (UpstreamError::Status(404) | UpstreamError::Rpc { status: 404, .. })) => {
                // The upstream forgot the session (and its subscriptions);
                // forgotten here unless another instance replaced it.
                self.forget_session(&found.key, session).await;
                return Err(e);
            }
            other => other?,
        };
        // A request on the standalone stream (not tied to a call) has no
        // client to go to: answered at once, as during a call.
        // At most MAX_ANSWERED requests in all, and a ping per 5 seconds
        // (a long stream may be kept alive with pings).
        let answered = std::sync::atomic::AtomicUsize::new(0);
        let answered = &answered;
        let last_ping = std::sync::Mutex::new(None::<std::time::Instant>);
        let last_ping = &last_ping;
        let answer = |request: Value| async move {
            if request.get("method").and_then(Value::as_str) == Some("ping") {
                let Ok(mut last) = last_ping.lock() else {
                    return;
                };
                if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(5)) {
                    return;
                }
                *last = Some(std::time::Instant::now());
            } else if answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                >= super::MAX_ANSWERED
            {
                return;
            }
            let body = super::unsupported_request_answer(&request);
            if let Err(e) = self
                .post(call, Some(session), Some(version), None, body)
                .await
            {
                tracing::warn!(target = %call.target, error = %e, "could not answer an upstream's request");
            }
        };
        pass_updates(res, out, |_| true, answer).await
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
        let keep = |m: &Value| {
            m.get("params")
                .and_then(|p| p.get("uri"))
                .and_then(Value::as_str)
                .is_some_and(|u| uris.iter().any(|x| x == u))
        };
        // A stateless upstream has no session to answer a request on.
        pass_updates(res, out, keep, |_| async {}).await
    }
}

/// Passes the resource updates (those `keep` keeps) of an event stream to
/// `out`, handing each request the upstream sends on it to `on_request`,
/// until the stream ends, fails, or `out` closes.
async fn pass_updates<F, Fut>(
    mut res: super::Reply,
    out: &mpsc::Sender<Value>,
    keep: impl Fn(&Value) -> bool,
    mut on_request: F,
) -> Result<(), UpstreamError>
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if !is_event_stream(&res) {
        return Err(UpstreamError::Protocol(
            "the upstream answered with no event stream".into(),
        ));
    }
    let mut events = Events::default();
    loop {
        let chunk = tokio::select! {
            chunk = res.chunk() => chunk?,
            _ = out.closed() => return Ok(()),
        };
        let Some(chunk) = chunk else { return Ok(()) };
        events.push(&chunk);
        while let Some((mut message, _)) = events.next_message() {
            if is_request(&message) {
                on_request(message).await;
                continue;
            }
            let passed = message.get("id").is_none()
                && message
                    .get("method")
                    .and_then(Value::as_str)
                    .is_some_and(|m| PASSED_ON.contains(&m))
                && keep(&message);
            if !passed {
                continue;
            }
            if let Some(p) = message.get_mut("params").and_then(Value::as_object_mut) {
                p.remove("_meta");
            }
            if out.send(message).await.is_err() {
                return Ok(());
            }
        }
        if events.pending() > MAX_EVENT_BYTES {
            return Err(UpstreamError::Protocol(format!(
                "an event longer than {MAX_EVENT_BYTES} bytes on an update stream"
            )));
        }
    }
}
