//! Exchanged tokens: a token-exchange or enterprise-managed target's token
//! for one user, obtained from the caller's own inbound token and cached as
//! the user's grant until it expires.
//!
//! No lease: an exchange presents no refresh token that a second request
//! could burn, so two instances exchanging at once both get valid tokens
//! and the last write wins. Exchanged tokens are re-exchanged, never
//! refreshed: a refresh token in the answer is not kept (the caller's token
//! is the credential, and it comes with every request), so the scheduled
//! refresh never sees these grants.

use secrecy::SecretString;

use super::lease::machine::target_resource;
use crate::adapters::oauth::OAuthError;
use crate::domain::{Grant, GrantStatus, Target, TargetAuth};
use crate::ports::ExchangeCall;
use crate::tokens::Refresher;

/// How long an exchanged token is kept when the server gives no lifetime.
pub const DEFAULT_EXCHANGED_LIFETIME: i64 = 300;

/// Why no exchanged token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeFailure {
    /// The request carried no bearer token to exchange.
    NoSubjectToken,
    /// The server needs the person at this page first.
    Interaction(String),
    /// The server refused the exchange (its OAuth error code).
    Refused(String),
    /// A passing failure; retry later.
    Retry(String),
}

impl Refresher {
    /// The user's exchanged token for `target`: the cached one while it is
    /// fresh (for the target's current token endpoint and resource), else a
    /// new exchange of `subject_token`. `force` skips the cache (after the
    /// upstream refused the cached token).
    pub async fn exchanged_grant(
        &self,
        sub: &str,
        target: &Target,
        subject_token: Option<&SecretString>,
        margin: i64,
        force: bool,
    ) -> Result<Grant, ExchangeFailure> {
        let TargetAuth::OAuth(settings) = &target.auth else {
            return Err(ExchangeFailure::Refused("not an OAuth target".into()));
        };
        let resource = target_resource(target, settings);
        let now = self.clock.now();
        if !force {
            match self.grants.get(sub, &target.name, false).await {
                Ok(Some(g))
                    if g.status == GrantStatus::Active
                        && !g.needs_refresh(now, margin)
                        && g.resource == resource
                        && g.token_endpoint.as_deref()
                            == Some(settings.token_endpoint.as_str()) =>
                {
                    return Ok(g)
                }
                Ok(_) => {}
                // An unreadable cache entry is replaced below.
                Err(e) => {
                    tracing::warn!(target = %target.name, error = %e, "cached exchanged token unreadable; exchanging again")
                }
            }
        }
        let subject_token = subject_token.ok_or(ExchangeFailure::NoSubjectToken)?;
        let secret = self
            .optional_secret(settings.client_secret_arn.as_deref())
            .await?;
        let idp_arn = settings
            .exchange
            .as_ref()
            .and_then(|x| x.identity_provider.as_ref())
            .and_then(|idp| idp.client_secret_arn.as_deref());
        let idp_secret = self.optional_secret(idp_arn).await?;
        let issued = self
            .issuer
            .exchange(ExchangeCall {
                settings,
                secret: secret.as_ref(),
                idp_secret: idp_secret.as_ref(),
                subject_token,
                resource: resource.as_deref(),
                now,
            })
            .await
            .map_err(|e| match e {
                OAuthError::InteractionRequired { url } => ExchangeFailure::Interaction(url),
                OAuthError::Rejected { error, .. } => ExchangeFailure::Refused(error),
                OAuthError::Transient(why) => ExchangeFailure::Retry(why),
                OAuthError::Misconfigured(why) => ExchangeFailure::Refused(why),
            })?;
        let mut tokens = issued.tokens;
        tokens.refresh_token = None;
        let grant = Grant {
            sub: sub.to_owned(),
            target: target.name.clone(),
            tokens,
            expires_at: Some(
                issued
                    .expires_at
                    .unwrap_or(now + DEFAULT_EXCHANGED_LIFETIME),
            ),
            scopes: issued.scopes.unwrap_or_else(|| settings.scopes.clone()),
            issuer: settings.issuer.clone(),
            token_endpoint: Some(settings.token_endpoint.clone()),
            resource,
            status: GrantStatus::Active,
            version: 0,
            lease: None,
            created_at: now,
            updated_at: now,
        };
        match self.grants.put_after_consent(&grant).await {
            Ok(stored) => Ok(stored),
            // Not cached: the token is still good for this call.
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "could not cache an exchanged token");
                Ok(grant)
            }
        }
    }

    /// The secret stored under `arn`, if there is one.
    async fn optional_secret(
        &self,
        arn: Option<&str>,
    ) -> Result<Option<SecretString>, ExchangeFailure> {
        match arn {
            Some(arn) => self
                .secrets
                .secret(arn)
                .await
                .map(Some)
                .map_err(|e| ExchangeFailure::Retry(e.to_string())),
            None => Ok(None),
        }
    }
}
