//! Protocol eras at the edge: `initialize` and the sealed client session of
//! the 2025 revisions, and the stateless 2026-07-28 request (`server/discover`,
//! header and `_meta` checks).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::*;
use crate::crypto::{OpenError, Sealable, Sealed};
use crate::gateway::{Caller, Reply};
use crate::wire::envelope::{Id, Method, Params};
use crate::wire::headers::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
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
    /// What the client declared of `sampling`, `elicitation` and `roots`:
    /// the requests an upstream may put to it during a call (absent in
    /// sessions sealed before the gateway relayed them: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) c: Option<serde_json::Map<String, Value>>,
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
    id: Id,
    params: Option<&Params>,
) -> Response {
    let requested = params
        .and_then(|p| p.str("protocolVersion"))
        .unwrap_or_default();
    let requested = requested.as_str();
    let version = if VERSIONS_2025.contains(&requested) {
        requested
    } else {
        VERSIONS_2025[0]
    };
    let declared = params.and_then(|p| p.get::<Value>("capabilities"));
    let url_elicitation = version == "2025-11-25" && supports_url_elicitation(declared.as_ref());
    let session = ClientSession {
        s: sub.to_owned(),
        v: version.to_owned(),
        u: url_elicitation,
        c: crate::gateway::client_requests::answerable(declared.as_ref()),
        x: state.clock.now() + SESSION_TTL_SECONDS,
    };
    let sealed = match CLIENT_SESSION.seal(&*state.keys, &session).await {
        Ok(sealed) => sealed,
        Err(e) => return keys_unavailable(&e, id),
    };
    let mut res = rpc_result(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": server_capabilities(state.config.relays_to_clients()),
            "serverInfo": server_info(),
            "instructions": "Tools of several services, each prefixed with the service's name. When a service needs your permission, you get a link to open; open it, then retry.",
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&sealed) {
        res.headers_mut().insert(MCP_SESSION_ID, v);
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
pub(super) const MODERN_METHODS: &[Method] = &[
    Method::ServerDiscover,
    Method::ToolsList,
    Method::ToolsCall,
    Method::PromptsList,
    Method::PromptsGet,
    Method::ResourcesList,
    Method::ResourcesRead,
    Method::ResourcesTemplatesList,
    Method::CompletionComplete,
    Method::SubscriptionsListen,
];

/// A 2026-07-28 request: headers must match the body.
pub(super) async fn modern(
    state: &AppState,
    base: url::Url,
    identity: crate::gateway::Identity,
    id: Id,
    method: &Method,
    params: Option<&Params>,
    headers: &HeaderMap,
) -> Response {
    let mismatch = |what: &str| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            Some(id.clone()),
            codes::HEADER_MISMATCH,
            &format!("Header mismatch: {what}"),
            None,
        )
    };
    let meta_obj = params.and_then(Params::meta);
    let header_version = headers
        .get(MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body_version = meta_obj
        .and_then(|m| m.get(meta::PROTOCOL_VERSION))
        .and_then(Value::as_str);
    let capabilities = meta_obj.and_then(|m| m.get(meta::CLIENT_CAPABILITIES));
    let (Some(body_version), Some(_)) = (body_version, capabilities) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(id.clone()),
            codes::INVALID_PARAMS,
            "Invalid params: _meta must carry io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities",
            None,
        );
    };
    if body_version != header_version {
        return mismatch("MCP-Protocol-Version does not match _meta protocolVersion");
    }
    match headers.get(MCP_METHOD).and_then(|v| v.to_str().ok()) {
        Some(m) if m == method.as_str() => {}
        Some(_) => return mismatch("Mcp-Method does not match the method"),
        None => return mismatch("Mcp-Method is required"),
    }
    if let Some(field) = match method {
        Method::ToolsCall | Method::PromptsGet => Some("name"),
        Method::ResourcesRead => Some("uri"),
        _ => None,
    } {
        let body_name = params.and_then(|p| p.str(field));
        let body_name = body_name.as_deref();
        let header_name = headers
            .get(MCP_NAME)
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
            Some(id),
            codes::UNSUPPORTED_VERSION,
            &format!("Unsupported protocol version: {header_version}"),
            Some(json!({"supported": [MODERN], "requested": header_version})),
        );
    }
    let listen_here = *method == Method::SubscriptionsListen && state.config.relays_to_clients();
    if !MODERN_METHODS.contains(method) || (*method == Method::SubscriptionsListen && !listen_here)
    {
        return rpc_error(
            StatusCode::NOT_FOUND,
            Some(id),
            codes::METHOD_NOT_FOUND,
            &format!("Method not found: {method}"),
            None,
        );
    }
    if *method == Method::ServerDiscover {
        return respond(
            Reply::Result(discover_result(state.config.relays_to_clients())),
            id,
            true,
            method,
        );
    }
    let caller = Caller {
        url_elicitation: supports_url_elicitation(capabilities),
        relayed_capabilities: Some(crate::gateway::relayed_capabilities(capabilities)),
        param_headers: headers
            .iter()
            .filter_map(|(k, v)| {
                let token = k.as_str().strip_prefix(crate::wire::params::PREFIX)?;
                Some((token.to_owned(), v.to_str().ok()?.to_owned()))
            })
            .collect(),
        inbound_token: super::auth::presented_token(headers),
        ..Caller::new(identity, MODERN)
    };
    if listen_here {
        return listen(state, base, caller, id, params);
    }
    super::run_gateway(state, base, caller, id, true, method, params, headers).await
}

