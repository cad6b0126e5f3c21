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

mod sign;
pub(crate) mod sse;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::RwLock;

use crate::adapters::discovery::{auth_param, bearer_challenge};
use crate::domain::ApiKeyPlacement;
use crate::domain::UpstreamSession;
use crate::ports::{Clock, SessionStore};
use crate::wire::envelope::Params;
use crate::wire::{header_value, meta, LATEST_2025, MODERN};
use reqwest::header::HeaderValue;

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
    pub relay: Option<&'a std::sync::Mutex<Vec<Value>>>,
    /// The log level to ask a 2026-07-28 upstream for when the request
    /// names none (a 2025 client's calls: its era sets levels per session).
    pub log_level: Option<&'a str>,
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
        }
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

    /// SigV4 headers for a POST of `body` to `url` as `service` in
    /// `region`, with the function's role (for the interceptors' Lambda
    /// invocations).
    pub(crate) async fn sign(
        &self,
        service: &str,
        region: &str,
        url: &url::Url,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, UpstreamError> {
        let iam = crate::domain::AwsIamSettings {
            service: service.to_owned(),
            region: region.to_owned(),
        };
        sign::sigv4(self.aws_credentials.as_ref(), &iam, url, headers, body).await
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a request and returns the upstream's JSON-RPC response message
    /// (with `result` or `error`).
    pub async fn request(&self, call: &Call<'_>) -> Result<Value, UpstreamError> {
        let key = (call.sub.to_owned(), call.target.to_owned());
        let mut link = self.link(call, &key).await?;
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
                    link = self.establish(call, &key).await?;
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

    async fn forget(&self, key: &(String, String)) {
        self.links.write().await.remove(key);
        if let Err(e) = self.sessions.delete(&key.0, &key.1).await {
            tracing::warn!(error = %e, "could not forget an upstream session");
        }
    }

    async fn link(&self, call: &Call<'_>, key: &(String, String)) -> Result<Link, UpstreamError> {
        if let Some(link) = self.links.read().await.get(key) {
            return Ok(link.clone());
        }
        let now = self.clock.now();
        if let Ok(Some(s)) = self.sessions.get(call.sub, call.target, now).await {
            let link = if s.protocol_version == MODERN {
                Link::Modern
            } else {
                Link::Legacy {
                    version: s.protocol_version,
                    session: Some(s.session_id).filter(|s| !s.is_empty()),
                }
            };
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
        let (version, session) = match &link {
            Link::Modern => (MODERN.to_owned(), String::new()),
            Link::Legacy { version, session } => {
                (version.clone(), session.clone().unwrap_or_default())
            }
        };
        let record = UpstreamSession {
            sub: call.sub.to_owned(),
            target: call.target.to_owned(),
            session_id: session,
            protocol_version: version,
            expires_at: self.clock.now() + SESSION_TTL_SECONDS,
        };
        if let Err(e) = self.sessions.put(&record).await {
            tracing::warn!(error = %e, "could not store the upstream session; continuing");
        }
        self.links.write().await.insert(key.clone(), link.clone());
        Ok(link)
    }

    async fn initialize(&self, call: &Call<'_>) -> Result<Link, UpstreamError> {
        let params = json!({
            "protocolVersion": LATEST_2025,
            "capabilities": {},
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
                Some(OutParams::Modern(params, call.log_level))
            } else {
                params.map(OutParams::AsGiven)
            },
        };
        let body = serde_json::to_string(&out)
            .map_err(|e| UpstreamError::Protocol(format!("request not serializable: {e}")))?;
        let res = self
            .post(call, session, Some(version), modern, body)
            .await?;
        match call.relay {
            None => read_response(res, id).await.map(Some),
            Some(relay) => {
                let mut notes = vec![];
                let message = sse::read_response_relaying(res, id, Some(&mut notes)).await;
                if !notes.is_empty() {
                    if let Ok(mut r) = relay.lock() {
                        let room = sse::MAX_RELAYED.saturating_sub(r.len());
                        r.extend(notes.into_iter().take(room));
                    }
                }
                message.map(Some)
            }
        }
    }

    /// POSTs `body`; for a DPoP token, once more with the nonce the
    /// upstream asks for (RFC 9449 §9).
    async fn post(
        &self,
        call: &Call<'_>,
        session: Option<&str>,
        version: Option<&str>,
        modern: Option<(&str, Option<String>)>,
        body: String,
    ) -> Result<reqwest::Response, UpstreamError> {
        let Some(key) = call.dpop else {
            return self
                .post_once(call, session, version, &modern, body.into(), None)
                .await;
        };
        let body = bytes::Bytes::from(body);
        let nonce = self.dpop_nonce(call.url);
        let res = self
            .post_once(
                call,
                session,
                version,
                &modern,
                body.clone().into(),
                Some((key, nonce.as_deref())),
            )
            .await;
        let asked = match &res {
            Err(UpstreamError::DpopNonce(n)) => Some(n.clone()),
            _ => None,
        };
        let res = match asked {
            Some(n) if nonce.as_deref() != Some(&n) => {
                self.set_dpop_nonce(call.url, &n);
                self.post_once(
                    call,
                    session,
                    version,
                    &modern,
                    body.into(),
                    Some((key, Some(&n))),
                )
                .await
            }
            _ => res,
        };
        match res {
            // Asked again for a nonce just sent: the token is refused.
            Err(UpstreamError::DpopNonce(_)) => Err(UpstreamError::Unauthorized {
                resource_metadata: None,
                scope: None,
            }),
            other => other,
        }
    }

    fn dpop_nonce(&self, url: &str) -> Option<String> {
        self.dpop_nonces.lock().ok()?.get(url).cloned()
    }

    fn set_dpop_nonce(&self, url: &str, nonce: &str) {
        if let Ok(mut nonces) = self.dpop_nonces.lock() {
            // Bounded: one entry per DPoP upstream in practice.
            if nonces.len() >= 1024 {
                nonces.clear();
            }
            nonces.insert(url.to_owned(), nonce.to_owned());
        }
    }

    async fn post_once(
        &self,
        call: &Call<'_>,
        session: Option<&str>,
        version: Option<&str>,
        modern: &Option<(&str, Option<String>)>,
        body: reqwest::Body,
        dpop: Option<(&crate::crypto::dpop::DpopKey, Option<&str>)>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = match call.api_key {
            Some((k, key)) if k.placement == ApiKeyPlacement::Query => {
                let mut url = url::Url::parse(call.url)
                    .map_err(|e| UpstreamError::Protocol(format!("the MCP URL: {e}")))?;
                url.query_pairs_mut()
                    .append_pair(&k.name, key.expose_secret());
                url
            }
            _ => url::Url::parse(call.url)
                .map_err(|e| UpstreamError::Protocol(format!("the MCP URL: {e}")))?,
        };
        let mut headers: Vec<(&str, String)> = vec![
            ("accept", "application/json, text/event-stream".into()),
            ("content-type", "application/json".into()),
        ];
        if let Some(v) = version {
            headers.push(("mcp-protocol-version", v.to_owned()));
        }
        if let Some(s) = session {
            headers.push(("mcp-session-id", s.to_owned()));
        }
        if let Some((method, name)) = modern {
            headers.push(("mcp-method", (*method).to_owned()));
            if let Some(n) = name {
                headers.push(("mcp-name", header_value(n)));
            }
        }
        let mut req = self.http.post(url.clone());
        if let Some(iam) = call.aws_iam {
            let credentials = self.aws_credentials.as_ref();
            for (k, v) in sign::sigv4(
                credentials,
                iam,
                &url,
                &headers,
                body.as_bytes().unwrap_or_default(),
            )
            .await?
            {
                let mut value = HeaderValue::from_str(&v).map_err(|_| {
                    UpstreamError::Protocol("a SigV4 header is not a header value".into())
                })?;
                value.set_sensitive(true);
                req = req.header(k, value);
            }
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some((k, key)) = call
            .api_key
            .filter(|(k, _)| k.placement == ApiKeyPlacement::Header)
        {
            let mut value = HeaderValue::from_str(&format!("{}{}", k.prefix, key.expose_secret()))
                .map_err(|_| {
                    UpstreamError::Protocol("the API key is not a valid header value".into())
                })?;
            value.set_sensitive(true);
            req = req.header(k.name.as_str(), value);
        }
        match (call.token, dpop) {
            (Some(token), Some((key, nonce))) => {
                let now = self.clock.now();
                let proof = key
                    .proof("POST", call.url, Some(token), nonce, now)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                let mut value = HeaderValue::from_str(&format!("DPoP {}", token.expose_secret()))
                    .map_err(|_| {
                    UpstreamError::Protocol("the access token is not a header value".into())
                })?;
                value.set_sensitive(true);
                req = req
                    .header(reqwest::header::AUTHORIZATION, value)
                    .header("dpop", proof);
            }
            (Some(token), None) => req = req.bearer_auth(token.expose_secret()),
            (None, _) => {}
        }
        let req = req.body(body);
        let res = req.send().await.map_err(transport)?;
        let status = res.status().as_u16();
        if dpop.is_some() {
            if let Some(n) = res
                .headers()
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
                .filter(|n| crate::adapters::oauth::is_dpop_nonce(n))
            {
                if status == 401 && dpop_nonce_challenge(res.headers()) {
                    return Err(UpstreamError::DpopNonce(n.to_owned()));
                }
                // A nonce handed out on the way: the next proof carries it.
                self.set_dpop_nonce(call.url, n);
            }
        }
        match status {
            200..=299 => Ok(res),
            401 => {
                let challenge = bearer_challenge(res.headers());
                Err(UpstreamError::Unauthorized {
                    resource_metadata: challenge
                        .as_deref()
                        .and_then(|c| auth_param(c, "resource_metadata")),
                    scope: challenge.as_deref().and_then(|c| auth_param(c, "scope")),
                })
            }
            403 => {
                let challenge = bearer_challenge(res.headers())
                    .filter(|v| v.to_ascii_lowercase().contains("insufficient_scope"));
                match challenge {
                    Some(c) => Err(UpstreamError::InsufficientScope {
                        scope: auth_param(&c, "scope"),
                    }),
                    None => Err(UpstreamError::Status(403)),
                }
            }
            // A client error that is a JSON-RPC error answers the call; a
            // server error stays an outage (retryable) whatever its body.
            other @ 400..=499 => Err(match rpc_error(res).await {
                Some(error) => UpstreamError::Rpc {
                    status: other,
                    error,
                },
                None => UpstreamError::Status(other),
            }),
            other => Err(UpstreamError::Status(other)),
        }
    }
}

/// Largest error body read for a JSON-RPC error.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The JSON-RPC `error` object of an error response, if its body is a
/// JSON-RPC error message (an object with an integer `code` and a string
/// `message`); anything else (HTML pages, other JSON) is not.
async fn rpc_error(mut res: reqwest::Response) -> Option<Value> {
    let json = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return None;
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    let mut message: Value = serde_json::from_slice(&body).ok()?;
    let error = message.get_mut("error")?.take();
    let well_formed = error.get("code").is_some_and(Value::is_i64)
        && error.get("message").is_some_and(Value::is_string);
    well_formed.then_some(error)
}

/// A transport failure, without the request's URL (which may carry an API
/// key as a query parameter).
pub(crate) fn transport(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Transport(crate::error::chain(&e.without_url()))
}

/// True when a 401's challenge is DPoP's `use_dpop_nonce` (RFC 9449 §9).
fn dpop_nonce_challenge(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.trim_start()
                .get(..4)
                .is_some_and(|s| s.eq_ignore_ascii_case("dpop"))
                && auth_param(v, "error").as_deref() == Some("use_dpop_nonce")
        })
}

/// True when a `server/discover` answer lists 2026-07-28.
fn supports_modern(message: &Value) -> bool {
    message
        .get("result")
        .and_then(|r| r.get("supportedVersions"))
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|x| x == MODERN))
}

