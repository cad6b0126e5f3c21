//! The MCP proxy function's Router: `/mcp` (Streamable HTTP, every
//! protocol era on one endpoint) and Protected Resource Metadata.
//!
//! This is the HTTP edge: who is calling (the validated `sub`), protocol
//! framing and version checks, sealed client sessions for the 2025 eras.
//! What a request does is [`crate::gateway`].
//!
//! Stateless toward clients: the `Mcp-Session-Id` the gateway hands out is
//! a sealed blob (user, version, client capabilities, expiry), so any
//! instance serves the next request and a session cannot be used by another
//! user.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use lambda_http::request::RequestContext;
use serde_json::{json, Value};
use url::Url;

use super::{base_url, json_error, public_url};
use crate::adapters::oidc::{AccessError, AccessPolicy};
use crate::config::InboundAuth;
use crate::crypto::Aad;
use crate::gateway::{Caller, Gateway, Reply};
use crate::wire::message::{self, Incoming, Parsed};
use crate::wire::{codes, decode_header_value, meta, MODERN, SUPPORTED_VERSIONS, VERSIONS_2025};
use crate::AppState;

/// Path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// Largest request body accepted on `/mcp`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Lifetime of a sealed client session.
pub const SESSION_TTL_SECONDS: i64 = 24 * 3600;
/// The version assumed when a 2025 request names none.
const DEFAULT_VERSION: &str = "2025-03-26";

/// The Router of the `mcp-proxy` function.
pub fn router(state: AppState) -> Router {
    routes()
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// The proxy's routes, without fallback or state (see [`super::gateway_router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            MCP_PATH,
            get(method_not_allowed).post(mcp).delete(method_not_allowed),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(resource_metadata),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn method_not_allowed() -> Response {
    let mut res = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this gateway is stateless: it opens no server stream and keeps no session to delete; use POST",
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    res
}

/// RFC 9728 Protected Resource Metadata for `/mcp`.
async fn resource_metadata(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
) -> Response {
    let Some(base) = base_url(&state, context.as_deref()) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the gateway has no public URL configured",
        );
    };
    let mut doc = json!({
        "resource": public_url(&base, MCP_PATH),
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP OAuth Gateway",
    });
    if let Some(issuer) = &state.config.inbound_issuer {
        doc["authorization_servers"] = json!([issuer.as_str().trim_end_matches('/')]);
    }
    if !state.config.inbound_scopes.is_empty() {
        doc["scopes_supported"] = json!(state.config.inbound_scopes);
    }
    let mut res = Json(doc).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    res
}

