//! The proxy's edge under bad input: inbound JWT validation (against a local
//! identity provider serving discovery and JWKS), malformed messages, wrong
//! headers, foreign sessions, and upstreams that misbehave. Each gets the
//! spec's answer; nothing panics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gateway_shared::domain::{Target, TargetAuth};
use gateway_tests::{
    dev_gateway, fixtures_gateway, idp, jwt_test_keys as keys, sign, tool_text, unix_now, FakeHttp,
    Gateway, GatewayServer, Idp, RawClient,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const AUD: &str = "https://gateway.example.test/mcp";

async fn jwt_gateway(idp: &Idp) -> (Gateway, GatewayServer) {
    jwt_gateway_with(idp, &[]).await
}

async fn jwt_gateway_with(idp: &Idp, extra: &[(&str, &str)]) -> (Gateway, GatewayServer) {
    let (listener, base) = GatewayServer::bind().await;
    let mut vars = vec![
        ("PUBLIC_BASE_URL", base.as_str()),
        ("INBOUND_AUTH_MODE", "jwt"),
        ("INBOUND_ISSUER", &idp.issuer),
        ("INBOUND_AUDIENCES", AUD),
        ("INBOUND_CLIENT_IDS", "cognito-app-client"),
        ("INBOUND_REQUIRED_SCOPES", "mcp:invoke"),
        ("CONSENT_BINDING", "link"),
    ];
    vars.extend_from_slice(extra);
    let gw = Gateway::start(&vars).await;
    let server = GatewayServer::serve(listener, base, gw.state.clone());
    (gw, server)
}

async fn ping_with(server: &GatewayServer, token: Option<&str>) -> gateway_tests::Exchange {
    ping_authorized(server, token.map(|t| format!("Bearer {t}")).as_deref()).await
}

/// A ping with this `Authorization` header value.
async fn ping_authorized(
    server: &GatewayServer,
    authorization: Option<&str>,
) -> gateway_tests::Exchange {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let c = RawClient::new(&format!("{}/mcp", server.base), &headers);
    c.request("ping", json!({})).await
}

#[tokio::test]
async fn inbound_jwts_are_validated_strictly() {
    let idp = idp(&["test-key-1"]).await;
    let (_gw, server) = jwt_gateway(&idp).await;
    let good = json!({"iss": idp.issuer, "sub": "alice", "aud": AUD, "exp": unix_now() + 300, "scope": "openid mcp:invoke"});

    let good_token = sign("test-key-1", good.clone());
    let ok = ping_with(&server, Some(&good_token)).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["result"], json!({}));
    // Verified tokens are remembered: the same token passes again.
    let again = ping_with(&server, Some(&good_token)).await;
    assert_eq!(again.status, 200, "{:?}", again.body);

    // Cognito-style: no aud, an allowed client_id.
    let mut cognito = good.clone();
    cognito.as_object_mut().unwrap().remove("aud");
    cognito["client_id"] = json!("cognito-app-client");
    cognito["token_use"] = json!("access");
    assert_eq!(
        ping_with(&server, Some(&sign("test-key-1", cognito)))
            .await
            .status,
        200
    );

    // No token: 401 with the challenge that points at the metadata, no error.
    let none = ping_with(&server, None).await;
    assert_eq!(none.status, 401);
    let challenge = none.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("/.well-known/oauth-protected-resource/mcp\"")
            && challenge.contains("scope=\"mcp:invoke\""),
        "{challenge}"
    );

    let k = keys();
    let hs_with_public_key = jsonwebtoken::encode(
        &Header {
            kid: Some("test-key-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &good,
        &EncodingKey::from_secret(k["test-key-1"]["public_pem"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    let unsigned = {
        use base64::Engine;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b.encode(br#"{"alg":"none","typ":"JWT","kid":"test-key-1"}"#),
            b.encode(good.to_string())
        )
    };
    let forged = {
        // Signed with key 2 but claiming key 1.
        let key =
            EncodingKey::from_rsa_pem(k["test-key-2"]["private_pem"].as_str().unwrap().as_bytes())
                .unwrap();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("test-key-1".into());
        jsonwebtoken::encode(&h, &good, &key).unwrap()
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        sign("test-key-1", c)
    };
    let cases: Vec<(&str, String)> = vec![
        ("expired", with(&|c| c["exp"] = json!(unix_now() - 120))),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(unix_now() + 600)),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("https://other.example/mcp")),
        ),
        (
            "client not allowed",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
                c["client_id"] = json!("someone-else");
            }),
        ),
        (
            "no sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("alg none", unsigned),
        ("HS256 with the public key", hs_with_public_key),
        ("forged signature", forged),
        (
            // The remembered token's header and claims with another signature.
            "altered signature of a verified token",
            {
                let (signed, sig) = good_token.rsplit_once('.').unwrap();
                let flipped = if sig.starts_with('A') { "B" } else { "A" };
                format!("{signed}.{flipped}{}", &sig[1..])
            },
        ),
        ("garbage", "not.a.jwt".into()),
    ];
    for (what, token) in cases {
        let r = ping_with(&server, Some(&token)).await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }

    // Valid, but without the required scope: 403 insufficient_scope.
    let r = ping_with(&server, Some(&with(&|c| c["scope"] = json!("openid")))).await;
    assert_eq!(r.status, 403);
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"insufficient_scope\""));
}

#[tokio::test]
async fn an_unknown_key_id_refetches_the_jwks_at_a_limited_rate() {
    let idp = idp(&["test-key-1"]).await;
    let (_gw, server) = jwt_gateway(&idp).await;
    let claims = json!({"iss": idp.issuer, "sub": "alice", "aud": AUD, "exp": unix_now() + 300, "scope": "mcp:invoke"});
    assert_eq!(
        ping_with(&server, Some(&sign("test-key-1", claims.clone())))
            .await
            .status,
        200
    );
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 1);
    // Cached: no fetch per request.
    for _ in 0..5 {
        assert_eq!(
            ping_with(&server, Some(&sign("test-key-1", claims.clone())))
                .await
                .status,
            200
        );
    }
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 1);
    // The provider rotates in key 2: one refetch finds it.
    let k = keys();
    idp.jwks.lock().unwrap()["keys"] = json!([k["test-key-1"]["jwk"], k["test-key-2"]["jwk"]]);
    assert_eq!(
        ping_with(&server, Some(&sign("test-key-2", claims.clone())))
            .await
            .status,
        200
    );
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 2);
    // Tokens naming keys nobody has do not make the gateway hammer the provider.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("nobody-has-this".into());
    let key =
        EncodingKey::from_rsa_pem(k["test-key-1"]["private_pem"].as_str().unwrap().as_bytes())
            .unwrap();
    let stray = jsonwebtoken::encode(&h, &claims, &key).unwrap();
    for _ in 0..5 {
        assert_eq!(ping_with(&server, Some(&stray)).await.status, 401);
    }
    assert!(
        idp.jwks_hits.load(Ordering::SeqCst) <= 3,
        "at most one refetch per interval"
    );
}

