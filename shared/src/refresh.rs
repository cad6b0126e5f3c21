//! Token refresh with a lease, shared by the proxy (on demand) and the
//! scheduled function.
//!
//! Providers that rotate refresh tokens revoke the whole token family when an
//! old refresh token is presented twice, so at most one instance may refresh
//! a grant at a time:
//!
//! 0. resolve the target and its client secret (before the lease, so that
//!    the leased section is only the token request and one write);
//! 1. take the lease with a conditional write (owner, lease-until); the
//!    write returns the item as stored, which is the fresh re-read;
//! 2. if someone refreshed meanwhile (a newer version than the caller saw,
//!    or a token that is fresh), use their tokens;
//! 3. refresh at the token endpoint the grant came from, which must be the
//!    target's (the client secret goes nowhere else), with a timeout that
//!    ends [`WRITE_BUDGET`] before the lease does;
//! 4. write the new tokens only if the version is unchanged, releasing the
//!    lease in the same write when it is still ours;
//! 5. otherwise release the lease only if it is still ours.
//!
//! Within one instance, callers that need the same grant refreshed wait for
//! one another ([`Flights`]) and share the result, so an instance sends at
//! most one caller to the table's lease at a time and the others do no I/O.
//!
//! A token response lost after the server issued it (the connection dropped,
//! the timeout fired) leaves the grant with the refresh token that was
//! presented. A server that does not rotate refresh tokens accepts it again
//! at the next refresh. One that rotates and detects reuse sees it twice and
//! revokes the grant: the next refresh gets `invalid_grant`, and the user is
//! asked to connect again. Nothing else is lost.
//!
//! A refresh therefore costs two conditional writes: take the lease, then
//! write the tokens and release.
//!
//! `invalid_grant` marks the grant as needing consent (conditional on the
//! version); a transient failure leaves the grant as it was. So does any
//! other refusal (`invalid_client`, `unauthorized_client`, ...): it says the
//! gateway's client is misconfigured, which a new consent cannot mend, and
//! marking every user's grant dead for it would lose them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use secrecy::SecretString;
use serde::Serialize;

use crate::adapters::oauth::{self, OAuthError};
use crate::domain::{Grant, GrantStatus, Target, TargetAuth};
use crate::error::Error;
use crate::AppState;

/// Time kept free at the end of a lease for writing the new tokens: the
/// token request times out this long before the lease runs out.
pub const WRITE_BUDGET: Duration = Duration::from_secs(4);

/// One instance's refreshes in flight, by grant: callers that need the same
/// grant refreshed queue here, and each finds the grant the one before it
/// got.
#[derive(Default)]
pub struct Flights {
    gates: std::sync::Mutex<HashMap<(String, String), Gate>>,
}

/// Where the callers for one grant queue, holding the last attempt's
/// outcome and when it ended.
type Gate = Arc<tokio::sync::Mutex<Option<(std::time::Instant, Outcome)>>>;

impl Flights {
    fn gate(&self, sub: &str, target: &str) -> Gate {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry((sub.to_owned(), target.to_owned()))
            .or_default()
            .clone()
    }

    fn done(&self, sub: &str, target: &str, gate: Gate) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        // The map's copy and ours: nobody else is queued.
        if Arc::strong_count(&gate) <= 2 {
            gates.remove(&(sub.to_owned(), target.to_owned()));
        }
    }

    /// Runs `refresh` for (`sub`, `target`) after the callers queued before
    /// this one, unless the grant one of them got is newer than the version
    /// `seen` and still usable at `now()`.
    async fn run<F, Fut>(
        &self,
        sub: &str,
        target: &str,
        seen: u64,
        now: impl Fn() -> i64,
        refresh: F,
    ) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        let arrived = std::time::Instant::now();
        let gate = self.gate(sub, target);
        let outcome = {
            let mut last = gate.lock().await;
            match last.as_ref() {
                // An attempt ended while this caller waited: its outcome,
                // whatever it was, is this caller's too (a failure is not
                // retried once per queued caller).
                Some((ended, outcome))
                    if *ended >= arrived
                        && match outcome {
                            Outcome::Refreshed(g) | Outcome::AlreadyFresh(g) => g.version > seen,
                            _ => true,
                        } =>
                {
                    match outcome {
                        Outcome::Refreshed(g) => Outcome::AlreadyFresh(g.clone()),
                        other => other.clone(),
                    }
                }
                // An earlier attempt's grant, still newer than what this
                // caller saw and not expired.
                Some((_, Outcome::Refreshed(g) | Outcome::AlreadyFresh(g)))
                    if g.version > seen
                        && g.status == GrantStatus::Active
                        && !g.needs_refresh(now(), 0) =>
                {
                    Outcome::AlreadyFresh(g.clone())
                }
                _ => {
                    let outcome = refresh().await;
                    *last = Some((std::time::Instant::now(), outcome.clone()));
                    outcome
                }
            }
        };
        self.done(sub, target, gate);
        outcome
    }
}

