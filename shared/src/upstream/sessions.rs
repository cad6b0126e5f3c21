//! The user's sessions with upstreams: which era each speaks (found once,
//! with `server/discover`, and kept here and in the session store), the
//! 2025 `initialize`, and the 2025 session kept beside a 2026-07-28 one for
//! clients that answer an upstream's requests or subscribe.

use serde_json::{json, Value};

use super::*;

impl UpstreamClient {
    pub(super) async fn forget(&self, key: &(String, String)) {
        self.links_mut().remove(key);
        if let Err(e) = self.sessions.delete(&key.0, &key.1).await {
            tracing::warn!(error = %e, "could not forget an upstream session");
        }
    }

    /// Forgets the session `session` kept under `key`, if it is still the
    /// one kept there (another instance may have replaced it already).
    pub(super) async fn forget_session(&self, key: &(String, String), session: &str) {
        {
            let mut links = self.links_mut();
            if matches!(links.get(key), Some(Link::Legacy { session: Some(s), .. }) if s == session)
            {
                links.remove(key);
            }
        }
        // One conditional write: a session another instance kept since
        // (between a read and a delete) is not lost.
        if let Err(e) = self.sessions.delete_if(&key.0, &key.1, session).await {
            tracing::warn!(error = %e, "could not forget an upstream session");
        }
    }

    pub(super) async fn link(
        &self,
        call: &Call<'_>,
        key: &(String, String),
    ) -> Result<Link, UpstreamError> {
        if let Some(link) = self.links().get(key) {
            return Ok(link.clone());
        }
        let now = self.clock.now();
        if let Ok(Some(s)) = self.sessions.get(call.sub, call.target, now).await {
            let link = link_of(s);
            self.links_mut().insert(key.clone(), link.clone());
            return Ok(link);
        }
        self.establish(call, key).await
    }

    /// Finds the upstream's era and, for 2025 servers, opens a session.
    pub(super) async fn establish(
        &self,
        call: &Call<'_>,
        key: &(String, String),
    ) -> Result<Link, UpstreamError> {
        let discovered = self
            .send(call, &Link::Modern, "server/discover", Some(&Params::new()))
            .await
            .and_then(|m| m.map(Answer::into_value).transpose());
        let link = match discovered {
            Ok(Some(m)) if supports_modern(&m) => Link::Modern,
            Err(
                e @ (UpstreamError::Unauthorized { .. } | UpstreamError::InsufficientScope { .. }),
            ) => return Err(e),
            _ => self.initialize(call).await?,
        };
        self.remember(key, &link).await;
        Ok(link)
    }

    /// The 2025 session kept under `key` (see [`legacy_session_key`]), or
    /// a new one.
    pub(super) async fn legacy_link(
        &self,
        call: &Call<'_>,
        key: &(String, String),
    ) -> Result<Link, UpstreamError> {
        let now = self.clock.now();
        let refused_until = self.no_legacy.lock().ok().and_then(|m| m.get(key).copied());
        if refused_until.is_some_and(|until| until > now) {
            return Err(UpstreamError::Protocol(
                "the upstream opens no 2025 session".into(),
            ));
        }
        if let Some(link @ Link::Legacy { .. }) = self.links().get(key) {
            return Ok(link.clone());
        }
        if let Ok(Some(s)) = self.sessions.get(&key.0, &key.1, now).await {
            if s.protocol_version != MODERN {
                let link = link_of(s);
                self.links_mut().insert(key.clone(), link.clone());
                return Ok(link);
            }
        }
        let opened = self.open_legacy(call, key).await;
        match &opened {
            Err(e) if refuses_2025(e) => {
                // Not asked again by this instance for a while.
                if let Ok(mut m) = self.no_legacy.lock() {
                    if m.len() >= 4096 {
                        m.clear();
                    }
                    m.insert(key.clone(), now + NO_LEGACY_SECONDS);
                }
            }
            _ => {}
        }
        opened
    }

    /// Opens a 2025 session (whatever else the upstream speaks) and keeps
    /// it under `key`.
    pub(super) async fn open_legacy(
        &self,
        call: &Call<'_>,
        key: &(String, String),
    ) -> Result<Link, UpstreamError> {
        let link = self.initialize(call).await?;
        self.remember(key, &link).await;
        Ok(link)
    }

