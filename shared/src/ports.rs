//! Ports: the narrow interfaces the flows depend on.
//!
//! Stores return domain types with secrets already decrypted; sealing is the
//! adapter's job. Expiry is always checked in code by the store: DynamoDB's
//! TTL sweep may leave an expired item readable for hours, so TTL attributes
//! only keep the table small.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::adapters::oauth::{IssuedTokens, OAuthError};
use crate::crypto::KeySet;
use crate::domain::{
    Grant, GrantKey, OAuthSettings, PendingAuthorization, Target, UpstreamSession,
};
use crate::error::Result;

/// Wall clock in Unix seconds; a port so that tests can move time.
pub trait Clock: Send + Sync {
    /// The current time in Unix seconds.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// Users' grants.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Reads a grant; `consistent` asks for a strongly consistent read.
    async fn get(&self, sub: &str, target: &str, consistent: bool) -> Result<Option<Grant>>;

    /// [`GrantStore::get`], shared: a store that keeps grants in memory
    /// hands out its copy instead of a new one per read.
    async fn get_shared(
        &self,
        sub: &str,
        target: &str,
        consistent: bool,
    ) -> Result<Option<Arc<Grant>>> {
        Ok(self.get(sub, target, consistent).await?.map(Arc::new))
    }

    /// Stores a new grant (version 1). Fails with `AlreadyExists` if one exists.
    async fn create(&self, grant: &Grant) -> Result<Grant>;

    /// Replaces tokens, expiry, scopes and status if the stored version is
    /// still `grant.version`; returns the stored grant with the next version.
    /// Fails with `StaleVersion` otherwise (or `NotFound`). Leases are left alone.
    async fn update(&self, grant: &Grant) -> Result<Grant>;

    /// [`GrantStore::update`] and releasing `owner`'s lease in the same
    /// write: one conditional write where a refresh would otherwise make two.
    /// Fails with `NotLeaseOwner` (and writes nothing) when `owner` no longer
    /// holds the lease, `StaleVersion` when the version moved, `NotFound`.
    async fn update_and_release(&self, grant: &Grant, owner: &str) -> Result<Grant>;

    /// Stores the grant a completed consent produced, creating it or replacing
    /// whatever was there (and any lease), with a version above the old one.
    async fn put_after_consent(&self, grant: &Grant) -> Result<Grant>;

    /// Takes the refresh lease for `owner` until `until`, if nobody else holds
    /// a lease that is still live at `now`. Fails with `LeaseHeld` otherwise,
    /// or `NotFound` when there is no grant.
    async fn acquire_lease(
        &self,
        sub: &str,
        target: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Grant>;

    /// Releases the lease if `owner` still holds it; `NotLeaseOwner` otherwise.
    async fn release_lease(&self, sub: &str, target: &str, owner: &str) -> Result<()>;

    /// Marks the grant as needing consent if the stored version is
    /// `expected_version`; `StaleVersion` otherwise. The grant leaves the
    /// refresh-due index, so the scheduler skips it.
    async fn mark_needs_consent(
        &self,
        sub: &str,
        target: &str,
        expected_version: u64,
    ) -> Result<Grant>;

    /// Marks a grant that cannot be opened (see [`crate::Error::is_unreadable`])
    /// as needing consent, without reading it: it leaves the refresh-due
    /// index and any lease is dropped. No error when it does not exist.
    async fn mark_unreadable(&self, sub: &str, target: &str) -> Result<()>;

    /// Deletes the grant (no error when it does not exist).
    async fn delete(&self, sub: &str, target: &str) -> Result<()>;

    /// Active, refreshable grants whose access token expires at or before
    /// `until`, soonest first, at most `limit`.
    async fn due_for_refresh(&self, until: i64, limit: usize) -> Result<Vec<GrantKey>>;

    /// All grants of one user.
    async fn list_for_user(&self, sub: &str) -> Result<Vec<Grant>>;
}

/// Pending authorizations (consents in progress).
#[async_trait]
pub trait AuthorizationStore: Send + Sync {
    /// Stores a new pending authorization.
    async fn create(&self, pending: &PendingAuthorization) -> Result<()>;

    /// Reads a pending authorization without consuming it. Expired ones
    /// fail with `AuthorizationExpired`, missing ones with `AuthorizationUsed`.
    async fn peek(&self, id: &str, now: i64) -> Result<PendingAuthorization>;

    /// Binds the pending authorization to the browser whose binding cookie
    /// has SHA-256 `browser_digest`: the first binding wins, atomically.
    /// Binding again from the same browser succeeds; from another browser it
    /// fails with `OtherBrowser`. Missing, used or expired authorizations
    /// fail as in [`AuthorizationStore::peek`].
    async fn bind_browser(
        &self,
        pending: &PendingAuthorization,
        browser_digest: &str,
        now: i64,
    ) -> Result<()>;

