//! Machine tokens: a client-credentials or JWT-bearer target's one token
//! for every user, kept under the same lease protocol as users' grants.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::{LeasePolicy, NoGrant, Outcome, RefreshRequest, TokenClient, WRITE_BUDGET};
use crate::domain::grant::MACHINE_SUB;
use crate::domain::{Grant, GrantStatus, OAuthSettings, Target, TargetAuth};
use crate::error::Error;
use crate::ports::MachineTokenCall;
use crate::tokens::Refresher;

impl Refresher {
    /// A client-credentials target's machine token, renewed under the lease
    /// `req.owner` holds: a new Client Credentials request (there is no
    /// refresh token, and no person to consent). A refusal is the
    /// operator's to fix: the grant is kept and the call fails.
    pub(super) async fn renew_machine_token(
        &self,
        grant: Grant,
        settings: &OAuthSettings,
        client: &TokenClient,
        req: RefreshRequest<'_>,
        lease_until: i64,
    ) -> (Outcome, bool) {
        let now = self.clock.now();
        let left =
            Duration::from_secs((lease_until - now).max(0) as u64).saturating_sub(WRITE_BUDGET);
        if left.is_zero() {
            return (
                Outcome::Transient("the refresh lease is too short".into()),
                false,
            );
        }
        // What the target says now, not what the grant was first made for.
        let resource = target_resource(&client.target, settings);
        let request = self.issuer.machine_token(MachineTokenCall {
            settings,
            secret: client.secret.as_ref(),
            resource: resource.as_deref(),
            now,
        });
        let issued = match tokio::time::timeout(req.policy.http_timeout.min(left), request).await {
            Err(_) => return (Outcome::Transient("token endpoint timed out".into()), false),
            Ok(Err(e)) => {
                tracing::error!(target = %grant.target, error = %e, "no machine token for a client-credentials target; check its client settings");
                return (Outcome::Transient(e.to_string()), false);
            }
            Ok(Ok(issued)) => issued,
        };
        let updated = Grant {
            tokens: issued.tokens,
            expires_at: issued.expires_at,
            scopes: issued.scopes.unwrap_or_else(|| settings.scopes.clone()),
            issuer: settings.issuer.clone(),
            token_endpoint: Some(settings.token_endpoint.clone()),
            resource,
            updated_at: now,
            ..grant.clone()
        };
        let written = self.write_renewed(&updated, req.owner).await;
        match written {
            Ok(g) => (Outcome::Refreshed(g), true),
            Err(Error::NotFound(_)) => (Outcome::NotFound, true),
            // The item changed under us (another writer, a key reseal): a
            // usable token stored there wins; otherwise ours goes in at the
            // stored version. Never an empty or expired token.
            Err(Error::StaleVersion) => {
                match self.grants.get(&grant.sub, &grant.target, true).await {
                    Ok(Some(stored))
                        if stored.status == GrantStatus::Active
                            && !stored.needs_refresh(now, 0)
                            && !secrecy::ExposeSecret::expose_secret(
                                &stored.tokens.access_token,
                            )
                            .is_empty() =>
                    {
                        (Outcome::AlreadyFresh(stored), false)
                    }
                    Ok(Some(stored)) => {
                        let again = Grant {
                            version: stored.version,
                            ..updated
                        };
                        match self.grants.update(&again).await {
                            Ok(g) => (Outcome::Refreshed(g), false),
                            Err(e) => (Outcome::Transient(e.to_string()), false),
                        }
                    }
                    Ok(None) => (Outcome::NotFound, true),
                    Err(e) => (Outcome::Transient(e.to_string()), false),
                }
            }
            Err(e) => (Outcome::Transient(e.to_string()), false),
        }
    }

    /// A client-credentials target's machine token, shared by every user:
    /// stored as the grant of [`MACHINE_SUB`] and kept fresh by the same
    /// lease protocol as users' grants (one token request across
    /// instances; the scheduled refresh renews it too). The first call
    /// stores an expired placeholder, which the protocol then fills; a
    /// token made for other settings than the target's now (another
    /// resource or token endpoint) is renewed first, and a dead or
    /// unreadable one is replaced.
    pub async fn machine_grant(
        &self,
        target: &Target,
        owner: &str,
        margin: i64,
        policy: LeasePolicy,
    ) -> Result<Arc<Grant>, NoGrant> {
        let TargetAuth::OAuth(settings) = &target.auth else {
            return Err(NoGrant::Missing);
        };
        let expected_resource = target_resource(target, settings);
        match self
            .usable_grant(MACHINE_SUB, &target.name, owner, margin, policy)
            .await
        {
            Ok(g)
                if g.resource == expected_resource
                    && g.token_endpoint.as_deref() == Some(settings.token_endpoint.as_str()) =>
            {
                return Ok(g)
            }
            // Made for other settings: renewed now, for the current ones.
            Ok(g) => {
                return self
                    .after_unauthorized(&g, owner, policy)
                    .await
                    .map(Arc::new)
            }
            Err(NoGrant::Missing) => {}
            Err(NoGrant::NeedsConsent) => {
                // No person can consent for a machine: start again.
                if let Err(e) = self.grants.delete(MACHINE_SUB, &target.name).await {
                    return Err(NoGrant::Retry(e.to_string()));
                }
            }
            Err(other) => return Err(other),
        }
        let now = self.clock.now();
        let placeholder = Grant {
            sub: MACHINE_SUB.into(),
            target: target.name.clone(),
            tokens: crate::domain::TokenSet {
                access_token: SecretString::from(String::new()),
                refresh_token: None,
                token_type: "Bearer".into(),
                dpop_key: None,
            },
            expires_at: Some(0),
            scopes: settings.scopes.clone(),
            issuer: settings.issuer.clone(),
            token_endpoint: Some(settings.token_endpoint.clone()),
            resource: expected_resource,
            status: GrantStatus::Active,
            version: 0,
            lease: None,
            created_at: now,
            updated_at: now,
        };
        match self.grants.create(&placeholder).await {
            // Another instance created it first: as good.
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(NoGrant::Retry(e.to_string())),
        }
        // Straight to the lease (a consistent conditional write), not
        // through a read that may not see the placeholder yet.
        let req = RefreshRequest {
            sub: MACHINE_SUB,
            target: &target.name,
            owner,
            margin,
            force_from_version: None,
            seen_version: None,
            wait_for_winner: true,
            policy,
        };
        match self.in_flight(req, 0).await {
            Err(NoGrant::Missing) => Err(NoGrant::Retry(
                "the machine token is being created; retry".into(),
            )),
            other => other.map(Arc::new),
        }
    }
}

/// The resource indicator a target's machine or exchanged token is asked
/// for: the Protected Resource Metadata's identifier, else the MCP URL
/// (none when the target sends none).
pub(crate) fn target_resource(target: &Target, settings: &OAuthSettings) -> Option<String> {
    settings.send_resource.then(|| {
        settings
            .resource
            .clone()
            .unwrap_or_else(|| target.mcp_url.clone())
    })
}