    /// Keeps `link` for `key` here and in the session store.
    pub(super) async fn remember(&self, key: &(String, String), link: &Link) {
        let (version, session) = match link {
            Link::Modern => (MODERN.to_owned(), String::new()),
            Link::Legacy { version, session } => {
                (version.clone(), session.clone().unwrap_or_default())
            }
        };
        let record = UpstreamSession {
            sub: key.0.clone(),
            target: key.1.clone(),
            session_id: session,
            protocol_version: version,
            expires_at: self.clock.now() + SESSION_TTL_SECONDS,
        };
        if let Err(e) = self.sessions.put(&record).await {
            tracing::warn!(error = %e, "could not store the upstream session; continuing");
        }
        self.links_mut().insert(key.clone(), link.clone());
    }

    pub(super) async fn initialize(&self, call: &Call<'_>) -> Result<Link, UpstreamError> {
        let params = json!({
            "protocolVersion": LATEST_2025,
            "capabilities": self.capabilities,
            "clientInfo": {"name": "mcp-oauth-gateway", "version": env!("CARGO_PKG_VERSION")},
        });
        let id = self.id();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params})
            .to_string();
        let res = self.post(call, None, Some(LATEST_2025), None, body).await?;
        let session = res
            .headers()
            .get(crate::wire::headers::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = read_response(res, id).await?;
        if let Some(err) = message.get("error") {
            return Err(UpstreamError::Protocol(format!("initialize failed: {err}")));
        }
        let version = message
            .get("result")
            .and_then(|r| r.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(LATEST_2025)
            .to_owned();
        let legacy = Link::Legacy { version, session };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (v, s) = match &legacy {
            Link::Legacy { version, session } => (version.clone(), session.clone()),
            Link::Modern => (MODERN.to_owned(), None),
        };
        let res = self
            .post(call, s.as_deref(), Some(&v), None, note.to_string())
            .await?;
        drop(res);
        Ok(legacy)
    }
}

/// How long an upstream's refusal to open a 2025 session is taken as its
/// answer by one instance.
pub(super) const NO_LEGACY_SECONDS: i64 = 300;

/// True for an upstream's clear refusal of `initialize` (a 2026-07-28-only
/// server): a client error other than those that pass (401, 403, 408,
/// 409, 429), or a JSON-RPC error answering it.
pub(super) fn refuses_2025(e: &UpstreamError) -> bool {
    let clear =
        |status: u16| (400..500).contains(&status) && ![401, 403, 408, 409, 429].contains(&status);
    match e {
        UpstreamError::Status(s) => clear(*s),
        UpstreamError::Rpc { status, .. } => clear(*status),
        UpstreamError::Protocol(why) => why.starts_with("initialize failed"),
        _ => false,
    }
}

/// The link a stored session describes.
pub(super) fn link_of(s: UpstreamSession) -> Link {
    if s.protocol_version == MODERN {
        Link::Modern
    } else {
        Link::Legacy {
            version: s.protocol_version,
            session: Some(s.session_id).filter(|s| !s.is_empty()),
        }
    }
}

/// The session-store key of a user's 2025 session with an upstream that
/// also speaks 2026-07-28, kept beside the 2026 one for 2025 clients that
/// answer the upstream's requests (target names never hold `#`).
pub fn legacy_session_key(target: &str) -> String {
    format!("{target}#2025")
}

/// True when a `server/discover` answer lists 2026-07-28.
pub(super) fn supports_modern(message: &Value) -> bool {
    message
        .get("result")
        .and_then(|r| r.get("supportedVersions"))
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|x| x == MODERN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clear_refusal_of_initialize_is_remembered() {
        let rpc = |status| UpstreamError::Rpc {
            status,
            error: json!({"code": -32601, "message": "no"}),
        };
        assert!(refuses_2025(&UpstreamError::Status(405)));
        assert!(refuses_2025(&rpc(400)));
        assert!(refuses_2025(&UpstreamError::Protocol(
            "initialize failed: {}".into()
        )));
        for passing in [
            UpstreamError::Status(429),
            UpstreamError::Status(409),
            UpstreamError::Status(503),
            rpc(408),
            UpstreamError::Transport("reset".into()),
            UpstreamError::Protocol("the event stream ended without a response".into()),
        ] {
            assert!(!refuses_2025(&passing), "{passing:?}");
        }
    }
}