/// The most resources one `subscriptions/listen` may name.
const MAX_LISTENED: usize = 64;

/// `subscriptions/listen` (2026-07-28), where answers stream: an event
/// stream that acknowledges the resources whose updates it will carry
/// (see `Gateway::listen_targets`), then carries them, each stamped with
/// the request's id as subscription id, and ends with the listen result
/// when `STREAM_SECONDS` run out (clients listen again).
fn listen(
    state: &AppState,
    base: url::Url,
    caller: Caller,
    id: Id,
    params: Option<&Params>,
) -> Response {
    let uris: Vec<String> = params
        .and_then(|p| p.get::<Value>("notifications"))
        .and_then(|n| n.get("resourceSubscriptions").cloned())
        .and_then(|u| serde_json::from_value::<Vec<String>>(u).ok())
        .unwrap_or_default();
    if uris.len() > MAX_LISTENED {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Some(id),
            codes::INVALID_PARAMS,
            &format!("Invalid params: at most {MAX_LISTENED} resources per subscriptions/listen"),
            None,
        );
    }
    let subscription: Value = serde_json::from_str(id.as_json()).unwrap_or(Value::Null);
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(64);
    let until = tokio::time::Instant::now() + state.config.stream_for;
    let state = state.clone();
    tokio::spawn(async move {
        let gateway = Gateway::new(&state, base, caller);
        // Whatever it is doing, the work stops when the client goes.
        tokio::select! {
            _ = tx.closed() => {}
            _ = listening(&gateway, &uris, subscription, &tx, until) => {}
        }
    });
    super::stream::standalone(rx)
}

/// The events of one `subscriptions/listen` stream, onto `tx`.
async fn listening(
    gateway: &Gateway<'_>,
    uris: &[String],
    subscription: Value,
    tx: &tokio::sync::mpsc::Sender<Value>,
    until: tokio::time::Instant,
) {
    let groups = gateway.listen_targets(uris).await;
    let honored: Vec<&String> = groups.iter().flat_map(|(_, u)| u).collect();
    let stamp = json!({ meta::SUBSCRIPTION_ID: subscription });
    let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": {"resourceSubscriptions": honored}, "_meta": stamp}});
    if tx.send(ack).await.is_err() {
        return;
    }
    // Stamped on their way to the client.
    let (updates_tx, mut updates) = tokio::sync::mpsc::channel::<Value>(64);
    let forward = async {
        while let Some(mut update) = updates.recv().await {
            if let Some(p) = update.get_mut("params").and_then(Value::as_object_mut) {
                p.insert("_meta".into(), stamp.clone());
            }
            if tx.send(update).await.is_err() {
                return;
            }
        }
    };
    let relay = async {
        let ended = gateway.relay_listen(&groups, &updates_tx, until).await;
        drop(updates_tx);
        ended
    };
    let (ended, ()) = tokio::join!(relay, forward);
    if ended {
        let done = json!({"jsonrpc": "2.0", "id": subscription,
            "result": {"resultType": "complete", "_meta": stamp}});
        let _ = tx.send(done).await;
    }
}