#[tokio::test]
async fn misbehaving_upstreams_become_clear_errors() {
    let (gw, server) = dev_gateway(&[]).await;
    let broken = FakeHttp::start(500, json!({"oops": true}), Duration::ZERO).await;
    let junk = FakeHttp::start(200, json!("not json-rpc"), Duration::ZERO).await;
    for (name, base) in [("broken", &broken.base), ("junk", &junk.base)] {
        gw.state
            .targets
            .put(&Target {
                name: name.into(),
                display_name: None,
                mcp_url: format!("{base}/mcp"),
                auth: TargetAuth::None,
                tool_prefix: None,
                return_to: Default::default(),
                tool_catalog: vec![json!({"name": "t", "inputSchema": {"type": "object"}})].into(),
            })
            .await
            .unwrap();
    }
    let mut c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.initialize("2025-06-18", json!({})).await;
    // Listing survives: the cached catalogs stand in.
    let list = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = list.body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"broken___t") && names.contains(&"junk___t"),
        "{names:?}"
    );
    for tool in ["broken___t", "junk___t"] {
        let r = c
            .request("tools/call", json!({"name": tool, "arguments": {}}))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["result"]["isError"], true, "{tool}: {:?}", r.body);
        let text = r.body["result"]["content"][0]["text"].as_str().unwrap();
        let target = tool.split("___").next().unwrap();
        assert!(text.contains(target), "{tool}: {text}");
        assert!(
            !text.contains("oops"),
            "upstream bodies are not echoed: {text}"
        );
    }
    // No target could list its resources: the URI belongs to none of them.
    let r = c.request("resources/read", json!({"uri": "x://y"})).await;
    assert_eq!(r.body["error"]["code"], -32602, "{:?}", r.body);
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let idp = idp(&["test-key-1"]).await;
    let (_gw, server) = jwt_gateway(&idp).await;
    let token = sign(
        "test-key-1",
        json!({"iss": idp.issuer, "sub": "alice", "aud": AUD, "exp": unix_now() + 300, "scope": "mcp:invoke"}),
    );
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        let r = ping_authorized(&server, Some(&format!("{scheme} {token}"))).await;
        assert_eq!(r.status, 200, "{scheme}: {:?}", r.body);
    }
    for other in [
        format!("Basic {token}"),
        format!("Bearer{token}"),
        "Bearer ".into(),
    ] {
        assert_eq!(
            ping_authorized(&server, Some(&other)).await.status,
            401,
            "{other}"
        );
    }
}

/// An RS256 JWT of `claims` signed with `kid`, with header `typ`.
fn sign_typed(kid: &str, typ: &str, claims: Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    h.typ = Some(typ.into());
    let key =
        EncodingKey::from_rsa_pem(keys()[kid]["private_pem"].as_str().unwrap().as_bytes()).unwrap();
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

#[tokio::test]
async fn id_tokens_are_not_access_tokens() {
    let idp = idp(&["test-key-1"]).await;
    let (_gw, server) = jwt_gateway(&idp).await;
    let base =
        json!({"iss": idp.issuer, "sub": "alice", "exp": unix_now() + 300, "scope": "mcp:invoke"});
    let with = |extra: Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign("test-key-1", c)
    };
    // Cognito: the access token passes by its client_id ...
    let access = with(json!({"client_id": "cognito-app-client", "token_use": "access"}));
    assert_eq!(ping_with(&server, Some(&access)).await.status, 200);
    // ... its ID token (aud = the app client) does not, nor does a token
    // accepted by client_id that does not say it is an access token.
    for (what, token) in [
        (
            "id token",
            with(
                json!({"aud": "cognito-app-client", "client_id": "cognito-app-client", "token_use": "id"}),
            ),
        ),
        (
            "id token for the gateway",
            with(json!({"aud": AUD, "token_use": "id"})),
        ),
        ("unmarked", with(json!({"client_id": "cognito-app-client"}))),
    ] {
        let r = ping_with(&server, Some(&token)).await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    }
    // INBOUND_REQUIRE_AT_JWT: only RFC 9068 access tokens (typ at+jwt).
    let (_gw2, strict) = jwt_gateway_with(&idp, &[("INBOUND_REQUIRE_AT_JWT", "true")]).await;
    let claims = json!({"iss": idp.issuer, "sub": "alice", "aud": AUD, "exp": unix_now() + 300, "scope": "mcp:invoke"});
    assert_eq!(
        ping_with(
            &strict,
            Some(&sign_typed("test-key-1", "at+jwt", claims.clone()))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        ping_with(
            &strict,
            Some(&sign_typed("test-key-1", "JWT", claims.clone()))
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn a_withdrawn_signing_key_stops_working() {
    let idp = idp(&["test-key-1", "test-key-2"]).await;
    let (_gw, server) = jwt_gateway_with(&idp, &[("JWKS_CACHE_SECONDS", "5")]).await;
    let claims = json!({"iss": idp.issuer, "sub": "alice", "aud": AUD, "exp": unix_now() + 300, "scope": "mcp:invoke"});
    let old = sign("test-key-1", claims.clone());
    assert_eq!(ping_with(&server, Some(&old)).await.status, 200);
    // The provider withdraws key 1 (it leaked, say).
    idp.jwks.lock().unwrap()["keys"] = json!([keys()["test-key-2"]["jwk"]]);
    // Past the key cache's lifetime, neither the remembered token nor a new
    // one signed with the withdrawn key is honoured; key 2 still works.
    tokio::time::sleep(Duration::from_millis(5_300)).await;
    let r = ping_with(&server, Some(&old)).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    let fresh = sign(
        "test-key-1",
        json!({"iss": idp.issuer, "sub": "alice", "aud": AUD, "exp": unix_now() + 301, "scope": "mcp:invoke"}),
    );
    assert_eq!(ping_with(&server, Some(&fresh)).await.status, 401);
    assert_eq!(
        ping_with(&server, Some(&sign("test-key-2", claims)))
            .await
            .status,
        200
    );
}

/// Serves `app` on 127.0.0.1; its `/mcp` URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// What a minimal 2025-06-18 MCP server with one tool, `t` (answering
/// "ok"), answers to `msg`.
fn minimal_mcp_reply(msg: &Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let result = match msg.get("method").and_then(Value::as_str) {
        Some("initialize") => json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
            "serverInfo": {"name": "minimal", "version": "1"}}),
        Some("tools/list") => json!({"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}),
        Some("tools/call") => json!({"content": [{"type": "text", "text": "ok"}]}),
        Some(_) if id.is_null() => return axum::http::StatusCode::ACCEPTED.into_response(),
        _ => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}})),
            )
                .into_response()
        }
    };
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

/// An upstream MCP server (2025-06-18, JSON answers) that records the
/// `Authorization` header of every request it receives.
async fn recording_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                record.lock().unwrap().push(auth);
                let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                minimal_mcp_reply(&msg)
            }
        }),
    );
    let url = serve(app).await;
    (url, seen)
}

/// An upstream whose tool and prompt names are too long to expose as
/// they are. It lists one tool and one prompt; every call answers with
/// the name it was called by (also for a tool it does not list), every
/// `prompts/get` with the name it was got by. Counts its `tools/list`s.
async fn long_names_upstream(
    long_tool: String,
    long_prompt: String,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::response::IntoResponse;
    let listings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = listings.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: String| {
            let (long_tool, long_prompt) = (long_tool.clone(), long_prompt.clone());
            let counted = counted.clone();
            async move {
                let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let id = msg.get("id").cloned().unwrap_or(Value::Null);
                let name = msg["params"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let result = match msg.get("method").and_then(Value::as_str) {
                    Some("tools/list") => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        json!({"tools": [{"name": long_tool, "inputSchema": {"type": "object"}}]})
                    }
                    Some("prompts/list") => json!({"prompts": [{"name": long_prompt}]}),
                    Some("tools/call") => json!({"content": [{"type": "text", "text": name}]}),
                    Some("prompts/get") => json!({"messages": [
                        {"role": "user", "content": {"type": "text", "text": name}}
                    ]}),
                    _ => return minimal_mcp_reply(&msg),
                };
                axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
            }
        }),
    );
    (serve(app).await, listings)
}