/// Timing of the lease protocol.
#[derive(Debug, Clone, Copy)]
pub struct LeasePolicy {
    /// How long a lease holds: longer than `http_timeout` plus
    /// [`WRITE_BUDGET`], or the token request is cut short to fit.
    pub lease: Duration,
    /// Timeout of the token request.
    pub http_timeout: Duration,
    /// How long a caller that lost the lease waits for the winner.
    /// At least `lease`, so a dead holder cannot outlast it.
    pub wait: Duration,
    /// Poll interval while waiting.
    pub poll: Duration,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            lease: Duration::from_secs(15),
            http_timeout: Duration::from_secs(10),
            wait: Duration::from_secs(16),
            poll: Duration::from_millis(200),
        }
    }
}

/// What a refresh attempt came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// This caller refreshed the tokens.
    Refreshed(Grant),
    /// The tokens were fresh already (someone else refreshed them).
    AlreadyFresh(Grant),
    /// Another instance holds the lease (and the wait, if any, ran out).
    LeaseLost,
    /// The grant is dead: the user must consent again.
    NeedsConsent,
    /// A passing failure; the grant is unchanged.
    Transient(String),
    /// There is no grant.
    NotFound,
}

impl Outcome {
    /// The usable grant, if the outcome has one.
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Outcome::Refreshed(g) | Outcome::AlreadyFresh(g) => Some(g),
            _ => None,
        }
    }
}

/// One refresh request.
#[derive(Debug, Clone, Copy)]
pub struct RefreshRequest<'a> {
    /// The user.
    pub sub: &'a str,
    /// The target.
    pub target: &'a str,
    /// Identifies this instance as lease owner.
    pub owner: &'a str,
    /// Refresh when the access token expires within this many seconds.
    pub margin: i64,
    /// Refresh even a fresh token, unless the grant changed since this
    /// version (the upstream refused the token of that version).
    pub force_from_version: Option<u64>,
    /// The version the caller saw when it decided to refresh: a newer one
    /// whose token has not expired is someone else's refresh, used as is.
    pub seen_version: Option<u64>,
    /// Wait (up to `policy.wait`) for the winner's tokens when the lease is held.
    pub wait_for_winner: bool,
    /// Lease timing.
    pub policy: LeasePolicy,
}

/// Refreshes a grant under the lease protocol (see the module docs).
pub async fn refresh_grant(state: &AppState, req: RefreshRequest<'_>) -> Outcome {
    let RefreshRequest {
        sub,
        target,
        owner,
        wait_for_winner,
        policy,
        ..
    } = req;
    let client = match TokenClient::resolve(state, target).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let now = state.clock.now();
    let lease_until = now + policy.lease.as_secs() as i64;
    let leased = match state
        .grants
        .acquire_lease(sub, target, owner, now, lease_until)
        .await
    {
        Ok(g) => g,
        Err(Error::NotFound(_)) => return Outcome::NotFound,
        Err(Error::LeaseHeld) if wait_for_winner => return wait_for_other(state, req).await,
        Err(Error::LeaseHeld) => return Outcome::LeaseLost,
        Err(e) if e.is_unreadable() => return unreadable(state, sub, target, &e).await,
        Err(e) => return Outcome::Transient(e.to_string()),
    };
    let (outcome, released) = refresh_leased(state, leased, &client, req, lease_until).await;
    if released {
        return outcome;
    }
    match state.grants.release_lease(sub, target, owner).await {
        Ok(()) | Err(Error::NotLeaseOwner) | Err(Error::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not release refresh lease; it expires by itself")
        }
    }
    outcome
}

