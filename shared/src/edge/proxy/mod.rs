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
use axum::{Extension, Router};
use lambda_http::request::RequestContext;
use serde_json::Value;

mod auth;
mod era;

use crate::crypto::OpenError;
use auth::{authenticate, host_allowed, origin_allowed, resource_metadata};
use era::{initialize, modern, open_session};

mod intercept;
mod reply;
mod stream;

pub(crate) use reply::respond;
use reply::{
    discover_result, keys_unavailable, rpc_error, rpc_result, server_capabilities, server_info,
};

use super::{base_url, json_error};
use crate::gateway::{Caller, Gateway};
use crate::wire::envelope::{self, Id, Incoming, Method, Parsed};
use crate::wire::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use crate::wire::{codes, VERSIONS_2025};
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
        .route(MCP_PATH, get(standalone).post(mcp).delete(no_delete))
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

/// 405, naming the methods `/mcp` takes here (`GET` where standalone
/// streams are served).
fn method_not_allowed(streams: bool) -> Response {
    let mut res = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this gateway keeps no session to delete, and opens a standalone stream only where its answers stream (RESPONSE_STREAMING=on); use POST",
    );
    let allow = if streams { "GET, POST" } else { "POST" };
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// `DELETE /mcp`: sessions are sealed, not kept, so there is none to end.
async fn no_delete(State(state): State<AppState>) -> Response {
    method_not_allowed(state.config.relays_to_clients())
}

/// `GET /mcp`: a 2025 client's standalone event stream, which carries the
/// updates of its resource subscriptions (see `gateway::updates`), where
/// answers stream; 405 elsewhere.
async fn standalone(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
    headers: HeaderMap,
) -> Response {
    if !state.config.relays_to_clients() {
        return method_not_allowed(false);
    }
    let context = context.as_deref();
    if let Some(refused) = refused_by_guards(&state, &headers) {
        return refused;
    }
    let identity = match authenticate(&state, context, &headers).await {
        Ok(identity) => identity,
        Err(res) => return res,
    };
    if !stream::accepts_sse(&headers) {
        return json_error(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "the standalone stream is text/event-stream: accept it",
        );
    }
    let Some(sealed) = headers.get(MCP_SESSION_ID).and_then(|v| v.to_str().ok()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a standalone stream belongs to a session: send the Mcp-Session-Id initialize gave",
        );
    };
    let session = match open_session(&state, sealed).await {
        Ok(s) if s.s == identity.sub => s,
        Err(OpenError::Keys(e)) => {
            tracing::error!(error = %e, "key set unavailable");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the gateway is temporarily unavailable; retry",
            );
        }
        _ => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "Session not found: initialize again",
            )
        }
    };
    let Some(base) = base_url(&state, context) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the gateway has no public URL configured",
        );
    };
    let caller = Caller {
        url_elicitation: session.u,
        inbound_token: auth::presented_token(&headers),
        ..Caller::new(identity, &session.v)
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let until = tokio::time::Instant::now() + state.config.stream_for;
    tokio::spawn(async move {
        Gateway::new(&state, base, caller)
            .relay_updates(&tx, until)
            .await;
    });
    stream::standalone(rx)
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

/// The Origin and Host guards (browsers and DNS rebinding): a 403 when
/// either refuses the request.
fn refused_by_guards(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let why = if !origin_allowed(state, headers) {
        "this Origin may not call the gateway"
    } else if !host_allowed(state, headers) {
        "a development gateway answers only on a loopback host name"
    } else {
        return None;
    };
    Some(json_error(StatusCode::FORBIDDEN, "forbidden", why))
}

/// `/mcp`: the request, observed (one EMF line, and an audit event for the
/// methods operators audit).
///
/// Takes the request whole: the extractors for headers and the platform's
/// context would copy them, and this runs for every request.
async fn mcp(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let axum::http::request::Parts {
        headers,
        extensions,
        ..
    } = parts;
    let context = extensions.get::<RequestContext>();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) if is_too_large(&e) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "a JSON-RPC message on /mcp is at most 1 MiB",
            )
        }
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body could not be read",
            )
        }
    };
    let request_id = super::api_request_id(context);
    let finish = stream::Finish {
        state: state.clone(),
        started: std::time::Instant::now(),
        request_id,
        record: Default::default(),
    };
    // Boxed where it is made: the call's future (kilobytes: everything a
    // call may await, inline) moves onto the heap once, and what this
    // handler's future and axum's wrappers move by value stays small.
    let handle = Box::pin(handle_mcp(state, context, headers, body));
    stream::observed(finish, handle).await
}

