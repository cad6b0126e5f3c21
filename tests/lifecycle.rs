//! The token lifecycle with real parts: refresh under the lease protocol
//! across many instances, with oidc-provider rotating refresh tokens (and
//! revoking the family on reuse), outages, dead grants, disconnect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_shared::connections::{self, Disconnected};
use gateway_shared::domain::{GrantStatus, TargetAuth, TokenEndpointAuthMethod};
use gateway_shared::ports::{Clock, SystemClock};
use gateway_shared::tokens::{self, LeasePolicy, NoGrant};
use gateway_tests::{
    browser_consent, instance, mcp_call_tool, provider_counts, stack, whoami, ManualClock, Stack,
    Switch, SwitchMode, SLOW_SWITCH_DELAY,
};
use secrecy::ExposeSecret;
use serde_json::json;

/// A stack with refresh-token rotation on, and alice connected to `demo`
/// through the token endpoint at `token_base` (default: the provider itself).
async fn connected(switch: bool) -> (Stack, Option<Switch>) {
    let s = stack(json!({"rotateRefreshToken": true, "accessTokenTtl": 300})).await;
    let target = s
        .target(
            "demo",
            "gw-basic",
            TokenEndpointAuthMethod::ClientSecretBasic,
        )
        .await;
    let sw = if switch {
        let sw = Switch::start(&s.op.issuer).await;
        let mut t = target.clone();
        if let TargetAuth::OAuth(o) = &mut t.auth {
            o.token_endpoint = format!("{}/token", sw.base);
        }
        s.gw.state.targets.put(&t).await.unwrap();
        Some(sw)
    } else {
        None
    };
    let (_, link) = s.link("alice", "demo").await;
    let seen = browser_consent(&link, &["alice"], "consent", None).await;
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    (s, sw)
}

fn refreshes(counts: &serde_json::Value) -> u64 {
    counts["refresh_token"].as_u64().unwrap_or(0)
}

fn fast_policy() -> LeasePolicy {
    LeasePolicy {
        lease: Duration::from_secs(10),
        http_timeout: Duration::from_secs(5),
        wait: Duration::from_secs(12),
        poll: Duration::from_millis(50),
    }
}

/// A clock one hour ahead: every access token issued now has expired.
fn an_hour_later() -> Arc<dyn Clock> {
    Arc::new(ManualClock(SystemClock.now().saturating_add(3600).into()))
}