fn is_fresh(grant: &Grant, now: i64, req: &RefreshRequest<'_>) -> bool {
    match req.force_from_version {
        // Forced (the upstream refused the token of version v): fresh only if it changed since.
        Some(v) => grant.version > v,
        None => {
            !grant.needs_refresh(now, req.margin)
                || req
                    .seen_version
                    .is_some_and(|v| grant.version > v && !grant.needs_refresh(now, 0))
        }
    }
}

/// What a token request for a target needs, resolved before the lease.
struct TokenClient {
    target: Target,
    secret: Option<SecretString>,
}

impl TokenClient {
    async fn resolve(state: &AppState, name: &str) -> Result<Self, Outcome> {
        let target = match state.targets.get(name).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(Outcome::NotFound),
            Err(e) => return Err(Outcome::Transient(e.to_string())),
        };
        let TargetAuth::OAuth(settings) = &target.auth else {
            return Err(Outcome::NotFound);
        };
        let secret = state
            .client_secret(settings.client_secret_arn.as_deref())
            .await
            .map_err(|e| Outcome::Transient(e.to_string()))?;
        Ok(TokenClient { target, secret })
    }
}

/// Refreshes a grant whose lease `req.owner` holds until `lease_until`;
/// also tells whether the lease was released on the way (by the token write
/// or by marking it dead).
async fn refresh_leased(
    state: &AppState,
    grant: Grant,
    client: &TokenClient,
    req: RefreshRequest<'_>,
    lease_until: i64,
) -> (Outcome, bool) {
    let now = state.clock.now();
    let kept = |o: Outcome| (o, false);
    if grant.status == GrantStatus::NeedsConsent {
        return kept(Outcome::NeedsConsent);
    }
    if is_fresh(&grant, now, &req) {
        tracing::debug!(owner = req.owner, version = grant.version, seen = ?req.seen_version, "fresh after taking the lease");
        return kept(Outcome::AlreadyFresh(grant));
    }
    let Some(refresh_token) = grant.tokens.refresh_token.clone() else {
        // Nothing to refresh with: only a new consent helps.
        return mark_dead(state, &grant).await;
    };
    let TargetAuth::OAuth(settings) = &client.target.auth else {
        return kept(Outcome::NotFound);
    };
    // The refresh token goes back where it came from, and the client secret
    // only to the target's own token endpoint: when they differ (the
    // target now uses another authorization server), the grant is dead.
    let token_endpoint = grant
        .token_endpoint
        .as_deref()
        .unwrap_or(&settings.token_endpoint);
    if token_endpoint != settings.token_endpoint {
        tracing::warn!(
            audit = "refresh_refused",
            target = %grant.target,
            "the grant's token endpoint is not the target's; not sending its refresh token or the client secret there, the user must connect again"
        );
        // Not written: a target's endpoint mistyped by an operator must not
        // end every grant; once it is put right, the grants work again.
        return kept(Outcome::NeedsConsent);
    }
    // The token request ends early enough to write its result while the
    // lease is still ours.
    let left = Duration::from_secs((lease_until - now).max(0) as u64).saturating_sub(WRITE_BUDGET);
    if left.is_zero() {
        return kept(Outcome::Transient("the refresh lease is too short".into()));
    }
    let endpoint = oauth::TokenEndpoint {
        http: &state.http,
        settings,
        secret: client.secret.as_ref(),
    };
    let request = endpoint.refresh(
        token_endpoint,
        &refresh_token,
        &grant.scopes,
        grant.resource.as_deref(),
        now,
    );
    let timeout = req.policy.http_timeout.min(left);
    tracing::debug!(
        owner = req.owner,
        version = grant.version,
        lease_until,
        ?timeout,
        "presenting the refresh token"
    );
    let issued = match tokio::time::timeout(timeout, request).await {
        Err(_) => return kept(Outcome::Transient("token endpoint timed out".into())),
        Ok(Err(OAuthError::Rejected { error, .. })) if error == "invalid_grant" => {
            tracing::info!(sub = %grant.sub, target = %grant.target, error = %error, "refresh rejected; consent needed");
            return mark_dead(state, &grant).await;
        }
        Ok(Err(OAuthError::Rejected { error, .. })) => {
            tracing::error!(target = %grant.target, error = %error, "the token endpoint refused the gateway's client; grant kept, check the target's client settings");
            return kept(Outcome::Transient(format!(
                "the authorization server refused the gateway's client ({error})"
            )));
        }
        Ok(Err(e)) => return kept(Outcome::Transient(e.to_string())),
        Ok(Ok(issued)) => issued,
    };
    let updated = Grant {
        tokens: issued.tokens,
        expires_at: issued.expires_at,
        scopes: issued.scopes.unwrap_or_else(|| grant.scopes.clone()),
        updated_at: now,
        ..grant.clone()
    };
    tracing::debug!(
        owner = req.owner,
        version = grant.version,
        "token response received"
    );
    let written = match state.grants.update_and_release(&updated, req.owner).await {
        // The lease ran out under us (a slow token endpoint) and may be
        // someone else's now: write the tokens, which are the newest, as a
        // plain versioned write and leave that lease to its holder.
        Err(Error::NotLeaseOwner) => state.grants.update(&updated).await,
        other => other,
    };
    match written {
        // The lease went with the write, or was no longer ours.
        Ok(g) => (Outcome::Refreshed(g), true),
        Err(Error::NotFound(_)) => (Outcome::NotFound, true),
        // The version moved. If the stored refresh token is still the one
        // presented, nobody refreshed (a key reseal rewrote the same tokens):
        // these new tokens are the only good ones, write them. Otherwise
        // someone else wrote (a new consent): theirs wins.
        Err(Error::StaleVersion) => match state.grants.get(&grant.sub, &grant.target, true).await {
            Ok(Some(stored))
                if stored.status == GrantStatus::Active
                    && same_secret(&stored.tokens.refresh_token, &Some(refresh_token.clone())) =>
            {
                let again = Grant {
                    version: stored.version,
                    ..updated
                };
                match state.grants.update(&again).await {
                    Ok(g) => (Outcome::Refreshed(g), true),
                    Err(_) => kept(reread(state, &grant.sub, &grant.target).await),
                }
            }
            _ => kept(reread(state, &grant.sub, &grant.target).await),
        },
        Err(e) => kept(Outcome::Transient(e.to_string())),
    }
}

