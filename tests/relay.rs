//! What upstreams say outside a call's plain answer, through the gateway:
//! an upstream's `input_required` rounds (2026-07-28) and its requests during
//! a call (2025) put to the client and answered, notifications on a
//! streaming function URL, and resource subscriptions (2025 standalone
//! streams, 2026-07-28 `subscriptions/listen`). Each relay is bound to its
//! user, and to what the policies let that user read.

use std::sync::Arc;
use std::time::Duration;

use gateway_tests::{fixtures_gateway, tool_text, RawClient};
use serde_json::{json, Value};

/// An upstream's `input_required` round reaches a 2026-07-28 client under
/// the gateway's own `requestState`, which binds the round to the user, the
/// call and the target: another user replaying it, the same state on
/// another call, or a forged state is refused before anything reaches the
/// upstream, and only the owner's retry brings the upstream's state back
/// to it. The upstream sees only the capabilities the client declared.
#[tokio::test]
async fn a_relayed_input_round_belongs_to_its_user_call_and_target() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let (_gw, server) = fixtures_gateway(&fixtures_url, &[]).await;
    let url = format!("{}/mcp", server.base);
    let alice = RawClient::new(&url, &[("x-gateway-dev-user", "alice")]);
    let bob = RawClient::new(&url, &[("x-gateway-dev-user", "bob")]);
    let caps = json!({"elicitation": {}, "sampling": {}});
    let tool = "test_input_required_result_request_state";

    let first = alice
        .modern(
            "tools/call",
            json!({"name": tool, "arguments": {}}),
            caps.clone(),
        )
        .await;
    let result = &first.body["result"];
    assert_eq!(result["resultType"], "input_required", "{:?}", first.body);
    assert_eq!(
        result["inputRequests"]["confirm"]["method"],
        "elicitation/create"
    );
    let state = result["requestState"].as_str().expect("a requestState");
    let answers = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
    let retry = |state: &str| json!({"name": tool, "arguments": {}, "requestState": state, "inputResponses": answers});
    // The gateway's own refusal (the upstream SDK words its own
    // "Invalid or expired requestState": a state passed on would get that).
    let refused = |r: &gateway_tests::Exchange, who: &str| {
        assert_eq!(r.body["error"]["code"], -32602, "{who}: {:?}", r.body);
        assert_eq!(
            r.body["error"]["message"], "invalid or expired requestState",
            "{who}: {:?}",
            r.body
        );
    };

    // Bob replays Alice's round.
    refused(
        &bob.modern("tools/call", retry(state), caps.clone()).await,
        "another user",
    );
    // Alice's state on another call (other arguments, another tool).
    let mut other_args = retry(state);
    other_args["arguments"] = json!({"x": 1});
    refused(
        &alice.modern("tools/call", other_args, caps.clone()).await,
        "other arguments",
    );
    let mut other_tool = retry(state);
    other_tool["name"] = json!("test_input_required_result_tampered_state");
    refused(
        &alice.modern("tools/call", other_tool, caps.clone()).await,
        "another tool",
    );
    // A forged or tampered state.
    refused(
        &alice
            .modern("tools/call", retry("awaiting-confirmation"), caps.clone())
            .await,
        "the upstream's own state, unwrapped",
    );
    refused(
        &alice
            .modern("tools/call", retry(&format!("{state}x")), caps.clone())
            .await,
        "tampered",
    );
    // The owner's retry completes: the upstream got its state back.
    let done = alice.modern("tools/call", retry(state), caps.clone()).await;
    assert_eq!(
        done.body["result"]["resultType"], "complete",
        "{:?}",
        done.body
    );
    assert!(
        tool_text(&done.body["result"]).starts_with("state-ok"),
        "{:?}",
        done.body
    );

    // The upstream asks only with what the client declared.
    let ask = |caps: serde_json::Value| {
        let alice = &alice;
        async move {
            let r = alice
                .modern(
                    "tools/call",
                    json!({"name": "test_input_required_result_capabilities", "arguments": {}}),
                    caps,
                )
                .await;
            r.body["result"]["inputRequests"]["ask"]["method"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(ask(json!({"sampling": {}})).await, "sampling/createMessage");
    assert_eq!(ask(json!({"roots": {}, "tasks": {}})).await, "roots/list");
    assert_eq!(ask(json!({"elicitation": {}})).await, "elicitation/create");

    // A 2025 client is told plainly that the upstream wants input.
    let mut old = RawClient::new(&url, &[("x-gateway-dev-user", "alice")]);
    old.initialize("2025-11-25", json!({"elicitation": {}}))
        .await;
    let r = old
        .request("tools/call", json!({"name": tool, "arguments": {}}))
        .await;
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("2026-07-28"), "{:?}", r.body);
}

/// A 2025 upstream that asks the client something during a call (here
/// sampling) on the call's event stream gets the gateway's "method not
/// found" at once, on its session, as a client without the capability
/// answers; the call then ends with the upstream's own result instead of
/// waiting for a reply that cannot come.
#[tokio::test]
async fn a_2025_upstreams_request_during_a_call_is_answered_not_left_waiting() {
    let upstream = AskingUpstream::start().await;
    let (_gw, server) = fixtures_gateway(&upstream.url, &[]).await;
    let mut c = RawClient::new(
        &format!("{}/mcp", server.base),
        &[("x-gateway-dev-user", "alice")],
    );
    c.initialize("2025-11-25", json!({"sampling": {}})).await;
    let r = c
        .request("tools/call", json!({"name": "ask", "arguments": {}}))
        .await;
    let text = tool_text(&r.body["result"]);
    assert!(
        text.starts_with(
            "the client said: Method not found: the gateway does not relay sampling/createMessage"
        ),
        "{:?}",
        r.body
    );
}

/// A 2025 upstream that, asked to call `ask`, first asks the client for a
/// sampling (its request id `ask-1`, on the call's stream, session `s-1`)
/// and answers the call with what the answer said. Every response it
/// receives is kept. Stopped on drop.
struct AskingUpstream {
    url: String,
    received: Arc<std::sync::Mutex<Vec<Value>>>,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for AskingUpstream {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl AskingUpstream {
    async fn start() -> AskingUpstream {
        use axum::response::IntoResponse;
        type Waiting = Arc<tokio::sync::Mutex<Option<tokio::sync::oneshot::Sender<Value>>>>;
        let waiting: Waiting = Default::default();
        let received: Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let kept = received.clone();
        let upstream = axum::Router::new().route(
            "/mcp",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                    let (waiting, kept) = (waiting.clone(), kept.clone());
                    async move {
                        let message = body.0;
                        let id = message["id"].clone();
                        let session = [
                            ("mcp-session-id", "s-1"),
                            ("content-type", "application/json"),
                        ];
                        match message["method"].as_str() {
                            Some("initialize") => (
                                session,
                                json!({"jsonrpc": "2.0", "id": id, "result": {
                                    "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                    "serverInfo": {"name": "asker", "version": "1"}}})
                                .to_string(),
                            )
                                .into_response(),
                            Some("tools/call") => {
                                assert_eq!(headers["mcp-session-id"], "s-1");
                                let (tx, rx) = tokio::sync::oneshot::channel();
                                *waiting.lock().await = Some(tx);
                                let ask = json!({"jsonrpc": "2.0", "id": "ask-1",
                                    "method": "sampling/createMessage",
                                    "params": {"messages": [], "maxTokens": 5}});
                                // The question first; the result once its answer came.
                                let first = futures::stream::once(async move {
                                    Ok::<_, std::convert::Infallible>(format!(
                                        "event: message\ndata: {ask}\n\n"
                                    ))
                                });
                                let last = futures::stream::once(async move {
                                    let answer = tokio::time::timeout(Duration::from_secs(20), rx)
                                        .await
                                        .ok()
                                        .and_then(Result::ok)
                                        .unwrap_or(json!({"error": {"message": "no answer came"}}));
                                    let text = answer["result"]["content"]["text"]
                                        .as_str()
                                        .or(answer["error"]["message"].as_str())
                                        .unwrap_or("?")
                                        .to_owned();
                                    let result = json!({"jsonrpc": "2.0", "id": id, "result": {
                                        "content": [{"type": "text",
                                            "text": format!("the client said: {text}")}]}});
                                    Ok(format!("event: message\ndata: {result}\n\n"))
                                });
                                (
                                    [
                                        ("content-type", "text/event-stream"),
                                        ("mcp-session-id", "s-1"),
                                    ],
                                    axum::body::Body::from_stream(futures::StreamExt::chain(
                                        first, last,
                                    )),
                                )
                                    .into_response()
                            }
                            Some(_) if message.get("id").is_none() => {
                                axum::http::StatusCode::ACCEPTED.into_response()
                            }
                            Some("tools/list") => (
                                session,
                                json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
                                    {"name": "ask", "inputSchema": {"type": "object"}}]}})
                                .to_string(),
                            )
                                .into_response(),
                            Some(_) => (
                                session,
                                json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string(),
                            )
                                .into_response(),
                            // A response: the client's answer to our request.
                            None => {
                                let mut answer = message.clone();
                                answer["session"] = json!(headers
                                    .get("mcp-session-id")
                                    .and_then(|v| v.to_str().ok()));
                                kept.lock().unwrap().push(answer);
                                if message["id"] == "ask-1" {
                                    if let Some(tx) = waiting.lock().await.take() {
                                        let _ = tx.send(message);
                                    }
                                }
                                axum::http::StatusCode::ACCEPTED.into_response()
                            }
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, upstream).await;
        });
        AskingUpstream {
            url,
            received,
            serving,
        }
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

/// The next JSON-RPC message of an SSE answer (`buf` holds what was read
/// past the last event), the message of a JSON answer, or `None` at the
/// end.
async fn next_event(res: &mut reqwest::Response, buf: &mut String) -> Option<Value> {
    if !res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream")
    {
        let mut body = String::new();
        while let Some(chunk) = res.chunk().await.ok()? {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
        return serde_json::from_str(&body).ok();
    }
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if !data.is_empty() {
                return serde_json::from_str(&data.join("\n")).ok();
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), res.chunk())
            .await
            .expect("the stream went quiet")
            .ok()??;
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Where answers stream, a 2025 upstream's request during a call reaches
/// the 2025 client that declared the capability, on the call's own stream,
/// under an id of the gateway's; the client's answer (a POST of its own,
/// which any instance may serve) goes back to the upstream under the
/// upstream's id, on its session, and the call finishes on the stream.
/// Only that user's answer to that request is passed on: another user's,
/// a forged id, a tampered one or the upstream's own id are refused and
/// never reach the upstream.
#[tokio::test]
async fn an_upstreams_request_reaches_the_client_and_only_its_user_answers_it() {
    let upstream = AskingUpstream::start().await;
    let (_gw, server) = fixtures_gateway(&upstream.url, &[("RESPONSE_STREAMING", "on")]).await;
    let mcp = format!("{}/mcp", server.base);
    let mut alice = RawClient::new(&mcp, &[("x-gateway-dev-user", "alice")]);
    alice
        .initialize("2025-11-25", json!({"sampling": {}}))
        .await;
    let mut bob = RawClient::new(&mcp, &[("x-gateway-dev-user", "bob")]);
    bob.initialize("2025-11-25", json!({"sampling": {}})).await;

    let call_ask = |user: &'static str, session: String| {
        gateway_tests::http()
            .post(&mcp)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-gateway-dev-user", user)
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", session)
            .body(
                json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "ask", "arguments": {}}})
                .to_string(),
            )
            .send()
    };
    let mut res = call_ask("alice", alice.session.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let asked = next_event(&mut res, &mut buf)
        .await
        .expect("the upstream's request");
    assert_eq!(asked["method"], "sampling/createMessage");
    assert_eq!(asked["params"], json!({"messages": [], "maxTokens": 5}));
    let id = asked["id"].as_str().expect("a string id").to_owned();
    assert_ne!(
        id, "ask-1",
        "the upstream's own id stays between it and the gateway"
    );

    let answer = |id: Value, text: &str| {
        json!({"jsonrpc": "2.0", "id": id, "result": {"role": "assistant",
            "content": {"type": "text", "text": text}, "model": "m"}})
        .to_string()
    };
    // Bob answers Alice's request: refused.
    let r = bob.post_raw(answer(json!(id), "bob was here"), &[]).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // Alice, with a tampered id, a forged one, the upstream's own id.
    let mut tampered = id.clone().into_bytes();
    let at = tampered.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    for forged in [
        json!(String::from_utf8(tampered).unwrap()),
        json!("k1.not-sealed"),
        json!("ask-1"),
        json!(1),
    ] {
        let r = alice.post_raw(answer(forged.clone(), "forged"), &[]).await;
        assert_eq!(r.status, 400, "{forged}: {:?}", r.body);
    }
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());

    // Alice's own answer goes through, and the call finishes on the stream.
    let r = alice.post_raw(answer(json!(id), "forty-two"), &[]).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let last = next_event(&mut res, &mut buf)
        .await
        .expect("the call's result");
    assert_eq!(last["id"], 9);
    assert_eq!(tool_text(&last["result"]), "the client said: forty-two");
    assert_eq!(
        upstream.received(),
        vec![
            json!({"jsonrpc": "2.0", "id": "ask-1", "session": "s-1", "result": {
            "role": "assistant", "content": {"type": "text", "text": "forty-two"}, "model": "m"}})
        ]
    );
    assert!(
        next_event(&mut res, &mut buf).await.is_none(),
        "nothing after the result"
    );

    // A client that did not declare sampling is never asked: the upstream
    // gets the error at once, and the call finishes.
    let mut carol = RawClient::new(&mcp, &[("x-gateway-dev-user", "carol")]);
    carol.initialize("2025-11-25", json!({"roots": {}})).await;
    let mut res = call_ask("carol", carol.session.clone().unwrap())
        .await
        .unwrap();
    let mut buf = String::new();
    let only = next_event(&mut res, &mut buf)
        .await
        .expect("the call's result");
    assert!(
        tool_text(&only["result"]).starts_with("the client said: Method not found"),
        "{only:?}"
    );
}

/// The Lambda path with response streaming (a function URL with
/// `RESPONSE_STREAM`): through lambda_http's streaming adapter, as the
/// runtime drives it, the function's answer starts with the prelude (status
/// 200, an event stream) and the first progress event goes out while the
/// call still runs.
#[tokio::test]
async fn a_streaming_function_url_sends_progress_while_the_call_runs() {
    use futures::StreamExt;
    use lambda_http::tower::Service;
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let (gw, _server) = fixtures_gateway(&fixtures_url, &[]).await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
    "name": "test_tool_with_progress", "arguments": {}, "_meta": {
        "progressToken": "p-5",
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    }}});
    // A function URL event (payload format 2.0).
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/mcp", "rawQueryString": "",
        "headers": {
            "host": "localhost", "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
            "mcp-name": "test_tool_with_progress", "x-gateway-dev-user": "alice",
        },
        "requestContext": {
            "accountId": "123456789012", "apiId": "abcdefghij",
            "domainName": "localhost", "domainPrefix": "abcdefghij",
            "http": {"method": "POST", "path": "/mcp", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "req-stream-1", "routeKey": "$default", "stage": "$default",
            "time": "01/Dec/2026:15:00:00 +0000", "timeEpoch": 1796137200000u64,
        },
        "body": call.to_string(),
        "isBase64Encoded": false,
    });
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(event).unwrap();
    let mut adapter =
        lambda_http::StreamAdapter::from(gateway_shared::edge::proxy::router(gw.state.clone()));
    let started = std::time::Instant::now();
    let response = adapter
        .call(lambda_http::LambdaEvent::new(request, Default::default()))
        .await
        .unwrap();
    assert_eq!(response.metadata_prelude.status_code, 200);
    assert_eq!(
        response.metadata_prelude.headers["content-type"],
        "text/event-stream"
    );
    let mut stream = response.stream;
    let mut text = String::new();
    let (mut first_progress, mut result) = (None, None);
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first_progress.is_none() && text.contains("notifications/progress") {
            first_progress = Some(started.elapsed());
        }
        if text.contains("\"id\":5") {
            result = Some(started.elapsed());
        }
    }
    let (first_progress, result) = (first_progress.unwrap(), result.unwrap());
    println!("streamed through Lambda's adapter: first progress after {first_progress:?}, result after {result:?}");
    assert!(
        result >= first_progress + Duration::from_millis(90),
        "the first progress at {first_progress:?}, the result at {result:?}: {text}"
    );
    assert!(text.contains("Progress test completed"), "{text}");
}