#[tokio::test]
async fn fifty_instances_find_the_token_expired_and_refresh_once() {
    let (s, _) = connected(false).await;
    let before = s.grant("alice", "demo").await;
    assert_eq!(refreshes(&provider_counts(&s.op).await), 0);

    let clock = an_hour_later();
    let mut instances = vec![];
    for _ in 0..50 {
        instances.push(instance(&s.gw, clock.clone()).await);
    }
    let mcp_url = s.mcp.url.clone();
    let calls = instances.into_iter().enumerate().map(|(i, state)| {
        let mcp_url = mcp_url.clone();
        tokio::spawn(async move {
            let grant = state
                .tokens
                .usable_grant("alice", "demo", &format!("instance-{i}"), 60, fast_policy())
                .await
                .map_err(|e| format!("{e:?}"))?;
            let answer = mcp_call_tool(
                &mcp_url,
                grant.tokens.access_token.expose_secret(),
                "whoami",
                json!({}),
            )
            .await
            .map_err(|status| format!("upstream HTTP {status}"))?;
            Ok::<_, String>(
                answer["result"]["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert_eq!(r.as_ref().unwrap().as_deref(), Ok("alice"), "{results:?}");
    }
    assert_eq!(
        refreshes(&provider_counts(&s.op).await),
        1,
        "exactly one refresh reached the token endpoint"
    );

    // The grant ends with the newest tokens: its refresh token still works
    // (with rotation on, a stale one would have revoked the whole family).
    let after = s.grant("alice", "demo").await;
    assert_eq!(after.version, before.version + 1);
    assert!(after.lease.is_none());
    assert_ne!(
        after.tokens.refresh_token.as_ref().unwrap().expose_secret(),
        before
            .tokens
            .refresh_token
            .as_ref()
            .unwrap()
            .expose_secret()
    );
    let one = instance(&s.gw, an_hour_later()).await;
    let again = one
        .tokens
        .after_unauthorized(&after, "check", fast_policy())
        .await
        .expect("the newest refresh token works");
    assert_eq!(again.version, after.version + 1);
    assert_eq!(refreshes(&provider_counts(&s.op).await), 2);
    assert_eq!(
        whoami(&s.mcp.url, again.tokens.access_token.expose_secret()).await,
        "alice",
        "refreshed with the original resource and scopes"
    );
}

#[tokio::test]
async fn the_scheduler_racing_the_proxy_refreshes_once() {
    let (s, _) = connected(false).await;
    let clock = an_hour_later();
    let scheduler = instance(&s.gw, clock.clone()).await;
    let mut proxies = vec![];
    for _ in 0..10 {
        proxies.push(instance(&s.gw, clock.clone()).await);
    }
    let event = json!({"id": "race", "source": "aws.events"});
    let sched = tokio::spawn(async move {
        scheduler
            .tokens
            .handle_scheduled_event(&event, Duration::from_secs(60), 4)
            .await
            .unwrap()
    });
    let calls = proxies.into_iter().enumerate().map(|(i, state)| {
        tokio::spawn(async move {
            state
                .tokens
                .usable_grant("alice", "demo", &format!("p{i}"), 60, fast_policy())
                .await
        })
    });
    let results = futures::future::join_all(calls).await;
    let summary = sched.await.unwrap();
    for r in results {
        assert!(r.unwrap().is_ok());
    }
    assert_eq!(summary.due, 1);
    assert_eq!(
        summary.refreshed + summary.already_fresh + summary.lease_lost,
        1,
        "{summary:?}"
    );
    assert_eq!(refreshes(&provider_counts(&s.op).await), 1);
}

#[tokio::test]
async fn a_dead_lease_holder_blocks_others_no_longer_than_the_lease() {
    let (s, _) = connected(false).await;
    // Real time, an hour on: the access token has expired.
    struct HourOn;
    impl Clock for HourOn {
        fn now(&self) -> i64 {
            SystemClock.now() + 3600
        }
    }
    let now = HourOn.now();
    // An instance took the lease and died.
    s.gw.state
        .grants
        .acquire_lease("alice", "demo", "dead-instance", now, now + 2)
        .await
        .unwrap();
    let real = instance(&s.gw, Arc::new(HourOn)).await;
    let policy = LeasePolicy {
        lease: tokens::WRITE_BUDGET + Duration::from_secs(2),
        http_timeout: Duration::from_secs(1),
        wait: Duration::from_secs(3),
        poll: Duration::from_millis(100),
    };
    let started = Instant::now();
    let grant = real
        .tokens
        .usable_grant("alice", "demo", "survivor", 60, policy)
        .await
        .expect("refreshed after the lease ran out");
    let waited = started.elapsed();
    // It waited for the dead holder's lease (until now + 2) to run out, no longer.
    assert!(waited >= Duration::from_millis(500), "waited {waited:?}");
    assert!(waited <= Duration::from_millis(3500), "waited {waited:?}");
    assert_eq!(grant.version, 2);
    assert_eq!(refreshes(&provider_counts(&s.op).await), 1);
}

/// The token request ends [`tokens::WRITE_BUDGET`] before the lease does,
/// so no other instance can take the lease (and present the same refresh
/// token) while this one may still get new tokens; a slow authorization
/// server makes the refresh fail, leaving the grant and the lease free.
#[tokio::test]
async fn a_refresh_ends_before_its_lease_does() {
    let (s, sw) = connected(true).await;
    let sw = sw.unwrap();
    let before = s.grant("alice", "demo").await;
    sw.set(SwitchMode::Slow);
    let state = instance(&s.gw, an_hour_later()).await;
    // One second of the lease is left for the token request; the server
    // takes two.
    let lease = tokens::WRITE_BUDGET + Duration::from_secs(1);
    let policy = LeasePolicy {
        lease,
        http_timeout: SLOW_SWITCH_DELAY * 3,
        wait: Duration::ZERO,
        poll: Duration::from_millis(50),
    };
    let request = tokens::RefreshRequest {
        sub: "alice",
        target: "demo",
        owner: "slow-refresher",
        margin: 0,
        force_from_version: None,
        seen_version: None,
        wait_for_winner: false,
        policy,
    };
    let started = std::time::Instant::now();
    let outcome = state.tokens.refresh_grant(request).await;
    let took = started.elapsed();
    assert!(
        matches!(&outcome, tokens::Outcome::Transient(why) if why.contains("timed out")),
        "{outcome:?}"
    );
    assert!(
        took < SLOW_SWITCH_DELAY,
        "cut at the lease's budget: {took:?}"
    );
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let after = s.grant("alice", "demo").await;
    assert_eq!(after.version, before.version, "the grant is unchanged");
    assert!(
        after.lease.is_none(),
        "the lease is released: {:?}",
        after.lease
    );
    // A lease too short to leave any time for the request sends nothing.
    sw.set(SwitchMode::Forward);
    // (The cut request may still reach the server late; let it land first.)
    tokio::time::sleep(SLOW_SWITCH_DELAY + Duration::from_millis(500)).await;
    let counts = refreshes(&provider_counts(&s.op).await);
    let short = LeasePolicy {
        lease: tokens::WRITE_BUDGET,
        ..policy
    };
    let outcome = state
        .tokens
        .refresh_grant(tokens::RefreshRequest {
            policy: short,
            ..request
        })
        .await;
    assert!(
        matches!(&outcome, tokens::Outcome::Transient(why) if why.contains("too short")),
        "{outcome:?}"
    );
    assert_eq!(refreshes(&provider_counts(&s.op).await), counts);
}

#[tokio::test]
async fn outages_leave_the_grant_unchanged_and_refresh_recovers() {
    let (s, sw) = connected(true).await;
    let mut sw = sw.unwrap();
    let before = s.grant("alice", "demo").await;
    let state = instance(&s.gw, an_hour_later()).await;
    let policy = LeasePolicy {
        http_timeout: Duration::from_millis(800),
        ..fast_policy()
    };
    let check_unchanged = |why: &str, r: Result<Arc<gateway_shared::domain::Grant>, NoGrant>| {
        assert!(matches!(r, Err(NoGrant::Retry(_))), "{why}: {r:?}");
    };

    sw.stop();
    check_unchanged(
        "refused",
        state
            .tokens
            .usable_grant("alice", "demo", "a", 60, policy)
            .await,
    );
    sw.listen().await;
    sw.set(SwitchMode::Fail);
    check_unchanged(
        "500",
        state
            .tokens
            .usable_grant("alice", "demo", "a", 60, policy)
            .await,
    );
    sw.set(SwitchMode::Hang);
    let started = Instant::now();
    check_unchanged(
        "hang",
        state
            .tokens
            .usable_grant("alice", "demo", "a", 60, policy)
            .await,
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the token request timed out"
    );

    let after = s.grant("alice", "demo").await;
    assert_eq!(after.version, before.version);
    assert_eq!(after.status, GrantStatus::Active);
    assert_eq!(
        after.tokens.refresh_token.as_ref().unwrap().expose_secret(),
        before
            .tokens
            .refresh_token
            .as_ref()
            .unwrap()
            .expose_secret()
    );
    assert!(after.lease.is_none(), "every failure released its lease");
    assert_eq!(
        refreshes(&provider_counts(&s.op).await),
        0,
        "nothing reached the server"
    );

    sw.set(SwitchMode::Forward);
    let fresh = state
        .tokens
        .usable_grant("alice", "demo", "a", 60, policy)
        .await
        .expect("recovered");
    assert_eq!(fresh.version, before.version + 1);
    assert_eq!(
        whoami(&s.mcp.url, fresh.tokens.access_token.expose_secret()).await,
        "alice"
    );
}

#[tokio::test]
async fn invalid_grant_asks_for_consent_once_and_stops_all_traffic() {
    let (s, _) = connected(false).await;
    let grant = s.grant("alice", "demo").await;
    // The user revoked the gateway at the provider.
    let target = s.gw.state.targets.get("demo").await.unwrap().unwrap();
    let TargetAuth::OAuth(settings) = &target.auth else {
        panic!()
    };
    let secret = secrecy::SecretString::from(gateway_tests::CLIENT_SECRET.to_owned());
    let client = gateway_shared::adapters::oauth::TokenEndpoint {
        http: &s.gw.state.http,
        settings,
        secret: Some(&secret),
        dpop: None,
    };
    client
        .revoke(
            settings.revocation_endpoint.as_deref().unwrap(),
            grant.tokens.refresh_token.as_ref().unwrap(),
            "refresh_token",
        )
        .await
        .unwrap();

    let clock = an_hour_later();
    let state = instance(&s.gw, clock.clone()).await;
    for call in 0..3 {
        let r = state
            .tokens
            .usable_grant("alice", "demo", "a", 60, fast_policy())
            .await;
        assert_eq!(r.unwrap_err(), NoGrant::NeedsConsent, "call {call}");
    }
    assert_eq!(
        refreshes(&provider_counts(&s.op).await),
        1,
        "one refresh attempt, then no retry storm"
    );
    let dead = s.grant("alice", "demo").await;
    assert_eq!(dead.status, GrantStatus::NeedsConsent);

    let scheduler = instance(&s.gw, clock).await;
    let summary = scheduler
        .tokens
        .handle_scheduled_event(&json!({}), Duration::from_secs(30), 4)
        .await
        .unwrap();
    assert_eq!(
        summary.due, 0,
        "the scheduler skips grants that need consent"
    );
    assert_eq!(refreshes(&provider_counts(&s.op).await), 1);

    // A new consent brings it back.
    let (_, link) = s.link("alice", "demo").await;
    let seen = browser_consent(&link, &["alice"], "consent", None).await;
    assert_eq!(seen.title.as_deref(), Some("Connected to Demo Service"));
    let revived = s.grant("alice", "demo").await;
    assert_eq!(revived.status, GrantStatus::Active);
    assert!(revived.version > dead.version);
}

#[tokio::test]
async fn disconnect_revokes_at_the_provider_and_deletes_the_grant() {
    let (s, _) = connected(false).await;
    let grant = s.grant("alice", "demo").await;
    let listed = connections::list(&s.gw.state, "alice").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].target.as_str(),
            listed[0].status,
            listed[0].refreshable
        ),
        ("demo", "active", true)
    );
    assert!(!format!("{listed:?}").contains(grant.tokens.access_token.expose_secret()));

    assert_eq!(
        connections::disconnect(&s.gw.state, "alice", "demo")
            .await
            .unwrap(),
        Disconnected::Revoked
    );
    assert_eq!(provider_counts(&s.op).await["revocation"], 1);
    assert!(s
        .gw
        .state
        .grants
        .get("alice", "demo", true)
        .await
        .unwrap()
        .is_none());
    assert!(connections::list(&s.gw.state, "alice")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        connections::disconnect(&s.gw.state, "alice", "demo")
            .await
            .unwrap(),
        Disconnected::NotConnected
    );

    // The old refresh token no longer works at the provider.
    let target = s.gw.state.targets.get("demo").await.unwrap().unwrap();
    let TargetAuth::OAuth(settings) = &target.auth else {
        panic!()
    };
    let secret = secrecy::SecretString::from(gateway_tests::CLIENT_SECRET.to_owned());
    let client = gateway_shared::adapters::oauth::TokenEndpoint {
        http: &s.gw.state.http,
        settings,
        secret: Some(&secret),
        dpop: None,
    };
    let refused = client
        .refresh(
            &settings.token_endpoint,
            grant.tokens.refresh_token.as_ref().unwrap(),
            &grant.scopes,
            grant.resource.as_deref(),
            0,
        )
        .await
        .unwrap_err();
    assert!(refused.is_rejection(), "{refused:?}");
    // And a later call needs consent again.
    let r =
        s.gw.state
            .tokens
            .usable_grant("alice", "demo", "a", 60, fast_policy())
            .await;
    assert_eq!(r.unwrap_err(), NoGrant::Missing);
}

#[tokio::test]
async fn a_refresh_token_the_server_did_not_replace_is_kept() {
    // A server without rotation that omits refresh_token from the response.
    let token = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "new-access", "token_type": "Bearer", "expires_in": 600}),
        Duration::ZERO,
    )
    .await;
    let gw = gateway_tests::Gateway::start(&[]).await;
    let mut target = gateway_tests::stack_target_for_fake(&format!("{}/token", token.base));
    target.name = "fake".into();
    gw.state.targets.put(&target).await.unwrap();
    let now = gw.state.clock.now();
    let grant = gateway_tests::refreshable_grant(
        "bob",
        "fake",
        "old-access",
        "long-lived-refresh",
        now - 1,
        now,
    );
    gw.state.grants.create(&grant).await.unwrap();
    let fresh = gw
        .state
        .tokens
        .usable_grant("bob", "fake", "a", 60, fast_policy())
        .await
        .unwrap();
    assert_eq!(fresh.tokens.access_token.expose_secret(), "new-access");
    assert_eq!(
        fresh.tokens.refresh_token.as_ref().unwrap().expose_secret(),
        "long-lived-refresh"
    );
    assert_eq!(fresh.expires_at, Some(now + 600));
    assert_eq!(token.hits(), 1);
}

