//! [`TokenIssuer`] over HTTP: the token flows' port onto the token
//! endpoint client, choosing the grant by the target's flow.

use super::{IssuedTokens, OAuthError, TokenEndpoint};
use crate::crypto::dpop::DpopKey;
use crate::domain::OAuthSettings;
use crate::ports::{ExchangeCall, MachineTokenCall, RefreshCall, TokenIssuer};

/// A new DPoP key for a token that is not refreshed with an earlier one
/// (a machine token, an exchanged token), when the server binds tokens.
fn new_dpop_key(settings: &OAuthSettings) -> Result<Option<DpopKey>, OAuthError> {
    settings
        .uses_dpop()
        .then(DpopKey::generate)
        .transpose()
        .map_err(|e| OAuthError::Misconfigured(e.to_string()))
}

/// [`TokenIssuer`] over HTTP: the pooled client toward authorization servers.
pub struct HttpTokenIssuer(pub reqwest::Client);

#[async_trait::async_trait]
impl TokenIssuer for HttpTokenIssuer {
    async fn refresh(&self, call: RefreshCall<'_>) -> Result<IssuedTokens, OAuthError> {
        let key = call
            .dpop_key
            .map(DpopKey::from_secret)
            .transpose()
            .map_err(|e| OAuthError::Misconfigured(e.to_string()))?;
        TokenEndpoint {
            http: &self.0,
            settings: call.settings,
            secret: call.secret,
            dpop: key.as_ref(),
        }
        .refresh(
            call.token_endpoint,
            call.refresh_token,
            call.scopes,
            call.resource,
            call.now,
        )
        .await
    }

    async fn machine_token(&self, call: MachineTokenCall<'_>) -> Result<IssuedTokens, OAuthError> {
        // A machine token gets a new key with each token.
        let key = new_dpop_key(call.settings)?;
        let endpoint = TokenEndpoint {
            http: &self.0,
            settings: call.settings,
            secret: call.secret,
            dpop: key.as_ref(),
        };
        match call.settings.flow {
            crate::domain::OAuthFlow::JwtBearer => {
                let assertion = call.secret.ok_or_else(|| {
                    OAuthError::Misconfigured("a JWT bearer target needs its assertion".into())
                })?;
                endpoint
                    .jwt_bearer(assertion, call.resource, call.now)
                    .await
            }
            _ => endpoint.client_credentials(call.resource, call.now).await,
        }
    }

    async fn exchange(&self, call: ExchangeCall<'_>) -> Result<IssuedTokens, OAuthError> {
        let exchange = call.settings.exchange.as_ref().ok_or_else(|| {
            OAuthError::Misconfigured("a token-exchange target needs its exchange settings".into())
        })?;
        // Each exchanged token gets a new key.
        let key = new_dpop_key(call.settings)?;
        let endpoint = TokenEndpoint {
            http: &self.0,
            settings: call.settings,
            secret: call.secret,
            dpop: key.as_ref(),
        };
        match &exchange.identity_provider {
            Some(idp) => {
                endpoint
                    .enterprise_managed(
                        exchange,
                        idp,
                        call.idp_secret,
                        call.subject_token,
                        call.resource,
                        call.now,
                    )
                    .await
            }
            None => {
                endpoint
                    .token_exchange(exchange, call.subject_token, call.resource, call.now)
                    .await
            }
        }
    }
}