/// A 2025 client's resource subscription, where answers stream: the
/// gateway says it can subscribe, passes `resources/subscribe` to the
/// resource's upstream in the user's own 2025 session, and the client's
/// standalone stream (`GET /mcp`) carries the updates that session hears.
/// Another user cannot open a stream on that client's session. Where
/// answers do not stream, subscriptions are neither offered nor taken.
#[tokio::test]
async fn a_subscription_brings_its_resources_updates_to_its_users_stream() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let (_gw, server) = fixtures_gateway(&fixtures_url, &[("RESPONSE_STREAMING", "on")]).await;
    let mcp = format!("{}/mcp", server.base);
    let mut alice = RawClient::new(&mcp, &[("x-gateway-dev-user", "alice")]);
    let init = alice.initialize("2025-11-25", json!({})).await;
    assert_eq!(
        init.body["result"]["capabilities"]["resources"]["subscribe"],
        true
    );
    let watched = "test://watched-resource";
    let r = alice
        .request("resources/subscribe", json!({"uri": watched}))
        .await;
    assert_eq!(r.body["result"], json!({}), "{:?}", r.body);

    let open_stream = |user: &'static str, session: String| {
        gateway_tests::http()
            .get(&mcp)
            .header("accept", "text/event-stream")
            .header("x-gateway-dev-user", user)
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-session-id", session)
            .send()
    };
    // A streaming gateway names GET among its methods.
    let r = gateway_tests::http().delete(&mcp).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), &r.headers()["allow"]),
        (405, &"GET, POST".parse().unwrap())
    );
    // Bob cannot listen on Alice's session.
    let stolen = open_stream("bob", alice.session.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(stolen.status(), 404);

    let mut stream = open_stream("alice", alice.session.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // The update is reported until the gateway's stream has joined the
    // upstream session's (it looks for sessions every LOOK_AGAIN).
    let mut buf = String::new();
    let update = heard_while(&mut stream, &mut buf, || async {
        assert_eq!(update_watched(&alice).await, "told 1 subscribed sessions");
    })
    .await;
    assert_eq!(
        update,
        Some(
            json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
            "params": {"uri": watched}})
        )
    );

    // Unsubscribed: the upstream no longer reports to the session.
    let r = alice
        .request("resources/unsubscribe", json!({"uri": watched}))
        .await;
    assert_eq!(r.body["result"], json!({}), "{:?}", r.body);
    assert_eq!(update_watched(&alice).await, "told 0 subscribed sessions");
    drop(stream);

    // Where answers do not stream: not offered, not taken, no stream.
    let (_gw2, plain) = fixtures_gateway(&fixtures_url, &[]).await;
    let mcp = format!("{}/mcp", plain.base);
    let mut carol = RawClient::new(&mcp, &[("x-gateway-dev-user", "carol")]);
    let init = carol.initialize("2025-11-25", json!({})).await;
    assert_eq!(
        init.body["result"]["capabilities"]["resources"]["subscribe"],
        false
    );
    let r = carol
        .request("resources/subscribe", json!({"uri": watched}))
        .await;
    assert_eq!(r.body["error"]["code"], -32601, "{:?}", r.body);
    let r = gateway_tests::http()
        .get(&mcp)
        .header("accept", "text/event-stream")
        .header("x-gateway-dev-user", "carol")
        .header("mcp-session-id", carol.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

/// A 2026-07-28 client's `subscriptions/listen`, where answers stream: the
/// stream acknowledges the resources the gateway listens to for it (those
/// of its 2026-07-28 targets), then carries their updates, stamped with
/// the client's own subscription id. Where answers do not stream, the
/// method is not offered.
#[tokio::test]
async fn a_2026_listen_carries_the_updates_of_the_resources_it_names() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let (_gw, server) = fixtures_gateway(&fixtures_url, &[("RESPONSE_STREAMING", "on")]).await;
    let mcp = format!("{}/mcp", server.base);
    let alice = RawClient::new(&mcp, &[("x-gateway-dev-user", "alice")]);
    let discovered = alice.modern("server/discover", json!({}), json!({})).await;
    assert_eq!(
        discovered.body["result"]["capabilities"]["resources"]["subscribe"],
        true
    );
    let watched = "test://watched-resource";
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    });
    let mut stream = gateway_tests::http()
        .post(&mcp)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-gateway-dev-user", "alice")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .body(
            json!({"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
                "params": {"notifications": {"resourceSubscriptions": [watched, "test://no-such-thing"]},
                    "_meta": meta}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let ack = next_event(&mut stream, &mut buf)
        .await
        .expect("the acknowledgement");
    let stamp = json!({"io.modelcontextprotocol/subscriptionId": "listen-1"});
    assert_eq!(
        ack,
        json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": {"resourceSubscriptions": [watched, "test://no-such-thing"]},
                "_meta": stamp}}),
        "a lone target is asked about every resource (it honors, and never updates, one it lacks)"
    );
    // Updates reported until the gateway's listen upstream is in place.
    let update = heard_while(&mut stream, &mut buf, || async {
        let r = alice
            .modern(
                "tools/call",
                json!({"name": "test_update_watched_resource", "arguments": {}}),
                json!({}),
            )
            .await;
        assert!(r.body["result"].is_object(), "{:?}", r.body);
    })
    .await;
    assert_eq!(
        update,
        Some(
            json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
            "params": {"uri": watched, "_meta": stamp}})
        )
    );
    drop(stream);

    let (_gw2, plain) = fixtures_gateway(&fixtures_url, &[]).await;
    let bob = RawClient::new(
        &format!("{}/mcp", plain.base),
        &[("x-gateway-dev-user", "bob")],
    );
    let discovered = bob.modern("server/discover", json!({}), json!({})).await;
    assert_eq!(
        discovered.body["result"]["capabilities"]["resources"]["subscribe"],
        false
    );
    let r = bob
        .modern(
            "subscriptions/listen",
            json!({"notifications": {"resourceSubscriptions": [watched]}}),
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].clone()),
        (404, json!(-32601))
    );
}

