//! Storage against moto_server: every grant, authorization, target and
//! session operation, including each refusal the flows rely on.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use gateway_shared::adapters::dynamodb::DynamoStore;
use gateway_shared::adapters::secrets::{SecretKeyProvider, SecretsManagerSource};
use gateway_shared::domain::{
    Grant, GrantStatus, PendingAuthorization, Target, TargetAuth, TokenSet, UpstreamSession,
};
use gateway_shared::ports::{GrantStore, KeyProvider, SecretSource};
use gateway_shared::Error;
use gateway_tests::{Gateway, KEY_1, KEY_2};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

fn grant(sub: &str, target: &str, expires_at: Option<i64>, now: i64) -> Grant {
    Grant {
        sub: sub.into(),
        target: target.into(),
        tokens: TokenSet {
            access_token: format!("access-{sub}-{target}-SECRET").into(),
            refresh_token: Some(format!("refresh-{sub}-{target}-SECRET").into()),
            token_type: "Bearer".into(),
            dpop_key: None,
        },
        expires_at,
        scopes: vec!["read".into(), "write".into()],
        issuer: Some("https://as.example.test".into()),
        token_endpoint: Some("https://as.example.test/token".into()),
        resource: Some("https://mcp.example.test/mcp".into()),
        status: GrantStatus::Active,
        version: 0,
        lease: None,
        created_at: now,
        updated_at: now,
    }
}

fn raw_string(item: &std::collections::HashMap<String, AttributeValue>) -> String {
    format!("{item:?}")
}

