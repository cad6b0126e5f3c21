//! The REQUEST and RESPONSE interceptors around an authenticated message
//! (see [`crate::interceptors`]): the request interceptor may change the
//! message or answer it; the response interceptor may change the answer.
//! Any failure refuses the request (fail closed).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambda_http::request::RequestContext;
use serde_json::{json, Map, Value};

use super::dispatch;
use crate::gateway::Identity;
use crate::interceptors::{self, Interceptor, InterceptorError, RequestOutcome};
use crate::wire::codes;
use crate::AppState;

/// Largest response a RESPONSE interceptor is shown (bytes).
const MAX_INTERCEPTED_RESPONSE: usize = 6 * 1024 * 1024;

/// A JSON answer with `status`.
fn answer(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, Json(body)).into_response()
}

/// The refusal when an interceptor fails: a JSON-RPC error naming which
/// one and what kind of failure, never its answer.
fn refused(which: &str, id: &Value, e: &InterceptorError) -> Response {
    tracing::error!(interceptor = which, error = %e, "interceptor failed; the request is refused");
    let why = match e {
        InterceptorError::Timeout => "did not answer in time",
        InterceptorError::Failed(_) => "failed",
        InterceptorError::Malformed(_) => "gave an answer the gateway cannot use",
    };
    answer(
        502,
        &json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": codes::INTERNAL_ERROR,
            "message": if which == "response" {
                // The call has run by now: a retry may run it again.
                format!("The gateway's {which} check {why}; the answer was withheld (the call may have been made). Ask the gateway's operator before retrying.")
            } else {
                format!("The gateway's {which} check {why}; the request was not handled. Retry later, or ask the gateway's operator.")
            },
        }}),
    )
}

