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

mod answer;
mod outgoing;
mod post;
mod relay;
mod sessions;
mod sign;
pub(crate) mod sse;
mod standalone;
mod transport;
pub use sessions::legacy_session_key;
pub use standalone::FoundSession;
pub(crate) use transport::Reply;

pub use answer::{Answer, AsIs, Text};
pub use relay::Relay;

pub use outgoing::mcp_name;
use outgoing::{OutParams, OutRequest};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{json, Value};
use std::sync::RwLock;

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
    /// reqwest's client: the audit trail's signed requests, and MCP
    /// requests where a proxy is configured.
    http: reqwest::Client,
    /// How MCP requests go (see [`transport`]).
    transport: transport::Transport,
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
    /// Target URLs as parsed, by their text (see [`UpstreamClient::parsed_url`]).
    parsed_urls: RwLock<HashMap<String, (url::Url, http::Uri)>>,
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
    /// The links kept in memory, to read. A plain lock, held for a map
    /// lookup and never across an await: every call reads it, and an
    /// async lock's release takes a mutex of its own.
    fn links(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Link>> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The links kept in memory, to change (see [`Self::links`]).
    fn links_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Link>> {
        self.links.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A client over the gateway's pooled HTTP client.
    pub fn new(
        http: reqwest::Client,
        sessions: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        UpstreamClient {
            http,
            transport: transport::Transport::from_lookup(|k| std::env::var(k).ok()),
            sessions,
            clock,
            links: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            aws_credentials: None,
            dpop_nonces: Default::default(),
            capabilities: json!({}),
            stream_timeout: std::time::Duration::from_secs(840),
            no_legacy: Default::default(),
            parsed_urls: Default::default(),
        }
    }

    /// Sends MCP requests through reqwest, as where a proxy is configured.
    #[cfg(test)]
    pub(crate) fn through_reqwest(mut self) -> Self {
        self.transport = transport::Transport::Reqwest;
        self
    }

    /// Sends MCP requests through hyper's client, whatever the environment.
    #[cfg(test)]
    pub(crate) fn direct(mut self) -> Self {
        self.transport = transport::Transport::Direct(Box::default());
        self
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
    pub async fn request(&self, call: &Call<'_>) -> Result<Answer, UpstreamError> {
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
                    return Ok(json!({"jsonrpc": "2.0", "error": error}).into())
                }
                other => return other.map(|m| m.unwrap_or(Answer::Tree(Value::Null))),
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

    /// Sends one request over `link`. `Ok(None)` only for notifications.
    async fn send(
        &self,
        call: &Call<'_>,
        link: &Link,
        method: &str,
        params: Option<&Params>,
    ) -> Result<Option<Answer>, UpstreamError> {
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
        // Sized for the params as the client sent them, plus the envelope
        // and the gateway's `_meta`: written without growing.
        let size = params.map_or(0, |p| {
            p.iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
        });
        let mut body = Vec::with_capacity(size + 256);
        serde_json::to_writer(&mut body, &out)
            .map_err(|e| UpstreamError::Protocol(format!("request not serializable: {e}")))?;
        let body = String::from_utf8(body)
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

pub(crate) use sse::read_response;

#[cfg(test)]
mod answer_tests {
    use super::*;

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