/// The body went over the limit (rather than failing to arrive).
fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

async fn handle_mcp(
    state: AppState,
    context: Option<&RequestContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refused_by_guards(&state, &headers) {
        return refused;
    }
    let identity = match authenticate(&state, context, &headers).await {
        Ok(identity) => identity,
        Err(res) => return res,
    };
    crate::observe::note(|r| {
        r.user = Some(identity.sub.clone());
        r.client = identity.client_id.clone();
    });
    if !is_json(&headers) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON-RPC messages with Content-Type: application/json",
        );
    }
    if state.config.interceptors.is_empty() {
        return dispatch(state, context, headers, identity, body).await;
    }
    Box::pin(intercept::around(state, context, headers, identity, body)).await
}

/// Handles one authenticated JSON-RPC message.
async fn dispatch(
    state: AppState,
    context: Option<&RequestContext>,
    headers: HeaderMap,
    identity: crate::gateway::Identity,
    body: Bytes,
) -> Response {
    let (id, method, params) = match envelope::parse(&body) {
        Parsed::Request(Incoming { id, method, params }) => (id, method, params),
        Parsed::Accepted => return StatusCode::ACCEPTED.into_response(),
        Parsed::Response(answer) => {
            return Box::pin(client_answer(&state, context, &headers, identity, answer)).await
        }
        Parsed::Invalid { id, code, message } => {
            return rpc_error(StatusCode::BAD_REQUEST, id, code, message, None)
        }
    };
    let params = params.as_ref();
    crate::observe::note(|r| r.method = Some(method.name()));
    let Some(base) = base_url(&state, context) else {
        tracing::error!("no public base URL: set PUBLIC_BASE_URL");
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(id),
            codes::INTERNAL_ERROR,
            "the gateway has no public URL configured",
            None,
        );
    };

    let header_version = headers
        .get(MCP_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok());
    // A version header that is not a 2025 revision takes the 2026 path, where
    // an unknown version gets its own error.
    if header_version.is_some_and(|v| !VERSIONS_2025.contains(&v)) {
        return modern(&state, base, identity, id, &method, params, &headers).await;
    }
    match method {
        Method::Initialize => return Box::pin(initialize(&state, &identity.sub, id, params)).await,
        Method::ServerDiscover => {
            return rpc_result(id, discover_result(state.config.relays_to_clients()))
        }
        _ => {}
    }

    // A 2025-era request: the session (if any) tells the version and capabilities.
    let mut caller = Caller {
        inbound_token: auth::presented_token(&headers),
        ..Caller::new(identity, header_version.unwrap_or(DEFAULT_VERSION))
    };
    if let Some(sealed) = headers.get(MCP_SESSION_ID).and_then(|v| v.to_str().ok()) {
        match open_session(&state, sealed).await {
            Ok(s) if s.s == caller.sub() => {
                if header_version.is_none() {
                    caller.version = Caller::version_of(&s.v);
                }
                caller.url_elicitation = s.u;
                // Requests an upstream makes during a call can reach the
                // client only on an answer that streams.
                if state.config.relays_to_clients() {
                    caller.answers = s.c;
                }
            }
            Err(OpenError::Keys(e)) => return keys_unavailable(&e, id),
            _ => {
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    Some(id),
                    codes::INVALID_REQUEST,
                    "Session not found: initialize again",
                    None,
                );
            }
        }
    }
    run_gateway(&state, base, caller, id, false, &method, params, &headers).await
}