/// A grant that cannot be opened (tampered, moved from another user's key,
/// or sealed with a key that was retired) is dead: retrying cannot mend it,
/// so it is marked as needing consent and the user connects again.
async fn unreadable(state: &AppState, sub: &str, target: &str, e: &Error) -> Outcome {
    tracing::error!(
        audit = "grant_unreadable",
        target = %target,
        error = %e,
        "a grant cannot be opened (altered in the table, or sealed with a retired key); the user must connect again"
    );
    if let Err(e) = state.grants.mark_unreadable(sub, target).await {
        tracing::warn!(error = %e, "could not mark an unreadable grant");
    }
    Outcome::NeedsConsent
}

fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    use secrecy::ExposeSecret;
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

/// Marks the grant dead; the same write drops any lease.
async fn mark_dead(state: &AppState, grant: &Grant) -> (Outcome, bool) {
    match state
        .grants
        .mark_needs_consent(&grant.sub, &grant.target, grant.version)
        .await
    {
        Ok(_) => (Outcome::NeedsConsent, true),
        Err(Error::StaleVersion) => (reread(state, &grant.sub, &grant.target).await, false),
        Err(Error::NotFound(_)) => (Outcome::NotFound, true),
        Err(e) => (Outcome::Transient(e.to_string()), false),
    }
}

async fn reread(state: &AppState, sub: &str, target: &str) -> Outcome {
    match state.grants.get(sub, target, true).await {
        Ok(Some(g)) if g.status == GrantStatus::Active => Outcome::AlreadyFresh(g),
        Ok(Some(_)) => Outcome::NeedsConsent,
        Ok(None) => Outcome::NotFound,
        Err(e) if e.is_unreadable() => unreadable(state, sub, target, &e).await,
        Err(e) => Outcome::Transient(e.to_string()),
    }
}

