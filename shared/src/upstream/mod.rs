//! Streamable HTTP client toward upstream MCP servers, for every era.
//!
//! - 2026-07-28 servers are stateless: every request carries the version
//!   header, `Mcp-Method` (and `Mcp-Name`), and `_meta` with the protocol
//!   version and client capabilities. The gateway finds them with
//!   `server/discover`.
//! - 2025 servers get `initialize` and `notifications/initialized` once per
//!   (user, target); an `Mcp-Session-Id` they hand out is kept (in the
//!   instance and in the table, so other instances reuse it) and a 404 on it
//!   starts a new session once.
//! - Responses may be JSON or an SSE stream with other messages before the
//!   response; both are read up to a size limit.
//!
//! Credentials, by the target's kind: the user's upstream token (or the
//! target's machine token) as the bearer, an API key in its header or query
//! parameter, or a SigV4 signature (`sign.rs`) with the function's role;
//! never the caller's inbound token.

mod outgoing;
mod post;
mod relay;
mod sign;
pub(crate) mod sse;
mod standalone;
pub use standalone::FoundSession;

pub use relay::Relay;

pub use outgoing::mcp_name;
use outgoing::{OutParams, OutRequest};
pub(crate) use post::transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use crate::domain::UpstreamSession;
use crate::ports::{Clock, SessionStore};
use crate::wire::envelope::Params;
use crate::wire::{LATEST_2025, MODERN};

/// Largest upstream response read.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How long an upstream session is reused.
pub const SESSION_TTL_SECONDS: i64 = 3600;

/// Why an upstream call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// 401: the access token was refused.
    #[error("the upstream refused the access token")]
    Unauthorized {
        /// The `resource_metadata` URL of its Bearer challenge, if it named one.
        resource_metadata: Option<String>,
        /// The `scope` of its Bearer challenge, if it named one.
        scope: Option<String>,
    },
    /// 403 `insufficient_scope`: the token lacks `scope`.
    #[error("the upstream needs more scopes")]
    InsufficientScope {
        /// The scopes the upstream asked for, if it said.
        scope: Option<String>,
    },
    /// Another HTTP error status.
    #[error("the upstream answered HTTP {0}")]
    Status(u16),
    /// A 4xx status carrying a JSON-RPC error (a 2026-07-28 server answers
    /// most errors with 400 or 404): the upstream's own answer, passed on
    /// unchanged when it answers the forwarded call.
    #[error("the upstream answered HTTP {status} with a JSON-RPC error")]
    Rpc {
        /// The HTTP status.
        status: u16,
        /// The JSON-RPC `error` object, as sent.
        error: Value,
    },
    /// Could not connect, or timed out.
    #[error("the upstream could not be reached: {0}")]
    Transport(String),
    /// The response was not a usable MCP message.
    #[error("the upstream's response was invalid: {0}")]
    Protocol(String),
    /// 401 `use_dpop_nonce`: the proof must carry this nonce (handled
    /// inside the client: one retry with it).
    #[error("the upstream asked for a DPoP nonce")]
    DpopNonce(String),
}

impl UpstreamError {
    /// True when retrying later may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, UpstreamError::Transport(_))
            || matches!(self, UpstreamError::Status(s) if *s >= 500)
    }
}

/// How the gateway talks to one upstream for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// 2026-07-28: stateless.
    Modern,
    /// A 2025 era: negotiated version and the session, if any.
    Legacy {
        version: String,
        session: Option<String>,
    },
}

