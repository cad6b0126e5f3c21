//! The token lifecycle with real parts: refresh under the lease protocol
//! across many instances, with oidc-provider rotating refresh tokens (and
//! revoking the family on reuse), outages, dead grants, disconnect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_shared::connections::{self, Disconnected};
use gateway_shared::domain::{GrantStatus, TargetAuth, TokenEndpointAuthMethod};
use gateway_shared::ports::{Clock, SystemClock};
use gateway_shared::refresh::{self, LeasePolicy, NoGrant};
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
            let grant = refresh::usable_grant(
                &state,
                "alice",
                "demo",
                &format!("instance-{i}"),
                60,
                fast_policy(),
            )
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
    let again = refresh::after_unauthorized(&one, &after, "check", fast_policy())
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
        refresh::handle_scheduled_event(&scheduler, &event, Duration::from_secs(60), 4)
            .await
            .unwrap()
    });
    let calls = proxies.into_iter().enumerate().map(|(i, state)| {
        tokio::spawn(async move {
            refresh::usable_grant(&state, "alice", "demo", &format!("p{i}"), 60, fast_policy())
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
    let now = SystemClock.now();
    // An instance took the lease and died.
    s.gw.state
        .grants
        .acquire_lease("alice", "demo", "dead-instance", now, now + 2)
        .await
        .unwrap();
    let real = instance(&s.gw, Arc::new(SystemClock)).await;
    let policy = LeasePolicy {
        lease: Duration::from_secs(2),
        http_timeout: Duration::from_secs(1),
        wait: Duration::from_secs(3),
        poll: Duration::from_millis(100),
    };
    let started = Instant::now();
    // A margin beyond the token's lifetime: the token counts as expiring.
    let grant = refresh::usable_grant(&real, "alice", "demo", "survivor", 100_000, policy)
        .await
        .expect("refreshed after the lease ran out");
    let waited = started.elapsed();
    // It waited for the dead holder's lease (until now + 2) to run out, no longer.
    assert!(waited >= Duration::from_millis(500), "waited {waited:?}");
    assert!(waited <= Duration::from_millis(3500), "waited {waited:?}");
    assert_eq!(grant.version, 2);
    assert_eq!(refreshes(&provider_counts(&s.op).await), 1);
}

/// A refresher whose lease ran out while the token endpoint was slow still
/// stores the tokens it got (the provider has rotated the refresh token, so
/// they are the only good ones) and leaves the new holder's lease alone.
#[tokio::test]
async fn tokens_from_a_refresh_that_outlived_its_lease_are_kept() {
    let (s, sw) = connected(true).await;
    let sw = sw.unwrap();
    let before = s.grant("alice", "demo").await;
    sw.set(SwitchMode::Slow);
    let state = instance(&s.gw, an_hour_later()).await;
    // A lease shorter than the token request: the timing the protocol
    // otherwise rules out, broken on purpose.
    let policy = LeasePolicy {
        lease: Duration::from_secs(1),
        http_timeout: SLOW_SWITCH_DELAY * 3,
        wait: Duration::ZERO,
        poll: Duration::from_millis(50),
    };
    let t = state.clock.now();
    let request = refresh::RefreshRequest {
        sub: "alice",
        target: "demo",
        owner: "slow-refresher",
        margin: 0,
        force_from_version: None,
        wait_for_winner: false,
        policy,
    };
    let (outcome, taken) = tokio::join!(refresh::refresh_grant(&state, request), async {
        // Once the slow refresher's lease has run out, another holder takes it.
        tokio::time::sleep(SLOW_SWITCH_DELAY / 2).await;
        s.gw.state
            .grants
            .acquire_lease("alice", "demo", "next-holder", t + 2, t + 60)
            .await
    });
    taken.expect("the lapsed lease can be taken");
    let refreshed = match outcome {
        refresh::Outcome::Refreshed(g) => g,
        other => panic!("expected the tokens to be stored, got {other:?}"),
    };
    assert_eq!(refreshed.version, before.version + 1);
    assert_eq!(refreshes(&provider_counts(&s.op).await), 1);
    let stored = s.grant("alice", "demo").await;
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        refreshed.tokens.access_token.expose_secret()
    );
    assert_ne!(
        stored
            .tokens
            .refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned()),
        before
            .tokens
            .refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned()),
        "the rotated refresh token is stored"
    );
    assert_eq!(
        whoami(&s.mcp.url, stored.tokens.access_token.expose_secret()).await,
        "alice"
    );
    let raw = s.gw.raw_item("USER#alice", "GRANT#demo").await.unwrap();
    assert_eq!(raw["lease_owner"].as_s().unwrap(), "next-holder");
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
    let check_unchanged = |why: &str, r: Result<gateway_shared::domain::Grant, NoGrant>| {
        assert!(matches!(r, Err(NoGrant::Retry(_))), "{why}: {r:?}");
    };

    sw.stop();
    check_unchanged(
        "refused",
        refresh::usable_grant(&state, "alice", "demo", "a", 60, policy).await,
    );
    sw.listen().await;
    sw.set(SwitchMode::Fail);
    check_unchanged(
        "500",
        refresh::usable_grant(&state, "alice", "demo", "a", 60, policy).await,
    );
    sw.set(SwitchMode::Hang);
    let started = Instant::now();
    check_unchanged(
        "hang",
        refresh::usable_grant(&state, "alice", "demo", "a", 60, policy).await,
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
    let fresh = refresh::usable_grant(&state, "alice", "demo", "a", 60, policy)
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
        let r = refresh::usable_grant(&state, "alice", "demo", "a", 60, fast_policy()).await;
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
    let summary =
        refresh::handle_scheduled_event(&scheduler, &json!({}), Duration::from_secs(30), 4)
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
    let r = refresh::usable_grant(&s.gw.state, "alice", "demo", "a", 60, fast_policy()).await;
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
    let fresh = refresh::usable_grant(&gw.state, "bob", "fake", "a", 60, fast_policy())
        .await
        .unwrap();
    assert_eq!(fresh.tokens.access_token.expose_secret(), "new-access");
    assert_eq!(
        fresh.tokens.refresh_token.unwrap().expose_secret(),
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

    let r = refresh::usable_grant(&gw.state, "bob", "fake", "a", 60, fast_policy()).await;
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
