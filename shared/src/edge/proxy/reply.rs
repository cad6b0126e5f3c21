//! The gateway's JSON-RPC answers as HTTP responses: results (as trees,
//! or as the upstream wrote them with a 2026-07-28 result's members
//! appended), errors, and what the gateway says of itself (server info,
//! capabilities, `server/discover`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::gateway::Reply;
use crate::wire::codes;
use crate::wire::envelope::{Id, Method};
use crate::wire::SUPPORTED_VERSIONS;

pub(super) fn rpc_error(
    status: StatusCode,
    id: Option<Id>,
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

/// The key set cannot be read (a passing Secrets Manager failure): 503 and
/// a retry, never a refusal of the client's session or state.
pub(super) fn keys_unavailable(e: &crate::Error, id: Id) -> Response {
    tracing::error!(error = %e, "key set unavailable");
    rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(id),
        codes::RETRY_LATER,
        "the gateway is temporarily unavailable; retry",
        None,
    )
}

/// A JSON-RPC response, serialized without building a map first.
#[derive(serde::Serialize)]
struct RpcResult {
    jsonrpc: &'static str,
    id: Id,
    result: Value,
}

pub(super) fn rpc_result(id: Id, result: Value) -> Response {
    Json(RpcResult {
        jsonrpc: "2.0",
        id,
        result,
    })
    .into_response()
}

/// A result passed on as the upstream wrote it, in one buffer of the
/// right size; for a 2026-07-28 client with the members
/// [`modern_result`] adds (which such a result lacks, see
/// [`crate::upstream::AsIs`]) appended to the object.
fn rpc_result_as_is(
    id: &Id,
    result: &crate::upstream::AsIs,
    modern: bool,
    method: &Method,
) -> Response {
    let text = result.get();
    let added = if modern { modern_members(method) } else { "" };
    let mut body = String::with_capacity(text.len() + added.len() + id.as_json().len() + 32);
    body.push_str(r#"{"jsonrpc":"2.0","id":"#);
    body.push_str(id.as_json());
    body.push_str(r#","result":"#);
    match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        Some(members) if !added.is_empty() => {
            body.push('{');
            body.push_str(members);
            if !members.trim_matches([' ', '\t', '\r', '\n']).is_empty() {
                body.push(',');
            }
            body.push_str(added);
            body.push('}');
        }
        _ => body.push_str(text),
    }
    body.push('}');
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The members [`modern_result`] adds to a result that has none of them,
/// as JSON text (without braces): made once, by `modern_result` itself.
fn modern_members(method: &Method) -> &'static str {
    use std::sync::OnceLock;
    static LISTS: OnceLock<String> = OnceLock::new();
    static OTHERS: OnceLock<String> = OnceLock::new();
    let cell = if lists_cache_hints(method) {
        &LISTS
    } else {
        &OTHERS
    };
    cell.get_or_init(|| {
        let text = modern_result(json!({}), method).to_string();
        text[1..text.len() - 1].to_owned()
    })
}

/// The HTTP response of `reply` to the request `id`.
pub(crate) fn respond(reply: Reply, id: Id, modern: bool, method: &Method) -> Response {
    crate::observe::note(|r| match &reply {
        Reply::Error { code, .. } => r.error_code = Some(*code),
        Reply::Result(v) => r.tool_error = v.get("isError") == Some(&Value::Bool(true)),
        Reply::AsIs(a) => r.tool_error = a.is_error,
    });
    match reply {
        Reply::Result(r) if modern => rpc_result(id, modern_result(r, method)),
        Reply::Result(r) => rpc_result(id, r),
        Reply::AsIs(r) => rpc_result_as_is(&id, &r, modern, method),
        Reply::Error {
            code,
            message,
            data,
        } => {
            // 2026-07-28 puts some errors in the HTTP status too.
            let status = match code {
                codes::METHOD_NOT_FOUND if modern => StatusCode::NOT_FOUND,
                codes::HEADER_MISMATCH | codes::MISSING_CAPABILITY if modern => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::OK,
            };
            rpc_error(status, Some(id), code, &message, data)
        }
    }
}

/// A result as 2026-07-28 clients expect it: `resultType`, the server's
/// identity in `_meta`, and cache hints on list and read results.
fn modern_result(mut result: Value, method: &Method) -> Value {
    let Some(obj) = result.as_object_mut() else {
        return result;
    };
    obj.entry("resultType").or_insert_with(|| json!("complete"));
    if lists_cache_hints(method) {
        obj.entry("ttlMs").or_insert_with(|| json!(0));
        obj.entry("cacheScope").or_insert_with(|| json!("private"));
    }
    let meta = obj.entry("_meta").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert("io.modelcontextprotocol/serverInfo".into(), server_info());
    }
    result
}

