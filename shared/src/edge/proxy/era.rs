//! Protocol eras at the edge: `initialize` and the sealed client session of
//! the 2025 revisions, and the stateless 2026-07-28 request (`server/discover`,
//! header and `_meta` checks).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::*;
use crate::crypto::{OpenError, Sealable, Sealed};
use crate::gateway::{Caller, Gateway, Reply};
use crate::wire::{codes, decode_header_value, meta, MODERN, VERSIONS_2025};
use crate::AppState;

/// What a sealed client session holds.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ClientSession {
    /// User.
    pub(super) s: String,
    /// Negotiated version.
    pub(super) v: String,
    /// URL-mode elicitation declared.
    pub(super) u: bool,
    /// Expiry (Unix seconds).
    pub(super) x: i64,
}

impl Sealable for ClientSession {
    fn expires_at(&self) -> i64 {
        self.x
    }
}

/// The 2025 `Mcp-Session-Id`: the session itself, sealed (nothing stored).
pub(super) const CLIENT_SESSION: Sealed<ClientSession> = Sealed::new("client-session");

pub(super) async fn initialize(
    state: &AppState,
    sub: &str,
    id: Value,
    params: Option<&Value>,
) -> Response {
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
    let sealed = match CLIENT_SESSION.seal(&*state.keys, &session).await {
        Ok(sealed) => sealed,
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

/// The client session a `Mcp-Session-Id` holds, if it is ours and current.
pub(super) async fn open_session(
    state: &AppState,
    sealed: &str,
) -> Result<ClientSession, OpenError> {
    CLIENT_SESSION
        .open(&*state.keys, sealed, state.clock.now())
        .await
}

/// Methods a 2026-07-28 client may call.
pub(super) const MODERN_METHODS: &[&str] = &[
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
pub(super) async fn modern(
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