/// The `Mcp-Name` of a 2026-07-28 request: the tool, resource or prompt it names.
pub fn mcp_name(method: &str, params: Option<&Params>) -> Option<String> {
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params?.str(field)
}

/// Reads the JSON-RPC response with `id` from a JSON or SSE body.
/// A JSON-RPC request as sent upstream, serialized straight from borrowed
/// parts (the caller's params are not copied).
#[derive(serde::Serialize)]
struct OutRequest<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<OutParams<'a>>,
}

/// Params as sent: as given (2025 eras), or for a stateless 2026 upstream
/// with the per-request protocol fields merged into `_meta`.
enum OutParams<'a> {
    AsGiven(&'a Params),
    /// The params, and the log level to add when their `_meta` has none.
    Modern(Option<&'a Params>, Option<&'a str>),
}

/// The per-request `_meta` fields a 2026-07-28 server expects.
const MODERN_META_KEYS: [&str; 3] = [
    meta::PROTOCOL_VERSION,
    meta::CLIENT_CAPABILITIES,
    meta::CLIENT_INFO,
];

impl serde::Serialize for OutParams<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (given, log_level) = match self {
            OutParams::AsGiven(p) => return p.serialize(s),
            OutParams::Modern(p, l) => (*p, *l),
        };
        let mut map = s.serialize_map(None)?;
        for (k, v) in given.into_iter().flat_map(Params::iter) {
            if k != "_meta" {
                map.serialize_entry(k, v)?;
            }
        }
        let meta = given.and_then(Params::meta);
        map.serialize_entry("_meta", &ModernMeta(meta, log_level))?;
        map.end()
    }
}

