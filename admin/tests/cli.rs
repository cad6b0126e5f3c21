//! `gateway-admin` as an operator runs it, against moto: the scheduled
//! refresh from a shell, and a whole key rotation.

use std::process::Command;
use std::time::Duration;

use gateway_shared::ports::{Clock, SystemClock};
use gateway_tests::{refreshable_grant, stack_target_for_fake, FakeHttp, Gateway};
use secrecy::ExposeSecret;
use serde_json::json;

/// Runs `gateway-admin args` on `gw`'s table and key set: success, stdout and stderr.
fn admin(gw: &Gateway, args: &[&str]) -> (bool, String) {
    admin_with_stdin(gw, args, "")
}

// Multi-threaded: the fake token endpoint answers while a blocking
// `gateway-admin` run waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_key_rotation_from_the_command_line() {
    let gw = Gateway::start(&[]).await;
    let token = FakeHttp::start(
        200,
        json!({"access_token": "fresh", "refresh_token": "r2", "token_type": "Bearer", "expires_in": 3600}),
        Duration::ZERO,
    )
    .await;
    gw.state
        .targets
        .put(&stack_target_for_fake(&format!("{}/token", token.base)))
        .await
        .unwrap();
    let now = SystemClock.now();
    // An hour-long token with a minute left.
    gw.state
        .grants
        .create(&refreshable_grant(
            "alice",
            "fake",
            "old",
            "r1",
            now + 60,
            now - 3_540,
        ))
        .await
        .unwrap();

    // The scheduled refresh, run here.
    let (ok, out) = admin(&gw, &["refresh", "--window", "600"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(r#""due":1"#) && out.contains(r#""refreshed":1"#),
        "{out}"
    );
    assert_eq!(token.hits(), 1);
    let grant = gw
        .state
        .grants
        .get("alice", "fake", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.tokens.access_token.expose_secret(), "fresh");

    // A whole rotation.
    let (ok, out) = admin(&gw, &["keys", "add"]);
    assert!(ok && out.contains("added key k2"), "{out}");
    let (ok, out) = admin(&gw, &["keys", "retire", "k1"]);
    assert!(!ok && out.contains("2 stored items still use k1"), "{out}");
    let (ok, out) = admin(&gw, &["keys", "current", "k2"]);
    assert!(ok, "{out}");
    let (ok, out) = admin(&gw, &["keys", "retire", "k2"]);
    assert!(!ok && out.contains("current key"), "{out}");
    let (ok, out) = admin(&gw, &["keys", "reseal"]);
    assert!(ok && out.contains("2 resealed"), "{out}");
    let (ok, out) = admin(&gw, &["keys", "retire", "k1"]);
    assert!(ok, "{out}");
    let (ok, out) = admin(&gw, &["keys", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("k2") && out.contains("current") && out.contains("seals 2 items"),
        "{out}"
    );
    assert!(!out.contains("k1"), "{out}");
    // The grant still opens with the rotated key set, in a new process.
    let (ok, out) = admin(&gw, &["grants", "list", "--user", "alice"]);
    assert!(
        ok && out.contains("fake") && out.contains("active"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_shape_the_target_and_unknown_ones_are_named() {
    let gw = Gateway::start(&[]).await;
    let add = |preset: &str| {
        admin(
            &gw,
            &[
                "target",
                "add",
                "google",
                "--mcp-url",
                "https://mcp.example.test/mcp",
                "--client-id",
                "operator-client",
                "--authorization-endpoint",
                "https://accounts.example.test/o/oauth2/v2/auth",
                "--token-endpoint",
                "https://oauth2.example.test/token",
                "--scopes",
                "openid https://www.googleapis.com/auth/drive.readonly",
                "--param",
                "prompt=select_account consent",
                "--public-base-url",
                "https://gateway.example.test",
                "--preset",
                preset,
            ],
        )
    };
    let (ok, out) = add("gitlab");
    assert!(
        !ok && out.contains("github") && out.contains("cognito"),
        "{out}"
    );
    let (ok, out) = add("google");
    assert!(ok, "{out}");
    let (ok, shown) = admin(&gw, &["target", "show", "google"]);
    assert!(ok, "{shown}");
    let target: serde_json::Value = serde_json::from_str(&shown).expect(&shown);
    let oauth = &target["auth"];
    assert_eq!(oauth["kind"], "oauth", "{shown}");
    assert_eq!(
        oauth["extra_authorize_params"]["access_type"], "offline",
        "{shown}"
    );
    // The operator's own parameter wins over the preset's.
    assert_eq!(
        oauth["extra_authorize_params"]["prompt"],
        "select_account consent"
    );
    assert_eq!(oauth["send_resource"], false);
}

/// `gateway-admin args` with `stdin` on its standard input.
fn admin_with_stdin(gw: &Gateway, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-admin"))
        .args(args)
        .env_clear()
        .envs(gw.process_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run gateway-admin");
    // A run refused before it reads its input closes the pipe: not an error.
    match child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().expect("gateway-admin output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_targets_are_added_without_ever_printing_the_key() {
    let gw = Gateway::start(&[]).await;
    const KEY: &str = "sk-live-cli-0123456789";
    let add = |extra: &[&str]| {
        let mut args = vec![
            "target",
            "add",
            "keyed",
            "--mcp-url",
            "https://mcp.example.test/mcp",
            "--public-base-url",
            "https://gateway.example.test",
        ];
        args.extend_from_slice(extra);
        admin_with_stdin(&gw, &args, &format!("{KEY}\n"))
    };
    // A header the protocol owns, and a key without a place: refused.
    let (ok, out) = add(&["--api-key-header", "Content-Type", "--api-key-stdin"]);
    assert!(!ok && out.contains("set by the gateway"), "{out}");
    let (ok, out) = add(&["--api-key-stdin"]);
    assert!(!ok && out.contains("--api-key-header"), "{out}");
    // The kind spelled out: each needs what it needs.
    let (ok, out) = add(&["--auth", "api_key"]);
    assert!(!ok && out.contains("--api-key-header"), "{out}");
    let (ok, out) = add(&["--auth", "client_credentials"]);
    assert!(!ok && out.contains("--client-id"), "{out}");
    let (ok, out) = add(&["--auth", "enterprise_managed", "--client-id", "x"]);
    assert!(!ok && out.contains("--idp-token-endpoint"), "{out}");
    let (ok, out) = add(&["--auth", "token_exchange", "--subject-token-type", "cookie"]);
    assert!(
        !ok && out.contains("not access_token, id_token, jwt or a URN"),
        "{out}"
    );
    let (ok, out) = add(&["--audience", "api"]);
    assert!(
        !ok && out.contains("go with --auth token_exchange"),
        "{out}"
    );
    let (ok, out) = add(&["--auth", "token_exchange"]);
    assert!(!ok && out.contains("--client-id"), "{out}");
    let (ok, out) = add(&[
        "--auth",
        "enterprise_managed",
        "--client-id",
        "x",
        "--idp-token-endpoint",
        "http://idp.example.test/token",
        "--idp-client-id",
        "gw",
        "--token-endpoint",
        "https://as.example.test/token",
        "--authorization-endpoint",
        "https://as.example.test/authorize",
        "--issuer",
        "https://as.example.test",
    ]);
    assert!(!ok && out.contains("must be https"), "{out}");
    let (ok, out) = add(&["--auth", "oauth", "--api-key-query", "k", "--api-key-stdin"]);
    assert!(!ok && out.contains("does not go with"), "{out}");
    // Contradictions are refused, not silently resolved.
    for contradiction in [
        &["--client-credentials", "--no-auth"][..],
        &[
            "--auth",
            "none",
            "--client-id",
            "x",
            "--client-secret-stdin",
        ],
        &[
            "--auth",
            "aws_iam",
            "--aws-service",
            "lambda",
            "--aws-region",
            "us-east-1",
            "--client-id",
            "x",
        ],
        &[
            "--jwt-bearer",
            "--client-id",
            "x",
            "--client-secret-stdin",
            "--auth-method",
            "private_key_jwt",
        ],
    ] {
        let (ok, out) = add(contradiction);
        assert!(!ok, "{contradiction:?} was accepted: {out}");
    }
    // A private key that cannot sign is refused when it is given.
    let (ok, out) = add(&[
        "--client-credentials",
        "--client-id",
        "x",
        "--auth-method",
        "private_key_jwt",
        "--client-secret-stdin",
        "--token-endpoint",
        "https://as.example.test/token",
    ]);
    assert!(!ok && out.contains("private key"), "{out}");
    let (ok, out) = add(&["--auth", "aws_iam"]);
    assert!(!ok && out.contains("--aws-service"), "{out}");
    let (ok, out) = add(&[
        "--auth",
        "api_key",
        "--api-key-header",
        "Authorization",
        "--api-key-prefix",
        "Token ",
        "--api-key-stdin",
    ]);
    assert!(ok, "{out}");
    assert!(!out.contains(KEY), "{out}");
    let (ok, shown) = admin(&gw, &["target", "show", "keyed"]);
    assert!(ok && !shown.contains(KEY), "{shown}");
    let target: serde_json::Value = serde_json::from_str(&shown).expect(&shown);
    assert_eq!(target["auth"]["kind"], "api_key", "{shown}");
    assert_eq!(target["auth"]["in"], "header");
    assert_eq!(target["auth"]["name"], "Authorization");
    let arn = target["auth"]["secret_arn"].as_str().unwrap().to_owned();
    let stored = gw.state.secrets.secret(&arn).await.unwrap();
    assert_eq!(stored.expose_secret(), KEY);
    let (ok, listed) = admin(&gw, &["target", "list"]);
    assert!(
        ok && listed.contains("api key") && !listed.contains(KEY),
        "{listed}"
    );

    // Signed requests carry the role's session token: never over plain http.
    let (ok, out) = admin(
        &gw,
        &[
            "target",
            "add",
            "plain",
            "--mcp-url",
            "http://mcp.example.test/mcp",
            "--public-base-url",
            "https://gateway.example.test",
            "--auth",
            "aws_iam",
            "--aws-service",
            "lambda",
            "--aws-region",
            "us-east-1",
        ],
    );
    assert!(!ok && out.contains("https"), "{out}");

    // SigV4 with the function's role: no secret at all.
    let (ok, out) = admin(
        &gw,
        &[
            "target",
            "add",
            "runtime",
            "--mcp-url",
            "https://bedrock-agentcore.us-east-1.amazonaws.com/runtimes/x/invocations",
            "--public-base-url",
            "https://gateway.example.test",
            "--auth",
            "aws_iam",
            "--aws-service",
            "bedrock-agentcore",
            "--aws-region",
            "us-east-1",
        ],
    );
    assert!(ok, "{out}");
    let (_, shown) = admin(&gw, &["target", "show", "runtime"]);
    let target: serde_json::Value = serde_json::from_str(&shown).expect(&shown);
    assert_eq!(target["auth"]["kind"], "aws_iam", "{shown}");
    assert_eq!(target["auth"]["service"], "bedrock-agentcore");
}

/// `gateway-admin target sync`: the target's tools listed upstream now and
/// stored as its catalog (what tool search sees), every page of them; an
/// unknown target is named in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_sync_stores_the_upstream_catalog_for_search() {
    let gw = Gateway::start(&[]).await;
    let (_fixtures, url) = gateway_tests::conformance_fixtures();
    let target = gateway_tests::open_target("fixtures", url);
    gw.state.targets.put(&target).await.unwrap();
    let base = ["--public-base-url", "https://gateway.example.test"];
    let (ok, out) = admin(&gw, &[&["target", "sync", "fixtures"][..], &base].concat());
    assert!(ok, "{out}");
    let stored = gw
        .state
        .targets
        .get_fresh("fixtures")
        .await
        .unwrap()
        .unwrap();
    let names: Vec<String> = stored
        .tool_catalog
        .iter()
        .filter_map(|t| t.name())
        .collect();
    assert!(names.iter().any(|n| n == "test_simple_text"), "{names:?}");
    assert!(out.contains(&format!("{} tools", names.len())), "{out}");
    let (ok, out) = admin(&gw, &[&["target", "sync", "nothing"][..], &base].concat());
    assert!(!ok && out.contains("no target named \"nothing\""), "{out}");
}

/// `gateway-admin policy`: put (a set that does not parse is refused and
/// changes nothing), show, test a sample request (against the stored set,
/// or offline against a file), remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_put_tested_and_removed_from_the_command_line() {
    let gw = Gateway::start(&[]).await;
    let dir = std::env::temp_dir().join(format!(
        "gateway-policy-{}",
        gateway_shared::crypto::random_token(6)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.cedar");
    std::fs::write(
        &good,
        r#"@id("eng") permit(principal in Gateway::Group::"engineers", action == Gateway::Action::"tools/call", resource in Gateway::Target::"github");
           @id("small") permit(principal, action, resource == Gateway::Tool::"pay___send") when { context.arguments.amount < 100 };"#,
    )
    .unwrap();
    let bad = dir.join("bad.cedar");
    std::fs::write(&bad, "permit(principal, action").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let (ok, out) = admin(&gw, &["policy", "show"]);
    assert!(ok && out.contains("no policy set"), "{out}");
    let (ok, out) = admin(&gw, &["policy", "put", &path(&good)]);
    assert!(ok && out.contains("2 policies"), "{out}");
    let (ok, out) = admin(&gw, &["policy", "put", &path(&bad)]);
    assert!(!ok && out.contains("do not parse"), "{out}");
    let (ok, out) = admin(&gw, &["policy", "show"]);
    assert!(
        ok && out.contains("@id(\"eng\")"),
        "the good set stays: {out}"
    );

    let test = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "test",
            "--target",
            "github",
            "--name",
            "github___list_issues",
        ];
        args.extend_from_slice(extra);
        admin(&gw, &args)
    };
    let (ok, out) = test(&[
        "--user",
        "alice",
        "--groups",
        "engineers",
        "--expect",
        "allow",
    ]);
    assert!(ok && out.starts_with("allow (policies: eng)"), "{out}");
    let (ok, out) = test(&["--user", "bob", "--expect", "deny"]);
    assert!(
        ok && out.starts_with("deny (policies: none matched)"),
        "{out}"
    );
    let (ok, out) = test(&["--user", "bob", "--expect", "allow"]);
    assert!(!ok && out.contains("expected allow"), "{out}");
    // Offline, with arguments.
    let pay = |amount: &str| {
        admin(
            &gw,
            &[
                "policy",
                "test",
                "--file",
                &path(&good),
                "--user",
                "bob",
                "--target",
                "pay",
                "--name",
                "pay___send",
                "--arguments",
                amount,
            ],
        )
    };
    assert!(pay(r#"{"amount": 5}"#).1.starts_with("allow"));
    assert!(pay(r#"{"amount": 500}"#).1.starts_with("deny"));
    let (ok, out) = pay("[1]");
    assert!(!ok && out.contains("JSON object"), "{out}");

    let (ok, out) = admin(&gw, &["policy", "remove"]);
    assert!(ok && out.contains("every call is allowed"), "{out}");
    let (ok, out) = test(&["--user", "bob", "--expect", "allow"]);
    assert!(ok && out.contains("no policy set"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Changes made with `gateway-admin` are audit events in the trail's own
/// log group (moto): who (the actor), what, and whether it worked; a
/// command that only reads is not.
#[tokio::test]
async fn admin_changes_are_audited_in_the_trails_log_group() {
    let gw = Gateway::start(&[]).await;
    let group = "/mcp-oauth-gateway/admin-test/audit";
    let logs = |action: &'static str, body: serde_json::Value| {
        gateway_tests::logs_api(&gw.moto.endpoint, action, body)
    };
    logs("CreateLogGroup", json!({"logGroupName": group})).await;
    let dir = gateway_tests::TempDir::new("admin-audit");
    let good = dir.path.join("good.cedar");
    std::fs::write(&good, "permit(principal, action, resource);").unwrap();
    let bad = dir.path.join("bad.cedar");
    std::fs::write(&bad, "permit(principal, action").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway-admin"))
            .args(args)
            .env_clear()
            .envs(gw.process_env())
            .env("AUDIT_LOG_GROUP", group)
            .env("AUDIT", "on")
            .env("GATEWAY_ADMIN_ACTOR", "ops-alice")
            .output()
            .expect("run gateway-admin");
        out.status.success()
    };
    assert!(run(&["policy", "put", good.to_str().unwrap()]));
    assert!(run(&["policy", "show"]));
    assert!(!run(&["policy", "put", bad.to_str().unwrap()]));
    assert!(run(&["policy", "remove"]));
    let found = logs("FilterLogEvents", json!({"logGroupName": group})).await;
    let events: Vec<(String, String, String, String)> = found["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let v: serde_json::Value =
                serde_json::from_str(e["message"].as_str().unwrap_or_default()).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("event"), s("outcome"), s("user"), s("client"))
        })
        .collect();
    let expected = |event: &str, outcome: &str| {
        (
            event.to_owned(),
            outcome.to_owned(),
            "ops-alice".to_owned(),
            "gateway-admin".to_owned(),
        )
    };
    assert_eq!(
        events,
        vec![
            expected("admin.policy.put", "ok"),
            expected("admin.policy.put", "failed"),
            expected("admin.policy.remove", "ok"),
        ]
    );
}

/// `gateway-admin smoke` against a gateway that validates JWTs: metadata,
/// challenge and (with a token on stdin) tools/list pass; against one that
/// asks for no token (a development gateway) the challenge check fails and
/// so does the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_checks_a_gateway_from_outside() {
    use gateway_tests::{sign, unix_now, GatewayServer};
    let idp = gateway_tests::idp(&["test-key-1"]).await;
    let (listener, base) = GatewayServer::bind().await;
    let aud = format!("{base}/mcp");
    let gw = Gateway::start(&[
        ("PUBLIC_BASE_URL", base.as_str()),
        ("INBOUND_AUTH_MODE", "jwt"),
        ("INBOUND_ISSUER", &idp.issuer),
        ("INBOUND_AUDIENCES", &aud),
        ("INBOUND_REQUIRED_SCOPES", "mcp:invoke"),
        ("CONSENT_BINDING", "link"),
    ])
    .await;
    let _server = GatewayServer::serve(listener, base.clone(), gw.state.clone());
    let token = sign(
        "test-key-1",
        json!({"iss": idp.issuer, "sub": "smoke", "aud": aud, "exp": unix_now() + 300, "scope": "mcp:invoke"}),
    );
    let smoke = |url: String, stdin: Option<String>| {
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway-admin"));
            cmd.args(["smoke", "--url", &url])
                .env_clear()
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped());
            if stdin.is_some() {
                cmd.arg("--token-stdin");
            }
            let mut child = cmd.spawn().expect("run gateway-admin smoke");
            let _ = child
                .stdin
                .take()
                .expect("stdin")
                .write_all(stdin.unwrap_or_default().as_bytes());
            let out = child.wait_with_output().expect("output");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
            )
        })
    };
    let (ok, out) = smoke(aud.clone(), None).await.unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("ok   protected resource metadata") && out.contains("ok   401 challenge"),
        "{out}"
    );
    assert!(out.contains("skip tools/list"), "{out}");
    let (ok, out) = smoke(aud.clone(), Some(token)).await.unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("ok   tools/list with the token: "), "{out}");
    // Asked to read a token and given none: an error, not a skipped check.
    let (ok, out) = smoke(aud.clone(), Some(String::new())).await.unwrap();
    assert!(!ok && !out.contains("skip tools/list"), "{out}");
    let (ok, out) = smoke(aud.clone(), Some("not-a-token".into()))
        .await
        .unwrap();
    assert!(
        !ok && out.contains("FAIL tools/list with the token"),
        "{out}"
    );

    // A gateway that challenges no one is not ready for agents.
    let dev = Gateway::start(&[]).await;
    let (listener, dev_base) = GatewayServer::bind().await;
    let _dev_server = GatewayServer::serve(listener, dev_base.clone(), dev.state.clone());
    let (ok, out) = smoke(format!("{dev_base}/mcp"), None).await.unwrap();
    assert!(!ok && out.contains("FAIL 401 challenge"), "{out}");
}