    /// Atomically removes and returns the pending authorization if its state
    /// digest matches and it has not expired at `now`. A second consume fails
    /// with `AuthorizationUsed`; an expired one with `AuthorizationExpired`; a
    /// wrong digest with `StateMismatch` (and the item stays).
    async fn consume(&self, id: &str, state_digest: &str, now: i64)
        -> Result<PendingAuthorization>;
}

/// Registered targets.
#[async_trait]
pub trait TargetCatalog: Send + Sync {
    /// Creates or replaces a target.
    async fn put(&self, target: &Target) -> Result<()>;
    /// Reads a target.
    async fn get(&self, name: &str) -> Result<Option<Target>>;
    /// Reads a target from the store itself, past any cache: for the rare
    /// paths where another instance's recent change matters (consents, an
    /// upstream moving to another authorization server).
    async fn get_fresh(&self, name: &str) -> Result<Option<Target>> {
        self.get(name).await
    }
    /// Lists all targets, by name. Shared, because the proxy reads the list
    /// on every call and a target carries its whole tool catalog.
    async fn list(&self) -> Result<Vec<Arc<Target>>>;
    /// [`TargetCatalog::list`], shared: a catalog that keeps the list in
    /// memory hands out the list itself, the same until it changes.
    async fn list_shared(&self) -> Result<Arc<Vec<Arc<Target>>>> {
        Ok(Arc::new(self.list().await?))
    }
    /// Replaces only the tool catalog of `target`, if the target is still
    /// stored exactly as `target` says (not removed, not changed by an
    /// operator since it was read); `StaleVersion` otherwise.
    async fn put_catalog(&self, target: &Target, catalog: &[serde_json::Value]) -> Result<()>;
    /// Removes a target; `NotFound` when there is none.
    async fn delete(&self, name: &str) -> Result<()>;
}

/// The policy set (Cedar text), stored with the targets.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The stored policy set, if any (its integrity checked).
    async fn get_policies(&self) -> Result<Option<String>>;
    /// Stores the policy set, or removes it (`None`: everything allowed).
    async fn put_policies(&self, text: Option<&str>) -> Result<()>;
}

/// Upstream MCP sessions per (user, target).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates or replaces the session.
    async fn put(&self, session: &UpstreamSession) -> Result<()>;
    /// Reads the session if it has not expired at `now`.
    async fn get(&self, sub: &str, target: &str, now: i64) -> Result<Option<UpstreamSession>>;
    /// Forgets the session.
    async fn delete(&self, sub: &str, target: &str) -> Result<()>;
    /// Forgets the session if it is still `session_id`, in one conditional
    /// write: false when none is kept or another replaced it (another
    /// instance's newer session stays).
    async fn delete_if(&self, sub: &str, target: &str, session_id: &str) -> Result<bool>;
}

/// Secret values by ARN, cached in the warm instance.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret string stored under `arn`.
    async fn secret(&self, arn: &str) -> Result<SecretString>;
    /// Creates the secret `name` with `value`, or replaces its value; returns its ARN.
    async fn store(&self, name: &str, value: &SecretString) -> Result<String>;
}

/// The gateway key set, cached in the warm instance.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// The current key set (cached).
    async fn key_set(&self) -> Result<Arc<KeySet>>;
    /// A key set that holds `key_id`, refetching once if the cached one does
    /// not (a key was added since the instance warmed up).
    async fn key_set_with(&self, key_id: &str) -> Result<Arc<KeySet>>;
}

/// One refresh-token request (RFC 6749 §6), as the lease protocol makes it.
#[derive(Clone, Copy)]
pub struct RefreshCall<'a> {
    /// The target's client settings (client id, authentication method).
    pub settings: &'a OAuthSettings,
    /// The client secret, for confidential clients.
    pub secret: Option<&'a SecretString>,
    /// The token endpoint the grant came from.
    pub token_endpoint: &'a str,
    /// The refresh token to present.
    pub refresh_token: &'a SecretString,
    /// The scopes to ask for again.
    pub scopes: &'a [String],
    /// The RFC 8707 resource the grant is for.
    pub resource: Option<&'a str>,
    /// The grant's DPoP key, when its tokens are bound to one.
    pub dpop_key: Option<&'a SecretString>,
    /// Now, in Unix seconds (to turn `expires_in` into an instant).
    pub now: i64,
}

/// What a Client Credentials token request needs.
#[derive(Clone, Copy)]
pub struct MachineTokenCall<'a> {
    /// The target's client settings (token endpoint, client id, method).
    pub settings: &'a OAuthSettings,
    /// The client secret (for a JWT bearer grant: the assertion).
    pub secret: Option<&'a SecretString>,
    /// The RFC 8707 resource to ask a token for, if any.
    pub resource: Option<&'a str>,
    /// Now, in Unix seconds.
    pub now: i64,
}

/// The authorization server's token endpoint, as the refresh flow uses it.
#[async_trait]
pub trait TokenIssuer: Send + Sync {
    /// Presents a refresh token; a server that does not rotate refresh
    /// tokens leaves the one presented in the answer.
    async fn refresh(&self, call: RefreshCall<'_>)
        -> std::result::Result<IssuedTokens, OAuthError>;

    /// Asks for a target's machine token with its flow's grant (Client
    /// Credentials, or a JWT bearer assertion), for the target's scopes and
    /// resource.
    async fn machine_token(
        &self,
        _call: MachineTokenCall<'_>,
    ) -> std::result::Result<IssuedTokens, OAuthError> {
        Err(OAuthError::Misconfigured(
            "this token issuer does not issue machine tokens".into(),
        ))
    }

    /// Exchanges the caller's token for a token for the target (token
    /// exchange, or enterprise-managed authorization).
    async fn exchange(
        &self,
        _call: ExchangeCall<'_>,
    ) -> std::result::Result<IssuedTokens, OAuthError> {
        Err(OAuthError::Misconfigured(
            "this token issuer does not exchange tokens".into(),
        ))
    }
}

/// What a token exchange needs.
#[derive(Clone, Copy)]
pub struct ExchangeCall<'a> {
    /// The target's client settings, with its exchange settings.
    pub settings: &'a OAuthSettings,
    /// The target's client secret, for confidential clients.
    pub secret: Option<&'a SecretString>,
    /// The identity provider's client secret (enterprise-managed).
    pub idp_secret: Option<&'a SecretString>,
    /// The caller's token, as presented.
    pub subject_token: &'a SecretString,
    /// The RFC 8707 resource to ask a token for, if any.
    pub resource: Option<&'a str>,
    /// Now, in Unix seconds.
    pub now: i64,
}