/// Who is calling, or the HTTP answer that says why not.
async fn authenticate(
    state: &AppState,
    context: Option<&RequestContext>,
    headers: &HeaderMap,
) -> Result<String, Response> {
    match &state.config.inbound_auth {
        InboundAuth::Dev => Ok(headers
            .get("x-gateway-dev-user")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .unwrap_or("dev-user")
            .to_owned()),
        InboundAuth::ApiGateway => {
            let sub = match context {
                Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                    .authorizer
                    .as_ref()
                    .and_then(|a| a.jwt.as_ref())
                    .and_then(|jwt| jwt.claims.get("sub"))
                    .filter(|s| !s.is_empty())
                    .cloned(),
                #[allow(unreachable_patterns)]
                _ => None,
            };
            sub.ok_or_else(|| {
                unauthorized(state, context, None, "a valid bearer token is required")
            })
        }
        InboundAuth::Jwt {
            audiences,
            client_ids,
            required_scopes,
            require_at_jwt,
        } => {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token)
                .filter(|t| !t.is_empty());
            let Some(token) = token else {
                return Err(unauthorized(
                    state,
                    context,
                    None,
                    "a bearer token is required",
                ));
            };
            let Some(provider) = &state.inbound else {
                return Err(json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "no identity provider configured",
                ));
            };
            let policy = AccessPolicy {
                audiences: audiences.clone(),
                client_ids: client_ids.clone(),
                required_scopes: required_scopes.clone(),
                require_at_jwt: *require_at_jwt,
            };
            match provider.validate_access_token(token, &policy).await {
                Ok(claims) => Ok(claims.sub),
                Err(AccessError::Invalid(why)) => {
                    tracing::info!(reason = %why, "inbound token refused");
                    Err(unauthorized(
                        state,
                        context,
                        Some("invalid_token"),
                        "the bearer token is not valid for this gateway",
                    ))
                }
                Err(AccessError::InsufficientScope) => Err(insufficient_scope(state, context)),
                Err(AccessError::Unavailable(why)) => {
                    tracing::error!(reason = %why, "identity provider unavailable");
                    Err(json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the identity provider could not be reached; retry later",
                    ))
                }
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 7235 section 2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn challenge(state: &AppState, context: Option<&RequestContext>, error: Option<&str>) -> String {
    let mut parts = vec![];
    if let Some(e) = error {
        parts.push(format!("error=\"{e}\""));
    }
    if let Some(base) = base_url(state, context) {
        parts.push(format!(
            "resource_metadata=\"{}\"",
            public_url(&base, "/.well-known/oauth-protected-resource/mcp")
        ));
    }
    let scopes: Vec<String> = match &state.config.inbound_auth {
        InboundAuth::Jwt {
            required_scopes, ..
        } if !required_scopes.is_empty() => required_scopes.clone(),
        _ => state.config.inbound_scopes.clone(),
    };
    if !scopes.is_empty() {
        parts.push(format!("scope=\"{}\"", scopes.join(" ")));
    }
    if parts.is_empty() {
        "Bearer".into()
    } else {
        format!("Bearer {}", parts.join(", "))
    }
}

/// 401 with the challenge that tells MCP clients how to log in. `error` is
/// set when a token was presented and refused (RFC 6750 3.1).
fn unauthorized(
    state: &AppState,
    context: Option<&RequestContext>,
    error: Option<&str>,
    message: &str,
) -> Response {
    let mut res = json_error(
        StatusCode::UNAUTHORIZED,
        error.unwrap_or("unauthorized"),
        message,
    );
    if let Ok(v) = HeaderValue::from_str(&challenge(state, context, error)) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

fn insufficient_scope(state: &AppState, context: Option<&RequestContext>) -> Response {
    let mut res = json_error(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "the bearer token lacks a required scope",
    );
    if let Ok(v) = HeaderValue::from_str(&challenge(state, context, Some("insufficient_scope"))) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

fn rpc_error(
    status: StatusCode,
    id: Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": id, "error": error})),
    )
        .into_response()
}

/// A JSON-RPC response, serialized without building a map first.
#[derive(serde::Serialize)]
struct RpcResult {
    jsonrpc: &'static str,
    id: Value,
    result: Value,
}

fn rpc_result(id: Value, result: Value) -> Response {
    Json(RpcResult {
        jsonrpc: "2.0",
        id,
        result,
    })
    .into_response()
}

/// What a sealed client session holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClientSession {
    /// User.
    s: String,
    /// Negotiated version.
    v: String,
    /// URL-mode elicitation declared.
    u: bool,
    /// Expiry (Unix seconds).
    x: i64,
}

fn session_aad() -> Aad {
    Aad::new("client-session", &[])
}

/// Whether a browser `Origin` may call `/mcp`: one listed in
/// `ALLOWED_ORIGINS`; else any (every call needs a bearer token) — except in
/// `dev` mode, where there is no token and only loopback pages may call, so
/// that a web page the developer visits cannot call tools as `dev-user`.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let allowed = &state.config.allowed_origins;
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) if allowed.iter().any(|a| a == origin) => true,
        Some(origin) if state.config.inbound_auth == InboundAuth::Dev => origin
            .ok()
            .and_then(|o| Url::parse(o).ok())
            .is_some_and(|u| is_loopback(&u)),
        Some(_) => allowed.is_empty(),
    }
}

