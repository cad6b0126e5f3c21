//! The MCP proxy end to end: clients of every era against the gateway in
//! front of two OAuth-protected upstreams built with the official Python SDK
//! (one session-based, one stateless), consent through a real browser.

use gateway_shared::domain::TokenEndpointAuthMethod;
use gateway_tests::{browser_consent, stack, tool_text, DemoMcpServer, RawClient, Stack};
use serde_json::{json, Value};

struct Proxy {
    s: Stack,
    _legacy: DemoMcpServer,
    _stateless: DemoMcpServer,
}

/// Targets: `demo`, a session-based server of the 2025 eras; `plain`, a
/// stateless server that speaks 2026-07-28.
async fn proxy() -> Proxy {
    let s = stack(json!({})).await;
    let legacy = DemoMcpServer::start_with(&s.op.issuer, false, &["--era", "2025"]);
    s.target_at(
        "demo",
        &legacy.url,
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    let stateless = DemoMcpServer::start(&s.op.issuer, true);
    s.target_at(
        "plain",
        &stateless.url,
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    Proxy {
        s,
        _legacy: legacy,
        _stateless: stateless,
    }
}

impl Proxy {
    fn client(&self, user: &str) -> RawClient {
        RawClient::new(
            &format!("{}/mcp", self.s.server.base),
            &[("x-gateway-dev-user", user)],
        )
    }
}

const URL_ELICITATION: &str = r#"{"elicitation": {"url": {}}}"#;

fn tool_names(result: &Value) -> Vec<String> {
    result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_2025_11_25_client_gets_a_url_elicitation_then_its_own_results() {
    let p = proxy().await;
    let mut alice = p.client("alice");
    let init = alice
        .initialize("2025-11-25", serde_json::from_str(URL_ELICITATION).unwrap())
        .await;
    assert_eq!(init.status, 200);
    assert_eq!(init.body["result"]["protocolVersion"], "2025-11-25");
    assert!(alice.session.is_some(), "a sealed session id");

    let call = alice
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(call.status, 200);
    let err = &call.body["error"];
    assert_eq!(err["code"], -32042, "{}", call.body);
    let elicitation = &err["data"]["elicitations"][0];
    assert_eq!(elicitation["mode"], "url");
    let link = elicitation["url"].as_str().unwrap();
    assert!(link.starts_with(&format!("{}/connect/", p.s.server.base)));

    let seen = browser_consent(link, &["alice"], "consent", None).await;
    assert_eq!(seen.title.as_deref(), Some("Connected to Demo Service"));
    let call = alice
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(tool_text(&call.body["result"]), "alice", "{}", call.body);
    // The session-based upstream gave alice her own Mcp-Session-Id, kept for other instances.
    let link =
        p.s.gw
            .raw_item("USER#alice", "SESSION#demo")
            .await
            .expect("an upstream session");
    assert!(!link["session_id"].as_s().unwrap().is_empty(), "{link:?}");
    assert_ne!(link["protocol_version"].as_s().unwrap(), "2026-07-28");
    let add = alice
        .request(
            "tools/call",
            json!({"name": "demo___add", "arguments": {"a": 2, "b": 40}}),
        )
        .await;
    assert_eq!(tool_text(&add.body["result"]), "42", "{}", add.body);

    // Listing now shows both targets' tools under prefixes, and the gateway's own.
    let list = alice.request("tools/list", json!({})).await;
    let names = tool_names(&list.body["result"]);
    for n in [
        "demo___whoami",
        "demo___echo",
        "demo___add",
        "gateway___connections",
        "gateway___disconnect",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    // Another user who never connected sees demo's tools from the cached catalog.
    let mut bob = p.client("bob");
    bob.initialize("2025-06-18", json!({})).await;
    let names = tool_names(&bob.request("tools/list", json!({})).await.body["result"]);
    assert!(names.contains(&"demo___whoami".to_string()), "{names:?}");
    // Bob's client has no URL elicitation: the link comes as a tool error to relay.
    let call = bob
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    let result = &call.body["result"];
    assert_eq!(result["isError"], true, "{}", call.body);
    let text = tool_text(result);
    assert!(
        text.contains("/connect/") && text.contains("retry"),
        "{text}"
    );
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/connect/"))
        .unwrap()
        .trim_end_matches(',');
    browser_consent(link, &["bob"], "consent", None).await;
    // Two users at once, each with their own upstream identity.
    let (a, b) = tokio::join!(
        alice.request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}})
        ),
        bob.request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}})
        )
    );
    assert_eq!(tool_text(&a.body["result"]), "alice");
    assert_eq!(tool_text(&b.body["result"]), "bob");

    // Alice's session id is useless to Bob.
    let mut stolen = p.client("bob");
    stolen.version = Some("2025-11-25".into());
    stolen.session = alice.session.clone();
    let r = stolen.request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // The gateway's own tools: connections, then disconnect.
    let conns = alice
        .request(
            "tools/call",
            json!({"name": "gateway___connections", "arguments": {}}),
        )
        .await;
    assert_eq!(
        conns.body["result"]["structuredContent"]["connections"][0]["target"], "demo",
        "{}",
        conns.body
    );
    let out = alice
        .request(
            "tools/call",
            json!({"name": "gateway___disconnect", "arguments": {"target": "demo"}}),
        )
        .await;
    assert!(
        tool_text(&out.body["result"]).contains("Disconnected"),
        "{}",
        out.body
    );
    let again = alice
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(
        again.body["error"]["code"], -32042,
        "consent again after disconnect"
    );
}