async fn wait_for_other(state: &AppState, req: RefreshRequest<'_>) -> Outcome {
    let RefreshRequest {
        sub,
        target,
        policy,
        ..
    } = req;
    let deadline = tokio::time::Instant::now() + policy.wait;
    // Back off while waiting: every waiter's read lands on the same item.
    let mut poll = policy.poll;
    loop {
        tokio::time::sleep(poll).await;
        poll = (poll * 3 / 2).min(Duration::from_secs(1));
        let now = state.clock.now();
        match state.grants.get(sub, target, true).await {
            Ok(Some(g)) if g.status == GrantStatus::NeedsConsent => return Outcome::NeedsConsent,
            Ok(Some(g)) if is_fresh(&g, now, &req) => return Outcome::AlreadyFresh(g),
            Ok(Some(g)) if g.lease.as_ref().is_none_or(|l| l.until <= now) => {
                // The holder finished without a new token, or died: try ourselves.
                let retry = RefreshRequest {
                    wait_for_winner: false,
                    ..req
                };
                return Box::pin(refresh_grant(state, retry)).await;
            }
            Ok(Some(_)) => {}
            Ok(None) => return Outcome::NotFound,
            Err(e) if e.is_unreadable() => return unreadable(state, sub, target, &e).await,
            Err(e) => return Outcome::Transient(e.to_string()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Outcome::LeaseLost;
        }
    }
}

/// Counts of one scheduled run.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Grants found due.
    pub due: usize,
    /// Refreshed by this run.
    pub refreshed: usize,
    /// Already refreshed by someone else.
    pub already_fresh: usize,
    /// Skipped: another instance held the lease.
    pub lease_lost: usize,
    /// Refresh rejected: consent needed.
    pub needs_consent: usize,
    /// Passing failures, left for a later run.
    pub transient_failure: usize,
    /// Due grants not started because the deadline came near.
    pub skipped_deadline: usize,
}

impl Summary {
    /// The summary as a CloudWatch Embedded Metric Format document.
    pub fn to_emf(&self, now_ms: i64) -> serde_json::Value {
        serde_json::json!({
            "_aws": {
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "McpOAuthGateway",
                    "Dimensions": [["Function"]],
                    "Metrics": [
                        {"Name": "Due", "Unit": "Count"},
                        {"Name": "Refreshed", "Unit": "Count"},
                        {"Name": "AlreadyFresh", "Unit": "Count"},
                        {"Name": "LeaseLost", "Unit": "Count"},
                        {"Name": "NeedsConsent", "Unit": "Count"},
                        {"Name": "TransientFailure", "Unit": "Count"},
                        {"Name": "SkippedDeadline", "Unit": "Count"}
                    ]
                }]
            },
            "Function": "token-refresh",
            "Due": self.due,
            "Refreshed": self.refreshed,
            "AlreadyFresh": self.already_fresh,
            "LeaseLost": self.lease_lost,
            "NeedsConsent": self.needs_consent,
            "TransientFailure": self.transient_failure,
            "SkippedDeadline": self.skipped_deadline,
        })
    }
}

/// Settings of one scheduled run.
#[derive(Debug, Clone, Copy)]
pub struct ScheduledRun {
    /// Most grants taken in one run.
    pub limit: usize,
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// No new refresh starts after this instant.
    pub stop_at: tokio::time::Instant,
    /// Lease timing.
    pub policy: LeasePolicy,
}

/// One scheduled run: refreshes the grants whose access token expires within
/// the configured window.
pub async fn run_scheduled(
    state: &AppState,
    owner: &str,
    run: ScheduledRun,
) -> Result<Summary, Error> {
    let now = state.clock.now();
    let window = state.config.refresh_window.as_secs() as i64;
    let due = state
        .grants
        .due_for_refresh(now + window, run.limit)
        .await?;
    let mut summary = Summary {
        due: due.len(),
        ..Summary::default()
    };
    let outcomes: Vec<Option<Outcome>> = futures::stream::iter(due)
        .map(|key| async move {
            if tokio::time::Instant::now() >= run.stop_at {
                return None;
            }
            let req = RefreshRequest {
                sub: &key.sub,
                target: &key.target,
                owner,
                margin: window,
                force_from_version: None,
                seen_version: None,
                wait_for_winner: false,
                policy: run.policy,
            };
            Some(refresh_grant(state, req).await)
        })
        .buffer_unordered(run.concurrency.max(1))
        .collect()
        .await;
    for outcome in outcomes {
        match outcome {
            None => summary.skipped_deadline += 1,
            Some(Outcome::Refreshed(_)) => summary.refreshed += 1,
            Some(Outcome::AlreadyFresh(_)) | Some(Outcome::NotFound) => summary.already_fresh += 1,
            Some(Outcome::LeaseLost) => summary.lease_lost += 1,
            Some(Outcome::NeedsConsent) => summary.needs_consent += 1,
            Some(Outcome::Transient(why)) => {
                tracing::warn!(reason = %why, "refresh failed; will retry on a later run");
                summary.transient_failure += 1
            }
        }
    }
    Ok(summary)
}