/// Names over 64 characters are listed shortened (`names::expose`); a
/// client calling the shortened name reaches the tool or prompt by its
/// full upstream name, from the catalog the listing kept (no listing per
/// call), and a name that merely looks shortened reaches its own tool.
#[tokio::test]
async fn shortened_tool_and_prompt_names_reach_their_upstream_names() {
    let (gw, server) = dev_gateway(&[]).await;
    let long_tool = format!("create_{}_record", "very_".repeat(14));
    let long_prompt = format!("summarize_{}", "all_the_things_".repeat(5));
    let (upstream, listings) = long_names_upstream(long_tool.clone(), long_prompt.clone()).await;
    gw.state
        .targets
        .put(&gateway_tests::open_target("longnames", upstream))
        .await
        .unwrap();
    // A second target, so that each target's tools carry its prefix.
    let (other, _) = recording_upstream().await;
    gw.state
        .targets
        .put(&gateway_tests::open_target("other", other))
        .await
        .unwrap();
    let c = RawClient::new(&format!("{}/mcp", server.base), &[]);

    let listed = c.request("tools/list", json!({})).await;
    let names: Vec<String> = listed.body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("a tool list: {:?}", listed.body))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .filter(|n| n.starts_with("longnames___"))
        .map(str::to_owned)
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let shortened = &names[0];
    assert!(shortened.len() <= 64, "{shortened}");
    assert!(!shortened.contains(&long_tool));
    // Not listed, and exactly of the shortened form (64 bytes exposed,
    // `_` and 12 hex digits last): passed on as it stands.
    let lookalike = format!("hidden_{}_0123456789ab", "x".repeat(32));
    let exposed_lookalike = format!("longnames___{lookalike}");
    assert_eq!(exposed_lookalike.len(), 64);
    for _ in 0..2 {
        let r = c
            .request("tools/call", json!({"name": shortened, "arguments": {}}))
            .await;
        assert_eq!(tool_text(&r.body["result"]), long_tool, "{:?}", r.body);
        let r = c
            .request(
                "tools/call",
                json!({"name": exposed_lookalike, "arguments": {}}),
            )
            .await;
        assert_eq!(tool_text(&r.body["result"]), lookalike, "{:?}", r.body);
    }
    assert_eq!(
        listings.load(Ordering::SeqCst),
        1,
        "calls are resolved from the catalog the listing kept"
    );

    // Prompts are resolved by listing the upstream's prompts.
    let listed = c.request("prompts/list", json!({})).await;
    let prompt = listed.body["result"]["prompts"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("a prompt list: {:?}", listed.body))
        .to_owned();
    assert!(
        prompt.len() <= 64 && prompt.starts_with("longnames___"),
        "{prompt}"
    );
    let r = c
        .request("prompts/get", json!({"name": prompt, "arguments": {}}))
        .await;
    assert_eq!(
        r.body["result"]["messages"][0]["content"]["text"], long_prompt,
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn the_inbound_token_is_never_passed_upstream() {
    let idp = idp(&["test-key-1"]).await;
    let (gw, server) = jwt_gateway(&idp).await;
    let (upstream, seen) = recording_upstream().await;
    let mut target = gateway_tests::stack_target_for_fake("https://as.example.test/token");
    target.mcp_url = upstream;
    gw.state.targets.put(&target).await.unwrap();
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&gateway_tests::refreshable_grant(
            "alice",
            "fake",
            "upstream-token-of-alice",
            "r",
            now + 3_600,
            now,
        ))
        .await
        .unwrap();
    let inbound = sign(
        "test-key-1",
        json!({"iss": idp.issuer, "sub": "alice", "aud": AUD, "exp": unix_now() + 300, "scope": "mcp:invoke"}),
    );
    let auth = format!("Bearer {inbound}");
    let c = RawClient::new(&format!("{}/mcp", server.base), &[("authorization", &auth)]);
    let r = c
        .request("tools/call", json!({"name": "t", "arguments": {}}))
        .await;
    assert_eq!(tool_text(&r.body["result"]), "ok", "{:?}", r.body);
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for a in &seen {
        assert_eq!(a, "Bearer upstream-token-of-alice", "{seen:?}");
        assert!(!a.contains(&inbound));
    }
}

/// A token the upstream refuses at call time (revoked there, say): a new
/// consent, for the scope the upstream's challenge names as well.
#[tokio::test]
async fn a_token_refused_at_call_time_leads_to_a_consent_for_the_challenged_scope() {
    let (gw, server) = dev_gateway(&[]).await;
    // Refuses every token, naming the scope it wants.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                r#"Bearer error="invalid_token", scope="files:write""#,
            )],
        )
    });
    let refusing = serve(app).await.trim_end_matches("/mcp").to_owned();
    let mut target = gateway_tests::stack_target_for_fake("https://as.example.test/token");
    target.mcp_url = format!("{refusing}/mcp");
    target.tool_catalog = vec![json!({"name": "t", "inputSchema": {"type": "object"}})].into();
    gw.state.targets.put(&target).await.unwrap();
    let c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    let call = || c.request("tools/call", json!({"name": "t", "arguments": {}}));
    let now = gw.state.clock.now();
    let connect = |created_at: i64| {
        let mut grant = gateway_tests::refreshable_grant(
            "dev-user",
            "fake",
            "refused",
            "r",
            now + 3_600,
            created_at,
        );
        grant.tokens.refresh_token = None;
        let store = gw.state.grants.clone();
        async move {
            let _ = store.delete("dev-user", "fake").await;
            store.create(&grant).await.unwrap();
        }
    };

    // Connected an hour ago and refused now: a new link, asking for the
    // scope of the upstream's challenge too.
    connect(now - 3_600).await;
    let r = call().await;
    let text = tool_text(&r.body["result"]);
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/connect/"))
        .unwrap_or_else(|| panic!("a consent link: {:?}", r.body));
    let res = gateway_tests::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(link)
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let scope = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned());
    assert_eq!(scope.as_deref(), Some("read files:write"), "{location}");
}

/// A 2025 upstream that answers errors the way 2026-07-28 servers do: with
/// an HTTP error status and a JSON-RPC error body.
async fn strict_status_upstream() -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: axum::Json<Value>| async move {
            use axum::response::IntoResponse;
            let id = body.get("id").cloned().unwrap_or(Value::Null);
            let status = axum::http::StatusCode::BAD_REQUEST;
            match body.get("method").and_then(Value::as_str) {
                Some("initialize") => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "strict", "version": "1"}}}))
                .into_response(),
                Some("tools/list") => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "tools": [{"name": "t", "inputSchema": {"type": "object"}}]}}))
                .into_response(),
                Some("tools/call") => (status, axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": -32602, "message": "Invalid arguments for t", "data": {"field": "x", "why": ["missing"]}}})))
                .into_response(),
                Some(_) if id.is_null() => axum::http::StatusCode::ACCEPTED.into_response(),
                // `server/discover` and the rest: unknown, as a 2025 server says it.
                _ => (status, axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": -32601, "message": "Method not found"}})))
                .into_response(),
            }
        }),
    );
    let url = serve(app).await;
    url
}

#[tokio::test]
async fn upstream_json_rpc_errors_pass_through_whatever_the_http_status() {
    let (gw, server) = dev_gateway(&[]).await;
    gw.state
        .targets
        .put(&gateway_tests::open_target(
            "strict",
            strict_status_upstream().await,
        ))
        .await
        .unwrap();
    let mut c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.initialize("2025-06-18", json!({})).await;
    let r = c
        .request("tools/call", json!({"name": "t", "arguments": {}}))
        .await;
    assert_eq!(
        r.body["error"],
        json!({"code": -32602, "message": "Invalid arguments for t", "data": {"field": "x", "why": ["missing"]}}),
        "{:?}",
        r.body
    );
}