#[tokio::test]
async fn grant_create_get_and_duplicate_refused() {
    let gw = Gateway::start(&[]).await;
    let now = gw.clock.0.load(std::sync::atomic::Ordering::SeqCst);
    let g = grant("alice", "github", Some(now + 3600), now);

    let created = gw.state.grants.create(&g).await.unwrap();
    assert_eq!(created.version, 1);
    let read = gw
        .state
        .grants
        .get("alice", "github", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.version, 1);
    assert_eq!(
        read.tokens.access_token.expose_secret(),
        "access-alice-github-SECRET"
    );
    assert_eq!(
        read.tokens.refresh_token.unwrap().expose_secret(),
        "refresh-alice-github-SECRET"
    );
    assert_eq!(read.scopes, vec!["read", "write"]);
    assert_eq!(read.expires_at, Some(now + 3600));
    assert_eq!(read.issuer.as_deref(), Some("https://as.example.test"));
    assert_eq!(
        read.resource.as_deref(),
        Some("https://mcp.example.test/mcp")
    );

    // The raw item holds ciphertext only.
    let raw = gw.raw_item("USER#alice", "GRANT#github").await.unwrap();
    let text = raw_string(&raw);
    assert!(
        !text.contains("SECRET"),
        "plaintext token in the table: {text}"
    );
    assert!(raw["tokens"].as_s().unwrap().starts_with("k1."));

    // A second create does not overwrite.
    let mut other = grant("alice", "github", Some(now + 10), now);
    other.tokens.access_token = "other".to_string().into();
    assert!(matches!(
        gw.state.grants.create(&other).await,
        Err(Error::AlreadyExists(_))
    ));
    let read = gw
        .state
        .grants
        .get("alice", "github", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read.tokens.access_token.expose_secret(),
        "access-alice-github-SECRET"
    );

    assert!(gw
        .state
        .grants
        .get("bob", "github", true)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn update_requires_the_current_version() {
    let gw = Gateway::start(&[]).await;
    let now = gw.state.clock.now();
    let v1 = gw
        .state
        .grants
        .create(&grant("alice", "gh", Some(now + 60), now))
        .await
        .unwrap();

    let mut next = v1.clone();
    next.tokens.access_token = "new-access".to_string().into();
    next.expires_at = Some(now + 7200);
    let v2 = gw.state.grants.update(&next).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.tokens.access_token.expose_secret(), "new-access");

    // A writer still holding version 1 is refused and changes nothing.
    let mut stale = v1.clone();
    stale.tokens.access_token = "stale-access".to_string().into();
    assert!(matches!(
        gw.state.grants.update(&stale).await,
        Err(Error::StaleVersion)
    ));
    let read = gw
        .state
        .grants
        .get("alice", "gh", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.version, 2);
    assert_eq!(read.tokens.access_token.expose_secret(), "new-access");

    // Updating a grant that does not exist is NotFound, and creates nothing.
    let ghost = grant("nobody", "gh", None, now);
    assert!(matches!(
        gw.state.grants.update(&ghost).await,
        Err(Error::NotFound(_))
    ));
    assert!(gw.raw_item("USER#nobody", "GRANT#gh").await.is_none());
}

#[tokio::test]
async fn refresh_lease_is_exclusive_until_it_expires() {
    let gw = Gateway::start(&[]).await;
    let g = &gw.state.grants;
    let now = gw.state.clock.now();
    g.create(&grant("alice", "gh", Some(now + 60), now))
        .await
        .unwrap();

    let leased = g
        .acquire_lease("alice", "gh", "owner-a", now, now + 15)
        .await
        .unwrap();
    assert_eq!(leased.lease.as_ref().unwrap().owner, "owner-a");
    assert_eq!(leased.version, 1, "a lease does not change the version");

    // A second holder is refused while the lease is live.
    assert!(matches!(
        g.acquire_lease("alice", "gh", "owner-b", now + 5, now + 20)
            .await,
        Err(Error::LeaseHeld)
    ));
    assert!(matches!(
        g.acquire_lease("alice", "gh", "owner-b", now + 14, now + 29)
            .await,
        Err(Error::LeaseHeld)
    ));
    // The holder may extend its own lease.
    g.acquire_lease("alice", "gh", "owner-a", now + 1, now + 16)
        .await
        .unwrap();
    let raw = gw.raw_item("USER#alice", "GRANT#gh").await.unwrap();
    assert_eq!(raw["lease_until"].as_n().unwrap(), &(now + 16).to_string());
    assert!(matches!(
        g.acquire_lease("alice", "gh", "owner-b", now + 15, now + 30)
            .await,
        Err(Error::LeaseHeld)
    ));

    // Only the owner releases.
    assert!(matches!(
        g.release_lease("alice", "gh", "owner-b").await,
        Err(Error::NotLeaseOwner)
    ));
    let raw = gw.raw_item("USER#alice", "GRANT#gh").await.unwrap();
    assert_eq!(raw["lease_owner"].as_s().unwrap(), "owner-a");

    // Once it has expired (a holder that died), another owner takes it.
    let taken = g
        .acquire_lease("alice", "gh", "owner-b", now + 16, now + 31)
        .await
        .unwrap();
    assert_eq!(taken.lease.unwrap().owner, "owner-b");
    // The old holder can no longer release it.
    assert!(matches!(
        g.release_lease("alice", "gh", "owner-a").await,
        Err(Error::NotLeaseOwner)
    ));
    g.release_lease("alice", "gh", "owner-b").await.unwrap();
    let raw = gw.raw_item("USER#alice", "GRANT#gh").await.unwrap();
    assert!(!raw.contains_key("lease_owner") && !raw.contains_key("lease_until"));
    // Released: anyone can take it at once.
    g.acquire_lease("alice", "gh", "owner-c", now + 17, now + 32)
        .await
        .unwrap();

    // No grant, no lease (and nothing created).
    assert!(matches!(
        g.acquire_lease("bob", "gh", "x", now, now + 15).await,
        Err(Error::NotFound(_))
    ));
    assert!(gw.raw_item("USER#bob", "GRANT#gh").await.is_none());
}

#[tokio::test]
async fn new_tokens_and_the_lease_release_are_one_conditional_write() {
    let gw = Gateway::start(&[]).await;
    let g = &gw.state.grants;
    let now = gw.state.clock.now();
    g.create(&grant("alice", "gh", Some(now + 60), now))
        .await
        .unwrap();
    let leased = g
        .acquire_lease("alice", "gh", "owner-a", now, now + 15)
        .await
        .unwrap();
    let mut next = leased.clone();
    next.expires_at = Some(now + 3600);
    next.tokens.access_token = SecretString::from("at-2");

    // Not the lease holder: nothing is written.
    assert!(matches!(
        g.update_and_release(&next, "owner-b").await,
        Err(Error::NotLeaseOwner)
    ));
    let raw = gw.raw_item("USER#alice", "GRANT#gh").await.unwrap();
    assert_eq!(raw["version"].as_n().unwrap(), "1");
    assert_eq!(raw["lease_owner"].as_s().unwrap(), "owner-a");

    // A version that moved: StaleVersion, nothing written.
    let mut stale = next.clone();
    stale.version = 7;
    assert!(matches!(
        g.update_and_release(&stale, "owner-a").await,
        Err(Error::StaleVersion)
    ));

    // The holder: tokens, version and expiry written, lease gone, one write.
    let written = g.update_and_release(&next, "owner-a").await.unwrap();
    assert_eq!(written.version, 2);
    assert!(written.lease.is_none());
    let raw = gw.raw_item("USER#alice", "GRANT#gh").await.unwrap();
    assert_eq!(raw["version"].as_n().unwrap(), "2");
    assert!(!raw.contains_key("lease_owner") && !raw.contains_key("lease_until"));
    let stored = g.get("alice", "gh", true).await.unwrap().unwrap();
    assert_eq!(stored.tokens.access_token.expose_secret(), "at-2");
    assert_eq!(stored.expires_at, Some(now + 3600));
    // Released: anyone can take the lease at once.
    g.acquire_lease("alice", "gh", "owner-c", now + 1, now + 16)
        .await
        .unwrap();

    // No grant: NotFound, nothing created.
    let mut missing = next.clone();
    missing.sub = "bob".into();
    assert!(matches!(
        g.update_and_release(&missing, "owner-a").await,
        Err(Error::NotFound(_))
    ));
    assert!(gw.raw_item("USER#bob", "GRANT#gh").await.is_none());
}

#[tokio::test]
async fn needs_consent_is_conditional_and_leaves_the_refresh_index() {
    let gw = Gateway::start(&[]).await;
    let g = &gw.state.grants;
    let now = gw.state.clock.now();
    let v1 = g
        .create(&grant("alice", "gh", Some(now + 60), now))
        .await
        .unwrap();
    let mut next = v1.clone();
    next.expires_at = Some(now + 120);
    g.update(&next).await.unwrap();

    assert!(matches!(
        g.mark_needs_consent("alice", "gh", 1).await,
        Err(Error::StaleVersion)
    ));
    assert_eq!(
        g.get("alice", "gh", true).await.unwrap().unwrap().status,
        GrantStatus::Active
    );
    assert_eq!(g.due_for_refresh(now + 600, 100).await.unwrap().len(), 1);

    let dead = g.mark_needs_consent("alice", "gh", 2).await.unwrap();
    assert_eq!(dead.status, GrantStatus::NeedsConsent);
    assert_eq!(dead.version, 3);
    assert!(g.due_for_refresh(now + 600, 100).await.unwrap().is_empty());
    assert!(matches!(
        g.mark_needs_consent("bob", "gh", 1).await,
        Err(Error::NotFound(_))
    ));

    // A new consent revives it with a higher version and clears any lease.
    g.acquire_lease("alice", "gh", "owner", now, now + 15)
        .await
        .unwrap();
    let revived = g
        .put_after_consent(&grant("alice", "gh", Some(now + 300), now + 5))
        .await
        .unwrap();
    assert_eq!(revived.status, GrantStatus::Active);
    assert_eq!(revived.version, 4);
    assert!(revived.lease.is_none());
    assert_eq!(revived.created_at, now, "creation time is kept");
    assert_eq!(g.due_for_refresh(now + 600, 100).await.unwrap().len(), 1);
    // And on a fresh user it creates version 1.
    assert_eq!(
        g.put_after_consent(&grant("carol", "gh", None, now))
            .await
            .unwrap()
            .version,
        1
    );
}

#[tokio::test]
async fn delete_and_list_for_user() {
    let gw = Gateway::start(&[]).await;
    let g = &gw.state.grants;
    let now = gw.state.clock.now();
    for t in ["a", "b", "c"] {
        g.create(&grant("alice", t, None, now)).await.unwrap();
    }
    g.create(&grant("bob", "a", None, now)).await.unwrap();
    gw.state
        .sessions
        .put(&UpstreamSession {
            sub: "alice".into(),
            target: "a".into(),
            session_id: "s".into(),
            protocol_version: "2025-06-18".into(),
            expires_at: now + 60,
        })
        .await
        .unwrap();
    let mut names: Vec<_> = g
        .list_for_user("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.target)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a", "b", "c"],
        "only alice's grants, not her sessions"
    );
    g.delete("alice", "b").await.unwrap();
    g.delete("alice", "b").await.unwrap();
    assert!(g.get("alice", "b", true).await.unwrap().is_none());
    assert_eq!(g.list_for_user("alice").await.unwrap().len(), 2);
    assert!(g.get("bob", "a", true).await.unwrap().is_some());
}

