//! The lease protocol itself (see the module docs of [`crate::tokens`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::SecretString;

use super::Refresher;
use crate::adapters::oauth::OAuthError;
pub use crate::domain::grant::MACHINE_SUB;
use crate::domain::{Grant, GrantStatus, Target, TargetAuth};
use crate::error::Error;
use crate::ports::RefreshCall;

pub(super) mod machine;

/// Time kept free at the end of a lease for writing the new tokens: the
/// token request times out this long before the lease runs out.
pub const WRITE_BUDGET: Duration = Duration::from_secs(4);

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
    /// The outcome's name in metrics and audit events.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Refreshed(_) => "refreshed",
            Outcome::AlreadyFresh(_) => "already_fresh",
            Outcome::LeaseLost => "lease_lost",
            Outcome::NeedsConsent => "needs_consent",
            Outcome::Transient(_) => "transient_failure",
            Outcome::NotFound => "not_found",
        }
    }

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

impl Refresher {
    /// Writes renewed tokens and releases `owner`'s lease in one write. If
    /// the lease ran out under us (a slow token endpoint) and may be someone
    /// else's now, the tokens, which are the newest, go in as a plain
    /// versioned write and that lease is left to its holder.
    pub(super) async fn write_renewed(
        &self,
        renewed: &Grant,
        owner: &str,
    ) -> crate::error::Result<Grant> {
        match self.grants.update_and_release(renewed, owner).await {
            Err(Error::NotLeaseOwner) => self.grants.update(renewed).await,
            other => other,
        }
    }

    /// Refreshes a grant under the lease protocol (see the module docs),
    /// noting the outcome for the request's metrics and audit trail.
    pub async fn refresh_grant(&self, req: RefreshRequest<'_>) -> Outcome {
        let (sub, target) = (req.sub.to_owned(), req.target.to_owned());
        let outcome = self.refresh_grant_unobserved(req).await;
        let name = outcome.name();
        crate::observe::note(|r| r.refreshes.push((sub, target, name)));
        outcome
    }