/// A hostile 2025 upstream whose answers are written to slip past a
/// reader: the text of `results[tool]` is sent as the call's result, and
/// that of `results["tools/list"]`, when given, as the listing's (else the
/// tools are listed by name).
async fn hostile_results_upstream(results: &'static [(&'static str, &'static str)]) -> String {
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::Json<Value>| async move {
            use axum::response::IntoResponse;
            let id = body.get("id").cloned().unwrap_or(Value::Null);
            let written = |result: &str| {
                (
                    [("content-type", "application/json")],
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#),
                )
                    .into_response()
            };
            let given = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
            match body.get("method").and_then(Value::as_str) {
                Some("tools/list") => match given("tools/list") {
                    Some(listing) => written(listing),
                    None => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                        "tools": results.iter().map(|(name, _)| json!({"name": name, "inputSchema": {"type": "object"}})).collect::<Vec<_>>()}}))
                    .into_response(),
                },
                Some("tools/call") => {
                    written(given(body["params"]["name"].as_str().unwrap_or_default()).unwrap_or("{}"))
                }
                _ => minimal_mcp_reply(&body),
            }
        }),
    );
    serve(app).await
}

/// Attack: an upstream writes a tool result that a lenient scanner takes as
/// JSON but a JSON reader does not (a number out of range, a lone
/// surrogate), so that a RESPONSE interceptor that redacts results cannot
/// read it and it reaches the client as sent, unredacted. None does: what
/// the gateway passes on as written is read as strictly as a reader reads
/// it, and anything else goes through its tree (refused, or for a member
/// given twice one reading of it, which the interceptor sees).
#[tokio::test]
async fn a_result_no_reader_can_read_never_passes_the_response_interceptor() {
    const RESULTS: &[(&str, &str)] = &[
        (
            "huge",
            r#"{"content":[{"type":"text","text":"simple secret"}],"n":1e400}"#,
        ),
        (
            "surrogate",
            r#"{"content":[{"type":"text","text":"simple secret \ud800"}]}"#,
        ),
        (
            "twice",
            r#"{"content":[{"type":"text","text":"simple secret"}],"content":[{"type":"text","text":"simple secret"}]}"#,
        ),
        (
            "plain",
            r#"{"content":[{"type":"text","text":"simple secret"}]}"#,
        ),
    ];
    let (_standin, standin) = interceptor_standin();
    let upstream = hostile_results_upstream(RESULTS).await;
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:shape".to_owned();
    let vars = [
        ("AWS_ENDPOINT_URL_LAMBDA", standin.as_str()),
        ("RESPONSE_INTERCEPTOR", arn.as_str()),
    ];
    let (_gw, server) = fixtures_gateway(&upstream, &vars).await;
    let mut c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.initialize("2025-06-18", json!({})).await;
    for (tool, _) in RESULTS {
        let r = c
            .request("tools/call", json!({"name": tool, "arguments": {}}))
            .await;
        assert!(
            !r.text.contains("simple"),
            "{tool}: reached the client unredacted: {}",
            r.text
        );
        // A member given twice is read one way (the last) and the
        // interceptor rewrites that reading: this checks the redaction
        // still happens, not the duplicate check (which
        // `results_the_gateway_changes_are_parsed` covers in `answer.rs`).
        if matches!(*tool, "plain" | "twice") {
            assert_eq!(
                tool_text(&r.body["result"]),
                "[redacted] secret",
                "{}",
                r.text
            );
        } else {
            // Refused as an answer the upstream got wrong.
            assert_eq!(r.body["result"]["isError"], true, "{tool}: {}", r.text);
        }
    }
}

/// An answer no reader can read is the upstream's failure, and counted as
/// such in the request's metric line (`UpstreamErrors`), whether it is a
/// tool's result (passed on) or a listing (read by the gateway).
#[tokio::test]
async fn answers_no_reader_can_read_count_as_upstream_errors() {
    const RESULTS: &[(&str, &str)] = &[
        ("huge", r#"{"content":[],"n":1e400}"#),
        ("plain", r#"{"content":[]}"#),
    ];
    const BAD_LISTING: &[(&str, &str)] = &[("tools/list", r#"{"tools":[],"n":1e400}"#)];
    let errors = |lines: &Lines| -> Vec<u64> {
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|m| m["UpstreamErrors"].as_u64())
            .collect()
    };
    let upstream = hostile_results_upstream(RESULTS).await;
    let (_gw, server, lines, _) = observed_gateway(&upstream, &[("METRICS", "on")], false).await;
    let c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    for tool in ["huge", "plain"] {
        let r = c
            .modern(
                "tools/call",
                json!({"name": tool, "arguments": {}}),
                json!({}),
            )
            .await;
        let failed = r.body["result"]["isError"] == true;
        assert_eq!(failed, tool == "huge", "{tool}: {}", r.text);
    }
    assert_eq!(
        errors(&lines),
        [1, 0],
        "the bad result counted, the plain one not"
    );

    let upstream = hostile_results_upstream(BAD_LISTING).await;
    let (_gw, server, lines, _) = observed_gateway(&upstream, &[("METRICS", "on")], false).await;
    let c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.modern("tools/list", json!({}), json!({})).await;
    assert_eq!(
        errors(&lines),
        [1],
        "the listing that could not be read counted"
    );
}

/// An upstream whose listing needs a scope the user's grant lacks: the
/// connect tool leads to a consent for it, not to "already connected".
#[tokio::test]
async fn a_listing_that_needs_more_scopes_leads_to_a_consent_for_them() {
    let (gw, server) = dev_gateway(&[]).await;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: axum::Json<Value>| async move {
            use axum::response::IntoResponse;
            let id = body.get("id").cloned().unwrap_or(Value::Null);
            match body.get("method").and_then(Value::as_str) {
                Some("initialize") => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "scoped", "version": "1"}}}))
                .into_response(),
                Some("tools/list") => (
                    axum::http::StatusCode::FORBIDDEN,
                    [(
                        "www-authenticate",
                        r#"Bearer error="insufficient_scope", scope="files:read""#,
                    )],
                )
                    .into_response(),
                Some(_) if id.is_null() => axum::http::StatusCode::ACCEPTED.into_response(),
                _ => (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": "Method not found"}})),
                )
                    .into_response(),
            }
        }),
    );
    let upstream = serve(app).await;
    let mut target = gateway_tests::stack_target_for_fake("https://as.example.test/token");
    target.mcp_url = upstream;
    gw.state.targets.put(&target).await.unwrap();
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&gateway_tests::refreshable_grant(
            "dev-user",
            "fake",
            "at",
            "rt",
            now + 3_600,
            now - 3_600,
        ))
        .await
        .unwrap();
    let mut c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.initialize("2025-06-18", json!({})).await;
    let list = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = list.body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"fake___connect"), "{names:?}");
    let r = c
        .request(
            "tools/call",
            json!({"name": "fake___connect", "arguments": {}}),
        )
        .await;
    let text = tool_text(&r.body["result"]);
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/connect/"))
        .unwrap_or_else(|| panic!("a consent link, not a dead end: {text}"));
    let res = gateway_tests::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(link)
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let authorize = url::Url::parse(&location).unwrap();
    let scope = authorize
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    assert_eq!(scope, "read files:read", "{location}");
}