#[tokio::test]
async fn due_for_refresh_queries_every_shard_in_order() {
    let gw = Gateway::start(&[]).await;
    let g = &gw.state.grants;
    let now = gw.state.clock.now();
    let mut expected = vec![];
    for i in 0..24i64 {
        let sub = format!("user-{i}");
        let exp = now + i * 60; // 0, 1, 2 ... 23 minutes
        g.create(&grant(&sub, "gh", Some(exp), now)).await.unwrap();
        if exp <= now + 600 {
            expected.push((exp, sub));
        }
    }
    // Not refreshable: no refresh token, no expiry.
    let mut no_refresh = grant("norefresh", "gh", Some(now), now);
    no_refresh.tokens.refresh_token = None;
    g.create(&no_refresh).await.unwrap();
    g.create(&grant("noexpiry", "gh", None, now)).await.unwrap();

    let due = g.due_for_refresh(now + 600, 100).await.unwrap();
    let got: Vec<_> = due.iter().map(|k| k.sub.clone()).collect();
    let want: Vec<_> = expected.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(got, want, "due grants, soonest first, from every shard");

    let limited = g.due_for_refresh(now + 600, 3).await.unwrap();
    assert_eq!(
        limited.iter().map(|k| k.sub.clone()).collect::<Vec<_>>(),
        want[..3]
    );

    // The index is sharded: the grants are spread over several partitions.
    let shards: HashSet<String> = (0..24)
        .map(|i| format!("user-{i}"))
        .collect::<Vec<_>>()
        .iter()
        .map(|sub| {
            let store = DynamoStore::new(gw.dynamo.clone(), &gw.table, gw.state.keys.clone(), 4);
            format!("RD#{}", store.shard_of(sub, "gh"))
        })
        .collect();
    assert!(shards.len() > 1, "{shards:?}");
    let raw = gw.raw_item("USER#user-3", "GRANT#gh").await.unwrap();
    assert!(raw["rd_shard"].as_s().unwrap().starts_with("RD#"));
    assert_eq!(raw["rd_at"].as_n().unwrap(), &(now + 180).to_string());
}