/// Handles one EventBridge scheduled event: a scheduled run that stops
/// taking new work `safety` before the invocation's `remaining` time runs
/// out. Returns the summary, which is also logged as EMF metrics.
pub async fn handle_scheduled_event(
    state: &AppState,
    event: &serde_json::Value,
    remaining: Duration,
    concurrency: usize,
) -> Result<Summary, Error> {
    let safety = Duration::from_secs(5).min(remaining / 4);
    let run = ScheduledRun {
        limit: 10_000,
        concurrency,
        stop_at: tokio::time::Instant::now() + remaining.saturating_sub(safety),
        policy: LeasePolicy::default(),
    };
    let owner = format!("scheduler-{}", crate::crypto::random_token(8));
    tracing::info!(
        event_id = event.get("id").and_then(|v| v.as_str()).unwrap_or("-"),
        source = event.get("source").and_then(|v| v.as_str()).unwrap_or("-"),
        "scheduled refresh starting"
    );
    let summary = run_scheduled(state, &owner, run).await?;
    let now_ms = state.clock.now() * 1000;
    // EMF: CloudWatch turns this log line into metrics.
    println!("{}", summary.to_emf(now_ms));
    tracing::info!(?summary, "scheduled refresh finished");
    Ok(summary)
}

/// Why there is no usable grant for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoGrant {
    /// The user never connected the target (or disconnected it).
    Missing,
    /// The grant is dead: the user must consent again.
    NeedsConsent,
    /// A passing failure (authorization server down, lease not released in
    /// time): retry later; the grant is unchanged.
    Retry(String),
}

/// The grant to call `target` with for `sub`, refreshed first when its
/// access token is expired or expires within `margin` seconds. One read when
/// the token is fresh; under the lease protocol otherwise, waiting for the
/// winner when another instance is refreshing.
pub async fn usable_grant(
    state: &AppState,
    sub: &str,
    target: &str,
    owner: &str,
    margin: i64,
    policy: LeasePolicy,
) -> Result<Grant, NoGrant> {
    let grant = match state.grants.get(sub, target, false).await {
        Ok(Some(g)) => g,
        Ok(None) => return Err(NoGrant::Missing),
        Err(e) if e.is_unreadable() => {
            return into_usable(unreadable(state, sub, target, &e).await)
        }
        Err(e) => return Err(NoGrant::Retry(e.to_string())),
    };
    if grant.status == GrantStatus::NeedsConsent {
        return Err(NoGrant::NeedsConsent);
    }
    if !grant.needs_refresh(state.clock.now(), margin) {
        return Ok(grant);
    }
    let req = RefreshRequest {
        sub,
        target,
        owner,
        margin,
        force_from_version: None,
        seen_version: Some(grant.version),
        wait_for_winner: true,
        policy,
    };
    let outcome = state
        .refreshes
        .run(
            sub,
            target,
            grant.version,
            || state.clock.now(),
            || refresh_grant(state, req),
        )
        .await;
    into_usable(outcome)
}

/// After the upstream refused `grant`'s access token (401): one forced
/// refresh (or the newer tokens someone else already stored).
pub async fn after_unauthorized(
    state: &AppState,
    grant: &Grant,
    owner: &str,
    policy: LeasePolicy,
) -> Result<Grant, NoGrant> {
    let req = RefreshRequest {
        sub: &grant.sub,
        target: &grant.target,
        owner,
        margin: 0,
        force_from_version: Some(grant.version),
        seen_version: Some(grant.version),
        wait_for_winner: true,
        policy,
    };
    let outcome = state
        .refreshes
        .run(
            &grant.sub,
            &grant.target,
            grant.version,
            || state.clock.now(),
            || refresh_grant(state, req),
        )
        .await;
    into_usable(outcome)
}

fn into_usable(outcome: Outcome) -> Result<Grant, NoGrant> {
    match outcome {
        Outcome::Refreshed(g) | Outcome::AlreadyFresh(g) => Ok(g),
        Outcome::NeedsConsent => Err(NoGrant::NeedsConsent),
        Outcome::NotFound => Err(NoGrant::Missing),
        Outcome::LeaseLost => Err(NoGrant::Retry(
            "another instance is still refreshing".into(),
        )),
        Outcome::Transient(why) => Err(NoGrant::Retry(why)),
    }
}
