//! The lease protocol against the in-memory store and a scripted
//! authorization server, with paused time: races between instances and
//! between callers of one instance, leases that run out, answers that are
//! lost on the way back, and writes that land in the middle of a refresh.
//!
//! Each test plays one situation deterministically; the integration tests
//! (`tests/lifecycle.rs`) play the same protocol against DynamoDB and a real
//! authorization server.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::adapters::memory::{Fault, GrantOp, MemoryStore};
use crate::adapters::oauth::{IssuedTokens, OAuthError};
use crate::domain::{Grant, GrantStatus, Target, TargetAuth, TokenSet};
use crate::ports::{Clock, GrantStore, RefreshCall};

/// Unix seconds that follow tokio's (paused) clock.
struct TestClock {
    base: i64,
    start: tokio::time::Instant,
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.base + self.start.elapsed().as_secs() as i64
    }
}

const T0: i64 = 1_700_000_000;
const TOKEN_ENDPOINT: &str = "https://as.test/token";

/// What the authorization server does with the next token request.
#[derive(Clone, Copy)]
enum Step {
    /// Waits, then answers normally.
    SlowStart(Duration),
    /// Issues the tokens, then never answers (the answer is lost).
    LoseAnswer,
    /// Refuses with this OAuth error code.
    Reject(&'static str),
}

#[derive(Default)]
struct Server {
    valid: HashSet<String>,
    used: HashSet<String>,
    issued: u64,
    requests: usize,
    script: VecDeque<Step>,
}

/// A token endpoint with refresh-token rotation (and reuse detection, as
/// providers do: an old refresh token presented again revokes the family)
/// or without.
struct FakeServer {
    rotate: bool,
    lifetime: i64,
    clock: Arc<TestClock>,
    state: Mutex<Server>,
}

impl FakeServer {
    fn new(rotate: bool, clock: Arc<TestClock>) -> Arc<Self> {
        let server = Server {
            valid: HashSet::from(["rt-0".to_owned()]),
            ..Server::default()
        };
        Arc::new(FakeServer {
            rotate,
            lifetime: 3600,
            clock,
            state: Mutex::new(server),
        })
    }

    fn then(&self, step: Step) {
        self.state.lock().unwrap().script.push_back(step);
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// Checks the presented refresh token and issues new tokens.
    fn issue(&self, presented: &str) -> Result<IssuedTokens, OAuthError> {
        let mut s = self.state.lock().unwrap();
        let invalid_grant = || OAuthError::Rejected {
            error: "invalid_grant".into(),
            description: None,
        };
        if !s.valid.contains(presented) {
            if s.used.contains(presented) {
                // Reuse of a rotated token: the whole family is revoked.
                s.valid.clear();
            }
            return Err(invalid_grant());
        }
        s.issued += 1;
        let n = s.issued;
        let refresh_token = if self.rotate {
            s.valid.remove(presented);
            s.used.insert(presented.to_owned());
            let next = format!("rt-{n}");
            s.valid.insert(next.clone());
            next
        } else {
            presented.to_owned()
        };
        Ok(IssuedTokens {
            tokens: TokenSet {
                access_token: SecretString::from(format!("at-{n}")),
                refresh_token: Some(SecretString::from(refresh_token)),
                token_type: "Bearer".into(),
                dpop_key: None,
            },
            expires_at: Some(self.clock.now() + self.lifetime),
            scopes: None,
        })
    }
}

#[async_trait]
impl crate::ports::TokenIssuer for FakeServer {
    async fn refresh(&self, call: RefreshCall<'_>) -> Result<IssuedTokens, OAuthError> {
        assert_eq!(call.token_endpoint, TOKEN_ENDPOINT);
        let step = {
            let mut s = self.state.lock().unwrap();
            s.requests += 1;
            s.script.pop_front()
        };
        let presented = call.refresh_token.expose_secret();
        match step {
            None => self.issue(presented),
            Some(Step::SlowStart(d)) => {
                tokio::time::sleep(d).await;
                self.issue(presented)
            }
            Some(Step::LoseAnswer) => {
                let _ = self.issue(presented);
                std::future::pending().await
            }
            Some(Step::Reject(code)) => Err(OAuthError::Rejected {
                error: code.into(),
                description: None,
            }),
        }
    }

