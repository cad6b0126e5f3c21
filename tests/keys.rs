//! Key rotation against moto: add a key, make it current, reseal every
//! stored item while refreshes run beside it, retire the old key, and
//! everything still opens.

use std::time::Duration;

use gateway_shared::adapters::dynamodb::DynamoStore;
use gateway_shared::crypto::rotation::{self as keys, KeySetSecret};
use gateway_shared::domain::PendingAuthorization;
use gateway_shared::tokens::{self, LeasePolicy};
use gateway_tests::{instance, refreshable_grant, stack_target_for_fake, FakeHttp, Gateway};
use serde_json::json;

async fn store(gw: &Gateway) -> DynamoStore {
    gateway_shared::state::table_store(&gw.state.config, &gw.moto.sdk_config())
        .await
        .expect("a table store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_reseal_under_refreshes_and_retire() {
    let gw = Gateway::start(&[]).await;
    let token = FakeHttp::start(
        200,
        json!({"access_token": "fresh", "refresh_token": "r2", "token_type": "Bearer", "expires_in": 3600}),
        Duration::from_millis(50),
    )
    .await;
    gw.state
        .targets
        .put(&stack_target_for_fake(&format!("{}/token", token.base)))
        .await
        .unwrap();
    let now = gw.state.clock.now();
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    for u in &users {
        gw.state
            .grants
            .create(&refreshable_grant(
                u,
                "fake",
                "old",
                "r1",
                now - 10,
                now - 3_600,
            ))
            .await
            .unwrap();
    }
    let pending =
        PendingAuthorization::new("alice", "fake", vec!["read".into()], None, None, now, 600);
    gw.state.authorizations.create(&pending).await.unwrap();
    // A target written by an older version: no integrity seal.
    let mut legacy = stack_target_for_fake(&format!("{}/token", token.base));
    legacy.name = "legacy".into();
    gw.put_raw_item(std::collections::HashMap::from([
        (
            "pk".into(),
            aws_sdk_dynamodb::types::AttributeValue::S("TARGETS".into()),
        ),
        (
            "sk".into(),
            aws_sdk_dynamodb::types::AttributeValue::S("TARGET#legacy".into()),
        ),
        (
            "config".into(),
            aws_sdk_dynamodb::types::AttributeValue::S(serde_json::to_string(&legacy).unwrap()),
        ),
    ]))
    .await;

    // The policy set is sealed too.
    const POLICY: &str = "permit(principal, action, resource);";
    gw.state.policies.store(Some(POLICY)).await.unwrap();

    // Rotate: a new key, current.
    let secret = KeySetSecret::new(gw.secrets.clone(), gw.keyset_arn.clone());
    let k2 = secret.add().await.unwrap();
    assert_eq!(k2, "k2");
    secret.make_current(&k2).await.unwrap();
    assert!(
        secret.remove(&k2).await.is_err(),
        "the current key cannot go"
    );
    let store = store(&gw).await;
    let before = keys::usage(&store).await.unwrap();
    assert_eq!(before.get("k1"), Some(&33), "{before:?}"); // 30 grants, 1 authorization, 1 target, the policy set
    assert_eq!(before.get("unsealed"), Some(&1), "{before:?}");

    // Reseal while another instance refreshes every grant.
    let proxy = instance(&gw, std::sync::Arc::new(gateway_shared::ports::SystemClock)).await;
    let refreshing = tokio::spawn({
        let users = users.clone();
        async move {
            let mut ok = 0;
            for u in &users {
                if proxy
                    .tokens
                    .usable_grant(u, "fake", &format!("p-{u}"), 60, LeasePolicy::default())
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        }
    });
    let mut seen = vec![];
    // Without adopting, the unsealed target is listed and left alone.
    let summary = keys::reseal_all(
        &store,
        &k2,
        false,
        || gateway_shared::ports::Clock::now(&gateway_shared::ports::SystemClock),
        |d, t| seen.push((d, t)),
    )
    .await
    .unwrap();
    assert_eq!(
        refreshing.await.unwrap(),
        users.len(),
        "every refresh went through"
    );
    assert_eq!(summary.busy, 0, "{summary:?}");
    assert_eq!(summary.unreadable, 0, "{summary:?}");
    assert_eq!(
        seen.last().map(|(d, t)| d == t),
        Some(true),
        "progress reaches the end"
    );
    assert_eq!(summary.unsealed_targets, vec!["legacy"], "{summary:?}");
    assert_eq!(keys::usage(&store).await.unwrap().get("unsealed"), Some(&1));
    // The operator checked it: adopt it. Resumable: nothing else is left.
    let now = || gateway_shared::ports::Clock::now(&gateway_shared::ports::SystemClock);
    let adopted = keys::reseal_all(&store, &k2, true, now, |_, _| {})
        .await
        .unwrap();
    assert_eq!(adopted.resealed, 1, "{adopted:?}");
    let again = keys::reseal_all(&store, &k2, true, now, |_, _| {})
        .await
        .unwrap();
    assert_eq!(again.resealed, 0, "{again:?}");
    assert_eq!(again.current, again.items);

    // Nothing uses k1 now: it can be retired, and everything still opens
    // for an instance that only has k2.
    let after = keys::usage(&store).await.unwrap();
    assert_eq!(after.get("k1"), None, "{after:?}");
    assert_eq!(after.get("unsealed"), None, "{after:?}");
    secret.remove("k1").await.unwrap();
    let fresh = instance(&gw, gw.state.clock.clone()).await;
    for u in &users {
        let g = fresh
            .grants
            .get(u, "fake", true)
            .await
            .unwrap()
            .expect("a grant");
        assert!(g.tokens.refresh_token.is_some());
    }
    assert!(fresh
        .authorizations
        .peek(&pending.id, fresh.clock.now())
        .await
        .is_ok());
    let names: Vec<String> = fresh
        .targets
        .list()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, vec!["fake", "legacy"]);
    assert_eq!(
        fresh.policies.stored().await.unwrap().as_deref(),
        Some(POLICY)
    );
}

#[tokio::test]
async fn a_grant_sealed_with_a_key_this_instance_lacks_is_not_given_up() {
    let gw = Gateway::start(&[]).await;
    gw.state
        .targets
        .put(&stack_target_for_fake("https://as.example.test/token"))
        .await
        .unwrap();
    let secret = KeySetSecret::new(gw.secrets.clone(), gw.keyset_arn.clone());
    let k2 = secret.add().await.unwrap();
    secret.make_current(&k2).await.unwrap();
    // An instance that has k2 seals a grant with it ...
    let clock = gw.state.clock.clone();
    let writer = instance(&gw, clock.clone()).await;
    let now = clock.now();
    writer
        .grants
        .create(&refreshable_grant(
            "zoe",
            "fake",
            "at",
            "rt",
            now + 3_600,
            now,
        ))
        .await
        .unwrap();
    // ... and an instance whose key set lacks it (it warmed up before the
    // key was added, or the key is gone) must not give the grant up.
    secret.make_current("k1").await.unwrap();
    secret.remove(&k2).await.unwrap();
    let reader = instance(&gw, clock).await;
    let r = reader
        .tokens
        .usable_grant("zoe", "fake", "p", 60, LeasePolicy::default())
        .await;
    assert!(matches!(r, Err(tokens::NoGrant::Retry(_))), "{r:?}");
    let raw = gw.raw_item("USER#zoe", "GRANT#fake").await.unwrap();
    assert_eq!(
        raw["status"].as_s().unwrap(),
        "active",
        "not marked as needing consent"
    );
}