/// An upstream that takes one API key, in a header or a query parameter,
/// and answers 401 without it; records what it was sent.
async fn api_key_upstream(
    key: &'static str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, uri: axum::http::Uri, body: axum::Json<Value>| {
                let record = record.clone();
                async move {
                    use axum::response::IntoResponse;
                    let header = headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let query = uri.query().unwrap_or_default().to_owned();
                    record.lock().unwrap().push(format!("{header}|{query}"));
                    let ok = header == format!("Key {key}") || query == format!("api_key={key}");
                    if !ok {
                        return (axum::http::StatusCode::UNAUTHORIZED, "no key").into_response();
                    }
                    minimal_mcp_reply(&body)
                }
            },
        ),
    );
    let url = serve(app).await;
    (url, seen)
}

/// API key targets: the key goes where the target says, every user calls
/// without a consent, and the key never reaches a reply or the log, even
/// when the upstream refuses it.
#[tokio::test]
async fn api_key_targets_send_their_key_and_never_show_it() {
    use gateway_shared::domain::{ApiKeyPlacement, ApiKeySettings};
    let (logs, _guard) = gateway_tests::capture_logs();
    let (gw, server) = dev_gateway(&[]).await;
    const KEY: &str = "sk-live-0123456789abcdef";
    let (upstream, seen) = api_key_upstream(KEY).await;
    let stored = |name: &'static str, key: &'static str| {
        let secrets = gw.state.secrets.clone();
        async move {
            secrets
                .store(
                    &format!("mcp-oauth-gateway/targets/{name}"),
                    &key.to_owned().into(),
                )
                .await
                .unwrap()
        }
    };
    // An address nothing listens on: transport errors name their URL, in
    // which a query key rides.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mcp", l.local_addr().unwrap())
    };
    for (name, placement, param, prefix, key, url) in [
        (
            "header",
            ApiKeyPlacement::Header,
            "X-Api-Key",
            "Key ",
            KEY,
            &upstream,
        ),
        (
            "query",
            ApiKeyPlacement::Query,
            "api_key",
            "",
            KEY,
            &upstream,
        ),
        (
            "wrong",
            ApiKeyPlacement::Query,
            "api_key",
            "",
            "sk-live-wrong-key-987",
            &upstream,
        ),
        ("down", ApiKeyPlacement::Query, "api_key", "", KEY, &closed),
    ] {
        gw.state
            .targets
            .put(&Target {
                name: name.into(),
                display_name: None,
                mcp_url: url.clone(),
                auth: TargetAuth::ApiKey(ApiKeySettings {
                    secret_arn: stored(name, key).await,
                    placement,
                    name: param.into(),
                    prefix: prefix.into(),
                }),
                tool_prefix: None,
                return_to: Default::default(),
                tool_catalog: Default::default(),
            })
            .await
            .unwrap();
    }
    for user in ["alice", "bob"] {
        let mut c = RawClient::new(
            &format!("{}/mcp", server.base),
            &[("x-gateway-dev-user", user)],
        );
        c.initialize("2025-06-18", json!({})).await;
        let list = c.request("tools/list", json!({})).await;
        let names: Vec<&str> = list.body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(
            names.contains(&"header___t") && names.contains(&"query___t"),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|n| n.ends_with("___connect")),
            "no consent for a key: {names:?}"
        );
        for tool in ["header___t", "query___t"] {
            let r = c
                .request("tools/call", json!({"name": tool, "arguments": {}}))
                .await;
            assert_eq!(tool_text(&r.body["result"]), "ok", "{tool}: {:?}", r.body);
        }
        for tool in ["wrong___t", "down___t"] {
            let r = c
                .request("tools/call", json!({"name": tool, "arguments": {}}))
                .await;
            let reply = r.body.to_string();
            assert!(
                r.body["result"]["isError"] == true || r.body["error"].is_object(),
                "{reply}"
            );
            assert!(!reply.contains("sk-live"), "{reply}");
            assert!(
                !reply.contains("/connect/"),
                "no consent for a key: {reply}"
            );
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&format!("Key {KEY}|")), "{seen:?}");
    assert!(seen.contains(&format!("|api_key={KEY}")), "{seen:?}");
    let text = logs.text();
    assert!(!text.contains("sk-live"), "{text}");
}

/// Subjects in the gateway's own namespace (a target's machine token is
/// stored under one) are refused at the door.
#[tokio::test]
async fn inbound_subjects_in_the_gateways_namespace_are_refused() {
    let (_gw, server) = dev_gateway(&[]).await;
    let c = RawClient::new(
        &format!("{}/mcp", server.base),
        &[("x-gateway-dev-user", "gateway:client-credentials")],
    );
    let r = c.request("tools/list", json!({})).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let ok = RawClient::new(
        &format!("{}/mcp", server.base),
        &[("x-gateway-dev-user", "gatewayfan")],
    );
    let r = ok.request("ping", json!({})).await;
    assert_ne!(r.status, 403, "{:?}", r.body);
}

/// An MCP server behind AWS IAM (tests/python/sigv4_upstream.py checks each
/// request's SigV4 signature with botocore).
fn sigv4_upstream(service: &str, region: &str) -> (gateway_tests::ChildGuard, String) {
    let (guard, port) = gateway_tests::python_peer(
        "sigv4_upstream.py",
        &["--service", service, "--region", region],
        "the SigV4 upstream",
    );
    (guard, format!("http://127.0.0.1:{port}/mcp"))
}

/// AWS IAM targets: each request signed with the function's credentials
/// for the target's service and region; a signature for another region is
/// refused by the upstream and is the operator's error, never a consent.
#[tokio::test]
async fn aws_iam_targets_sign_each_request_with_sigv4() {
    let (gw, server) = dev_gateway(&[]).await;
    let (_upstream, url) = sigv4_upstream("execute-api", "eu-west-1");
    for (name, region) in [("iam", "eu-west-1"), ("wrongregion", "us-east-1")] {
        gw.state
            .targets
            .put(&Target {
                name: name.into(),
                display_name: None,
                mcp_url: url.clone(),
                auth: TargetAuth::AwsIam(gateway_shared::domain::AwsIamSettings {
                    service: "execute-api".into(),
                    region: region.into(),
                }),
                tool_prefix: None,
                return_to: Default::default(),
                tool_catalog: Default::default(),
            })
            .await
            .unwrap();
    }
    let mut c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.initialize("2025-06-18", json!({})).await;
    let list = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = list.body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"iam___t"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with("___connect")),
        "{names:?}"
    );
    let r = c
        .request("tools/call", json!({"name": "iam___t", "arguments": {}}))
        .await;
    assert_eq!(tool_text(&r.body["result"]), "signed ok", "{:?}", r.body);
    // Signed for the wrong region: refused upstream, an error, no consent.
    gw.state
        .targets
        .put(&Target {
            tool_catalog: vec![json!({"name": "t", "inputSchema": {"type": "object"}})].into(),
            ..gw.state.targets.get("wrongregion").await.unwrap().unwrap()
        })
        .await
        .unwrap();
    let r = c
        .request(
            "tools/call",
            json!({"name": "wrongregion___t", "arguments": {}}),
        )
        .await;
    let reply = r.body.to_string();
    assert_eq!(r.body["result"]["isError"], true, "{reply}");
    assert!(!reply.contains("/connect/"), "{reply}");
}