    async fn refresh_grant_unobserved(&self, req: RefreshRequest<'_>) -> Outcome {
        let RefreshRequest {
            sub,
            target,
            owner,
            wait_for_winner,
            policy,
            ..
        } = req;
        let client = match TokenClient::resolve(self, target).await {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let now = self.clock.now();
        let lease_until = now + policy.lease.as_secs() as i64;
        let leased = match self
            .grants
            .acquire_lease(sub, target, owner, now, lease_until)
            .await
        {
            Ok(g) => g,
            Err(Error::NotFound(_)) => return Outcome::NotFound,
            Err(Error::LeaseHeld) if wait_for_winner => return self.wait_for_other(req).await,
            Err(Error::LeaseHeld) => return Outcome::LeaseLost,
            Err(e) if e.is_unreadable() => return self.unreadable(sub, target, &e).await,
            Err(e) => return Outcome::Transient(e.to_string()),
        };
        let (outcome, released) = self.refresh_leased(leased, &client, req, lease_until).await;
        if released {
            return outcome;
        }
        match self.grants.release_lease(sub, target, owner).await {
            Ok(()) | Err(Error::NotLeaseOwner) | Err(Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not release refresh lease; it expires by itself")
            }
        }
        outcome
    }

    /// Refreshes a grant whose lease `req.owner` holds until `lease_until`;
    /// also tells whether the lease was released on the way (by the token
    /// write or by marking it dead).
    async fn refresh_leased(
        &self,
        grant: Grant,
        client: &TokenClient,
        req: RefreshRequest<'_>,
        lease_until: i64,
    ) -> (Outcome, bool) {
        let now = self.clock.now();
        let kept = |o: Outcome| (o, false);
        if grant.status == GrantStatus::NeedsConsent {
            return kept(Outcome::NeedsConsent);
        }
        if is_fresh(&grant, now, &req) {
            tracing::debug!(owner = req.owner, version = grant.version, seen = ?req.seen_version, "fresh after taking the lease");
            return kept(Outcome::AlreadyFresh(grant));
        }
        let TargetAuth::OAuth(settings) = &client.target.auth else {
            return kept(Outcome::NotFound);
        };
        let machine_target = settings.flow.is_machine();
        if machine_target != (grant.sub == MACHINE_SUB) {
            // A user's grant of a target that now uses client credentials,
            // or a machine token of one that no longer does: neither may be
            // renewed into the other's credentials. Gone.
            tracing::info!(target = %grant.target, machine = machine_target, "grant of a target whose flow changed; deleted");
            return match self.grants.delete(&grant.sub, &grant.target).await {
                Ok(()) | Err(Error::NotFound(_)) => (Outcome::NotFound, true),
                Err(e) => kept(Outcome::Transient(e.to_string())),
            };
        }
        if machine_target {
            return self
                .renew_machine_token(grant, settings, client, req, lease_until)
                .await;
        }
        let Some(refresh_token) = grant.tokens.refresh_token.clone() else {
            // Nothing to refresh with: only a new consent helps.
            return self.mark_dead(&grant).await;
        };
        // The refresh token goes back where it came from, and the client
        // secret only to the target's own token endpoint: when they differ
        // (the target now uses another authorization server), the grant is
        // dead.
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
            // Not written: a target's endpoint mistyped by an operator must
            // not end every grant; once it is put right, the grants work again.
            return kept(Outcome::NeedsConsent);
        }
        // The token request ends early enough to write its result while the
        // lease is still ours.
        let left =
            Duration::from_secs((lease_until - now).max(0) as u64).saturating_sub(WRITE_BUDGET);
        if left.is_zero() {
            return kept(Outcome::Transient("the refresh lease is too short".into()));
        }
        let request = self.issuer.refresh(RefreshCall {
            settings,
            secret: client.secret.as_ref(),
            token_endpoint,
            refresh_token: &refresh_token,
            scopes: &grant.scopes,
            resource: grant.resource.as_deref(),
            dpop_key: grant.tokens.dpop_key.as_ref(),
            now,
        });
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
                return self.mark_dead(&grant).await;
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
        let written = self.write_renewed(&updated, req.owner).await;
        match written {
            // The lease went with the write, or was no longer ours.
            Ok(g) => (Outcome::Refreshed(g), true),
            Err(Error::NotFound(_)) => (Outcome::NotFound, true),
            // The version moved. If the stored refresh token is still the
            // one presented, nobody refreshed (a key reseal rewrote the same
            // tokens): these new tokens are the only good ones, write them.
            // Otherwise someone else wrote (a new consent): theirs wins.
            Err(Error::StaleVersion) => {
                match self.grants.get(&grant.sub, &grant.target, true).await {
                    Ok(Some(stored))
                        if stored.status == GrantStatus::Active
                            && same_secret(
                                &stored.tokens.refresh_token,
                                &Some(refresh_token.clone()),
                            ) =>
                    {
                        let again = Grant {
                            version: stored.version,
                            ..updated
                        };
                        match self.grants.update(&again).await {
                            // A plain write: the lease is still ours to release.
                            Ok(g) => (Outcome::Refreshed(g), false),
                            Err(_) => kept(self.reread(&grant.sub, &grant.target).await),
                        }
                    }
                    _ => kept(self.reread(&grant.sub, &grant.target).await),
                }
            }
            Err(e) => kept(Outcome::Transient(e.to_string())),
        }
    }