#[tokio::test]
async fn a_2026_client_gets_input_required_and_retries_with_request_state() {
    let p = proxy().await;
    let carol = p.client("carol");
    let caps = json!({"elicitation": {"url": {}}});
    let discover = carol
        .modern("server/discover", json!({}), caps.clone())
        .await;
    assert_eq!(discover.status, 200, "{}", discover.body);
    assert!(discover.body["result"]["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("2026-07-28")));

    let params = json!({"name": "plain___whoami", "arguments": {}});
    let first = carol
        .modern("tools/call", params.clone(), caps.clone())
        .await;
    let result = &first.body["result"];
    assert_eq!(result["resultType"], "input_required", "{}", first.body);
    let request = result["inputRequests"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(request["method"], "elicitation/create");
    assert_eq!(request["params"]["mode"], "url");
    let state = result["requestState"].as_str().unwrap().to_owned();
    let link = request["params"]["url"].as_str().unwrap();
    browser_consent(link, &["carol"], "consent", None).await;

    let mut retry = params.clone();
    retry["requestState"] = json!(state);
    retry["inputResponses"] = json!({});
    let second = carol
        .modern("tools/call", retry.clone(), caps.clone())
        .await;
    assert_eq!(
        tool_text(&second.body["result"]),
        "carol",
        "{}",
        second.body
    );
    // The stateless upstream was spoken to in 2026-07-28 (found by server/discover).
    let link =
        p.s.gw
            .raw_item("USER#carol", "SESSION#plain")
            .await
            .expect("an upstream link record");
    assert_eq!(link["protocol_version"].as_s().unwrap(), "2026-07-28");

    // The state is bound to its user and its parameters.
    let dave = p.client("dave");
    let stolen = dave.modern("tools/call", retry.clone(), caps.clone()).await;
    assert_eq!(stolen.body["error"]["code"], -32602, "{}", stolen.body);
    let mut other = retry.clone();
    other["name"] = json!("plain___echo");
    other["arguments"] = json!({"text": "x"});
    let swapped = carol.modern("tools/call", other, caps.clone()).await;
    assert_eq!(swapped.body["error"]["code"], -32602, "{}", swapped.body);
}

/// Runs a client script (Python or Node) and parses its JSON report.
async fn run_client(program: &str, args: &[String]) -> Value {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run the SDK client");
    assert!(
        out.status.success(),
        "{program} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn python_client(p: &Proxy, user: &str, tool: &str, mode: &str) -> Value {
    python_script(
        "sdk_client.py",
        &[
            ("--url", &format!("{}/mcp", p.s.server.base)),
            ("--user", user),
            ("--tool", tool),
            ("--mode", mode),
        ],
    )
    .await
}

/// Runs `tests/python/<script>` in the project's venv with these options.
async fn python_script(script: &str, options: &[(&str, &str)]) -> Value {
    let root = gateway_tests::workspace_root();
    let mut args = vec![root.join("tests/python").join(script).display().to_string()];
    for (k, v) in options {
        args.push(k.to_string());
        args.push(v.to_string());
    }
    run_client(root.join(".tools/venv/bin/python").to_str().unwrap(), &args).await
}

/// Runs `tests/node/sdk-client.mjs` (the TypeScript SDK) declaring `capabilities`.
async fn typescript_client(p: &Proxy, user: &str, tool: &str, capabilities: &str) -> Value {
    let opts = json!({"url": format!("{}/mcp", p.s.server.base), "user": user, "tool": tool, "capabilities": capabilities});
    run_client(
        "node",
        &[
            gateway_tests::node_dir()
                .join("sdk-client.mjs")
                .display()
                .to_string(),
            opts.to_string(),
        ],
    )
    .await
}

#[tokio::test]
async fn clients_without_url_elicitation_get_the_link_as_text() {
    let p = proxy().await;
    let url = format!("{}/mcp", p.s.server.base);
    // The Python SDK's default mode without an elicitation handler speaks
    // 2026-07-28 and declares no elicitation; Strands' MCPClient is built on
    // it. Both used to fail with "Elicitation not supported".
    let python_options = [
        ("--url", url.as_str()),
        ("--user", "hank"),
        ("--tool", "plain___whoami"),
        ("--mode", "auto"),
        ("--elicitation", "none"),
    ];
    let strands_options = [
        ("--url", url.as_str()),
        ("--user", "ivy"),
        ("--tool", "demo___whoami"),
    ];
    let (python, strands) = tokio::join!(
        python_script("sdk_client.py", &python_options),
        python_script("strands_client.py", &strands_options),
    );
    for (report, user) in [(&python, "hank"), (&strands, "ivy")] {
        assert!(report.get("error").is_none(), "{report}");
        assert_eq!(report["elicitations"][0]["form"], "text-link", "{report}");
        assert!(report["elicitations"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/connect/", p.s.server.base)));
        assert_eq!(report["pages"][0], "Connected to Demo Service", "{report}");
        assert_eq!(report["text"], user, "{report}");
        assert_eq!(report["is_error"], false, "{report}");
    }
    assert_eq!(python["protocol_version"], "2026-07-28", "{python}");
    // The TypeScript SDK declaring no elicitation, or form mode only.
    let (none, form) = tokio::join!(
        typescript_client(&p, "jack", "demo___whoami", "none"),
        typescript_client(&p, "kim", "demo___whoami", "form"),
    );
    for (report, user) in [(&none, "jack"), (&form, "kim")] {
        assert_eq!(report["forms"][0], "text-link", "{report}");
        assert_eq!(report["pages"][0], "Connected to Demo Service", "{report}");
        assert_eq!(report["text"], user, "{report}");
        assert_eq!(report["isError"], false, "{report}");
    }
    // The README's Strands snippet, as written (its URL filled in): the
    // first call shows the link, the second, after consent, answers.
    let snippet = [("--url", url.as_str()), ("--tool", "demo___whoami")];
    let first = python_script("readme_snippet.py", &snippet).await;
    assert_eq!(first["is_error"], true, "{first}");
    let link = first["link"]
        .as_str()
        .unwrap_or_else(|| panic!("a link: {first}"));
    let seen = browser_consent(link, &["dev-user"], "consent", None).await;
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    let second = python_script("readme_snippet.py", &snippet).await;
    assert_eq!(second["text"], "dev-user", "{second}");
    assert_eq!(second["is_error"], false, "{second}");
}

#[tokio::test]
async fn the_python_sdk_client_connects_consents_and_calls_in_both_eras() {
    let p = proxy().await;
    // 2026-07-28 (auto: server/discover): the SDK drives input_required itself.
    let (modern, legacy) = tokio::join!(
        python_client(&p, "erin", "plain___whoami", "auto"),
        python_client(&p, "frank", "demo___whoami", "legacy"),
    );
    assert_eq!(
        modern["elicitations"][0]["form"], "input_required",
        "{modern}"
    );
    assert_eq!(modern["pages"][0], "Connected to Demo Service", "{modern}");
    assert_eq!(modern["text"], "erin", "{modern}");
    assert_eq!(modern["is_error"], false);
    assert!(modern["tools"]
        .as_array()
        .unwrap()
        .contains(&json!("gateway___connections")));
    // 2025-11-25 (legacy initialize): error -32042, consent, retry.
    assert_eq!(legacy["elicitations"][0]["form"], "error-32042", "{legacy}");
    assert_eq!(legacy["text"], "frank", "{legacy}");
}

#[tokio::test]
async fn the_typescript_sdk_client_connects_consents_and_calls() {
    let p = proxy().await;
    let opts =
        json!({"url": format!("{}/mcp", p.s.server.base), "user": "gina", "tool": "demo___whoami"});
    let report = run_client(
        "node",
        &[
            gateway_tests::node_dir()
                .join("sdk-client.mjs")
                .display()
                .to_string(),
            opts.to_string(),
        ],
    )
    .await;
    assert_eq!(report["protocolVersion"], "2025-11-25", "{report}");
    assert_eq!(
        report["elicitations"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(report["pages"][0], "Connected to Demo Service");
    assert_eq!(report["text"], "gina", "{report}");
    assert_eq!(report["isError"], false);
    // Nobody listed demo's tools yet, so no catalog: a connect tool stands in.
    let tools = report["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("gateway___disconnect")), "{report}");
    assert!(tools.contains(&json!("demo___connect")), "{report}");
}

#[tokio::test]
async fn upstream_refusals_lead_to_refresh_new_sessions_and_step_up_consent() {
    let p = proxy().await;
    let mut hana = p.client("hana");
    hana.initialize("2025-11-25", serde_json::from_str(URL_ELICITATION).unwrap())
        .await;
    let first = hana
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    let link = first.body["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    browser_consent(&link, &["hana"], "consent", None).await;
    assert_eq!(
        tool_text(
            &hana
                .request(
                    "tools/call",
                    json!({"name": "demo___whoami", "arguments": {}})
                )
                .await
                .body["result"]
        ),
        "hana"
    );

    // The upstream forgot the session (restart): a new one is opened, once.
    let gw = &p.s.gw;
    gw.dynamo
        .update_item()
        .table_name(&gw.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("USER#hana".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("SESSION#demo".into()),
        )
        .update_expression("SET session_id = :s")
        .expression_attribute_values(
            ":s",
            aws_sdk_dynamodb::types::AttributeValue::S("forgotten-session".into()),
        )
        .send()
        .await
        .unwrap();
    let other =
        gateway_tests::instance(gw, std::sync::Arc::new(gateway_shared::ports::SystemClock)).await;
    let (listener, base) = gateway_tests::GatewayServer::bind().await;
    let second = gateway_tests::GatewayServer::serve(listener, base.clone(), other);
    let mut via_other = RawClient::new(
        &format!("{}/mcp", second.base),
        &[("x-gateway-dev-user", "hana")],
    );
    via_other.initialize("2025-11-25", json!({})).await;
    let r = via_other
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(tool_text(&r.body["result"]), "hana", "{}", r.body);
    let session = gw.raw_item("USER#hana", "SESSION#demo").await.unwrap();
    assert_ne!(session["session_id"].as_s().unwrap(), "forgotten-session");

    // The upstream refuses the access token (revoked there): one refresh, then it works.
    let grant = gw
        .state
        .grants
        .get("hana", "demo", true)
        .await
        .unwrap()
        .unwrap();
    let mut broken = grant.clone();
    broken.tokens.access_token = "revoked-upstream".to_string().into();
    gw.state.grants.update(&broken).await.unwrap();
    let before = gateway_tests::provider_counts(&p.s.op).await["refresh_token"]
        .as_u64()
        .unwrap_or(0);
    let r = hana
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(tool_text(&r.body["result"]), "hana", "{}", r.body);
    let after = gateway_tests::provider_counts(&p.s.op).await["refresh_token"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(after, before + 1, "exactly one refresh after the 401");

    // A tool that needs more scope: 403 insufficient_scope → consent for the union.
    let r = hana
        .request(
            "tools/call",
            json!({"name": "demo___write_note", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(r.body["error"]["code"], -32042, "{}", r.body);
    let link = r.body["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = link.rsplit('/').next().unwrap();
    let pending = gw
        .state
        .authorizations
        .peek(id, gw.state.clock.now())
        .await
        .unwrap();
    assert_eq!(pending.scopes, vec!["read", "write"], "the union of scopes");
    browser_consent(&link, &["hana"], "consent", None).await;
    let r = hana
        .request(
            "tools/call",
            json!({"name": "demo___write_note", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(tool_text(&r.body["result"]), "noted for hana", "{}", r.body);
    let grant = gw
        .state
        .grants
        .get("hana", "demo", true)
        .await
        .unwrap()
        .unwrap();
    assert!(
        grant.scopes.contains(&"write".to_string()),
        "{:?}",
        grant.scopes
    );
}

#[tokio::test]
async fn a_meta_option_forces_a_new_consent_and_the_grant_is_replaced() {
    let p = proxy().await;
    let mut ivy = p.client("ivy");
    ivy.initialize("2025-11-25", serde_json::from_str(URL_ELICITATION).unwrap())
        .await;
    let r = ivy
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    let link = r.body["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    browser_consent(&link, &["ivy"], "consent", None).await;
    let before =
        p.s.gw
            .state
            .grants
            .get("ivy", "demo", true)
            .await
            .unwrap()
            .unwrap();

    // Connected, yet the caller asks for a new consent (another account, say).
    let forced = json!({"name": "demo___whoami", "arguments": {}, "_meta": {"mcp-oauth-gateway/forceConsent": true}});
    let r = ivy.request("tools/call", forced).await;
    assert_eq!(r.body["error"]["code"], -32042, "{}", r.body);
    let link = r.body["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    browser_consent(&link, &["ivy"], "consent", None).await;
    let after =
        p.s.gw
            .state
            .grants
            .get("ivy", "demo", true)
            .await
            .unwrap()
            .unwrap();
    assert!(
        after.version > before.version,
        "the new consent replaced the grant"
    );
    // Without the option, the call goes through.
    let r = ivy
        .request(
            "tools/call",
            json!({"name": "demo___whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(tool_text(&r.body["result"]), "ivy");
    // The client's own `_meta` does not disturb a call. (That the gateway's
    // fields are stripped before forwarding is the unit test
    // `forwarded_params_lose_gateway_fields`: the demo tools cannot show the
    // `_meta` they receive.)
    let echo = ivy
        .request("tools/call", json!({"name": "demo___echo", "arguments": {"text": "hi"}, "_meta": {"progressToken": 5}}))
        .await;
    assert_eq!(tool_text(&echo.body["result"]), "hi");
}

#[tokio::test]
async fn a_target_with_unknown_tools_offers_a_connect_tool() {
    let p = proxy().await;
    let mut jo = p.client("jo");
    jo.initialize("2025-11-25", serde_json::from_str(URL_ELICITATION).unwrap())
        .await;
    let names = tool_names(&jo.request("tools/list", json!({})).await.body["result"]);
    assert!(
        names.contains(&"demo___connect".to_string())
            && names.contains(&"plain___connect".to_string()),
        "{names:?}"
    );
    let r = jo
        .request(
            "tools/call",
            json!({"name": "demo___connect", "arguments": {}}),
        )
        .await;
    assert_eq!(r.body["error"]["code"], -32042, "{}", r.body);
    let link = r.body["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    browser_consent(&link, &["jo"], "consent", None).await;
    let names = tool_names(&jo.request("tools/list", json!({})).await.body["result"]);
    assert!(names.contains(&"demo___whoami".to_string()), "{names:?}");
    assert!(!names.contains(&"demo___connect".to_string()), "{names:?}");
    let r = jo
        .request(
            "tools/call",
            json!({"name": "demo___connect", "arguments": {}}),
        )
        .await;
    assert!(
        tool_text(&r.body["result"]).contains("is connected"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn consent_returns_to_an_allowed_app_url_and_agentcore_options_work() {
    let p = proxy().await;
    let mut demo = p.s.gw.state.targets.get("demo").await.unwrap().unwrap();
    demo.return_to.allowed_origins = vec!["http://localhost:9".into()];
    p.s.gw.state.targets.put(&demo).await.unwrap();
    let mut lena = p.client("lena");
    lena.initialize("2025-11-25", serde_json::from_str(URL_ELICITATION).unwrap())
        .await;
    let call = |meta: Value| json!({"name": "demo___whoami", "arguments": {}, "_meta": meta});
    let agentcore = |provider: Value| json!({"aws.bedrock-agentcore.gateway/credentialProviderConfiguration": {"oauthCredentialProvider": provider}});
    // A return URL on another origin: a clear error, no consent started.
    let evil = lena
        .request(
            "tools/call",
            call(json!({"mcp-oauth-gateway/returnUrl": "https://evil.example/phish"})),
        )
        .await;
    assert_eq!(evil.body["error"]["code"], -32602, "{}", evil.body);
    assert!(evil.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allow-list"));
    // AgentCore's returnUrl: the success page links back and redirects there.
    let back = "http://localhost:9/chat?session=1";
    let first = lena
        .request("tools/call", call(agentcore(json!({"returnUrl": back}))))
        .await;
    let link = first.body["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", first.body))
        .to_owned();
    let seen = browser_consent(&link, &["lena"], "consent", None).await;
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    assert_eq!(seen.back.as_deref(), Some(back), "{seen:?}");
    assert!(seen.next.unwrap().contains("Taking you back to localhost"));
    let ok = lena.request("tools/call", call(json!({}))).await;
    assert_eq!(tool_text(&ok.body["result"]), "lena", "{}", ok.body);
    // AgentCore's forceAuthentication: a new consent although connected;
    // without a return URL in the call, the target's default applies.
    demo.return_to.default_url = Some("https://app.example/home".into());
    p.s.gw.state.targets.put(&demo).await.unwrap();
    let forced = lena
        .request(
            "tools/call",
            call(agentcore(json!({"forceAuthentication": true}))),
        )
        .await;
    assert_eq!(forced.body["error"]["code"], -32042, "{}", forced.body);
    let link = forced.body["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = browser_consent(&link, &["lena"], "consent", None).await;
    assert_eq!(
        seen.back.as_deref(),
        Some("https://app.example/home"),
        "{seen:?}"
    );
    // Wrong types are named.
    let bad = lena
        .request(
            "tools/call",
            call(agentcore(json!({"forceAuthentication": "yes"}))),
        )
        .await;
    assert_eq!(bad.body["error"]["code"], -32602, "{}", bad.body);
}