/// The upstream client of one warm instance.
pub struct UpstreamClient {
    http: reqwest::Client,
    sessions: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    links: RwLock<HashMap<(String, String), Link>>,
    next_id: AtomicU64,
    /// The function's own AWS credentials, for targets signed with SigV4.
    aws_credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    /// The last DPoP nonce each upstream (by MCP URL) handed out.
    dpop_nonces: std::sync::Mutex<HashMap<String, String>>,
    /// The client capabilities declared when opening a 2025 session.
    capabilities: Value,
    /// How long an update stream (a standalone GET, a
    /// `subscriptions/listen`) may last, instead of the client's timeout
    /// for ordinary requests.
    stream_timeout: std::time::Duration,
    /// Users and targets whose upstream refused to open a 2025 session
    /// (kept under the `#2025` key), and until when (Unix seconds) that
    /// is taken as its answer.
    no_legacy: std::sync::Mutex<HashMap<(String, String), i64>>,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The user.
    pub sub: &'a str,
    /// The target's name.
    pub target: &'a str,
    /// The target's MCP URL.
    pub url: &'a str,
    /// The user's upstream access token (none for targets without auth).
    pub token: Option<&'a SecretString>,
    /// The key the token is bound to, for a DPoP token: the token goes
    /// with the `DPoP` scheme and a fresh proof (RFC 9449 §7).
    pub dpop: Option<&'a crate::crypto::dpop::DpopKey>,
    /// The target's API key and where it goes, for API key targets.
    pub api_key: Option<(&'a crate::domain::ApiKeySettings, &'a SecretString)>,
    /// SigV4 signing, for AWS IAM targets.
    pub aws_iam: Option<&'a crate::domain::AwsIamSettings>,
    /// JSON-RPC method.
    pub method: &'a str,
    /// JSON-RPC params (members sent as they are, never copied).
    pub params: Option<&'a Params>,
    /// Where the notifications the upstream sends during the call go, to
    /// be relayed to the client (none: dropped).
    pub relay: Option<&'a Relay>,
    /// The log level to ask a 2026-07-28 upstream for when the request
    /// names none (a 2025 client's calls: its era sets levels per session).
    pub log_level: Option<&'a str>,
    /// The client capabilities to declare to a 2026-07-28 upstream (none:
    /// an empty set): the calling client's own, for the calls it made,
    /// so that the upstream asks only for input the client can give.
    pub client_capabilities: Option<&'a serde_json::Map<String, Value>>,
    /// `Mcp-Param-*` headers (name, value) for a 2026-07-28 upstream.
    pub param_headers: &'a [(String, String)],
    /// Sent in a 2025 session even to an upstream that also speaks
    /// 2026-07-28 (subscriptions: their updates come on that session's
    /// stream).
    pub legacy: bool,
    /// Where a 2025 upstream's requests during the call go when the
    /// client can answer them on the call's stream (none: refused).
    pub client_requests: Option<&'a dyn ClientRequests>,
}

/// The 2025 upstream session a request during a call came on: where the
/// client's answer to it must go.
#[derive(Debug, Clone, Copy)]
pub struct AskedOn<'a> {
    /// The target's name.
    pub target: &'a str,
    /// The upstream's `Mcp-Session-Id`.
    pub session: &'a str,
    /// The session's protocol version.
    pub version: &'a str,
}

/// Puts a 2025 upstream's requests during a call (sampling, elicitation,
/// roots) to the client.
#[async_trait::async_trait]
pub trait ClientRequests: Send + Sync + std::fmt::Debug {
    /// `request` as the client is to see it, under an id of the
    /// gateway's that says where its answer goes; `None` when the client
    /// cannot take it (the upstream then gets an error).
    async fn outgoing(&self, on: AskedOn<'_>, request: &Value) -> Option<Value>;
}

impl UpstreamClient {
    /// A client over the gateway's pooled HTTP client.
    pub fn new(
        http: reqwest::Client,
        sessions: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        UpstreamClient {
            http,
            sessions,
            clock,
            links: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            aws_credentials: None,
            dpop_nonces: Default::default(),
            capabilities: json!({}),
            stream_timeout: std::time::Duration::from_secs(840),
            no_legacy: Default::default(),
        }
    }

    /// Lets update streams last up to `limit`.
    pub fn with_stream_timeout(mut self, limit: std::time::Duration) -> Self {
        self.stream_timeout = limit;
        self
    }

    /// Declares to 2025 upstreams, when opening their sessions, that the
    /// gateway takes sampling, elicitation (form and URL) and roots
    /// requests: for a gateway whose answers stream, which puts them to
    /// clients that declared them (others get an error).
    pub fn answering_requests(mut self) -> Self {
        self.capabilities = json!({
            "sampling": {},
            "elicitation": {"form": {}, "url": {}},
            "roots": {},
        });
        self
    }

