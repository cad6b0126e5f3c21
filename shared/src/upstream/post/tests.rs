//! Unit tests of one upstream request.

use super::*;

/// A plain call of `tools/call` to `url`, with a query or header API
/// key when given.
fn tools_call<'a>(
    url: &'a str,
    api_key: Option<(&'a crate::domain::ApiKeySettings, &'a secrecy::SecretString)>,
) -> Call<'a> {
    Call {
        sub: "alice",
        target: "t",
        url,
        token: None,
        dpop: None,
        api_key,
        aws_iam: None,
        method: "tools/call",
        params: None,
        relay: None,
        log_level: None,
        param_headers: &[],
        client_capabilities: None,
        legacy: false,
        client_requests: None,
    }
}

#[tokio::test]
async fn an_unusable_target_url_is_a_protocol_error_not_an_outage() {
    let client = UpstreamClient::new(
        crate::state::http_client(),
        std::sync::Arc::new(crate::adapters::memory::MemoryStore::new()),
        std::sync::Arc::new(crate::ports::SystemClock),
    );
    // One the URL parser refuses, and one it takes but HTTP cannot
    // reach (reqwest refuses the scheme when it sends).
    for url in ["http://exa mple.test/mcp", "ftp://example.test/mcp"] {
        let call = tools_call(url, None);
        let err = client
            .post(&call, None, Some("2025-06-18"), None, "{}".into())
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Protocol(_)), "{url}: {err:?}");
        assert!(!err.is_retryable(), "{url}");
    }
}

/// A target's URL is parsed once per instance; the key a query API
/// key target adds goes into each request's own copy, once.
#[tokio::test]
async fn each_request_carries_the_target_url_and_its_query_key_once() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new().fallback({
        let seen = seen.clone();
        move |uri: axum::http::Uri| {
            seen.lock().unwrap().push(uri.to_string());
            async { "{}" }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp?tenant=a", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = UpstreamClient::new(
        crate::state::http_client(),
        Arc::new(crate::adapters::memory::MemoryStore::new()),
        Arc::new(crate::ports::SystemClock),
    );
    let settings = crate::domain::ApiKeySettings {
        secret_arn: "arn".into(),
        placement: ApiKeyPlacement::Query,
        name: "key".into(),
        prefix: String::new(),
    };
    let key = secrecy::SecretString::from("s3cret");
    for api_key in [Some((&settings, &key)), Some((&settings, &key)), None] {
        let call = tools_call(&url, api_key);
        client
            .post(&call, None, Some("2025-06-18"), None, "{}".into())
            .await
            .expect("the upstream answers");
    }
    server.abort();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "/mcp?tenant=a&key=s3cret",
            "/mcp?tenant=a&key=s3cret",
            "/mcp?tenant=a"
        ]
    );
    assert_eq!(client.parsed_urls.read().unwrap().len(), 1);
}