/// A client's answer to an upstream's request put to it during a call:
/// passed to the upstream (202), or refused with the reason.
async fn client_answer(
    state: &AppState,
    context: Option<&RequestContext>,
    headers: &HeaderMap,
    identity: crate::gateway::Identity,
    answer: envelope::Answer,
) -> Response {
    use crate::gateway::AnswerRefused;
    crate::observe::note(|r| r.method = Some("(answer)".into()));
    let Some(base) = base_url(state, context) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the gateway has no public URL configured",
        );
    };
    let caller = Caller {
        // A token-exchange target's credentials come from it.
        inbound_token: auth::presented_token(headers),
        ..Caller::new(identity, DEFAULT_VERSION)
    };
    match Gateway::new(state, base, caller).pass_answer(&answer).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(AnswerRefused::NotAsked) => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "this response answers no request the gateway put to you (or it came too late)",
        ),
        Err(AnswerRefused::Keys) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the gateway is temporarily unavailable; retry",
        ),
        Err(AnswerRefused::Unavailable(why)) => json_error(
            StatusCode::CONFLICT,
            "service_unavailable",
            &format!("the answer could not be passed on: {why}"),
        ),
        Err(AnswerRefused::Upstream(why)) => {
            tracing::warn!(error = %crate::telemetry::clean(&why, 300), "an upstream did not take a client's answer");
            json_error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the service did not take the answer",
            )
        }
    }
}

/// Handles one request with the gateway for `caller` and answers it. A
/// call that can hear from its upstream, from a client that accepts an
/// event stream, passes on what the upstream says during the call (see
/// [`stream`]); with a RESPONSE interceptor nothing is relayed: it sees
/// (and may change) every answer, and notifications would pass it by.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_gateway(
    state: &AppState,
    base: url::Url,
    caller: Caller,
    id: Id,
    modern: bool,
    method: &Method,
    params: Option<&crate::wire::envelope::Params>,
    headers: &HeaderMap,
) -> Response {
    let relays = state.config.interceptors.response.is_none()
        && matches!(
            method,
            Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead
        )
        && stream::accepts_sse(headers);
    // Streamed only when the client asked for progress or log messages:
    // a streamed answer moves the call onto the heap, which every other
    // call is spared (notifications an upstream sends anyway are still
    // relayed, before the result).
    // Also streamed for a client that can answer an upstream's requests
    // (set only where answers stream): they must reach it mid-call.
    let live = relays
        && (caller.answers.is_some()
            || params.and_then(|p| p.meta()).is_some_and(|m| {
                m.contains_key("progressToken") || m.contains_key(crate::wire::meta::LOG_LEVEL)
            }));
    if !live {
        // Nothing reaches the client before the answer: an upstream's
        // requests are refused at once, in its usual session.
        let caller = Caller {
            answers: None,
            ..caller
        };
        let gateway = Gateway::new(state, base, caller);
        let reply = gateway.handle(method, params).await;
        let answer = respond(reply, id, modern, method);
        if !relays {
            return answer;
        }
        return stream::written_whole(answer, gateway.take_relayed()).await;
    }
    let (relay, notes) = crate::upstream::Relay::live();
    let (state, method, params) = (state.clone(), method.clone(), params.cloned());
    let work = async move {
        let gateway = Gateway::new(&state, base, caller).with_relay(relay);
        let reply = gateway.handle(&method, params.as_ref()).await;
        respond(reply, id, modern, &method)
    };
    // Boxed before it is passed (with the request's record, which the
    // stream keeps noting into): it is moved onto the heap anyway, and
    // this function's own future stays the size of the usual path.
    let work: stream::Work = match crate::observe::current() {
        Some(record) => Box::pin(crate::observe::within(record, work)),
        None => Box::pin(work),
    };
    stream::answer(work, notes).await
}