/// The request's headers as the payload shows them (when passed).
fn header_map(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (k, v) in headers {
        if let Ok(v) = v.to_str() {
            out.insert(k.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    Value::Object(out)
}

async fn call(
    state: &AppState,
    interceptor: &Interceptor,
    payload: &Value,
) -> Result<Value, InterceptorError> {
    interceptors::invoke(
        &state.http,
        &state.upstream,
        &state.config.interceptors,
        interceptor,
        payload,
    )
    .await
}

/// Sets `Mcp-Method` and `Mcp-Name` (where the request has them) to what
/// `message` says.
fn follow_body(headers: &mut HeaderMap, message: &Value) {
    if headers.contains_key("mcp-method") {
        if let Some(v) = message
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| axum::http::HeaderValue::from_str(m).ok())
        {
            headers.insert("mcp-method", v);
        }
    }
    if headers.contains_key("mcp-name") {
        let params = message.get("params");
        let name = params
            .and_then(|p| p.get("name").or_else(|| p.get("uri")))
            .and_then(Value::as_str)
            .map(crate::wire::header_value)
            .and_then(|n| axum::http::HeaderValue::from_str(&n).ok());
        if let Some(v) = name {
            headers.insert("mcp-name", v);
        }
    }
}

/// What the RESPONSE interceptor is shown of an answer.
enum Shown {
    /// A JSON answer, read (with the answer's other parts).
    Json(axum::http::response::Parts, Value),
    /// An answer that is not shown: not JSON (a 202 without a body, an
    /// event stream), or the refusal that replaces an answer that could
    /// not be shown.
    Unshown(Response),
}

/// Reads the answer `response` for the RESPONSE interceptor. An answer
/// that says it is JSON but does not read as JSON, or is too large to
/// show, is withheld and refused (fail closed): it never reaches the
/// client unchecked.
async fn shown(response: Response, id: &Value) -> Shown {
    // Only JSON answers are shown (a 202 for a notification has none).
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Shown::Unshown(response);
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_INTERCEPTED_RESPONSE).await else {
        return Shown::Unshown(refused(
            "response",
            id,
            &InterceptorError::Failed("the response is too large to show".into()),
        ));
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Shown::Json(parts, v),
        Err(_) if bytes.is_empty() => {
            Shown::Unshown(Response::from_parts(parts, axum::body::Body::empty()))
        }
        // Every answer the gateway writes reads as JSON; one that does not
        // is not passed on unchecked.
        Err(_) => Shown::Unshown(refused(
            "response",
            id,
            &InterceptorError::Failed("the answer could not be read".into()),
        )),
    }
}

/// Runs the interceptors around [`dispatch`].
pub(super) async fn around(
    state: AppState,
    context: Option<&RequestContext>,
    headers: HeaderMap,
    identity: Identity,
    body: Bytes,
) -> Response {
    let config = &state.config.interceptors;
    // Not JSON: the gateway's own error, no interceptor involved.
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return dispatch(state, context, headers, identity, body).await;
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let raw = String::from_utf8_lossy(&body).into_owned();
    let passed_headers = config.pass_headers.then(|| header_map(&headers));
    let mut request = interceptors::gateway_request(passed_headers.clone(), &message);
    let body = match &config.request {
        None => body,
        Some(interceptor) => {
            let payload = interceptors::request_payload(&raw, &request);
            let outcome = call(&state, interceptor, &payload)
                .await
                .and_then(|out| interceptors::read_request_output(&out));
            match outcome {
                Err(e) => return refused("request", &id, &e),
                Ok(RequestOutcome::Respond { status, body }) => {
                    tracing::info!(
                        audit = "interceptor_response",
                        status,
                        "the request interceptor answered the request"
                    );
                    return answer(status, &body);
                }
                Ok(RequestOutcome::Continue(changed)) => {
                    request = interceptors::gateway_request(passed_headers, &changed);
                    Bytes::from(changed.to_string())
                }
            }
        }
    };
    // A 2026-07-28 request says its method and name in headers too: follow
    // what the interceptor made of the body.
    let mut headers = headers;
    if let Ok(changed) = serde_json::from_slice::<Value>(&body) {
        follow_body(&mut headers, &changed);
    }
    let response = dispatch(state.clone(), context, headers, identity, body).await;
    let Some(interceptor) = &config.response else {
        return response;
    };
    let status = response.status().as_u16();
    let (parts, json_body) = match shown(response, &id).await {
        Shown::Json(parts, body) => (parts, body),
        Shown::Unshown(response) => return response,
    };
    let payload = interceptors::response_payload(&raw, &request, status, &json_body);
    match call(&state, interceptor, &payload)
        .await
        .and_then(|out| interceptors::read_response_output(&out))
    {
        Ok((status, body)) => {
            let mut changed = answer(status, &body);
            // The gateway's own headers (a new session id) stay.
            for (k, v) in parts.headers.iter() {
                if k.as_str().starts_with("mcp-") {
                    changed.headers_mut().insert(k.clone(), v.clone());
                }
            }
            changed
        }
        Err(e) => refused("response", &id, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `shown` makes of an answer: the JSON shown, or the status and
    /// bytes of what goes to the client instead.
    async fn shown_of(content_type: &str, body: Vec<u8>) -> Result<Value, (u16, Vec<u8>)> {
        let response = ([("content-type", content_type)], body).into_response();
        match shown(response, &json!(7)).await {
            Shown::Json(_, v) => Ok(v),
            Shown::Unshown(r) => {
                let status = r.status().as_u16();
                let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
                    .await
                    .unwrap();
                Err((status, bytes.to_vec()))
            }
        }
    }

    /// The refusal that replaced an answer: a 502 saying it was withheld.
    fn assert_withheld((status, bytes): (u16, Vec<u8>), what: &str) {
        assert_eq!(status, 502, "{what}");
        let refusal: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(refusal["id"], 7);
        assert_eq!(refusal["error"]["code"], codes::INTERNAL_ERROR);
        let message = refusal["error"]["message"].as_str().unwrap();
        assert!(message.contains("withheld"), "{message}");
        assert!(!refusal.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn an_answer_no_reader_can_read_is_withheld_not_passed_on() {
        // Bytes that say they are JSON but that serde_json refuses (a
        // number out of range, a lone surrogate, nesting past its limit):
        // the interceptor cannot check them, so the client never sees them.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for body in [
            r#"{"result":{"n":1e400}}"#,
            r#"{"result":"\ud800 secret"}"#,
            &deep,
            "not json",
        ] {
            let out = shown_of("application/json", body.as_bytes().to_vec()).await;
            assert_withheld(out.unwrap_err(), body);
        }
        // Too large to show: withheld too.
        let mut large = br#"{"result":{"secret":""#.to_vec();
        large.resize(MAX_INTERCEPTED_RESPONSE + 1, b'a');
        large.extend_from_slice(br#""}}"#);
        assert_withheld(
            shown_of("application/json", large).await.unwrap_err(),
            "large",
        );
    }

    #[tokio::test]
    async fn json_answers_are_shown_and_others_pass_unchanged() {
        assert_eq!(
            shown_of(
                "application/json; charset=utf-8",
                br#"{"result":{}}"#.to_vec()
            )
            .await,
            Ok(json!({"result": {}}))
        );
        // Not JSON (an event stream), or no body at all: passed as they are.
        assert_eq!(
            shown_of("text/event-stream", b"data: x\n\n".to_vec()).await,
            Err((200, b"data: x\n\n".to_vec()))
        );
        assert_eq!(
            shown_of("application/json", vec![]).await,
            Err((200, vec![]))
        );
    }
}
