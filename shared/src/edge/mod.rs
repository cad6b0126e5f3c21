//! The axum Routers of the two HTTP functions, and what they share.
//!
//! The same Routers run in Lambda (through `lambda_http`), under
//! `cargo lambda watch`, on a local listener, and in tests.

pub mod callback;
pub mod connections;
pub mod pages;
pub mod proxy;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use url::Url;

use crate::AppState;

/// Every route of the gateway on one Router, as API Gateway routes them to
/// the two HTTP functions: for local runs and end-to-end tests.
pub fn gateway_router(state: AppState) -> axum::Router {
    proxy::routes()
        .merge(callback::routes(&state.config.client_metadata_path))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// The gateway's public base URL for this request: `PUBLIC_BASE_URL` when
/// configured, else the domain API Gateway reports in the request context
/// (never the client's Host header, which a caller controls).
pub fn base_url(
    state: &AppState,
    context: Option<&lambda_http::request::RequestContext>,
) -> Option<Url> {
    if let Some(url) = &state.config.public_base_url {
        return Some(url.clone());
    }
    match context? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => {
            domain_url(ctx.domain_name.as_deref()?)
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// `https://{domain}/`, parsed once for the domain last asked about: an
/// instance serves one API's domain (or a few), and this runs for every
/// request.
fn domain_url(domain: &str) -> Option<Url> {
    use std::sync::Mutex;
    static LAST: Mutex<Option<(Box<str>, Url)>> = Mutex::new(None);
    if let Ok(last) = LAST.lock() {
        if let Some((seen, url)) = &*last {
            if **seen == *domain {
                return Some(url.clone());
            }
        }
    }
    let url = Url::parse(&format!("https://{domain}/")).ok()?;
    if let Ok(mut last) = LAST.lock() {
        *last = Some((domain.into(), url.clone()));
    }
    Some(url)
}

pub use crate::urls::public_url;

/// The request id API Gateway (or a function URL) assigned, if any.
pub fn api_request_id(context: Option<&lambda_http::request::RequestContext>) -> Option<String> {
    #[allow(irrefutable_let_patterns)]
    if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) = context {
        return ctx.request_id.clone();
    }
    None
}

/// The request id API Gateway assigned, for log correlation.
pub fn request_id(
    context: Option<&lambda_http::request::RequestContext>,
    headers: &HeaderMap,
) -> String {
    if let Some(id) = api_request_id(context) {
        return id;
    }
    headers
        .get(crate::wire::headers::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| crate::crypto::random_token(8))
}

/// A JSON error body for HTTP-level failures: `{"error": ..., "message": ...}`.
pub fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": error, "message": message})),
    )
        .into_response()
}

#[cfg(test)]
mod router_tests;

#[cfg(test)]
mod tests {
    use super::domain_url;

    #[test]
    fn each_domain_gets_its_own_base_url() {
        for domain in [
            "a.example.com",
            "a.example.com",
            "b.example.com",
            "a.example.com",
        ] {
            let url = domain_url(domain).expect("a URL");
            assert_eq!(url.as_str(), format!("https://{domain}/"));
        }
        assert!(domain_url("bad domain/").is_none());
        assert_eq!(
            domain_url("a.example.com").map(String::from).as_deref(),
            Some("https://a.example.com/")
        );
    }
}
