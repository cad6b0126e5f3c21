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

/// A client over each transport: hyper's (the default) and reqwest's
/// (where a proxy is configured).
fn clients() -> [(&'static str, UpstreamClient); 2] {
    let client = || {
        UpstreamClient::new(
            crate::state::http_client(),
            std::sync::Arc::new(crate::adapters::memory::MemoryStore::new()),
            std::sync::Arc::new(crate::ports::SystemClock),
        )
    };
    [
        ("direct", client().direct()),
        ("reqwest", client().through_reqwest()),
    ]
}

#[tokio::test]
async fn an_unusable_target_url_is_a_protocol_error_not_an_outage() {
    for (via, client) in clients() {
        // One the URL parser refuses, and one it takes but HTTP cannot
        // reach.
        for url in ["http://exa mple.test/mcp", "ftp://example.test/mcp"] {
            let call = tools_call(url, None);
            let err = client
                .post(&call, None, Some("2025-06-18"), None, "{}".into())
                .await
                .unwrap_err();
            assert!(
                matches!(err, UpstreamError::Protocol(_)),
                "{via} {url}: {err:?}"
            );
            assert!(!err.is_retryable(), "{via} {url}");
        }
    }
}

/// An upstream that does not answer in time, or does not finish its
/// answer in time, is an outage (retryable), not a call that waits for
/// ever.
#[tokio::test]
async fn an_upstream_that_stalls_times_out_on_either_transport() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers its first connection's request with headers and part of an
    // event stream, then stalls; never answers its second.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut open = vec![];
        for first in [true, false].into_iter().cycle() {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            if first {
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\n: hi\n\n\r\n")
                    .await;
                // Then a comment every 100 ms, for ever: never idle.
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        if socket.write_all(b"3\r\n:\n\n\r\n").await.is_err() {
                            return;
                        }
                    }
                });
                continue;
            }
            open.push(socket);
        }
    });
    for (via, client) in clients() {
        let client = client.with_stream_timeout(std::time::Duration::from_millis(300));
        let call = tools_call(&url, None);
        // The stream's deadline covers its body.
        let mut res = client
            .open_stream(&call, "s", "2025-06-18")
            .await
            .unwrap_or_else(|e| panic!("{via}: the headers came: {e:?}"));
        assert_eq!(res.status(), 200, "{via}");
        assert_eq!(
            res.chunk().await.unwrap().as_deref(),
            Some(&b": hi\n\n"[..]),
            "{via}"
        );
        // The body's deadline holds however steadily it trickles.
        let started = std::time::Instant::now();
        let err = loop {
            match res.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{via}: the stream does not end"),
                Err(e) => break e,
            }
        };
        assert!(err.is_retryable(), "{via}: {err:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{via}: waited {:?}",
            started.elapsed()
        );
        // And the answer's head.
        let err = client.open_stream(&call, "s", "2025-06-18").await.err();
        assert!(
            err.as_ref().is_some_and(UpstreamError::is_retryable),
            "{via}: {err:?}"
        );
    }
    server.abort();
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
    let settings = crate::domain::ApiKeySettings {
        secret_arn: "arn".into(),
        placement: ApiKeyPlacement::Query,
        name: "key".into(),
        prefix: String::new(),
    };
    let key = secrecy::SecretString::from("s3cret");
    for (via, client) in clients() {
        seen.lock().unwrap().clear();
        for api_key in [Some((&settings, &key)), Some((&settings, &key)), None] {
            let call = tools_call(&url, api_key);
            let mut res = client
                .post(&call, None, Some("2025-06-18"), None, "{}".into())
                .await
                .expect("the upstream answers");
            assert_eq!(res.status(), 200, "{via}");
            assert_eq!(res.chunk().await.unwrap().as_deref(), Some(&b"{}"[..]));
            assert_eq!(res.chunk().await.unwrap(), None, "{via}");
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/mcp?tenant=a&key=s3cret",
                "/mcp?tenant=a&key=s3cret",
                "/mcp?tenant=a"
            ],
            "{via}"
        );
        assert_eq!(client.parsed_urls.read().unwrap().len(), 1, "{via}");
    }
    server.abort();
}

/// An upstream sees the same request from either transport: the same
/// headers (Host, the gateway's User-Agent, the MCP and credential
/// headers, the body's length) and the same body.
#[tokio::test]
async fn either_transport_sends_the_same_request() {
    use std::sync::{Arc, Mutex};
    type Seen = Vec<(Vec<(String, String)>, String)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let app = axum::Router::new().fallback({
        let seen = seen.clone();
        move |headers: axum::http::HeaderMap, body: String| {
            let mut h: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            h.sort();
            seen.lock().unwrap().push((h, body));
            async { "{}" }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/mcp");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let token = secrecy::SecretString::from("t0ken");
    for (_, client) in clients() {
        let call = Call {
            token: Some(&token),
            ..tools_call(&url, None)
        };
        client
            .post(
                &call,
                None,
                Some("2026-07-28"),
                Some(("tools/call", Some("echo".into()))),
                r#"{"jsonrpc":"2.0"}"#.into(),
            )
            .await
            .expect("the upstream answers");
    }
    server.abort();
    let seen = seen.lock().unwrap();
    let [(direct, body), (reqwest, reqwest_body)] = &seen[..] else {
        panic!("two requests: {seen:?}")
    };
    assert_eq!(direct, reqwest);
    assert_eq!(body, reqwest_body);
    assert_eq!(body, r#"{"jsonrpc":"2.0"}"#);
    let get = |k: &str| direct.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("host"), Some(addr.to_string().as_str()));
    assert_eq!(get("user-agent"), Some(crate::state::USER_AGENT));
    assert_eq!(get("authorization"), Some("Bearer t0ken"));
    assert_eq!(get("mcp-method"), Some("tools/call"));
    assert_eq!(get("mcp-name"), Some("echo"));
    assert_eq!(get("content-length"), Some("17"));
}