/// The interceptors' stand-in: AgentCore-style handlers behind a local
/// Lambda Invoke API that checks SigV4 (tests/python/interceptors.py).
fn interceptor_standin() -> (gateway_tests::ChildGuard, String) {
    let (guard, port) =
        gateway_tests::python_peer("interceptors.py", &[], "the interceptors' stand-in");
    (guard, format!("http://127.0.0.1:{port}"))
}

/// Interceptors written as AgentCore's are: invoked as Lambda functions
/// (SigV4-signed Invoke calls) or by URL, before and after each request.
/// A request interceptor denies a call (its status and JSON-RPC error reach
/// the client, the upstream is never asked) and rewrites another; a response
/// interceptor filters a listing and redacts a result; headers reach the
/// interceptor only when passed; a slow, malformed or failing interceptor
/// refuses the request with a clear error.
#[tokio::test]
async fn interceptors_deny_rewrite_filter_and_redact_and_fail_closed() {
    let (_standin, standin) = interceptor_standin();
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let arn = |name: &str| format!("arn:aws:lambda:us-east-1:123456789012:function:{name}");
    let gateway = |vars: Vec<(&'static str, String)>| {
        let standin = standin.clone();
        let fixtures_url = fixtures_url.clone();
        async move {
            let mut vars = vars;
            vars.push(("AWS_ENDPOINT_URL_LAMBDA", standin));
            vars.push(("INTERCEPTOR_TIMEOUT_MS", "500".into()));
            let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            fixtures_gateway(&fixtures_url, &refs).await
        }
    };
    let stats = || async {
        gateway_tests::http()
            .get(&standin)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    async fn call(c: &RawClient, name: &str) -> gateway_tests::Exchange {
        c.request("tools/call", json!({"name": name, "arguments": {}}))
            .await
    }

    // Lambda functions, signed.
    let (_gw, server) = gateway(vec![
        ("REQUEST_INTERCEPTOR", arn("gate")),
        ("RESPONSE_INTERCEPTOR", arn("shape")),
    ])
    .await;
    let mut c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.initialize("2025-11-25", json!({})).await;
    let listed = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = listed.body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", listed.body))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"test_simple_text"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("image")), "{names:?}");
    let plain = call(&c, "test_simple_text").await;
    let text = tool_text(&plain.body["result"]);
    assert!(
        text.contains("[redacted]") && !text.contains("simple"),
        "{text}"
    );
    let renamed = call(&c, "renamed_simple_text").await;
    assert_eq!(
        tool_text(&renamed.body["result"]),
        text,
        "rewritten to the real tool"
    );
    // A 2026-07-28 request names its tool in a header too: the rewrite
    // carries over to it.
    let modern = c
        .modern(
            "tools/call",
            json!({"name": "renamed_simple_text", "arguments": {}}),
            json!({}),
        )
        .await;
    assert_eq!(tool_text(&modern.body["result"]), text, "{:?}", modern.body);
    let denied = call(&c, "test_image_content").await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    assert_eq!(denied.body["error"]["code"], -32003);
    assert_eq!(
        denied.body["error"]["message"],
        "image tools are blocked by the interceptor"
    );
    let seen = stats().await;
    assert_eq!(seen["refused"], 0, "every invocation was signed: {seen}");
    assert!(seen["signed"].as_u64().unwrap() >= 8, "{seen}");
    // Headers stay with the gateway unless passed.
    assert!(
        seen["last"]["mcp"]["gatewayRequest"]
            .get("headers")
            .is_none(),
        "{seen}"
    );
    assert!(seen["last"]["mcp"]["rawGatewayRequest"]["body"].is_string());

    // By URL, with headers passed: the interceptor sees and checks them.
    let (_gw2, server2) = gateway(vec![
        ("REQUEST_INTERCEPTOR", format!("{standin}/url/gate")),
        ("INTERCEPTOR_PASS_HEADERS", "true".into()),
    ])
    .await;
    let url2 = format!("{}/mcp", server2.base);
    let ping = |headers: &[(&str, &str)]| {
        let c = RawClient::new(&url2, headers);
        async move { c.request("ping", json!({})).await }
    };
    let without = ping(&[]).await;
    assert_eq!(without.status, 401, "{:?}", without.body);
    let with = ping(&[("x-team", "payments")]).await;
    assert_eq!(with.status, 200, "{:?}", with.body);
    let seen = stats().await;
    assert_eq!(
        seen["last"]["mcp"]["gatewayRequest"]["headers"]["x-team"],
        "payments"
    );

    // A pass-through interceptor changes nothing.
    let (_gw3, server3) = gateway(vec![("REQUEST_INTERCEPTOR", arn("pass_through"))]).await;
    let mut c3 = RawClient::new(&format!("{}/mcp", server3.base), &[]);
    c3.initialize("2025-11-25", json!({})).await;
    let through = call(&c3, "test_simple_text").await;
    assert!(
        tool_text(&through.body["result"]).contains("simple"),
        "{:?}",
        through.body
    );

    // Failures refuse the request, saying which check and how.
    for (function, why) in [
        ("slow", "did not answer in time"),
        ("malformed", "gave an answer the gateway cannot use"),
        ("raise", "check failed"),
    ] {
        let (_gw, server) = gateway(vec![("REQUEST_INTERCEPTOR", arn(function))]).await;
        let c = RawClient::new(&format!("{}/mcp", server.base), &[]);
        let r = c.request("ping", json!({})).await;
        assert_eq!(r.status, 502, "{function}: {:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("request check") && message.contains(why),
            "{function}: {message}"
        );
    }
}

/// Progress an upstream reports during a call reaches the client: a client
/// that accepts `text/event-stream` gets the notifications (with its own
/// progress token) before the result on one event stream; a client that
/// accepts only JSON gets the result alone; with a RESPONSE interceptor,
/// which must see every answer, nothing is relayed.
#[tokio::test]
async fn progress_during_a_call_is_relayed_on_an_event_stream() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let (_standin, standin) = interceptor_standin();
    let call = |base: String, accept: &'static str| async move {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "test_tool_with_progress", "arguments": {}, "_meta": {
            "progressToken": "p-1",
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        }}});
        let res = gateway_tests::http()
            .post(format!("{base}/mcp"))
            .header("content-type", "application/json")
            .header("accept", accept)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "test_tool_with_progress")
            .json(&body)
            .send()
            .await
            .unwrap();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (content_type, res.text().await.unwrap())
    };
    let with_target = |extra: Vec<(&'static str, String)>| {
        let fixtures_url = fixtures_url.clone();
        async move {
            let refs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            fixtures_gateway(&fixtures_url, &refs).await
        }
    };
    let (_gw, server) = with_target(vec![]).await;
    let (content_type, text) =
        call(server.base.clone(), "application/json, text/event-stream").await;
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}: {text}"
    );
    let messages: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{text}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "p-1"),
        "{text}"
    );
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 7);
    assert_eq!(tool_text(&last["result"]), "Progress test completed");

    let (content_type, text) = call(server.base.clone(), "application/json").await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(!text.contains("notifications/progress"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(tool_text(&answer["result"]), "Progress test completed");

    let (_gw2, server2) = with_target(vec![(
        "RESPONSE_INTERCEPTOR",
        format!("{standin}/url/shape"),
    )])
    .await;
    let (content_type, text) =
        call(server2.base.clone(), "application/json, text/event-stream").await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}: {text}"
    );
    assert!(!text.contains("notifications/progress"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["id"], 7);
    assert!(answer["result"]["content"].is_array(), "{text}");
}

