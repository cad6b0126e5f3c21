//! Router tests of the MCP endpoint: the proxy's Router driven in process
//! with `tower::ServiceExt::oneshot`, on the in-memory store and key set.
//! What needs no peer (framing, protocol eras and their headers, sessions,
//! inbound guards, key-set outages) is tested here; the flows with real
//! peers (moto, oidc-provider, MCP SDKs, Chromium) are in `tests/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::adapters::memory::{MemoryKeys, MemoryStore};
use crate::domain::{Target, TargetAuth};
use crate::ports::Clock;
use crate::{AppState, Config};

const KEYS: &str = r#"{"current":"k1","k1":"0123456789abcdefghijklmnopqrstuvwxyzABCD"}"#;

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The proxy's Router in dev mode on `http://localhost:3000`, in memory.
struct Edge {
    app: Router,
    clock: Arc<TestClock>,
    keys: Arc<MemoryKeys>,
    store: MemoryStore,
}

/// An answer: status, headers and the body as JSON (`Null` when empty).
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Edge {
    fn new(extra: &[(&str, &str)]) -> Edge {
        let mut vars: HashMap<String, String> = [
            ("TABLE_NAME", "gateway"),
            ("KEYSET_SECRET_ARN", "keys"),
            ("INBOUND_AUTH_MODE", "dev"),
            ("PUBLIC_BASE_URL", "http://localhost:3000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000)));
        let keys = Arc::new(MemoryKeys::new(KEYS).unwrap());
        let store = MemoryStore::new();
        let state = AppState::in_memory(config, store.clone(), keys.clone(), clock.clone());
        Edge {
            app: super::proxy::router(state),
            clock,
            keys,
            store,
        }
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// POSTs `body` to `/mcp` as JSON from `localhost`, with `headers`
    /// (which replace the defaults).
    async fn post(&self, body: impl Into<String>, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::post("/mcp").body(Body::from(body.into())).unwrap();
        let h = req.headers_mut();
        for (k, v) in [
            ("host", "localhost:3000"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ]
        .iter()
        .chain(headers)
        {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        self.send(req).await
    }

    /// A JSON-RPC request with id 1.
    async fn request(&self, method: &str, params: Value, headers: &[(&str, &str)]) -> Answer {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post(body.to_string(), headers).await
    }
}

fn code(a: &Answer) -> (u16, Option<i64>) {
    (a.status, a.body["error"]["code"].as_i64())
}

#[tokio::test]
async fn malformed_messages_get_the_spec_errors() {
    let edge = Edge::new(&[("ALLOWED_ORIGINS", "https://app.example")]);
    let cases: Vec<(&str, String, u16, i64)> = vec![
        ("not JSON", "{not json".into(), 400, -32700),
        ("empty", "".into(), 400, -32700),
        (
            "batch",
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.into(),
            400,
            -32600,
        ),
        ("not an object", "42".into(), 400, -32600),
        (
            "wrong jsonrpc",
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.into(),
            400,
            -32600,
        ),
        (
            "object id",
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#.into(),
            400,
            -32600,
        ),
        (
            "string params",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#.into(),
            400,
            -32600,
        ),
        (
            "array params",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#.into(),
            400,
            -32600,
        ),
        (
            "duplicate member",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#.into(),
            400,
            -32600,
        ),
        (
            "no method",
            r#"{"jsonrpc":"2.0","id":1}"#.into(),
            400,
            -32600,
        ),
        // Ids no JSON tree can hold: refused, and the error reply does not
        // fail on them.
        (
            "id out of range",
            r#"{"jsonrpc":"2.0","id":1e400,"method":"nope"}"#.into(),
            400,
            -32600,
        ),
        (
            "id with a lone surrogate",
            r#"{"jsonrpc":"1.0","id":"\ud800","method":"ping"}"#.into(),
            400,
            -32600,
        ),
        (
            "params with a lone surrogate",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}"#.into(),
            400,
            -32700,
        ),
    ];
    for (what, body, status, code) in cases {
        let r = edge.post(body, &[]).await;
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{what}: {:?}", r.body);
        assert_eq!(r.body["jsonrpc"], "2.0");
    }
    // The id is echoed as written.
    let r = edge
        .post(r#"{"jsonrpc":"2.0","id":1.50,"method":"ping"}"#, &[])
        .await;
    assert_eq!(r.status, 200);
    let r = edge
        .post(r#"{"jsonrpc":"1.0","id":"abc","method":"ping"}"#, &[])
        .await;
    assert_eq!(r.body["id"], "abc");
    let r = edge.request("no/such/method", json!({}), &[]).await;
    assert_eq!(code(&r), (200, Some(-32601)));
    let r = edge
        .request("tools/call", json!({"arguments": {}}), &[])
        .await;
    assert_eq!(r.body["error"]["code"], -32602, "missing name");
    let r = edge
        .request("tools/call", json!({"name": "nothing___here"}), &[])
        .await;
    assert_eq!(r.body["error"]["code"], -32602, "unknown tool");
    let r = edge
        .request("tools/list", json!({"cursor": "not-a-cursor"}), &[])
        .await;
    assert_eq!(r.body["error"]["code"], -32602, "bad cursor");
    // Notifications: 202, no body.
    let r = edge
        .post(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#,
            &[],
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (202, Value::Null));
    // A response to no request the gateway made: 400, saying so.
    for stray in [
        r#"{"jsonrpc":"2.0","id":"x","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"no"}}"#,
    ] {
        let r = edge.post(stray, &[]).await;
        assert_eq!(r.status, 400, "{stray}");
        assert!(r.body["message"]
            .as_str()
            .unwrap()
            .contains("answers no request"));
    }
    // Oversized: refused before parsing.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":"{}"}}}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let r = edge.post(big, &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.body["error"], "payload_too_large",
        "a readable JSON error"
    );
    // Origin not allowed, then allowed.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let r = edge.post(ping, &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, 403);
    let r = edge.post(ping, &[("origin", "https://app.example")]).await;
    assert_eq!(r.status, 200);
    // GET and DELETE: stateless.
    for m in ["GET", "DELETE"] {
        let req = Request::builder()
            .method(m)
            .uri("/mcp")
            .header("host", "localhost:3000")
            .body(Body::empty())
            .unwrap();
        let r = edge.send(req).await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.headers["allow"], "POST");
    }
}

/// Initializes a 2025-06-18 session for `user`; its `Mcp-Session-Id`.
async fn initialize(edge: &Edge, user: &str) -> String {
    let r = edge
        .request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            &[("x-gateway-dev-user", user)],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["result"]["protocolVersion"], "2025-06-18");
    r.headers["mcp-session-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn sessions_are_sealed_per_user_and_expire() {
    let edge = Edge::new(&[]);
    let session = initialize(&edge, "alice").await;
    let ping = |user: &'static str, session: String| {
        let edge = &edge;
        async move {
            edge.request(
                "ping",
                json!({}),
                &[
                    ("x-gateway-dev-user", user),
                    ("mcp-protocol-version", "2025-06-18"),
                    ("mcp-session-id", &session),
                ],
            )
            .await
            .status
        }
    };
    assert_eq!(ping("alice", session.clone()).await, 200);
    // Alice's session presented by another user: not found.
    assert_eq!(ping("bob", session.clone()).await, 404);
    for forged in ["garbage", "k1.AAAA", ""] {
        assert_eq!(ping("alice", forged.to_owned()).await, 404, "{forged:?}");
    }
    edge.clock.0.fetch_add(25 * 3600, Ordering::SeqCst);
    assert_eq!(ping("alice", session).await, 404, "expired");
}

#[tokio::test]
async fn a_key_set_outage_is_a_retry_not_a_lost_session() {
    let edge = Edge::new(&[]);
    let session = initialize(&edge, "alice").await;
    let headers = [
        ("x-gateway-dev-user", "alice"),
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-session-id", session.as_str()),
    ];
    edge.keys.set_readable(false);
    let r = edge.request("ping", json!({}), &headers).await;
    assert_eq!(code(&r), (503, Some(-32000)), "{:?}", r.body);
    // No session can be started either: a retry, not a broken answer.
    let r = edge
        .request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}}),
            &[("x-gateway-dev-user", "alice")],
        )
        .await;
    assert_eq!(code(&r), (503, Some(-32000)), "{:?}", r.body);
    // A requestState cannot be checked: retry later, not "invalid".
    crate::ports::TargetCatalog::put(
        &edge.store,
        &Target {
            name: "docs".into(),
            display_name: None,
            mcp_url: "http://127.0.0.1:9/mcp".into(),
            auth: TargetAuth::None,
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: vec![json!({"name": "search", "inputSchema": {"type": "object"}})].into(),
        },
    )
    .await
    .unwrap();
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let retry = || {
        edge.request(
            "tools/call",
            json!({"_meta": meta, "name": "search", "arguments": {}, "requestState": "k1.AAAA"}),
            &[
                ("x-gateway-dev-user", "alice"),
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "search"),
            ],
        )
    };
    let r = retry().await;
    assert_eq!(code(&r), (200, Some(-32000)), "{:?}", r.body);
    // Once the keys are back, a forged requestState is refused as such.
    edge.keys.set_readable(true);
    let r = retry().await;
    assert_eq!(code(&r), (200, Some(-32602)), "{:?}", r.body);
    // The same session works again once the key set can be read.
    assert_eq!(edge.request("ping", json!({}), &headers).await.status, 200);
}