/// Whether a 2026-07-28 result of `method` carries cache hints.
fn lists_cache_hints(method: &Method) -> bool {
    matches!(
        method,
        Method::ToolsList
            | Method::PromptsList
            | Method::ResourcesList
            | Method::ResourcesTemplatesList
            | Method::ResourcesRead
            | Method::ServerDiscover
    )
}

/// What the gateway serves; `subscribe`: resource subscriptions (2025
/// clients of a gateway whose answers stream).
pub(super) fn server_capabilities(subscribe: bool) -> Value {
    json!({
        "tools": {"listChanged": false},
        "prompts": {"listChanged": false},
        "resources": {"listChanged": false, "subscribe": subscribe},
        "completions": {},
        "logging": {},
    })
}

pub(super) fn server_info() -> Value {
    json!({"name": "mcp-oauth-gateway", "title": "MCP OAuth Gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// `server/discover`'s result; `streams`: answers stream, so resource
/// updates can be listened for.
pub(super) fn discover_result(streams: bool) -> Value {
    json!({
        "supportedVersions": SUPPORTED_VERSIONS,
        "capabilities": server_capabilities(streams),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Answer;
    use crate::wire::envelope::{self, Parsed};

    async fn body_of(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn results_as_written_get_the_modern_members_appended() {
        let Parsed::Request(request) =
            envelope::parse(br#"{"jsonrpc":"2.0","id":12,"method":"ping"}"#)
        else {
            panic!("a request")
        };
        let as_is = |result: &str| {
            Answer::from_body(&format!(r#"{{"id":3,"result":{result}}}"#).into())
                .and_then(|a| a.as_is())
                .expect("passes as written")
        };
        // For a 2025 client, byte for byte.
        let plain = as_is("{ \"content\" : [ ] , \"n\": 1.50 }");
        let res = respond(
            Reply::AsIs(plain.clone()),
            request.id.clone(),
            false,
            &Method::ToolsCall,
        );
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        assert_eq!(
            body_of(res).await,
            r#"{"jsonrpc":"2.0","id":12,"result":{ "content" : [ ] , "n": 1.50 }}"#
        );
        // For a 2026-07-28 client, the members added after the last one.
        let added = format!(
            r#""resultType":"complete","_meta":{{"io.modelcontextprotocol/serverInfo":{}}}"#,
            server_info()
        );
        let res = respond(
            Reply::AsIs(plain),
            request.id.clone(),
            true,
            &Method::ToolsCall,
        );
        assert_eq!(
            body_of(res).await,
            format!(
                r#"{{"jsonrpc":"2.0","id":12,"result":{{ "content" : [ ] , "n": 1.50 ,{added}}}}}"#
            )
        );
        // An empty object gets no comma.
        let res = respond(
            Reply::AsIs(as_is("{ }")),
            request.id,
            true,
            &Method::ToolsCall,
        );
        let body = body_of(res).await;
        assert_eq!(
            body,
            format!(r#"{{"jsonrpc":"2.0","id":12,"result":{{ {added}}}}}"#)
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["result"]["resultType"], "complete");
    }
}