    /// Signs requests to AWS IAM targets with these credentials (the
    /// function's role, from the SDK configuration).
    pub fn with_aws_credentials(
        mut self,
        credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    ) -> Self {
        self.aws_credentials = credentials;
        self
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request and returns the upstream's JSON-RPC response message
    /// (with `result` or `error`).
    pub async fn request(&self, call: &Call<'_>) -> Result<Value, UpstreamError> {
        let mut key = (call.sub.to_owned(), call.target.to_owned());
        let mut link = self.link(call, &key).await?;
        let mut legacy_only = false;
        if link == Link::Modern && (call.client_requests.is_some() || call.legacy) {
            // A 2025 client that can answer an upstream's requests: with
            // an upstream of both eras, a 2025 session of its own, where
            // the upstream can ask during the call (a 2026-07-28 exchange
            // cannot). An upstream without one stays 2026-07-28.
            let alt = (call.sub.to_owned(), legacy_session_key(call.target));
            if let Ok(l) = self.legacy_link(call, &alt).await {
                (key, link, legacy_only) = (alt, l, true);
            }
        }
        for attempt in 0..2 {
            match self.send(call, &link, call.method, call.params).await {
                Err(UpstreamError::Status(404) | UpstreamError::Rpc { status: 404, .. })
                    if attempt == 0
                        && matches!(
                            &link,
                            Link::Legacy {
                                session: Some(_),
                                ..
                            }
                        ) =>
                {
                    // The upstream forgot the session: start a new one, once.
                    self.forget(&key).await;
                    link = if legacy_only {
                        self.open_legacy(call, &key).await?
                    } else {
                        self.establish(call, &key).await?
                    };
                }
                // The call's own JSON-RPC error, whatever the HTTP status.
                Err(UpstreamError::Rpc { error, .. }) => {
                    return Ok(json!({"jsonrpc": "2.0", "error": error}))
                }
                other => return other.map(|m| m.unwrap_or(Value::Null)),
            }
        }
        Err(UpstreamError::Status(404))
    }

    /// Sends the client's answer (a JSON-RPC response) to a request the
    /// upstream made during a call, on the session it came on.
    pub async fn answer(
        &self,
        call: &Call<'_>,
        on: AskedOn<'_>,
        body: String,
    ) -> Result<(), UpstreamError> {
        self.post(call, Some(on.session), Some(on.version), None, body)
            .await
            .map(drop)
    }

    async fn forget(&self, key: &(String, String)) {
        self.links.write().await.remove(key);
        if let Err(e) = self.sessions.delete(&key.0, &key.1).await {
            tracing::warn!(error = %e, "could not forget an upstream session");
        }
    }

    /// Forgets the session `session` kept under `key`, if it is still the
    /// one kept there (another instance may have replaced it already).
    pub(super) async fn forget_session(&self, key: &(String, String), session: &str) {
        {
            let mut links = self.links.write().await;
            if matches!(links.get(key), Some(Link::Legacy { session: Some(s), .. }) if s == session)
            {
                links.remove(key);
            }
        }
        let now = self.clock.now();
        if let Ok(Some(kept)) = self.sessions.get(&key.0, &key.1, now).await {
            if kept.session_id == session {
                if let Err(e) = self.sessions.delete(&key.0, &key.1).await {
                    tracing::warn!(error = %e, "could not forget an upstream session");
                }
            }
        }
    }

    async fn link(&self, call: &Call<'_>, key: &(String, String)) -> Result<Link, UpstreamError> {
        if let Some(link) = self.links.read().await.get(key) {
            return Ok(link.clone());
        }
        let now = self.clock.now();
        if let Ok(Some(s)) = self.sessions.get(call.sub, call.target, now).await {
            let link = link_of(s);
            self.links.write().await.insert(key.clone(), link.clone());
            return Ok(link);
        }
        self.establish(call, key).await
    }

    /// Finds the upstream's era and, for 2025 servers, opens a session.
    async fn establish(
        &self,
        call: &Call<'_>,
        key: &(String, String),
    ) -> Result<Link, UpstreamError> {
        let discovered = self
            .send(call, &Link::Modern, "server/discover", Some(&Params::new()))
            .await;
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
    async fn legacy_link(
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
        if let Some(link @ Link::Legacy { .. }) = self.links.read().await.get(key) {
            return Ok(link.clone());
        }
        if let Ok(Some(s)) = self.sessions.get(&key.0, &key.1, now).await {
            if s.protocol_version != MODERN {
                let link = link_of(s);
                self.links.write().await.insert(key.clone(), link.clone());
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
    async fn open_legacy(
        &self,
        call: &Call<'_>,
        key: &(String, String),
    ) -> Result<Link, UpstreamError> {
        let link = self.initialize(call).await?;
        self.remember(key, &link).await;
        Ok(link)
    }

    /// Keeps `link` for `key` here and in the session store.
    async fn remember(&self, key: &(String, String), link: &Link) {
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
        self.links.write().await.insert(key.clone(), link.clone());
    }

    async fn initialize(&self, call: &Call<'_>) -> Result<Link, UpstreamError> {
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
            .get("mcp-session-id")
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

    /// Sends one request over `link`. `Ok(None)` only for notifications.
    async fn send(
        &self,
        call: &Call<'_>,
        link: &Link,
        method: &str,
        params: Option<&Params>,
    ) -> Result<Option<Value>, UpstreamError> {
        let id = self.id();
        let (session, version, modern) = match link {
            Link::Modern => (None, MODERN, Some((method, mcp_name(method, params)))),
            Link::Legacy { version, session } => (session.as_deref(), version.as_str(), None),
        };
        let out = OutRequest {
            jsonrpc: "2.0",
            id,
            method,
            params: if modern.is_some() {
                Some(OutParams::Modern(
                    params,
                    call.log_level,
                    call.client_capabilities,
                ))
            } else {
                params.map(OutParams::AsGiven)
            },
        };
        let body = serde_json::to_string(&out)
            .map_err(|e| UpstreamError::Protocol(format!("request not serializable: {e}")))?;
        let res = self
            .post(call, session, Some(version), modern, body)
            .await?;
        // A 2025 server's request on the call's stream (sampling,
        // elicitation, roots) goes to the client on the call's own stream
        // when the answer streams and the client declared the capability;
        // the client answers with a POST of its own, which any instance
        // passes on (see `gateway::client_requests`). Otherwise it is
        // answered at once with "method not found": the client could only
        // answer on another HTTP request, which an answer written once
        // cannot wait for, and without an answer the upstream would wait
        // until its own timeout.
        // At most MAX_ANSWERED per call: an upstream sending more gets no
        // more POSTs from the gateway, nor its client more requests.
        let answered = std::sync::atomic::AtomicUsize::new(0);
        let answered = &answered;
        let answer = |request: Value| async move {
            let Some(session) = session else {
                tracing::warn!(target = %call.target, "an upstream without a session sent a request during a call; it cannot be answered");
                return;
            };
            if answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_ANSWERED {
                return;
            }
            let method = request
                .get("method")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned();
            if let (Some(asks), Some(relay), true) =
                (call.client_requests, call.relay, method != "ping")
            {
                let on = AskedOn {
                    target: call.target,
                    session,
                    version,
                };
                if let Some(out) = asks.outgoing(on, &request).await {
                    if relay.pass_on(out) {
                        tracing::info!(target = %call.target, method = %crate::telemetry::clean(&method, 64), "put an upstream's request during a call to the client");
                        return;
                    }
                }
            }
            let body = unsupported_request_answer(&request);
            match self
                .post(call, Some(session), Some(version), None, body)
                .await
            {
                Ok(_) => {
                    tracing::info!(target = %call.target, method = %crate::telemetry::clean(&method, 64), "answered an upstream's request during a call: not relayed")
                }
                Err(e) => {
                    tracing::warn!(target = %call.target, error = %e, "could not answer an upstream's request")
                }
            }
        };
        sse::read_response_relaying(res, id, call.relay, answer)
            .await
            .map(Some)
    }
}

/// How long an upstream's refusal to open a 2025 session is taken as its
/// answer by one instance.
const NO_LEGACY_SECONDS: i64 = 300;

/// True for an upstream's clear refusal of `initialize` (a 2026-07-28-only
/// server): a client error other than those that pass (401, 403, 408,
/// 409, 429), or a JSON-RPC error answering it.
fn refuses_2025(e: &UpstreamError) -> bool {
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
fn link_of(s: UpstreamSession) -> Link {
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

/// The most requests of an upstream answered during one call.
const MAX_ANSWERED: usize = 16;

/// The answer to an upstream's request during a call: `ping` gets its
/// empty result; anything else the JSON-RPC error a client without the
/// capability gives (`-32601`), since the gateway does not relay it.
fn unsupported_request_answer(request: &Value) -> String {
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if method == "ping" {
        return json!({
            "jsonrpc": "2.0",
            "id": request.get("id").cloned().unwrap_or(Value::Null),
            "result": {},
        })
        .to_string();
    }
    json!({
        "jsonrpc": "2.0",
        "id": request.get("id").cloned().unwrap_or(Value::Null),
        "error": {
            "code": crate::wire::codes::METHOD_NOT_FOUND,
            "message": format!(
                "Method not found: the gateway does not relay {} to its client",
                crate::telemetry::clean(method, 64)
            ),
        },
    })
    .to_string()
}

/// True when a `server/discover` answer lists 2026-07-28.
fn supports_modern(message: &Value) -> bool {
    message
        .get("result")
        .and_then(|r| r.get("supportedVersions"))
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|x| x == MODERN))
}

pub(crate) use sse::read_response;

#[cfg(test)]
mod answer_tests {
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

    #[test]
    fn a_ping_is_answered_and_anything_else_refused() {
        let ping: Value = serde_json::from_str(&unsupported_request_answer(
            &json!({"id": 4, "method": "ping"}),
        ))
        .unwrap();
        assert_eq!(ping, json!({"jsonrpc": "2.0", "id": 4, "result": {}}));
        let sampling: Value = serde_json::from_str(&unsupported_request_answer(
            &json!({"id": "s", "method": "sampling/createMessage"}),
        ))
        .unwrap();
        assert_eq!(sampling["id"], "s");
        assert_eq!(sampling["error"]["code"], -32601);
        assert!(sampling["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sampling/createMessage"));
    }
}