#[tokio::test]
async fn modern_requests_with_wrong_headers_get_the_2026_errors() {
    let edge = Edge::new(&[]);
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let send = |method: &str, params: Value, headers: Vec<(&'static str, String)>| {
        let body =
            json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
        let edge = &edge;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            edge.post(body, &headers).await
        }
    };
    let v = || ("mcp-protocol-version", "2026-07-28".to_string());
    let m = |x: &str| ("mcp-method", x.to_string());

    let r = send("tools/list", json!({}), vec![v(), m("tools/list")]).await;
    assert_eq!(code(&r), (400, Some(-32602)), "no _meta: {:?}", r.body);
    let r = send("tools/list", json!({"_meta": meta}), vec![v()]).await;
    assert_eq!(code(&r), (400, Some(-32020)), "no Mcp-Method");
    let r = send(
        "tools/list",
        json!({"_meta": meta}),
        vec![v(), m("prompts/list")],
    )
    .await;
    assert_eq!(code(&r), (400, Some(-32020)), "wrong Mcp-Method");
    let r = send(
        "tools/call",
        json!({"_meta": meta, "name": "a"}),
        vec![v(), m("tools/call"), ("mcp-name", "b".into())],
    )
    .await;
    assert_eq!(code(&r), (400, Some(-32020)), "wrong Mcp-Name");
    let r = send(
        "tools/call",
        json!({"_meta": meta, "name": "a"}),
        vec![v(), m("tools/call")],
    )
    .await;
    assert_eq!(code(&r), (400, Some(-32020)), "no Mcp-Name");
    let odd = json!({"io.modelcontextprotocol/protocolVersion": "v999.0.0", "io.modelcontextprotocol/clientCapabilities": {}});
    let r = send(
        "tools/list",
        json!({"_meta": odd}),
        vec![("mcp-protocol-version", "v999.0.0".into()), m("tools/list")],
    )
    .await;
    assert_eq!(code(&r), (400, Some(-32022)), "unsupported: {:?}", r.body);
    assert_eq!(r.body["error"]["data"]["requested"], "v999.0.0");
    let r = send(
        "tools/list",
        json!({"_meta": odd}),
        vec![v(), m("tools/list")],
    )
    .await;
    assert_eq!(code(&r), (400, Some(-32020)), "header and _meta differ");
    for removed in ["initialize", "ping", "logging/setLevel", "unknown/method"] {
        let r = send(removed, json!({"_meta": meta}), vec![v(), m(removed)]).await;
        assert_eq!(code(&r), (404, Some(-32601)), "{removed}");
        assert_eq!(r.body["id"], 7);
    }
    let r = send(
        "server/discover",
        json!({"_meta": meta}),
        vec![v(), m("server/discover")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["result"]["resultType"], "complete");
    assert!(r.body["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"].is_string());
    // Non-ASCII names travel base64-encoded in Mcp-Name.
    let r = send(
        "tools/call",
        json!({"_meta": meta, "name": "naïve"}),
        vec![
            v(),
            m("tools/call"),
            ("mcp-name", crate::wire::header_value("naïve")),
        ],
    )
    .await;
    assert_eq!(
        r.body["error"]["code"], -32602,
        "headers accepted; the tool is unknown: {:?}",
        r.body
    );
}