/// In `dev` mode the `Host` must be a loopback name or address: a DNS
/// rebinding page reaches the developer's gateway under its own host name.
fn host_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    if state.config.inbound_auth != InboundAuth::Dev {
        return true;
    }
    match headers.get(header::HOST).map(|v| v.to_str()) {
        None => true,
        Some(Ok(host)) => Url::parse(&format!("http://{host}/")).is_ok_and(|u| is_loopback(&u)),
        Some(Err(_)) => false,
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `Content-Type: application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn supports_url_elicitation(capabilities: Option<&Value>) -> bool {
    capabilities
        .and_then(|c| c.get("elicitation"))
        .and_then(|e| e.get("url"))
        .is_some()
}

async fn mcp(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let context = context.as_deref();
    if !origin_allowed(&state, &headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this Origin may not call the gateway",
        );
    }
    if !host_allowed(&state, &headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a development gateway answers only on a loopback host name",
        );
    }
    let sub = match authenticate(&state, context, &headers).await {
        Ok(sub) => sub,
        Err(res) => return res,
    };
    if !is_json(&headers) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON-RPC messages with Content-Type: application/json",
        );
    }
    let (id, method, params) = match message::parse(&body) {
        Parsed::Request(Incoming { id, method, params }) => (id, method, params),
        Parsed::Accepted => return StatusCode::ACCEPTED.into_response(),
        Parsed::Invalid { id, code, message } => {
            return rpc_error(StatusCode::BAD_REQUEST, id, code, message, None)
        }
    };
    let (method, params) = (method.as_str(), params.as_ref());
    let Some(base) = base_url(&state, context) else {
        tracing::error!("no public base URL: set PUBLIC_BASE_URL");
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            id,
            codes::INTERNAL_ERROR,
            "the gateway has no public URL configured",
            None,
        );
    };

    let header_version = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A version header that is not a 2025 revision takes the 2026 path, where
    // an unknown version gets its own error.
    if header_version
        .as_deref()
        .is_some_and(|v| !VERSIONS_2025.contains(&v))
    {
        return modern(&state, base, sub, id, method, params, &headers).await;
    }
    if method == "initialize" {
        return initialize(&state, &sub, id, params).await;
    }
    if method == "server/discover" {
        return rpc_result(id, discover_result());
    }

    // A 2025-era request: the session (if any) tells the version and capabilities.
    let mut caller = Caller {
        sub: sub.clone(),
        version: header_version
            .clone()
            .unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
        url_elicitation: false,
    };
    if let Some(sealed) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) {
        match open_session(&state, sealed).await {
            Some(s) if s.s == sub && s.x > state.clock.now() => {
                if header_version.is_none() {
                    caller.version = s.v.clone();
                }
                caller.url_elicitation = s.u;
            }
            _ => {
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    id,
                    codes::INVALID_REQUEST,
                    "Session not found: initialize again",
                    None,
                );
            }
        }
    }
    let reply = Gateway::new(&state, base, caller)
        .handle(method, params)
        .await;
    respond(reply, id, false, method)
}

fn respond(reply: Reply, id: Value, modern: bool, method: &str) -> Response {
    match reply {
        Reply::Result(r) if modern => rpc_result(id, modern_result(r, method)),
        Reply::Result(r) => rpc_result(id, r),
        Reply::Error {
            code,
            message,
            data,
        } => {
            let status = if modern && code == codes::METHOD_NOT_FOUND {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            rpc_error(status, id, code, &message, data)
        }
    }
}

/// A result as 2026-07-28 clients expect it: `resultType`, the server's
/// identity in `_meta`, and cache hints on list and read results.
fn modern_result(mut result: Value, method: &str) -> Value {
    let Some(obj) = result.as_object_mut() else {
        return result;
    };
    obj.entry("resultType").or_insert_with(|| json!("complete"));
    if method.ends_with("/list") || method == "resources/read" || method == "server/discover" {
        obj.entry("ttlMs").or_insert_with(|| json!(0));
        obj.entry("cacheScope").or_insert_with(|| json!("private"));
    }
    let meta = obj.entry("_meta").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert("io.modelcontextprotocol/serverInfo".into(), server_info());
    }
    result
}

fn server_capabilities() -> Value {
    json!({
        "tools": {"listChanged": false},
        "prompts": {"listChanged": false},
        "resources": {"listChanged": false, "subscribe": false},
        "completions": {},
        "logging": {},
    })
}

fn server_info() -> Value {
    json!({"name": "mcp-oauth-gateway", "title": "MCP OAuth Gateway", "version": env!("CARGO_PKG_VERSION")})
}

fn discover_result() -> Value {
    json!({
        "supportedVersions": SUPPORTED_VERSIONS,
        "capabilities": server_capabilities(),
    })
}

async fn initialize(state: &AppState, sub: &str, id: Value, params: Option<&Value>) -> Response {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = if VERSIONS_2025.contains(&requested) {
        requested
    } else {
        VERSIONS_2025[0]
    };
    let url_elicitation = version == "2025-11-25"
        && supports_url_elicitation(params.and_then(|p| p.get("capabilities")));
    let session = ClientSession {
        s: sub.to_owned(),
        v: version.to_owned(),
        u: url_elicitation,
        x: state.clock.now() + SESSION_TTL_SECONDS,
    };
    let sealed = match state.keys.key_set().await {
        Ok(keys) => keys.seal(
            &serde_json::to_vec(&session).unwrap_or_default(),
            &session_aad(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "key set unavailable");
            return rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                codes::RETRY_LATER,
                "the gateway is temporarily unavailable; retry",
                None,
            );
        }
    };
    let mut res = rpc_result(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": server_capabilities(),
            "serverInfo": server_info(),
            "instructions": "Tools of several services, each prefixed with the service's name. When a service needs your permission, you get a link to open; open it, then retry.",
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&sealed) {
        res.headers_mut().insert("mcp-session-id", v);
    }
    res
}

async fn open_session(state: &AppState, sealed: &str) -> Option<ClientSession> {
    let kid = crate::crypto::KeySet::key_id_of(sealed)?;
    let keys = state.keys.key_set_with(kid).await.ok()?;
    let plain = keys.open(sealed, &session_aad()).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// Methods a 2026-07-28 client may call.
const MODERN_METHODS: &[&str] = &[
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "completion/complete",
];

/// A 2026-07-28 request: headers must match the body.
async fn modern(
    state: &AppState,
    base: url::Url,
    sub: String,
    id: Value,
    method: &str,
    params: Option<&Value>,
    headers: &HeaderMap,
) -> Response {
    let mismatch = |what: &str| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            id.clone(),
            codes::HEADER_MISMATCH,
            &format!("Header mismatch: {what}"),
            None,
        )
    };
    let meta_obj = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let header_version = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body_version = meta_obj
        .and_then(|m| m.get(meta::PROTOCOL_VERSION))
        .and_then(Value::as_str);
    let capabilities = meta_obj.and_then(|m| m.get(meta::CLIENT_CAPABILITIES));
    let (Some(body_version), Some(_)) = (body_version, capabilities) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id.clone(),
            codes::INVALID_PARAMS,
            "Invalid params: _meta must carry io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities",
            None,
        );
    };
    if body_version != header_version {
        return mismatch("MCP-Protocol-Version does not match _meta protocolVersion");
    }
    match headers.get("mcp-method").and_then(|v| v.to_str().ok()) {
        Some(m) if m == method => {}
        Some(_) => return mismatch("Mcp-Method does not match the method"),
        None => return mismatch("Mcp-Method is required"),
    }
    if let Some(field) = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    } {
        let body_name = params.and_then(|p| p.get(field)).and_then(Value::as_str);
        let header_name = headers
            .get("mcp-name")
            .and_then(|v| v.to_str().ok())
            .and_then(decode_header_value);
        match (header_name, body_name) {
            (Some(h), Some(b)) if h == b => {}
            (None, _) => return mismatch("Mcp-Name is required"),
            _ => return mismatch("Mcp-Name does not match the params"),
        }
    }
    if header_version != MODERN {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            codes::UNSUPPORTED_VERSION,
            &format!("Unsupported protocol version: {header_version}"),
            Some(json!({"supported": [MODERN], "requested": header_version})),
        );
    }
    if !MODERN_METHODS.contains(&method) {
        return rpc_error(
            StatusCode::NOT_FOUND,
            id,
            codes::METHOD_NOT_FOUND,
            &format!("Method not found: {method}"),
            None,
        );
    }
    if method == "server/discover" {
        return respond(Reply::Result(discover_result()), id, true, method);
    }
    let caller = Caller {
        sub,
        version: MODERN.to_owned(),
        url_elicitation: supports_url_elicitation(capabilities),
    };
    let reply = Gateway::new(state, base, caller)
        .handle(method, params)
        .await;
    respond(reply, id, true, method)
}
