//! The MCP proxy function's Router: `/mcp` and Protected Resource Metadata.
//!
//! This module holds the HTTP edge: who is calling (the validated `sub`),
//! RFC 9728 metadata, and JSON-RPC framing. The gateway answers
//! `initialize`, `ping` and `tools/list` (the targets' cached catalogs,
//! prefixed), and notifications with 202.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use lambda_http::request::RequestContext;
use serde_json::{json, Value};

use super::{base_url, json_error, public_url};
use crate::config::InboundAuth;
use crate::AppState;

/// Path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// Largest request body accepted on `/mcp`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Protocol versions the gateway speaks, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

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
        "this gateway is stateless: use POST",
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

/// The validated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's subject.
    pub sub: String,
}

/// The validated caller, if the request carries one.
fn caller(
    state: &AppState,
    context: Option<&RequestContext>,
    headers: &HeaderMap,
) -> Option<Caller> {
    let sub = match state.config.inbound_auth {
        InboundAuth::Dev => Some(
            headers
                .get("x-gateway-dev-user")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .unwrap_or("dev-user")
                .to_owned(),
        ),
        InboundAuth::ApiGateway => match context {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .and_then(|jwt| jwt.claims.get("sub"))
                .filter(|s| !s.is_empty())
                .cloned(),
            #[allow(unreachable_patterns)]
            _ => None,
        },
    };
    sub.map(|sub| Caller { sub })
}

fn unauthorized(state: &AppState, context: Option<&RequestContext>) -> Response {
    let mut res = json_error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "a valid bearer token is required",
    );
    let mut challenge = String::from("Bearer");
    if let Some(base) = base_url(state, context) {
        challenge.push_str(&format!(
            " resource_metadata=\"{}\"",
            public_url(&base, "/.well-known/oauth-protected-resource/mcp")
        ));
        if !state.config.inbound_scopes.is_empty() {
            challenge.push_str(&format!(
                ", scope=\"{}\"",
                state.config.inbound_scopes.join(" ")
            ));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

fn rpc_error(id: Value, status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn rpc_result(id: Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

async fn mcp(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(caller) = caller(&state, context.as_deref(), &headers) else {
        return unauthorized(&state, context.as_deref());
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return rpc_error(
                Value::Null,
                StatusCode::BAD_REQUEST,
                -32700,
                "Parse error: the body is not JSON",
            )
        }
    };
    let Some(obj) = message.as_object() else {
        return rpc_error(
            Value::Null,
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: expected one JSON-RPC object",
        );
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_error(
            Value::Null,
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: jsonrpc must be \"2.0\"",
        );
    }
    let method = obj.get("method").and_then(Value::as_str);
    match (obj.get("id"), method) {
        // A notification: accepted, nothing to return.
        (None, Some(_)) => StatusCode::ACCEPTED.into_response(),
        // A response to a server request: accepted.
        (Some(_), None) if obj.contains_key("result") || obj.contains_key("error") => {
            StatusCode::ACCEPTED.into_response()
        }
        (Some(id), Some(method)) if id.is_string() || id.is_number() => {
            dispatch(&state, &caller, id.clone(), method, obj.get("params")).await
        }
        _ => rpc_error(
            Value::Null,
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request",
        ),
    }
}

async fn dispatch(
    state: &AppState,
    caller: &Caller,
    id: Value,
    method: &str,
    params: Option<&Value>,
) -> Response {
    match method {
        "initialize" => {
            let requested = params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let version = if SUPPORTED_VERSIONS.contains(&requested) {
                requested
            } else {
                SUPPORTED_VERSIONS[0]
            };
            rpc_result(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "mcp-oauth-gateway", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
        }
        "ping" => rpc_result(id, json!({})),
        "tools/list" => match state.targets.list().await {
            Ok(targets) => {
                let single = targets.len() == 1;
                let tools: Vec<Value> = targets
                    .iter()
                    .flat_map(|t| {
                        let prefix = t.tool_prefix.clone().unwrap_or_else(|| {
                            if single {
                                String::new()
                            } else {
                                format!("{}___", t.name)
                            }
                        });
                        t.tool_catalog.iter().filter_map(move |tool| {
                            let mut tool = tool.clone();
                            let name = tool.get("name")?.as_str()?.to_owned();
                            tool["name"] = json!(format!("{prefix}{name}"));
                            Some(tool)
                        })
                    })
                    .collect();
                tracing::debug!(sub = %caller.sub, count = tools.len(), "tools/list");
                rpc_result(id, json!({"tools": tools}))
            }
            Err(e) => {
                tracing::error!(error = %e, "listing targets failed");
                rpc_error(
                    id,
                    StatusCode::OK,
                    -32603,
                    "the gateway could not read its targets; retry later",
                )
            }
        },
        _ => rpc_error(
            id,
            StatusCode::OK,
            -32601,
            &format!("Method not found: {method}"),
        ),
    }
}