#[tokio::test]
async fn a_refused_client_keeps_the_grant_for_when_it_is_fixed() {
    // A wrong or rotated client secret: the server refuses the client, not
    // the grant. A new consent would not help; the grant must survive.
    let token = gateway_tests::FakeHttp::start(
        401,
        json!({"error": "invalid_client", "error_description": "client authentication failed"}),
        Duration::ZERO,
    )
    .await;
    let gw = gateway_tests::Gateway::start(&[]).await;
    let mut target = gateway_tests::stack_target_for_fake(&format!("{}/token", token.base));
    target.name = "fake".into();
    gw.state.targets.put(&target).await.unwrap();
    let now = gw.state.clock.now();
    let grant = gateway_tests::refreshable_grant("bob", "fake", "old", "refresh", now - 1, now);
    gw.state.grants.create(&grant).await.unwrap();

    let r = gw
        .state
        .tokens
        .usable_grant("bob", "fake", "a", 60, fast_policy())
        .await;
    assert!(matches!(r, Err(NoGrant::Retry(_))), "{r:?}");
    assert_eq!(token.hits(), 1);
    let kept = gw
        .state
        .grants
        .get("bob", "fake", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.status, GrantStatus::Active);
    assert_eq!(kept.version, 1);
    assert!(kept.lease.is_none(), "the lease was released");
    assert_eq!(
        kept.tokens.refresh_token.unwrap().expose_secret(),
        "refresh"
    );
}