/// A duplicated argument member cannot pass a `forbid` one way and reach
/// the upstream the other: a message with a member given twice is refused
/// as a parse error before any policy or upstream sees it, and under a
/// policy set the upstream is sent the arguments as the policies read them.
#[tokio::test]
async fn duplicated_arguments_reach_the_upstream_as_the_policies_read_them() {
    let (logs, _guard) = gateway_tests::capture_logs();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move |body: String| {
        let record = record.clone();
        async move {
            let msg: Value = serde_json::from_str(&body).unwrap_or_default();
            let result = match msg["method"].as_str().unwrap_or_default() {
                "server/discover" => {
                    json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}})
                }
                "tools/call" => {
                    record.lock().unwrap().push(body.clone());
                    json!({"content": [{"type": "text", "text": "paid"}]})
                }
                _ => json!({}),
            };
            axum::Json(json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}))
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (gw, server) = dev_gateway(&[("TARGETS_CACHE_SECONDS", "0")]).await;
    gw.state
        .targets
        .put(&gateway_tests::open_target("dup", url))
        .await
        .unwrap();
    gw.state
        .policies
        .store(Some(
            r#"permit(principal, action, resource);
               forbid(principal, action, resource == Gateway::Tool::"dup___pay")
                 when { context.arguments.amount > 100 };"#,
        ))
        .await
        .unwrap();
    let mut c = RawClient::new(&format!("{}/mcp", server.base), &[]);
    c.initialize("2025-11-25", json!({})).await;
    for raw in [
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"pay","arguments":{"amount":500,"amount":5}}}"#,
        r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"pay","arguments":{"amount":5,"amount":500}}}"#,
    ] {
        let refused = c.post_raw(raw.to_owned(), &[]).await;
        assert_eq!(refused.body["error"]["code"], -32700, "{:?}", refused.body);
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    let ok = c
        .request(
            "tools/call",
            json!({"name": "pay", "arguments": {"amount": 5}}),
        )
        .await;
    assert_eq!(tool_text(&ok.body["result"]), "paid", "{:?}", ok.body);
    let over = c
        .request(
            "tools/call",
            json!({"name": "pay", "arguments": {"amount": 500}}),
        )
        .await;
    assert_eq!(over.body["result"]["isError"], true, "{:?}", over.body);
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let sent: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(sent["params"]["arguments"], json!({"amount": 5}));
    // The refusal is on the audit log (POLICY_LOG=deny): who, what, the
    // decision; never the arguments.
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("policy_decision"))
        .unwrap_or_else(|| panic!("no audit line: {text}"));
    for part in [
        "sub=dev-user",
        "action=\"tools/call\"",
        "name=dup___pay",
        "allowed=false",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    assert!(!text.contains("amount"), "{text}");
    task.abort();
}

/// A development gateway in front of `fixtures_url` (target `fixtures`),
/// with `extra` settings, whose metric lines (and, with `audit_in_memory`,
/// audit events) are kept for the test to read.
async fn observed_gateway(
    fixtures_url: &str,
    extra: &[(&str, &str)],
    audit_in_memory: bool,
) -> (Gateway, GatewayServer, Lines, Lines) {
    use gateway_shared::observe::{AuditSink, LineSink};
    let (listener, base) = GatewayServer::bind().await;
    let mut vars = vec![("PUBLIC_BASE_URL", base.as_str())];
    vars.extend_from_slice(extra);
    let gw = Gateway::start(&vars).await;
    gw.state
        .targets
        .put(&gateway_tests::open_target(
            "fixtures",
            fixtures_url.to_owned(),
        ))
        .await
        .unwrap();
    let (metrics, audit) = (Lines::default(), Lines::default());
    let mut state = gw.state.clone();
    state.observe.metrics = LineSink::Memory(metrics.clone());
    if audit_in_memory {
        state.observe.audit = AuditSink::Lines(LineSink::Memory(audit.clone()));
    }
    let server = GatewayServer::serve(listener, base, state);
    (gw, server, metrics, audit)
}

type Lines = Arc<std::sync::Mutex<Vec<String>>>;

/// One EMF line per request with the documented metrics and dimensions,
/// and one audit event per call and listing, written with PutLogEvents to
/// the audit trail's own log group (moto): exactly these documents, and
/// never a token, an argument or a result in either.
#[tokio::test]
async fn metrics_and_audit_events_are_exactly_what_calls_produce() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let group = "/mcp-oauth-gateway/test/audit";
    let (gw, server, lines, _) = observed_gateway(
        &fixtures_url,
        &[
            ("AUDIT_LOG_GROUP", group),
            ("GATEWAY_NAME", "gw-test"),
            ("METRICS", "on"),
            ("AUDIT", "on"),
        ],
        false,
    )
    .await;
    gateway_tests::logs_api(
        &gw.moto.endpoint,
        "CreateLogGroup",
        json!({"logGroupName": group}),
    )
    .await;
    let client = RawClient::new(
        &format!("{}/mcp", server.base),
        &[
            ("x-gateway-dev-user", "alice"),
            ("x-gateway-dev-client", "agent-7"),
        ],
    );
    let secret_argument = "an-argument-value-nobody-may-log";
    let called = client
        .modern(
            "tools/call",
            json!({"name": "json_schema_2020_12_tool", "arguments": {"name": secret_argument, "email": "a@b.c"}}),
            json!({}),
        )
        .await;
    assert!(called.body["result"].is_object(), "{:?}", called.body);
    let listed = client.modern("tools/list", json!({}), json!({})).await;
    assert!(listed.body["result"]["tools"].is_array());
    let unknown = client
        .modern("tools/call", json!({"name": "no_such_tool"}), json!({}))
        .await;
    assert_eq!(
        unknown.body["result"]["isError"], true,
        "{:?}",
        unknown.body
    );
    let nameless = client
        .modern("tools/call", json!({"arguments": {}}), json!({}))
        .await;
    // No name and so no Mcp-Name header: refused at the edge with HTTP 400.
    assert_eq!(
        nameless.body["error"]["code"], -32020,
        "{:?}",
        nameless.body
    );
    client.modern("ping", json!({}), json!({})).await;

    // Metrics: one line per request, with volatile values (time) checked
    // for shape and then fixed, the rest compared whole.
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let mut docs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("EMF is JSON"))
        .collect();
    for d in &mut docs {
        assert!(d["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        d["_aws"]["Timestamp"] = json!(0);
        for k in ["Latency", "Duration", "TargetExecutionTime"] {
            assert!(d[k].as_f64().unwrap() >= 0.0, "{k}: {d}");
            d[k] = json!(0);
        }
    }
    let by_method = json!({
        "Namespace": "McpOAuthGateway",
        "Dimensions": [["Gateway"], ["Gateway", "Method"]],
        "Metrics": [
            {"Name": "Invocations", "Unit": "Count"},
            {"Name": "SystemErrors", "Unit": "Count"},
            {"Name": "UserErrors", "Unit": "Count"},
            {"Name": "Throttles", "Unit": "Count"},
            {"Name": "Latency", "Unit": "Milliseconds"},
            {"Name": "Duration", "Unit": "Milliseconds"},
            {"Name": "TargetExecutionTime", "Unit": "Milliseconds"},
            {"Name": "ConsentRequired", "Unit": "Count"},
            {"Name": "UpstreamErrors", "Unit": "Count"},
        ],
    });
    let by_target = json!({
        "Namespace": "McpOAuthGateway",
        "Dimensions": [["Gateway", "Target"]],
        "Metrics": [
            {"Name": "Invocations", "Unit": "Count"},
            {"Name": "SystemErrors", "Unit": "Count"},
            {"Name": "TargetExecutionTime", "Unit": "Milliseconds"},
            {"Name": "UpstreamErrors", "Unit": "Count"},
        ],
    });
    let counts = |method: &str, user_errors: u32| {
        json!({"Gateway": "gw-test", "Method": method, "Invocations": 1, "SystemErrors": 0,
               "UserErrors": user_errors, "Throttles": 0, "Latency": 0, "Duration": 0,
               "TargetExecutionTime": 0, "ConsentRequired": 0, "UpstreamErrors": 0})
    };
    let mut call = counts("tools/call", 0);
    call["Target"] = json!("fixtures");
    call["_aws"] = json!({"Timestamp": 0, "CloudWatchMetrics": [by_method, by_target]});
    assert_eq!(docs[0], call);
    let mut list = counts("tools/list", 0);
    list["_aws"] = json!({"Timestamp": 0, "CloudWatchMetrics": [by_method]});
    assert_eq!(docs[1], list);
    // A tool's own error is the tool's answer, not a gateway error.
    assert_eq!(docs[2], call);
    let mut nameless = counts("tools/call", 1);
    nameless["_aws"] = json!({"Timestamp": 0, "CloudWatchMetrics": [by_method]});
    assert_eq!(docs[3], nameless);
    assert_eq!(docs[4]["Method"], "ping");

    // The audit trail, read back from its log group.
    let events = gateway_tests::logs_api(
        &gw.moto.endpoint,
        "FilterLogEvents",
        json!({"logGroupName": group}),
    )
    .await;
    let messages: Vec<String> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        messages.len(),
        4,
        "calls and listings, not ping: {messages:#?}"
    );
    let mut audit: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_str(m).expect("audit events are JSON"))
        .collect();
    for e in &mut audit {
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
        assert!(e["latencyMs"].as_f64().unwrap() >= 0.0);
        e["time"] = json!("-");
        e["latencyMs"] = json!(0);
    }
    let who = |event: &str, outcome: &str| {
        json!({"audit": "mcp-oauth-gateway/audit/1", "time": "-", "event": event,
               "user": "alice", "client": "agent-7", "outcome": outcome, "latencyMs": 0})
    };
    let mut call = who("tools/call", "ok");
    call["target"] = json!("fixtures");
    call["item"] = json!("json_schema_2020_12_tool");
    assert_eq!(audit[0], call);
    assert_eq!(audit[1], who("tools/list", "ok"));
    let mut unknown = who("tools/call", "tool_error");
    unknown["target"] = json!("fixtures");
    unknown["item"] = json!("no_such_tool");
    assert_eq!(audit[2], unknown);
    assert_eq!(audit[3], who("tools/call", "http:400"));
    for text in lines.iter().chain(&messages) {
        assert!(!text.contains(secret_argument), "an argument in {text}");
    }
}