    async fn machine_token(
        &self,
        call: crate::ports::MachineTokenCall<'_>,
    ) -> Result<IssuedTokens, OAuthError> {
        assert_eq!(call.settings.token_endpoint, TOKEN_ENDPOINT);
        self.machine_token().await
    }

    /// A token exchange: `xt-<n>-<subject token>`, with a refresh token the
    /// gateway must drop.
    async fn exchange(
        &self,
        call: crate::ports::ExchangeCall<'_>,
    ) -> Result<IssuedTokens, OAuthError> {
        let mut issued = self.machine_token().await?;
        let n = self.state.lock().unwrap().issued;
        issued.tokens.access_token =
            SecretString::from(format!("xt-{n}-{}", call.subject_token.expose_secret()));
        issued.tokens.refresh_token = Some(SecretString::from("never-kept".to_owned()));
        Ok(issued)
    }
}

impl FakeServer {
    /// Answers a Client Credentials request (tokens `cc-<n>`, no refresh token).
    async fn machine_token(&self) -> Result<IssuedTokens, OAuthError> {
        let step = {
            let mut s = self.state.lock().unwrap();
            s.requests += 1;
            s.script.pop_front()
        };
        match step {
            Some(Step::SlowStart(d)) => tokio::time::sleep(d).await,
            Some(Step::Reject(code)) => {
                return Err(OAuthError::Rejected {
                    error: code.into(),
                    description: None,
                })
            }
            Some(Step::LoseAnswer) => std::future::pending::<()>().await,
            None => {}
        }
        let mut s = self.state.lock().unwrap();
        s.issued += 1;
        Ok(IssuedTokens {
            tokens: TokenSet {
                access_token: SecretString::from(format!("cc-{}", s.issued)),
                refresh_token: None,
                token_type: "Bearer".into(),
                dpop_key: None,
            },
            expires_at: Some(self.clock.now() + self.lifetime),
            scopes: None,
        })
    }
}

/// One authorization server, one table, and any number of instances.
struct World {
    clock: Arc<TestClock>,
    store: MemoryStore,
    server: Arc<FakeServer>,
}

impl World {
    /// A world with alice's grant for `demo`, whose token (refresh token
    /// `rt-0`) expires in `expires_in` seconds.
    async fn new(rotate: bool, expires_in: i64) -> World {
        let clock = Arc::new(TestClock {
            base: T0,
            start: tokio::time::Instant::now(),
        });
        let store = MemoryStore::new();
        crate::ports::TargetCatalog::put(&store, &target())
            .await
            .unwrap();
        store.create(&grant(expires_in)).await.unwrap();
        World {
            server: FakeServer::new(rotate, clock.clone()),
            clock,
            store,
        }
    }

    /// An instance: its own refreshes in flight, the shared table and server.
    fn instance(&self) -> Refresher {
        Refresher::new(
            Arc::new(self.store.clone()),
            Arc::new(self.store.clone()),
            Arc::new(self.store.clone()),
            self.server.clone(),
            self.clock.clone(),
            Duration::from_secs(300),
        )
    }