/// A request's `_meta` with the 2026 protocol fields set (and a log level
/// when it names none and one is given).
struct ModernMeta<'a>(Option<&'a serde_json::Map<String, Value>>, Option<&'a str>);

impl serde::Serialize for ModernMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.into_iter().flatten() {
            if !MODERN_META_KEYS.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(level) = self.1 {
            if !self.0.is_some_and(|m| m.contains_key(meta::LOG_LEVEL)) {
                map.serialize_entry(meta::LOG_LEVEL, level)?;
            }
        }
        map.serialize_entry(MODERN_META_KEYS[0], MODERN)?;
        map.serialize_entry(MODERN_META_KEYS[1], &serde_json::Map::new())?;
        map.serialize_entry(
            MODERN_META_KEYS[2],
            &ClientInfo {
                name: "mcp-oauth-gateway",
                version: env!("CARGO_PKG_VERSION"),
            },
        )?;
        map.end()
    }
}

#[derive(serde::Serialize)]
struct ClientInfo {
    name: &'static str,
    version: &'static str,
}

pub(crate) use sse::read_response;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: Value) -> Params {
        Params::from_value(&v).unwrap()
    }

    fn sent(method: &str, params: Option<&Value>, modern: bool) -> Value {
        let params = params.map(|v| p(v.clone()));
        let params = params.as_ref();
        let out = OutRequest {
            jsonrpc: "2.0",
            id: 7,
            method,
            params: if modern {
                Some(OutParams::Modern(params, None))
            } else {
                params.map(OutParams::AsGiven)
            },
        };
        serde_json::from_str(&serde_json::to_string(&out).unwrap()).unwrap()
    }

    #[test]
    fn a_default_log_level_is_added_only_where_the_request_names_none() {
        let out = |params: Option<Value>| -> Value {
            let params = params.map(p);
            let o = OutRequest {
                jsonrpc: "2.0",
                id: 1,
                method: "tools/call",
                params: Some(OutParams::Modern(params.as_ref(), Some("info"))),
            };
            serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap()
        };
        let plain = out(Some(json!({"name": "t"})));
        assert_eq!(plain["params"]["_meta"][meta::LOG_LEVEL], "info");
        let own = out(Some(
            json!({"name": "t", "_meta": {(meta::LOG_LEVEL): "debug", "progressToken": 3}}),
        ));
        assert_eq!(own["params"]["_meta"][meta::LOG_LEVEL], "debug");
        assert_eq!(own["params"]["_meta"]["progressToken"], 3);
        assert!(
            sent("tools/call", Some(&json!({"name": "t"})), true)["params"]["_meta"]
                .get(meta::LOG_LEVEL)
                .is_none()
        );
    }

    #[test]
    fn requests_carry_the_2026_meta_fields_only_for_stateless_upstreams() {
        let info = json!({"name": "mcp-oauth-gateway", "version": env!("CARGO_PKG_VERSION")});
        let params = json!({"name": "t", "arguments": {"a": 1},
            "_meta": {"progressToken": 5, "io.modelcontextprotocol/protocolVersion": "old"}});
        assert_eq!(
            sent("tools/call", Some(&params), true),
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "t", "arguments": {"a": 1},
                "_meta": {"progressToken": 5,
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": info}}})
        );
        assert_eq!(
            sent("ping", None, true)["params"],
            json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": info}})
        );
        assert_eq!(sent("tools/call", Some(&params), false)["params"], params);
        assert_eq!(
            sent("ping", None, false),
            json!({"jsonrpc": "2.0", "id": 7, "method": "ping"})
        );
    }

    #[test]
    fn names_for_headers() {
        assert_eq!(
            mcp_name("tools/call", Some(&p(json!({"name": "t"})))).as_deref(),
            Some("t")
        );
        assert_eq!(
            mcp_name("resources/read", Some(&p(json!({"uri": "file:///x"})))).as_deref(),
            Some("file:///x")
        );
        assert_eq!(mcp_name("tools/list", None), None);
        assert_eq!(mcp_name("tools/call", Some(&p(json!({"name": 5})))), None);
    }
}