/// Subscriptions cannot read around the policies: subscribing to a
/// resource the caller may not read is refused, and once the policies
/// stop allowing a subscribed resource, its updates stop reaching the
/// stream (the upstream still reports them), while unsubscribing stays
/// possible.
#[tokio::test]
async fn subscriptions_carry_only_what_the_policies_let_the_caller_read() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let (gw, server) = fixtures_gateway(
        &fixtures_url,
        &[("RESPONSE_STREAMING", "on"), ("TARGETS_CACHE_SECONDS", "0")],
    )
    .await;
    let watched = "test://watched-resource";
    let forbid_watched = r#"permit(principal, action, resource);
        forbid(principal, action == Gateway::Action::"resources/read",
               resource == Gateway::Resource::"test://watched-resource");"#;
    gw.state.policies.store(Some(forbid_watched)).await.unwrap();
    let mcp = format!("{}/mcp", server.base);
    let mut alice = RawClient::new(&mcp, &[("x-gateway-dev-user", "alice")]);
    alice.initialize("2025-11-25", json!({})).await;
    let r = alice
        .request("resources/subscribe", json!({"uri": watched}))
        .await;
    assert!(r.body["error"].is_object(), "refused: {:?}", r.body);
    assert_eq!(update_watched(&alice).await, "told 0 subscribed sessions");

    // Allowed, subscribed, heard.
    gw.state
        .policies
        .store(Some("permit(principal, action, resource);"))
        .await
        .unwrap();
    let r = alice
        .request("resources/subscribe", json!({"uri": watched}))
        .await;
    assert_eq!(r.body["result"], json!({}), "{:?}", r.body);
    let mut stream = gateway_tests::http()
        .get(&mcp)
        .header("accept", "text/event-stream")
        .header("x-gateway-dev-user", "alice")
        .header("mcp-session-id", alice.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let heard = heard_while(&mut stream, &mut buf, || async {
        assert_eq!(update_watched(&alice).await, "told 1 subscribed sessions");
    })
    .await;
    assert_eq!(heard.unwrap()["params"]["uri"], watched);

    // Forbidden again: the upstream reports, the stream stays quiet.
    gw.state.policies.store(Some(forbid_watched)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(update_watched(&alice).await, "told 1 subscribed sessions");
    }
    let quiet =
        tokio::time::timeout(Duration::from_secs(2), next_event(&mut stream, &mut buf)).await;
    assert!(quiet.is_err(), "an update got through: {quiet:?}");
    // Unsubscribing is still allowed.
    let r = alice
        .request("resources/unsubscribe", json!({"uri": watched}))
        .await;
    assert_eq!(r.body["result"], json!({}), "{:?}", r.body);
    assert_eq!(update_watched(&alice).await, "told 0 subscribed sessions");
}

/// Has the fixture report an update of its watched resource (to the 2025
/// sessions subscribed to it, and to listen streams); what it says.
async fn update_watched(c: &RawClient) -> String {
    let r = c
        .request(
            "tools/call",
            json!({"name": "test_update_watched_resource", "arguments": {}}),
        )
        .await;
    tool_text(&r.body["result"])
}

/// Runs `report` (up to ten times, a second apart) until an event comes on
/// `stream`; that event. The gateway joins upstream streams a moment after
/// a subscription (it looks for them every `LOOK_AGAIN`), so the first
/// reports may go unheard.
async fn heard_while<F, Fut>(
    stream: &mut reqwest::Response,
    buf: &mut String,
    mut report: F,
) -> Option<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..10 {
        report().await;
        if let Ok(event) =
            tokio::time::timeout(Duration::from_secs(1), next_event(stream, buf)).await
        {
            return event;
        }
    }
    None
}