#[tokio::test]
async fn post_mcp_requires_json_content_type() {
    let edge = Edge::new(&[]);
    let post = |content_type: Option<&'static str>| {
        let mut req = Request::post("/mcp")
            .header("host", "localhost:3000")
            .header("accept", "application/json, text/event-stream");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
            .unwrap();
        edge.send(req)
    };
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let r = post(ct).await;
        assert_eq!(r.status, 415, "{ct:?}");
        assert_eq!(r.body["error"], "unsupported_media_type", "{ct:?}");
    }
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
    ] {
        assert_eq!(post(Some(ct)).await.status, 200, "{ct}");
    }
}

#[tokio::test]
async fn dev_mode_refuses_foreign_origins_and_hosts() {
    // dev mode has no token: a page the developer visits must not be able to
    // call tools as dev-user, directly (Origin) or by DNS rebinding (Host).
    let edge = Edge::new(&[]);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    for (header, value, status) in [
        ("origin", "https://evil.example", 403),
        ("origin", "http://192.168.1.10:3000", 403),
        ("origin", "null", 403),
        ("origin", "http://localhost:6274", 200),
        ("origin", "http://127.0.0.1:5173", 200),
        ("origin", "http://[::1]:8080", 200),
        ("host", "evil.example:3000", 403),
        ("host", "attacker.127.0.0.1.nip.io:3000", 403),
        ("host", "localhost:3000", 200),
        ("host", "127.0.0.1:3000", 200),
    ] {
        let r = edge.post(ping, &[(header, value)]).await;
        assert_eq!(r.status, status, "{header}: {value}: {:?}", r.body);
    }
    // An origin the operator listed is allowed.
    let listed = Edge::new(&[("ALLOWED_ORIGINS", "https://app.example")]);
    let r = listed
        .post(ping, &[("origin", "https://app.example")])
        .await;
    assert_eq!(r.status, 200);
}

mod catalog;

/// With `CONSENT_BASE_URL` (the streaming function URL's setting), consent
/// links name the consent web there, not the host `/mcp` was called on;
/// the Protected Resource Metadata still names this host's `/mcp`.
#[tokio::test]
async fn consent_links_follow_the_consent_base_url() {
    use crate::ports::TargetCatalog;
    let edge = Edge::new(&[("CONSENT_BASE_URL", "https://api.example.test")]);
    edge.store
        .put(&crate::domain::target::oauth_target_for_tests("demo"))
        .await
        .unwrap();
    let answer = edge
        .request(
            "tools/call",
            json!({"name": "demo___connect", "arguments": {}}),
            &[("x-gateway-dev-user", "alice")],
        )
        .await;
    let text = answer.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains("Open https://api.example.test/connect/"),
        "{}",
        answer.body
    );
    let metadata = edge
        .send(
            Request::get("/.well-known/oauth-protected-resource/mcp")
                .header("host", "localhost:3000")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(metadata.body["resource"], "http://localhost:3000/mcp");
}