    fn stored(&self) -> Grant {
        self.store.peek("alice", "demo").expect("the grant exists")
    }
}

fn target() -> Target {
    crate::domain::target::oauth_target_for_tests("demo")
}

fn grant(expires_in: i64) -> Grant {
    Grant {
        sub: "alice".into(),
        target: "demo".into(),
        tokens: TokenSet {
            access_token: SecretString::from("at-0".to_owned()),
            refresh_token: Some(SecretString::from("rt-0".to_owned())),
            token_type: "Bearer".into(),
            dpop_key: None,
        },
        expires_at: Some(T0 + expires_in),
        scopes: vec![],
        issuer: Some("https://as.test".into()),
        token_endpoint: Some(TOKEN_ENDPOINT.into()),
        resource: None,
        status: GrantStatus::Active,
        version: 1,
        lease: None,
        created_at: T0 - 3600,
        updated_at: T0 - 3600,
    }
}

fn access(g: &Grant) -> &str {
    g.tokens.access_token.expose_secret()
}

fn refresh_token(g: &Grant) -> &str {
    g.tokens.refresh_token.as_ref().unwrap().expose_secret()
}

async fn usable(r: &Refresher, owner: &str) -> Result<Grant, NoGrant> {
    r.usable_grant("alice", "demo", owner, 60, LeasePolicy::default())
        .await
        .map(std::sync::Arc::unwrap_or_clone)
}

#[tokio::test(start_paused = true)]
async fn two_instances_racing_present_the_refresh_token_once() {
    let w = World::new(true, 10).await;
    w.server.then(Step::SlowStart(Duration::from_secs(2)));
    let (a, b) = (w.instance(), w.instance());
    let (ra, rb) = tokio::join!(usable(&a, "a"), usable(&b, "b"));
    let (ga, gb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(access(&ga), "at-1");
    assert_eq!(
        access(&gb),
        "at-1",
        "the loser waits for the winner's tokens"
    );
    assert_eq!(w.server.requests(), 1);
    let stored = w.stored();
    assert_eq!((stored.version, refresh_token(&stored)), (2, "rt-1"));
    assert!(stored.lease.is_none(), "the lease went with the write");
}

#[tokio::test(start_paused = true)]
async fn callers_of_one_instance_queue_behind_one_refresh() {
    let w = World::new(true, 10).await;
    w.server.then(Step::SlowStart(Duration::from_secs(1)));
    let one = w.instance();
    let calls = (0..20).map(|i| {
        let one = &one;
        async move { usable(one, &format!("p{i}")).await }
    });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert_eq!(access(r.as_ref().unwrap()), "at-1");
    }
    assert_eq!(w.server.requests(), 1);
    assert_eq!(
        w.store.calls(GrantOp::AcquireLease),
        1,
        "one caller went to the table's lease; the others shared its outcome"
    );
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_died_is_outlasted_by_its_lease() {
    let w = World::new(true, 10).await;
    // Another instance took the lease and died without releasing it.
    w.store
        .acquire_lease("alice", "demo", "crashed", T0, T0 + 15)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let g = usable(&w.instance(), "survivor").await.unwrap();
    assert_eq!(access(&g), "at-1");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(18),
        "took over when the lease ran out: {waited:?}"
    );
    assert_eq!(w.server.requests(), 1);
    assert!(w.stored().lease.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_longer_than_the_wait_is_a_passing_failure() {
    let w = World::new(true, 10).await;
    w.store
        .acquire_lease("alice", "demo", "slow", T0, T0 + 100)
        .await
        .unwrap();
    let r = usable(&w.instance(), "p").await;
    assert!(matches!(r, Err(NoGrant::Retry(_))), "{r:?}");
    assert_eq!(
        w.server.requests(),
        0,
        "the refresh token was not presented"
    );
    let stored = w.stored();
    assert_eq!((stored.version, access(&stored)), (1, "at-0"));
    assert_eq!(
        stored.lease.unwrap().owner,
        "slow",
        "the holder's lease stays"
    );
}

#[tokio::test(start_paused = true)]
async fn the_token_request_is_cut_before_the_lease_runs_out() {
    let w = World::new(true, 10).await;
    w.server.then(Step::SlowStart(Duration::from_secs(30)));
    let policy = LeasePolicy {
        lease: Duration::from_secs(15),
        http_timeout: Duration::from_secs(60),
        ..LeasePolicy::default()
    };
    let started = tokio::time::Instant::now();
    let r = w
        .instance()
        .usable_grant("alice", "demo", "p", 60, policy)
        .await;
    assert!(
        matches!(&r, Err(NoGrant::Retry(why)) if why.contains("timed out")),
        "{r:?}"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(15) - WRITE_BUDGET,
        "the request ends WRITE_BUDGET before the lease"
    );
    let stored = w.stored();
    assert_eq!((stored.version, access(&stored)), (1, "at-0"));
    assert!(stored.lease.is_none(), "the lease was released");
}

#[tokio::test(start_paused = true)]
async fn a_lost_token_answer_from_a_rotating_server_ends_in_one_consent() {
    let w = World::new(true, 10).await;
    w.server.then(Step::LoseAnswer);
    let one = w.instance();
    let r = usable(&one, "p").await;
    assert!(matches!(r, Err(NoGrant::Retry(_))), "{r:?}");
    let stored = w.stored();
    assert_eq!(
        (refresh_token(&stored), stored.status),
        ("rt-0", GrantStatus::Active),
        "nothing was written: the grant keeps the token it presented"
    );
    // The server saw rt-0 used and rotated it; presenting it again is
    // reuse, which revokes the family: the user connects again, once.
    assert_eq!(usable(&one, "p").await.unwrap_err(), NoGrant::NeedsConsent);
    assert_eq!(w.stored().status, GrantStatus::NeedsConsent);
    assert!(w
        .store
        .due_for_refresh(i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(usable(&one, "p").await.unwrap_err(), NoGrant::NeedsConsent);
    assert_eq!(w.server.requests(), 2, "no loop of refused refreshes");
}

#[tokio::test(start_paused = true)]
async fn a_lost_token_answer_from_a_server_that_does_not_rotate_costs_nothing() {
    let w = World::new(false, 10).await;
    w.server.then(Step::LoseAnswer);
    let one = w.instance();
    assert!(matches!(usable(&one, "p").await, Err(NoGrant::Retry(_))));
    let g = usable(&one, "p").await.unwrap();
    assert_eq!((access(&g), refresh_token(&g)), ("at-2", "rt-0"));
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_to_the_token_write_loses_no_token() {
    let w = World::new(true, 10).await;
    w.store.inject(GrantOp::UpdateAndRelease, Fault::LoseAnswer);
    let one = w.instance();
    let r = usable(&one, "p").await;
    assert!(matches!(r, Err(NoGrant::Retry(_))), "{r:?}");
    // The write was applied: the rotated token is stored, the lease gone.
    let stored = w.stored();
    assert_eq!((stored.version, refresh_token(&stored)), (2, "rt-1"));
    assert!(stored.lease.is_none());
    let g = usable(&one, "p").await.unwrap();
    assert_eq!(access(&g), "at-1");
    assert_eq!(w.server.requests(), 1, "the stored tokens were used as is");
}

#[tokio::test(start_paused = true)]
async fn a_consent_during_a_refresh_wins() {
    let w = World::new(true, 10).await;
    w.server.then(Step::SlowStart(Duration::from_secs(2)));
    let one = w.instance();
    let consent = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut fresh = grant(3600);
        fresh.tokens.access_token = SecretString::from("at-consent".to_owned());
        fresh.tokens.refresh_token = Some(SecretString::from("rt-consent".to_owned()));
        w.store.put_after_consent(&fresh).await.unwrap();
    };
    let (r, ()) = tokio::join!(usable(&one, "p"), consent);
    assert_eq!(access(&r.unwrap()), "at-consent");
    let stored = w.stored();
    assert_eq!(
        refresh_token(&stored),
        "rt-consent",
        "the consent's tokens stay"
    );
    assert!(stored.lease.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_rewrite_of_the_same_tokens_during_a_refresh_keeps_the_new_ones() {
    let w = World::new(true, 10).await;
    w.server.then(Step::SlowStart(Duration::from_secs(2)));
    let one = w.instance();
    // A key reseal rewrites the same tokens under a new version, mid-refresh.
    let reseal = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let same = w.stored();
        w.store.update(&same).await.unwrap();
    };
    let (r, ()) = tokio::join!(usable(&one, "p"), reseal);
    assert_eq!(access(&r.unwrap()), "at-1");
    let stored = w.stored();
    assert_eq!((stored.version, refresh_token(&stored)), (3, "rt-1"));
    assert!(
        stored.lease.is_none(),
        "the lease is released after the rewrite, not left to expire"
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_ends_the_grant_other_refusals_keep_it() {
    let w = World::new(true, 10).await;
    let one = w.instance();
    w.server.then(Step::Reject("invalid_client"));
    let r = usable(&one, "p").await;
    assert!(
        matches!(&r, Err(NoGrant::Retry(why)) if why.contains("invalid_client")),
        "{r:?}"
    );
    let stored = w.stored();
    assert_eq!((stored.status, stored.version), (GrantStatus::Active, 1));
    assert!(stored.lease.is_none());
    w.server.then(Step::Reject("invalid_grant"));
    assert_eq!(usable(&one, "p").await.unwrap_err(), NoGrant::NeedsConsent);
    let stored = w.stored();
    assert_eq!(
        (stored.status, stored.version),
        (GrantStatus::NeedsConsent, 2)
    );
    assert!(stored.lease.is_none());
}

#[tokio::test(start_paused = true)]
async fn callers_refused_with_the_same_token_share_one_forced_refresh() {
    // The token is fresh by the clock, but the upstream refused it (401).
    let w = World::new(true, 3000).await;
    w.server.then(Step::SlowStart(Duration::from_secs(1)));
    let one = w.instance();
    let refused = usable(&one, "p").await.unwrap();
    assert_eq!(w.server.requests(), 0);
    let policy = LeasePolicy::default();
    let (x, y) = tokio::join!(
        one.after_unauthorized(&refused, "p1", policy),
        one.after_unauthorized(&refused, "p2", policy)
    );
    assert_eq!(access(&x.unwrap()), "at-1");
    assert_eq!(access(&y.unwrap()), "at-1");
    // Another instance refused with the old token later: the newer grant.
    let late = w
        .instance()
        .after_unauthorized(&refused, "p3", policy)
        .await
        .unwrap();
    assert_eq!(access(&late), "at-1");
    assert_eq!(w.server.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_grant_asks_for_consent_without_presenting_anything() {
    let w = World::new(true, 10).await;
    w.store.make_unreadable("alice", "demo");
    assert_eq!(
        usable(&w.instance(), "p").await.unwrap_err(),
        NoGrant::NeedsConsent
    );
    assert_eq!(w.stored().status, GrantStatus::NeedsConsent);
    assert_eq!(w.server.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_scheduler_racing_a_proxy_caller_refreshes_once() {
    let w = World::new(true, 10).await;
    w.server.then(Step::SlowStart(Duration::from_secs(1)));
    let (scheduler, proxy) = (w.instance(), w.instance());
    let run = ScheduledRun {
        limit: 100,
        concurrency: 4,
        stop_at: tokio::time::Instant::now() + Duration::from_secs(60),
        policy: LeasePolicy::default(),
    };
    let (summary, g) = tokio::join!(
        scheduler.run_scheduled("scheduler", run),
        usable(&proxy, "p")
    );
    let summary = summary.unwrap();
    // Whoever took the lease refreshed; the scheduler does not wait for a
    // holder, the proxy caller does.
    assert_eq!(summary.due, 1, "{summary:?}");
    assert_eq!(summary.refreshed + summary.lease_lost, 1, "{summary:?}");
    assert_eq!(access(&g.unwrap()), "at-1");
    assert_eq!(w.server.requests(), 1);
}

/// A client-credentials target: one machine token for every user and every
/// instance, requested once however many callers need it at once, renewed
/// when it expires, and kept (never turned into a consent) when the server
/// refuses the client.
#[tokio::test(start_paused = true)]
async fn a_machine_token_is_requested_once_for_all_instances_and_callers() {
    let w = World::new(true, 3600).await;
    let mut machine = target();
    machine.name = "machine".into();
    if let TargetAuth::OAuth(o) = &mut machine.auth {
        o.flow = crate::domain::OAuthFlow::ClientCredentials;
    }
    crate::ports::TargetCatalog::put(&w.store, &machine)
        .await
        .unwrap();
    w.server.then(Step::SlowStart(Duration::from_secs(1)));
    let (a, b) = (w.instance(), w.instance());
    let calls = (0..20).map(|i| {
        let (r, machine) = (if i % 2 == 0 { &a } else { &b }, &machine);
        async move {
            r.machine_grant(machine, &format!("p{i}"), 60, LeasePolicy::default())
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(access(r.as_ref().unwrap()), "cc-1");
    }
    assert_eq!(w.server.requests(), 1, "one token request for 20 callers");
    let stored = w.store.peek(MACHINE_SUB, "machine").expect("stored");
    assert_eq!(access(&stored), "cc-1");
    assert!(stored.lease.is_none());

    // Expired: renewed once.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let g = a
        .machine_grant(&machine, "later", 60, LeasePolicy::default())
        .await
        .unwrap();
    assert_eq!((access(&g), w.server.requests()), ("cc-2", 2));

    // The server refuses the client: a passing failure, the grant kept.
    tokio::time::advance(Duration::from_secs(3600)).await;
    w.server.then(Step::Reject("invalid_client"));
    match b
        .machine_grant(&machine, "refused", 60, LeasePolicy::default())
        .await
    {
        Err(NoGrant::Retry(why)) => assert!(why.contains("invalid_client"), "{why}"),
        other => panic!("{other:?}"),
    }
    let kept = w.store.peek(MACHINE_SUB, "machine").unwrap();
    assert_eq!(kept.status, GrantStatus::Active);
    assert_eq!(access(&kept), "cc-2");

    // The scheduled refresh renews it ahead of expiry, like a user's grant.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let run = ScheduledRun {
        limit: 100,
        concurrency: 4,
        stop_at: tokio::time::Instant::now() + Duration::from_secs(60),
        policy: LeasePolicy::default(),
    };
    let summary = a.run_scheduled("scheduler", run).await.unwrap();
    assert!(summary.refreshed >= 1, "{summary:?}");
    let renewed = w.store.peek(MACHINE_SUB, "machine").unwrap();
    assert!(
        access(&renewed).starts_with("cc-") && access(&renewed) != "cc-2",
        "renewed by the scheduled run: {}",
        access(&renewed)
    );

    // The target's settings change (another resource): the token made for
    // the old ones is renewed at once, for the new ones.
    if let TargetAuth::OAuth(o) = &mut machine.auth {
        o.resource = Some("https://mcp.test/v2".into());
    }
    crate::ports::TargetCatalog::put(&w.store, &machine)
        .await
        .unwrap();
    let requests = w.server.requests();
    let g = a
        .machine_grant(&machine, "moved", 60, LeasePolicy::default())
        .await
        .unwrap();
    assert_eq!(w.server.requests(), requests + 1);
    assert_eq!(g.resource.as_deref(), Some("https://mcp.test/v2"));
}

/// A target converted to client credentials: its users' grants are never
/// renewed into machine tokens (they are deleted), and a machine token of
/// a target converted back is deleted rather than handed to a user.
#[tokio::test(start_paused = true)]
async fn grants_of_a_target_whose_flow_changed_are_deleted_not_renewed() {
    let w = World::new(true, 10).await;
    let mut converted = target();
    if let TargetAuth::OAuth(o) = &mut converted.auth {
        o.flow = crate::domain::OAuthFlow::ClientCredentials;
    }
    crate::ports::TargetCatalog::put(&w.store, &converted)
        .await
        .unwrap();
    let r = w.instance();
    assert!(matches!(usable(&r, "p").await, Err(NoGrant::Missing)));
    assert!(w.store.peek("alice", "demo").is_none());
    assert_eq!(w.server.requests(), 0, "no token request for alice's grant");

    // Its machine token, then the target back to per-user consents.
    let g = r
        .machine_grant(&converted, "m", 60, LeasePolicy::default())
        .await
        .unwrap();
    assert_eq!(access(&g), "cc-1");
    crate::ports::TargetCatalog::put(&w.store, &target())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    let outcome = r
        .refresh_grant(RefreshRequest {
            sub: MACHINE_SUB,
            target: "demo",
            owner: "s",
            margin: 60,
            force_from_version: None,
            seen_version: None,
            wait_for_winner: true,
            policy: LeasePolicy::default(),
        })
        .await;
    assert!(matches!(outcome, Outcome::NotFound), "{outcome:?}");
    assert!(w.store.peek(MACHINE_SUB, "demo").is_none());
}

/// Token exchange: the caller's token exchanged once per user and cached
/// until it nears expiry; a forced exchange (the upstream refused the cached
/// token) goes to the server again; refresh tokens are never kept; no token
/// to exchange and refusals are told apart.
#[tokio::test(start_paused = true)]
async fn exchanged_tokens_are_cached_per_user_until_they_expire() {
    let w = World::new(true, 3600).await;
    let mut exchange = target();
    exchange.name = "exchange".into();
    if let TargetAuth::OAuth(o) = &mut exchange.auth {
        o.flow = crate::domain::OAuthFlow::TokenExchange;
        o.exchange = Some(crate::domain::ExchangeSettings {
            subject_token_type: crate::domain::ACCESS_TOKEN_TYPE.into(),
            audience: None,
            identity_provider: None,
        });
    }
    let r = w.instance();
    let alice = SecretString::from("alice-token".to_owned());
    let bob = SecretString::from("bob-token".to_owned());
    let get = |sub: &'static str, token: Option<&'static SecretString>, force: bool| {
        let (r, exchange) = (&r, &exchange);
        async move { r.exchanged_grant(sub, exchange, token, 60, force).await }
    };
    let alice: &'static SecretString = Box::leak(Box::new(alice));
    let bob: &'static SecretString = Box::leak(Box::new(bob));

    let g = get("alice", Some(alice), false).await.unwrap();
    assert_eq!(access(&g), "xt-1-alice-token");
    assert!(
        g.tokens.refresh_token.is_none(),
        "refresh tokens are dropped"
    );
    assert!(w
        .store
        .peek("alice", "exchange")
        .unwrap()
        .tokens
        .refresh_token
        .is_none());
    // Cached: no second request, even with another of alice's tokens.
    let other = Box::leak(Box::new(SecretString::from("alice-token-2".to_owned())));
    assert_eq!(
        access(&get("alice", Some(other), false).await.unwrap()),
        "xt-1-alice-token"
    );
    assert_eq!(w.server.requests(), 1);
    // Per user.
    assert_eq!(
        access(&get("bob", Some(bob), false).await.unwrap()),
        "xt-2-bob-token"
    );
    // Forced: exchanged again.
    assert_eq!(
        access(&get("alice", Some(alice), true).await.unwrap()),
        "xt-3-alice-token"
    );
    // Near expiry: exchanged again.
    tokio::time::advance(Duration::from_secs(3600 - 30)).await;
    assert_eq!(
        access(&get("alice", Some(alice), false).await.unwrap()),
        "xt-4-alice-token"
    );
    assert_eq!(w.server.requests(), 4);
    // Nothing cached and nothing to exchange; a refusal.
    assert_eq!(
        get("carol", None, false).await.unwrap_err(),
        ExchangeFailure::NoSubjectToken
    );
    w.server.then(Step::Reject("invalid_grant"));
    assert_eq!(
        get("carol", Some(alice), false).await.unwrap_err(),
        ExchangeFailure::Refused("invalid_grant".into())
    );
    assert!(w.store.peek("carol", "exchange").is_none());
}