/// A stack whose access tokens live 5 seconds (shorter than the default
/// refresh margin of 60 s), with rotation and reuse detection on, and alice
/// connected to `demo`.
async fn short_lived() -> Stack {
    let s = stack(json!({"rotateRefreshToken": true, "accessTokenTtl": 5})).await;
    s.target(
        "demo",
        "gw-basic",
        TokenEndpointAuthMethod::ClientSecretBasic,
    )
    .await;
    let (_, link) = s.link("alice", "demo").await;
    let seen = browser_consent(&link, &["alice"], "consent", None).await;
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    s
}

/// Real time, `0` seconds on.
struct Later(i64);

impl Clock for Later {
    fn now(&self) -> i64 {
        SystemClock.now() + self.0
    }
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_once_for_a_hundred_callers() {
    let s = short_lived().await;
    // After expiry, four instances with the default margin (60 s, longer
    // than the tokens live) and 25 callers each.
    let clock: Arc<dyn Clock> = Arc::new(Later(10));
    let mut instances = vec![];
    for _ in 0..4 {
        instances.push(instance(&s.gw, clock.clone()).await);
    }
    let margin = s.gw.state.config.refresh_margin.as_secs() as i64;
    assert_eq!(margin, 60);
    let calls = (0..100).map(|i| {
        let state = instances[i % 4].clone();
        tokio::spawn(async move {
            state
                .tokens
                .usable_grant(
                    "alice",
                    "demo",
                    &format!("c{i}"),
                    margin,
                    LeasePolicy::default(),
                )
                .await
        })
    });
    let results = futures::future::join_all(calls).await;
    let mut tokens = std::collections::HashSet::new();
    for r in results {
        let g = r.unwrap().expect("every caller gets a usable grant");
        tokens.insert(g.tokens.access_token.expose_secret().to_owned());
    }
    let counts = provider_counts(&s.op).await;
    assert_eq!(refreshes(&counts), 1, "{counts}");
    assert_eq!(tokens.len(), 1, "every caller uses the one new token");
    let token = tokens.into_iter().next().unwrap();
    assert_eq!(whoami(&s.mcp.url, &token).await, "alice");
}

/// A gateway process of its own (`gateway-serve`) on the stack's table.
struct GatewayProcess {
    child: tokio::process::Child,
    base: String,
    log: std::path::PathBuf,
}

impl GatewayProcess {
    async fn start(s: &Stack) -> GatewayProcess {
        use tokio::io::AsyncBufReadExt;
        let gw = &s.gw;
        let log = std::env::temp_dir().join(format!(
            "gateway-serve-{}.log",
            gateway_shared::crypto::random_token(6)
        ));
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway-serve"))
            .arg("127.0.0.1:0")
            .env_clear()
            .envs(gw.process_env())
            .env("PUBLIC_BASE_URL", &s.server.base)
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info,gateway_shared::tokens=debug")
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start gateway-serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("gateway-serve started in time")
            .unwrap()
            .expect("gateway-serve printed its address");
        let base = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        GatewayProcess { child, base, log }
    }