    /// A grant that cannot be opened (tampered, moved from another user's
    /// key, or sealed with a key that was retired) is dead: retrying cannot
    /// mend it, so it is marked as needing consent and the user connects
    /// again.
    ///
    /// Boxed, as every path off the warm read is: a request's future holds
    /// only the path it usually takes (see `docs/performance-notes.md`).
    fn unreadable<'s>(
        &'s self,
        sub: &'s str,
        target: &'s str,
        e: &'s Error,
    ) -> BoxFuture<'s, Outcome> {
        Box::pin(self.mark_unreadable(sub, target, e))
    }

    async fn mark_unreadable(&self, sub: &str, target: &str, e: &Error) -> Outcome {
        tracing::error!(
            audit = "grant_unreadable",
            target = %target,
            error = %e,
            "a grant cannot be opened (altered in the table, or sealed with a retired key); the user must connect again"
        );
        if let Err(e) = self.grants.mark_unreadable(sub, target).await {
            tracing::warn!(error = %e, "could not mark an unreadable grant");
        }
        Outcome::NeedsConsent
    }

    /// Marks the grant dead; the same write drops any lease.
    async fn mark_dead(&self, grant: &Grant) -> (Outcome, bool) {
        match self
            .grants
            .mark_needs_consent(&grant.sub, &grant.target, grant.version)
            .await
        {
            Ok(_) => (Outcome::NeedsConsent, true),
            Err(Error::StaleVersion) => (self.reread(&grant.sub, &grant.target).await, false),
            Err(Error::NotFound(_)) => (Outcome::NotFound, true),
            Err(e) => (Outcome::Transient(e.to_string()), false),
        }
    }

    async fn reread(&self, sub: &str, target: &str) -> Outcome {
        match self.grants.get(sub, target, true).await {
            Ok(Some(g)) if g.status == GrantStatus::Active => Outcome::AlreadyFresh(g),
            Ok(Some(_)) => Outcome::NeedsConsent,
            Ok(None) => Outcome::NotFound,
            Err(e) if e.is_unreadable() => self.unreadable(sub, target, &e).await,
            Err(e) => Outcome::Transient(e.to_string()),
        }
    }

    async fn wait_for_other(&self, req: RefreshRequest<'_>) -> Outcome {
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
            let now = self.clock.now();
            match self.grants.get(sub, target, true).await {
                Ok(Some(g)) if g.status == GrantStatus::NeedsConsent => {
                    return Outcome::NeedsConsent
                }
                Ok(Some(g)) if is_fresh(&g, now, &req) => return Outcome::AlreadyFresh(g),
                Ok(Some(g)) if g.lease.as_ref().is_none_or(|l| l.until <= now) => {
                    // The holder finished without a new token, or died: try ourselves.
                    let retry = RefreshRequest {
                        wait_for_winner: false,
                        ..req
                    };
                    return Box::pin(self.refresh_grant(retry)).await;
                }
                Ok(Some(_)) => {}
                Ok(None) => return Outcome::NotFound,
                Err(e) if e.is_unreadable() => return self.unreadable(sub, target, &e).await,
                Err(e) => return Outcome::Transient(e.to_string()),
            }
            if tokio::time::Instant::now() >= deadline {
                return Outcome::LeaseLost;
            }
        }
    }

    /// The grant to call `target` with for `sub`, refreshed first when its
    /// access token is expired or expires within `margin` seconds. One read
    /// when the token is fresh; under the lease protocol otherwise, waiting
    /// for the winner when another instance is refreshing.
    pub async fn usable_grant(
        &self,
        sub: &str,
        target: &str,
        owner: &str,
        margin: i64,
        policy: LeasePolicy,
    ) -> Result<Arc<Grant>, NoGrant> {
        let grant = match self.grants.get_shared(sub, target, false).await {
            Ok(Some(g)) => g,
            Ok(None) => return Err(NoGrant::Missing),
            Err(e) if e.is_unreadable() => {
                return into_usable(self.unreadable(sub, target, &e).await).map(Arc::new)
            }
            Err(e) => return Err(NoGrant::Retry(e.to_string())),
        };
        if grant.status == GrantStatus::NeedsConsent {
            return Err(NoGrant::NeedsConsent);
        }
        if !grant.needs_refresh(self.clock.now(), margin) {
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
        self.in_flight(req, grant.version).await.map(Arc::new)
    }

    /// After the upstream refused `grant`'s access token (401): one forced
    /// refresh (or the newer tokens someone else already stored).
    pub async fn after_unauthorized(
        &self,
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
        self.in_flight(req, grant.version).await
    }

    /// `req` behind this instance's other callers for the same grant,
    /// sharing their outcome when it is newer than version `seen`.
    /// Boxed: a refresh is off the warm path.
    fn in_flight<'s>(
        &'s self,
        req: RefreshRequest<'s>,
        seen: u64,
    ) -> BoxFuture<'s, Result<Grant, NoGrant>> {
        Box::pin(self.in_flight_now(req, seen))
    }

    async fn in_flight_now(&self, req: RefreshRequest<'_>, seen: u64) -> Result<Grant, NoGrant> {
        let outcome = self
            .flights
            .run(
                req.sub,
                req.target,
                seen,
                || self.clock.now(),
                || self.refresh_grant(req),
            )
            .await;
        into_usable(outcome)
    }
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
    async fn resolve(refresher: &Refresher, name: &str) -> Result<Self, Outcome> {
        let target = match refresher.targets.get(name).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(Outcome::NotFound),
            Err(e) => return Err(Outcome::Transient(e.to_string())),
        };
        let TargetAuth::OAuth(settings) = &target.auth else {
            return Err(Outcome::NotFound);
        };
        let secret = match settings.client_secret_arn.as_deref() {
            Some(arn) => Some(
                refresher
                    .secrets
                    .secret(arn)
                    .await
                    .map_err(|e| Outcome::Transient(e.to_string()))?,
            ),
            None => None,
        };
        Ok(TokenClient { target, secret })
    }
}

fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    use secrecy::ExposeSecret;
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
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