#[tokio::test]
async fn ciphertext_copied_to_another_user_does_not_decrypt() {
    let gw = Gateway::start(&[]).await;
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&grant("alice", "gh", None, now))
        .await
        .unwrap();
    gw.state
        .grants
        .create(&grant("mallory", "gh", None, now))
        .await
        .unwrap();
    let alice = gw.raw_item("USER#alice", "GRANT#gh").await.unwrap();
    gw.dynamo
        .update_item()
        .table_name(&gw.table)
        .key("pk", AttributeValue::S("USER#mallory".into()))
        .key("sk", AttributeValue::S("GRANT#gh".into()))
        .update_expression("SET #t = :t")
        .expression_attribute_names("#t", "tokens")
        .expression_attribute_values(":t", alice["tokens"].clone())
        .send()
        .await
        .unwrap();
    assert!(matches!(
        gw.state.grants.get("mallory", "gh", true).await,
        Err(Error::Decrypt(_))
    ));
    // Nor into another target of the same user.
    gw.state
        .grants
        .create(&grant("alice", "gitlab", None, now))
        .await
        .unwrap();
    gw.dynamo
        .update_item()
        .table_name(&gw.table)
        .key("pk", AttributeValue::S("USER#alice".into()))
        .key("sk", AttributeValue::S("GRANT#gitlab".into()))
        .update_expression("SET #t = :t")
        .expression_attribute_names("#t", "tokens")
        .expression_attribute_values(":t", alice["tokens"].clone())
        .send()
        .await
        .unwrap();
    assert!(matches!(
        gw.state.grants.get("alice", "gitlab", true).await,
        Err(Error::Decrypt(_))
    ));
    // The original still opens.
    assert!(gw
        .state
        .grants
        .get("alice", "gh", true)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn rotated_keys_still_open_old_items_and_new_writes_use_the_new_key() {
    let gw = Gateway::start(&[]).await;
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&grant("alice", "gh", None, now))
        .await
        .unwrap();

    let put_keys = |json: serde_json::Value| {
        let secrets = gw.secrets.clone();
        let arn = gw.keyset_arn.clone();
        async move {
            secrets
                .put_secret_value()
                .secret_id(arn)
                .secret_string(json.to_string())
                .send()
                .await
                .unwrap();
        }
    };
    put_keys(serde_json::json!({"current": "k2", "k1": KEY_1, "k2": KEY_2})).await;

    // A fresh instance (cold start) sees the rotated set.
    let source = Arc::new(SecretsManagerSource::new(
        gw.secrets.clone(),
        Duration::from_secs(300),
    ));
    let keys: Arc<dyn KeyProvider> = Arc::new(SecretKeyProvider::new(
        source,
        gw.keyset_arn.clone(),
        Duration::from_secs(300),
    ));
    let store = DynamoStore::new(gw.dynamo.clone(), &gw.table, keys, 4);
    let old = GrantStore::get(&store, "alice", "gh", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        old.tokens.access_token.expose_secret(),
        "access-alice-gh-SECRET"
    );
    GrantStore::create(&store, &grant("bob", "gh", None, now))
        .await
        .unwrap();
    let raw = gw.raw_item("USER#bob", "GRANT#gh").await.unwrap();
    assert!(raw["tokens"].as_s().unwrap().starts_with("k2."));

    // A warm instance still holding the old set refetches once when it meets k2.
    let bob = gw
        .state
        .grants
        .get("bob", "gh", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bob.tokens.access_token.expose_secret(),
        "access-bob-gh-SECRET"
    );

    // With k1 retired, items sealed with it no longer open.
    put_keys(serde_json::json!({"current": "k2", "k2": KEY_2})).await;
    let source = Arc::new(SecretsManagerSource::new(
        gw.secrets.clone(),
        Duration::from_secs(300),
    ));
    let keys: Arc<dyn KeyProvider> = Arc::new(SecretKeyProvider::new(
        source,
        gw.keyset_arn.clone(),
        Duration::from_secs(300),
    ));
    let store = DynamoStore::new(gw.dynamo.clone(), &gw.table, keys, 4);
    assert!(matches!(
        GrantStore::get(&store, "alice", "gh", true).await,
        Err(Error::Decrypt(_))
    ));
    assert!(GrantStore::get(&store, "bob", "gh", true)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn pending_authorization_is_consumed_once() {
    let gw = Gateway::start(&[]).await;
    let a = &gw.state.authorizations;
    let now = gw.state.clock.now();
    let pending = PendingAuthorization::new(
        "alice",
        "gh",
        vec!["repo".into()],
        Some("https://mcp.example.test/mcp".into()),
        Some("https://as.example.test".into()),
        now,
        600,
    );
    a.create(&pending).await.unwrap();
    assert!(matches!(
        a.create(&pending).await,
        Err(Error::AlreadyExists(_))
    ));

    // At rest: TTL attribute, no plaintext verifier or state secret.
    let raw = gw
        .raw_item(&format!("AUTHZ#{}", pending.id), "AUTHZ")
        .await
        .unwrap();
    assert_eq!(raw["ttl"].as_n().unwrap(), &(now + 600).to_string());
    let text = raw_string(&raw);
    assert!(!text.contains(pending.pkce_verifier.expose_secret()));
    assert!(!text.contains(pending.state.secret()));

    let peeked = a.peek(&pending.id, now + 1).await.unwrap();
    assert_eq!(peeked.state.to_param(), pending.state.to_param());
    assert_eq!(
        peeked.pkce_verifier.expose_secret(),
        pending.pkce_verifier.expose_secret()
    );

    // A tampered state consumes nothing.
    let forged = PendingAuthorization::new("alice", "gh", vec![], None, None, now, 600).state;
    assert!(matches!(
        a.consume(&pending.id, &forged.digest(), now + 2).await,
        Err(Error::StateMismatch)
    ));

    let consumed = a
        .consume(&pending.id, &pending.state.digest(), now + 3)
        .await
        .unwrap();
    assert_eq!(consumed.sub, "alice");
    assert_eq!(consumed.target, "gh");
    assert_eq!(consumed.scopes, vec!["repo"]);
    assert_eq!(consumed.issuer.as_deref(), Some("https://as.example.test"));
    assert_eq!(
        consumed.pkce_verifier.expose_secret(),
        pending.pkce_verifier.expose_secret()
    );

    assert!(matches!(
        a.consume(&pending.id, &pending.state.digest(), now + 4)
            .await,
        Err(Error::AuthorizationUsed)
    ));
    assert!(matches!(
        a.peek(&pending.id, now + 4).await,
        Err(Error::AuthorizationUsed)
    ));
}

#[tokio::test]
async fn expired_authorization_cannot_be_consumed() {
    let gw = Gateway::start(&[]).await;
    let a = &gw.state.authorizations;
    let now = gw.state.clock.now();
    let pending = PendingAuthorization::new("alice", "gh", vec![], None, None, now, 600);
    a.create(&pending).await.unwrap();
    // The TTL sweep has not run (moto never runs it): expiry is checked in code.
    assert!(matches!(
        a.peek(&pending.id, now + 600).await,
        Err(Error::AuthorizationExpired)
    ));
    assert!(matches!(
        a.consume(&pending.id, &pending.state.digest(), now + 600)
            .await,
        Err(Error::AuthorizationExpired)
    ));
    // And it is gone afterwards.
    assert!(gw
        .raw_item(&format!("AUTHZ#{}", pending.id), "AUTHZ")
        .await
        .is_none());
}

#[tokio::test]
async fn concurrent_consumes_have_exactly_one_winner() {
    let gw = Gateway::start(&[]).await;
    let now = gw.state.clock.now();
    let pending = PendingAuthorization::new("alice", "gh", vec![], None, None, now, 600);
    gw.state.authorizations.create(&pending).await.unwrap();
    let tries = (0..8).map(|_| {
        let a = gw.state.authorizations.clone();
        let (id, digest) = (pending.id.clone(), pending.state.digest());
        tokio::spawn(async move { a.consume(&id, &digest, now + 1).await.is_ok() })
    });
    let wins = futures_count(tries).await;
    assert_eq!(wins, 1);
}

async fn futures_count(handles: impl Iterator<Item = tokio::task::JoinHandle<bool>>) -> usize {
    let mut n = 0;
    for h in handles {
        if h.await.unwrap() {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_lease_takers_have_exactly_one_winner() {
    let gw = Gateway::start(&[]).await;
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&grant("alice", "gh", Some(now), now))
        .await
        .unwrap();
    // Many rounds of 16 racers: a store whose condition check and write can
    // interleave (as moto's threaded server does) lets two win now and then.
    for round in 0..25 {
        let tries = (0..16).map(|i| {
            let g = gw.state.grants.clone();
            tokio::spawn(async move {
                g.acquire_lease("alice", "gh", &format!("owner-{round}-{i}"), now, now + 15)
                    .await
                    .is_ok()
            })
        });
        assert_eq!(futures_count(tries).await, 1, "round {round}");
        let raw = gw.raw_item("USER#alice", "GRANT#gh").await.unwrap();
        let owner = raw["lease_owner"].as_s().unwrap().clone();
        gw.state
            .grants
            .release_lease("alice", "gh", &owner)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn targets_put_get_list_delete() {
    let gw = Gateway::start(&[]).await;
    let t = &gw.state.targets;
    for name in ["zeta", "alpha"] {
        t.put(&Target {
            name: name.into(),
            display_name: Some(format!("The {name} service")),
            mcp_url: format!("https://{name}.example.test/mcp"),
            auth: TargetAuth::None,
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: vec![
                serde_json::json!({"name": "echo", "inputSchema": {"type": "object"}}),
            ]
            .into(),
        })
        .await
        .unwrap();
    }
    let names: Vec<_> = t
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    let zeta = t.get("zeta").await.unwrap().unwrap();
    assert_eq!(zeta.title(), "The zeta service");
    assert_eq!(zeta.tool_catalog.len(), 1);
    t.delete("zeta").await.unwrap();
    assert!(t.get("zeta").await.unwrap().is_none());
    assert!(matches!(t.delete("zeta").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn sessions_expire_in_code() {
    let gw = Gateway::start(&[]).await;
    let s = &gw.state.sessions;
    let now = gw.state.clock.now();
    let session = UpstreamSession {
        sub: "alice".into(),
        target: "gh".into(),
        session_id: "upstream-session-1".into(),
        protocol_version: "2025-06-18".into(),
        expires_at: now + 60,
    };
    s.put(&session).await.unwrap();
    assert_eq!(
        s.get("alice", "gh", now).await.unwrap(),
        Some(session.clone())
    );
    assert!(s.get("bob", "gh", now).await.unwrap().is_none());
    let raw = gw.raw_item("USER#alice", "SESSION#gh").await.unwrap();
    assert_eq!(raw["ttl"].as_n().unwrap(), &(now + 60).to_string());
    assert!(
        s.get("alice", "gh", now + 60).await.unwrap().is_none(),
        "expired sessions are not used"
    );
    s.delete("alice", "gh").await.unwrap();
    assert!(gw.raw_item("USER#alice", "SESSION#gh").await.is_none());
}

/// An instance forgetting the upstream session it saw fail does not take
/// away the one another instance kept since: the delete is conditional on
/// the session id, in DynamoDB itself.
#[tokio::test]
async fn a_session_is_forgotten_only_while_it_is_the_one_seen() {
    let gw = Gateway::start(&[]).await;
    let s = &gw.state.sessions;
    let now = gw.state.clock.now();
    let session = |id: &str| UpstreamSession {
        sub: "alice".into(),
        target: "gh".into(),
        session_id: id.into(),
        protocol_version: "2025-06-18".into(),
        expires_at: now + 60,
    };
    // Nothing kept: nothing forgotten, and no error.
    assert!(!s.delete_if("alice", "gh", "old").await.unwrap());
    // Another instance replaced the failed session: it stays.
    s.put(&session("newer")).await.unwrap();
    assert!(!s.delete_if("alice", "gh", "old").await.unwrap());
    assert_eq!(
        s.get("alice", "gh", now).await.unwrap(),
        Some(session("newer"))
    );
    // The session seen is still the one kept: forgotten.
    assert!(s.delete_if("alice", "gh", "newer").await.unwrap());
    assert!(gw.raw_item("USER#alice", "SESSION#gh").await.is_none());
}

#[tokio::test]
async fn table_has_ttl_and_refresh_index() {
    let gw = Gateway::start(&[]).await;
    let ttl = gw
        .dynamo
        .describe_time_to_live()
        .table_name(&gw.table)
        .send()
        .await
        .unwrap();
    let desc = ttl.time_to_live_description().unwrap();
    assert_eq!(desc.attribute_name(), Some("ttl"));
    let table = gw
        .dynamo
        .describe_table()
        .table_name(&gw.table)
        .send()
        .await
        .unwrap();
    let gsis = table.table().unwrap().global_secondary_indexes();
    assert_eq!(gsis.len(), 1);
    assert_eq!(gsis[0].index_name(), Some("refresh-due"));
    // Creating it again is harmless.
    gateway_shared::adapters::dynamodb::create_table(&gw.dynamo, &gw.table)
        .await
        .unwrap();
}

#[tokio::test]
async fn client_secrets_are_read_by_arn_and_cached() {
    let gw = Gateway::start(&[]).await;
    let arn = gw
        .secrets
        .create_secret()
        .name("targets/github/client-secret")
        .secret_string("s3cret-value")
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    assert_eq!(
        gw.state.secrets.secret(&arn).await.unwrap().expose_secret(),
        "s3cret-value"
    );
    // Changed in Secrets Manager: a warm instance keeps its cached value
    // (no call per request) until the cache lifetime passes.
    gw.secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("rotated")
        .send()
        .await
        .unwrap();
    assert_eq!(
        gw.state.secrets.secret(&arn).await.unwrap().expose_secret(),
        "s3cret-value"
    );
    let fresh = SecretsManagerSource::new(gw.secrets.clone(), Duration::ZERO);
    assert_eq!(fresh.secret(&arn).await.unwrap().expose_secret(), "rotated");

    let missing = gw
        .state
        .secrets
        .secret("arn:aws:secretsmanager:us-east-1:123456789012:secret:nope")
        .await;
    match missing {
        Err(Error::Secret { reason, .. }) => assert_eq!(reason, "not found"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_key_set_fails_the_cold_start_with_a_clear_error() {
    let gw = Gateway::start(&[]).await;
    gw.secrets
        .put_secret_value()
        .secret_id(&gw.keyset_arn)
        .secret_string(r#"{"current":"k1","k1":"too-short"}"#)
        .send()
        .await
        .unwrap();
    let config = (*gw.state.config).clone();
    let err = gateway_shared::AppState::with_sdk_config(config, &gw.moto.sdk_config())
        .await
        .err()
        .expect("a short key is refused");
    let msg = err.to_string();
    assert!(msg.contains("shorter than 32"), "{msg}");
    assert!(
        !msg.contains("too-short"),
        "the key leaked into the error: {msg}"
    );
}

#[tokio::test]
async fn warm_instances_serve_grants_from_memory_within_the_bound() {
    let gw = Gateway::start(&[("GRANT_CACHE_SECONDS", "1")]).await;
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&grant("alice", "gh", Some(now + 3600), now))
        .await
        .unwrap();
    let a = &gw.state.grants;
    assert!(
        a.get("alice", "gh", false).await.unwrap().is_some(),
        "cold: one read"
    );

    // Another instance revokes it (the item goes away from the table).
    let b = gateway_tests::instance(&gw, gw.clock.clone()).await;
    b.grants.delete("alice", "gh").await.unwrap();
    assert!(gw.raw_item("USER#alice", "GRANT#gh").await.is_none());
    // Warm: served from memory (no read), so the revocation is not seen yet...
    assert!(
        a.get("alice", "gh", false).await.unwrap().is_some(),
        "warm: no read"
    );
    // ...but consistent reads (the lease protocol) always see the table...
    assert!(a.get("alice", "gh", true).await.unwrap().is_none());
    // ...and after the bound, eventually consistent ones do too.
    gw.state
        .grants
        .create(&grant("bob", "gh", Some(now + 3600), now))
        .await
        .unwrap();
    assert!(a.get("bob", "gh", false).await.unwrap().is_some());
    b.grants.delete("bob", "gh").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(
        a.get("bob", "gh", false).await.unwrap().is_none(),
        "seen within GRANT_CACHE_SECONDS"
    );

    // A write through the same instance is seen at once.
    let v1 = a
        .create(&grant("carol", "gh", Some(now + 3600), now))
        .await
        .unwrap();
    assert_eq!(
        a.get("carol", "gh", false).await.unwrap().unwrap().version,
        1
    );
    let mut next = v1.clone();
    next.tokens.access_token = "rotated".to_string().into();
    a.update(&next).await.unwrap();
    let got = a.get("carol", "gh", false).await.unwrap().unwrap();
    assert_eq!(got.tokens.access_token.expose_secret(), "rotated");
    a.delete("carol", "gh").await.unwrap();
    assert!(a.get("carol", "gh", false).await.unwrap().is_none());
}

#[tokio::test]
async fn the_proxys_catalog_write_never_resurrects_or_undoes_a_target() {
    let gw = Gateway::start(&[]).await;
    let t = &gw.state.targets;
    let original = Target {
        name: "svc".into(),
        display_name: Some("Service".into()),
        mcp_url: "https://svc.example.test/mcp".into(),
        auth: TargetAuth::None,
        tool_prefix: None,
        return_to: Default::default(),
        tool_catalog: Default::default(),
    };
    t.put(&original).await.unwrap();
    let read = t.get("svc").await.unwrap().unwrap();
    let tools = vec![serde_json::json!({"name": "echo", "inputSchema": {"type": "object"}})];
    // Unchanged since read: only the catalog is written.
    t.put_catalog(&read, &tools).await.unwrap();
    let stored = t.get("svc").await.unwrap().unwrap();
    let stored_tools: Vec<serde_json::Value> =
        stored.tool_catalog.iter().map(|t| t.value()).collect();
    assert_eq!(stored_tools, tools);
    assert_eq!(stored.display_name.as_deref(), Some("Service"));
    // An operator changed the target since: the stale catalog write is refused.
    let mut changed = original.clone();
    changed.mcp_url = "https://svc2.example.test/mcp".into();
    t.put(&changed).await.unwrap();
    assert!(matches!(
        t.put_catalog(&read, &[]).await,
        Err(gateway_shared::Error::StaleVersion)
    ));
    assert_eq!(
        t.get("svc").await.unwrap().unwrap().mcp_url,
        "https://svc2.example.test/mcp"
    );
    // Removed: it stays removed.
    t.delete("svc").await.unwrap();
    assert!(matches!(
        t.put_catalog(&changed, &tools).await,
        Err(gateway_shared::Error::StaleVersion)
    ));
    assert!(gw.raw_item("TARGETS", "TARGET#svc").await.is_none());
    assert!(t.get("svc").await.unwrap().is_none());
}

/// The policy set against DynamoDB: stored under an integrity seal, read
/// back, removed. A table writer without the keys who loosens the stored
/// text (or drops its seal) does not loosen anything: the set fails its
/// check, and the gateway refuses calls (fails closed) instead of allowing
/// them.
#[tokio::test]
async fn a_table_writer_cannot_loosen_the_policy_set() {
    let gw = Gateway::start(&[("TARGETS_CACHE_SECONDS", "0")]).await;
    const STRICT: &str = r#"permit(principal in Gateway::Group::"admins", action, resource);"#;
    assert_eq!(gw.state.policies.stored().await.unwrap(), None);
    gw.state.policies.store(Some(STRICT)).await.unwrap();
    assert_eq!(
        gw.state.policies.stored().await.unwrap().as_deref(),
        Some(STRICT)
    );
    assert_eq!(gw.state.policies.current().await.unwrap().unwrap().len(), 1);
    // A set that does not parse is refused before anything is written.
    assert!(gw.state.policies.store(Some("permit(")).await.is_err());
    assert_eq!(
        gw.state.policies.stored().await.unwrap().as_deref(),
        Some(STRICT)
    );

    // The attack: the text replaced in the table, seal kept; then the seal
    // dropped too.
    let item = gw.raw_item("POLICIES", "POLICY#default").await.unwrap();
    let mut loosened = item.clone();
    loosened.insert(
        "text".into(),
        AttributeValue::S("permit(principal, action, resource);".into()),
    );
    gw.put_raw_item(loosened.clone()).await;
    let err = gw.state.policies.current().await.unwrap_err();
    assert!(err.contains("integrity"), "{err}");
    loosened.remove("seal");
    gw.put_raw_item(loosened).await;
    let err = gw.state.policies.current().await.unwrap_err();
    assert!(err.contains("no integrity seal"), "{err}");
    // The gateway refuses calls rather than allowing them.
    let (listener, base) = gateway_tests::GatewayServer::bind().await;
    let server = gateway_tests::GatewayServer::serve(listener, base, gw.state.clone());
    let client = gateway_tests::RawClient::new(
        &format!("{}/mcp", server.base),
        &[("x-gateway-dev-user", "mallory")],
    );
    let listed = client
        .modern("tools/list", serde_json::json!({}), serde_json::json!({}))
        .await;
    assert_eq!(listed.body["error"]["code"], -32000, "{:?}", listed.body);
    assert!(listed.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("cannot check its policies")));

    // Removing the set (an operator's act) allows everything again.
    gw.state.policies.store(None).await.unwrap();
    assert_eq!(
        gw.state.policies.current().await.unwrap().map(|p| p.len()),
        None
    );
}

/// With `POLICY_REQUIRED`, a policy set removed from the table by someone
/// without the keys does not open the gateway up: no set refuses calls.
#[tokio::test]
async fn with_policies_required_a_deleted_set_refuses_instead_of_allowing() {
    let gw = Gateway::start(&[("TARGETS_CACHE_SECONDS", "0"), ("POLICY_REQUIRED", "true")]).await;
    let err = gw.state.policies.current().await.unwrap_err();
    assert!(err.contains("POLICY_REQUIRED"), "{err}");
    gw.state
        .policies
        .store(Some("permit(principal, action, resource);"))
        .await
        .unwrap();
    assert_eq!(
        gw.state.policies.current().await.unwrap().map(|p| p.len()),
        Some(1)
    );
    // The attack: the item deleted in the table.
    gw.dynamo
        .delete_item()
        .table_name(&gw.table)
        .key("pk", AttributeValue::S("POLICIES".into()))
        .key("sk", AttributeValue::S("POLICY#default".into()))
        .send()
        .await
        .unwrap();
    let err = gw.state.policies.current().await.unwrap_err();
    assert!(err.contains("POLICY_REQUIRED"), "{err}");
}

/// A disconnect forgets every upstream session the user had with the
/// target: the usual one and the 2025 one kept beside it for clients that
/// answer an upstream's requests or subscribe (`<target>#2025`), in the
/// table; another user's sessions and other targets' stay.
#[tokio::test]
async fn a_disconnect_forgets_both_of_the_users_upstream_sessions() {
    let gw = Gateway::start(&[]).await;
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&grant("alice", "gh", None, now))
        .await
        .unwrap();
    let session = |sub: &str, key: &str| UpstreamSession {
        sub: sub.into(),
        target: key.into(),
        session_id: format!("{sub}-{key}"),
        protocol_version: "2025-11-25".into(),
        expires_at: now + 600,
    };
    let legacy = gateway_shared::upstream::legacy_session_key("gh");
    for (sub, key) in [
        ("alice", "gh"),
        ("alice", legacy.as_str()),
        ("alice", "other"),
        ("bob", legacy.as_str()),
    ] {
        gw.state.sessions.put(&session(sub, key)).await.unwrap();
    }
    let outcome = gateway_shared::connections::disconnect(&gw.state, "alice", "gh")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        gateway_shared::connections::Disconnected::DeletedWithoutRevocation
    );
    let s = &gw.state.sessions;
    assert!(s.get("alice", "gh", now).await.unwrap().is_none());
    assert!(s.get("alice", &legacy, now).await.unwrap().is_none());
    assert!(s.get("alice", "other", now).await.unwrap().is_some());
    assert!(s.get("bob", &legacy, now).await.unwrap().is_some());
}