    /// The process's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One MCP client as a process of its own (`curl`): `tools/call whoami` as
/// alice. Returns the tool's text, or what went wrong.
async fn curl_whoami(base: &str) -> String {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-X", "POST"])
        .args(["-H", "content-type: application/json"])
        .args(["-H", "accept: application/json, text/event-stream"])
        .args(["-H", "x-gateway-dev-user: alice"])
        .args(["--data", body])
        .arg(format!("{base}/mcp"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v["result"]["isError"] != json!(true) => gateway_tests::tool_text(&v["result"]),
        _ => format!("failed: {text} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_never_present_a_rotating_refresh_token_twice() {
    let s = short_lived().await;
    let gateways = [
        GatewayProcess::start(&s).await,
        GatewayProcess::start(&s).await,
    ];
    let rounds = 3;
    for round in 0..rounds {
        // Every round starts after the access token expired: 24 client
        // processes at once, half on each gateway process.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let calls = (0..24).map(|i| curl_whoami(&gateways[i % 2].base));
        let answers = futures::future::join_all(calls).await;
        let distinct: std::collections::BTreeSet<&String> = answers.iter().collect();
        assert_eq!(
            distinct.into_iter().collect::<Vec<_>>(),
            vec!["alice"],
            "round {round}; provider: {}\n--- gateway 1:\n{}\n--- gateway 2:\n{}",
            provider_counts(&s.op).await,
            gateways[0].log(),
            gateways[1].log()
        );
    }
    let counts = provider_counts(&s.op).await;
    assert_eq!(
        counts.get("refresh_token_refused"),
        None,
        "a refresh token was presented twice: {counts}"
    );
    assert!(refreshes(&counts) >= rounds, "{counts}");
    let grant = s.grant("alice", "demo").await;
    assert_eq!(grant.status, GrantStatus::Active);
    assert_eq!(
        whoami(&s.mcp.url, grant.tokens.access_token.expose_secret()).await,
        "alice"
    );
}

#[tokio::test]
async fn a_table_writer_cannot_move_a_grant_or_redirect_its_secrets() {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let (s, _) = connected(false).await;
    let alice = s.grant("alice", "demo").await;
    let attacker = gateway_tests::FakeHttp::start(
        200,
        json!({"access_token": "stolen", "token_type": "Bearer", "expires_in": 3600}),
        Duration::ZERO,
    )
    .await;
    let state = instance(&s.gw, an_hour_later()).await;

    // 1. Alice's whole item, attributes and all, copied under bob's key.
    let mut item = s.gw.raw_item("USER#alice", "GRANT#demo").await.unwrap();
    item.insert("pk".into(), A::S("USER#bob".into()));
    item.insert("sub".into(), A::S("bob".into()));
    s.gw.put_raw_item(item).await;
    let bob =
        s.gw.state
            .tokens
            .usable_grant("bob", "demo", "p-bob", 60, fast_policy())
            .await;
    assert_eq!(
        bob.unwrap_err(),
        NoGrant::NeedsConsent,
        "bob gets a consent link, not alice's tokens"
    );
    let raw = s.gw.raw_item("USER#bob", "GRANT#demo").await.unwrap();
    assert_eq!(raw["status"].as_s().unwrap(), "needs_consent");
    assert!(!raw.contains_key("rd_at"), "out of the scheduler's index");
    // Bob's listing does not break over it.
    assert!(connections::list(&s.gw.state, "bob")
        .await
        .unwrap()
        .is_empty());

    // 2. The clear-text token endpoint of alice's grant pointed elsewhere:
    //    her refresh token still goes only to the server it came from.
    let mut item = s.gw.raw_item("USER#alice", "GRANT#demo").await.unwrap();
    item.insert(
        "token_endpoint".into(),
        A::S(format!("{}/token", attacker.base)),
    );
    s.gw.put_raw_item(item).await;
    let refreshed = state
        .tokens
        .usable_grant("alice", "demo", "p-alice", 60, fast_policy())
        .await
        .expect("refreshed at the real server");
    assert_eq!(attacker.hits(), 0, "nothing went to the rewritten endpoint");
    assert_eq!(refreshes(&provider_counts(&s.op).await), 1);
    assert_eq!(refreshed.version, alice.version + 1);
    assert_eq!(
        whoami(&s.mcp.url, refreshed.tokens.access_token.expose_secret()).await,
        "alice"
    );

    // 3. The target's configuration pointed elsewhere (its integrity seal
    //    kept): the target is refused as a whole, nothing is sent.
    let mut item = s.gw.raw_item("TARGETS", "TARGET#demo").await.unwrap();
    let honest = item.clone();
    let config = item["config"].as_s().unwrap().replace(
        &format!("{}/token", s.op.issuer),
        &format!("{}/token", attacker.base),
    );
    item.insert("config".into(), A::S(config));
    s.gw.put_raw_item(item).await;
    let other = instance(&s.gw, Arc::new(Later(7200))).await;
    let r = other
        .tokens
        .usable_grant("alice", "demo", "p-other", 60, fast_policy())
        .await;
    // The altered target is left out: for the gateway there is no such
    // target to refresh for (and no tool of it to call).
    assert_eq!(r.unwrap_err(), NoGrant::Missing);
    assert!(other.targets.get("demo").await.unwrap().is_none());
    assert!(
        other.targets.list().await.unwrap().is_empty(),
        "the altered target is left out"
    );
    assert_eq!(attacker.hits(), 0);
    // Alice's grant is untouched; with the operator's configuration back,
    // it works again.
    assert_eq!(s.grant("alice", "demo").await.status, GrantStatus::Active);
    s.gw.put_raw_item(honest).await;
    let again = instance(&s.gw, Arc::new(Later(7200))).await;
    let g = again
        .tokens
        .usable_grant("alice", "demo", "p-again", 60, fast_policy())
        .await
        .expect("usable again");
    assert_eq!(
        whoami(&s.mcp.url, g.tokens.access_token.expose_secret()).await,
        "alice"
    );
    assert_eq!(attacker.hits(), 0);

    // 4. A pending authorization's user rewritten: the link no longer opens.
    let (pending, _) = s.link("alice", "demo").await;
    let key = format!("AUTHZ#{}", pending.id);
    let honest = s.gw.raw_item(&key, "AUTHZ").await.unwrap();
    let mut item = honest.clone();
    item.insert("sub".into(), A::S("mallory".into()));
    s.gw.put_raw_item(item).await;
    assert!(s
        .gw
        .state
        .authorizations
        .peek(&pending.id, s.gw.state.clock.now())
        .await
        .is_err());
    // Nor does one whose resource (sent at the code exchange and every
    // refresh) or issuer was rewritten.
    for (field, value) in [
        ("resource", "https://evil.example/mcp"),
        ("issuer", "https://evil.example"),
    ] {
        let mut item = honest.clone();
        item.insert(field.into(), A::S(value.into()));
        s.gw.put_raw_item(item).await;
        assert!(
            s.gw.state
                .authorizations
                .peek(&pending.id, s.gw.state.clock.now())
                .await
                .is_err(),
            "{field}"
        );
    }
    s.gw.put_raw_item(honest).await;
    assert!(s
        .gw
        .state
        .authorizations
        .peek(&pending.id, s.gw.state.clock.now())
        .await
        .is_ok());
}

/// The payload of a JWT access token (its signature is the server's business).
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// DPoP with real parts: oidc-provider with DPoP on (and nonces required)
/// advertises ES256, so the consent's code exchange carries a proof and the
/// server binds the tokens to the grant's own key; an upstream that takes
/// only DPoP-bound tokens (fresh proofs, nonces, `cnf.jkt`) serves the
/// user through the gateway; a refresh keeps the binding; the same token
/// presented as a plain bearer token is refused.
#[tokio::test]
async fn dpop_bound_tokens_from_a_real_provider_reach_a_dpop_only_upstream() {
    let s = stack(json!({"dpop": true, "accessTokenTtl": 300})).await;
    let upstream = gateway_tests::DemoMcpServer::start_with(&s.op.issuer, false, &["--dpop"]);
    // What discovery reads from the provider's metadata.
    let http = gateway_shared::state::http_client();
    let found = gateway_shared::adapters::discovery::discover(
        &gateway_shared::adapters::discovery::Fetcher::new(
            &http,
            gateway_shared::adapters::discovery::FetchPolicy::local(),
        ),
        &upstream.url,
    )
    .await
    .unwrap();
    let algs = found
        .authorization_server
        .dpop_signing_alg_values_supported
        .clone();
    assert!(algs.iter().any(|a| a == "ES256"), "{algs:?}");
    let mut target = s
        .target_at(
            "demo",
            &upstream.url,
            "gw-basic",
            TokenEndpointAuthMethod::ClientSecretBasic,
        )
        .await;
    if let TargetAuth::OAuth(o) = &mut target.auth {
        o.dpop_signing_alg_values_supported = algs;
    }
    s.gw.state.targets.put(&target).await.unwrap();

    // A consent for this upstream's resource.
    let pending = gateway_shared::domain::PendingAuthorization::new(
        "alice",
        "demo",
        vec!["read".into()],
        Some(upstream.url.clone()),
        Some(s.op.issuer.clone()),
        s.gw.state.clock.now(),
        600,
    );
    s.gw.state.authorizations.create(&pending).await.unwrap();
    let link = format!("{}/connect/{}", s.server.base, pending.id);
    let seen = browser_consent(&link, &["alice"], "consent", None).await;
    assert_eq!(
        seen.title.as_deref(),
        Some("Connected to Demo Service"),
        "{seen:?}"
    );
    let grant = s.grant("alice", "demo").await;
    assert_eq!(grant.tokens.token_type, "DPoP");
    let key = gateway_shared::crypto::dpop::DpopKey::from_secret(
        grant.tokens.dpop_key.as_ref().expect("the grant's key"),
    )
    .unwrap();
    let claims = jwt_claims(grant.tokens.access_token.expose_secret());
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint().as_str());

    // Through the gateway: proofs and the upstream's nonce.
    let call = || async {
        let mut c = gateway_tests::RawClient::new(
            &format!("{}/mcp", s.server.base),
            &[("x-gateway-dev-user", "alice")],
        );
        c.initialize("2025-11-25", json!({})).await;
        let r = c
            .request("tools/call", json!({"name": "whoami", "arguments": {}}))
            .await;
        gateway_tests::tool_text(&r.body["result"])
    };
    assert_eq!(call().await, "alice");
    assert_eq!(call().await, "alice", "a fresh proof for every request");

    // The bound token alone, as a bearer token, is refused.
    assert_eq!(
        mcp_call_tool(
            &upstream.url,
            grant.tokens.access_token.expose_secret(),
            "whoami",
            json!({})
        )
        .await,
        Err(401)
    );

    // A refresh presents a proof with the same key; the new token is bound
    // to it and serves the user.
    let later = instance(&s.gw, an_hour_later()).await;
    let fresh = later
        .tokens
        .usable_grant("alice", "demo", "later", 60, LeasePolicy::default())
        .await
        .unwrap();
    assert_ne!(
        fresh.tokens.access_token.expose_secret(),
        grant.tokens.access_token.expose_secret()
    );
    assert_eq!(fresh.tokens.token_type, "DPoP");
    assert_eq!(
        jwt_claims(fresh.tokens.access_token.expose_secret())["cnf"]["jkt"],
        key.thumbprint().as_str()
    );
    // Each token request was asked for the server's nonce once, then
    // answered: the code exchange and the refresh, two requests each.
    let counts = provider_counts(&s.op).await;
    assert_eq!(counts["authorization_code"], 2, "{counts}");
    assert_eq!(refreshes(&counts), 2, "{counts}");
    assert_eq!(call().await, "alice");
}