/// Arguments reach the audit trail only for the targets the operator lists
/// in `AUDIT_ARGUMENTS_TARGETS` (the test above shows they do not
/// otherwise); tokens never do.
#[tokio::test]
async fn arguments_are_audited_only_for_the_targets_an_operator_lists() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let arguments = json!({"name": "Ada", "email": "ada@example.com"});
    // The event of one call, with `listed` as AUDIT_ARGUMENTS_TARGETS.
    let audited = |listed: &'static str| {
        let (fixtures_url, arguments) = (fixtures_url.clone(), arguments.clone());
        async move {
            let (_gw, server, _, events) = observed_gateway(
                &fixtures_url,
                &[("AUDIT", "on"), ("AUDIT_ARGUMENTS_TARGETS", listed)],
                true,
            )
            .await;
            let client = RawClient::new(
                &format!("{}/mcp", server.base),
                &[("x-gateway-dev-user", "alice")],
            );
            let r = client
                .modern(
                    "tools/call",
                    json!({"name": "json_schema_2020_12_tool", "arguments": arguments}),
                    json!({}),
                )
                .await;
            assert!(r.body["result"].is_object(), "{:?}", r.body);
            let events = events.lock().unwrap().clone();
            assert_eq!(events.len(), 1, "{events:#?}");
            let event: Value = serde_json::from_str(&events[0]).unwrap();
            assert_eq!(event["event"], "tools/call");
            event
        }
    };
    assert_eq!(audited("fixtures, other").await["arguments"], arguments);
    // Another target listed: this one's arguments are not written.
    let unlisted = audited("other").await;
    assert!(unlisted.get("arguments").is_none(), "{unlisted}");
    assert!(!unlisted.to_string().contains("ada@example.com"));
}

/// Where the transport streams (here a local server), the client sees an
/// upstream's progress while the call runs: the first notification comes
/// well before the result (the fixture pauses 50 ms after each of its
/// three reports). The request's metrics and audit event are written when
/// the stream ends, so they cover the whole call.
#[tokio::test]
async fn progress_arrives_while_the_call_runs_and_is_recorded_whole() {
    let (_fixtures, fixtures_url) = gateway_tests::conformance_fixtures();
    let (_gw, server, metrics, audit) =
        observed_gateway(&fixtures_url, &[("METRICS", "on"), ("AUDIT", "on")], true).await;
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
    "name": "test_tool_with_progress", "arguments": {}, "_meta": {
        "progressToken": "p-9",
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    }}});
    let call = |user: &'static str| {
        gateway_tests::http()
            .post(format!("{}/mcp", server.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "test_tool_with_progress")
            .header("x-gateway-dev-user", user)
            .json(&body)
            .send()
    };
    let started = std::time::Instant::now();
    let mut res = call("alice").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let (mut first_progress, mut result) = (None, None);
    while let Some(chunk) = res.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if first_progress.is_none() && text.contains("notifications/progress") {
            first_progress = Some(started.elapsed());
        }
        if text.contains("\"id\":9") {
            result = Some(started.elapsed());
        }
    }
    let (first_progress, result) = (first_progress.unwrap(), result.unwrap());
    assert!(
        result >= first_progress + Duration::from_millis(90),
        "the first progress at {first_progress:?}, the result at {result:?}: {text}"
    );
    assert_eq!(text.matches("notifications/progress").count(), 3, "{text}");
    assert!(text.contains("Progress test completed"), "{text}");

    let metrics = metrics.lock().unwrap().clone();
    assert_eq!(metrics.len(), 1, "{metrics:#?}");
    let m: Value = serde_json::from_str(&metrics[0]).unwrap();
    assert_eq!(m["Method"], "tools/call");
    assert_eq!(m["Target"], "fixtures");
    assert!(
        m["TargetExecutionTime"].as_f64().unwrap() >= 100.0,
        "the whole upstream call: {m}"
    );
    {
        let audit = audit.lock().unwrap().clone();
        assert_eq!(audit.len(), 1, "{audit:#?}");
        let a: Value = serde_json::from_str(&audit[0]).unwrap();
        assert_eq!(
            (
                a["event"].as_str(),
                a["item"].as_str(),
                a["outcome"].as_str()
            ),
            (
                Some("tools/call"),
                Some("test_tool_with_progress"),
                Some("ok")
            )
        );
    }

    // A client that goes away after the first event: the call is still
    // recorded (status 499), once.
    let mut res = call("bob").await.unwrap();
    let first = res.chunk().await.unwrap().unwrap_or_default();
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
    drop(res);
    let mut outcome = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let audit = audit.lock().unwrap().clone();
        if audit.len() > 1 {
            assert_eq!(audit.len(), 2, "{audit:#?}");
            let a: Value = serde_json::from_str(&audit[1]).unwrap();
            assert_eq!(a["user"], "bob");
            outcome = a["outcome"].as_str().map(str::to_owned);
            break;
        }
    }
    assert_eq!(outcome.as_deref(), Some("http:499"));
}
