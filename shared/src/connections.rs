//! A user's connections (grants) as people see them: list, and disconnect
//! with revocation at the authorization server.

use serde::Serialize;

use crate::adapters::oauth::{OAuthError, TokenEndpoint};
use crate::domain::TargetAuth;
use crate::AppState;

/// One connection, without any token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Connection {
    /// Target name.
    pub target: String,
    /// `active` or `needs_consent`.
    pub status: &'static str,
    /// Access token expiry (Unix seconds), if known.
    pub expires_at: Option<i64>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Whether it can be refreshed.
    pub refreshable: bool,
    /// When the person connected (Unix seconds).
    pub connected_at: i64,
    /// When the grant last changed: the last refresh or consent (Unix seconds).
    pub updated_at: i64,
}

/// The user's connections.
pub async fn list(state: &AppState, sub: &str) -> Result<Vec<Connection>, crate::Error> {
    let grants = state.grants.list_for_user(sub).await?;
    // Not targets users no longer connect themselves (a grant left from
    // before a target moved to client credentials or an API key is no
    // connection); grants of removed targets stay listed, to be removed.
    let shared: std::collections::HashSet<String> = state
        .targets
        .list()
        .await?
        .iter()
        .filter(|t| !t.auth.is_per_user())
        .map(|t| t.name.clone())
        .collect();
    Ok(grants
        .into_iter()
        .filter(|g| !shared.contains(&g.target))
        .map(|g| Connection {
            status: g.status.as_str(),
            refreshable: g.tokens.refresh_token.is_some(),
            connected_at: g.created_at,
            updated_at: g.updated_at,
            target: g.target,
            expires_at: g.expires_at,
            scopes: g.scopes,
        })
        .collect())
}

/// What a disconnect did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnected {
    /// Revoked at the authorization server, and the grant deleted.
    Revoked,
    /// Deleted; the server has no revocation endpoint (the tokens live until they expire there).
    DeletedWithoutRevocation,
    /// Deleted; revocation failed (the reason is logged).
    DeletedRevocationFailed(String),
    /// There was no grant.
    NotConnected,
}

/// Disconnects `target` for `sub`: revokes the refresh token (else the access
/// token) at the target's revocation endpoint (RFC 7009), then deletes the
/// grant. The grant is deleted even if revocation fails: the user asked to
/// disconnect, and a later call asks for consent again.
pub async fn disconnect(
    state: &AppState,
    sub: &str,
    target: &str,
) -> Result<Disconnected, crate::Error> {
    let grant = match state.grants.get(sub, target, true).await {
        Ok(Some(g)) => g,
        Ok(None) => return Ok(Disconnected::NotConnected),
        // Nothing usable to revoke: just delete it.
        Err(e) if e.is_unreadable() => {
            state.grants.delete(sub, target).await?;
            forget_sessions(state, sub, target).await?;
            return Ok(Disconnected::DeletedWithoutRevocation);
        }
        Err(e) => return Err(e),
    };
    let settings = match state.targets.get(target).await? {
        Some(t) => match t.auth {
            TargetAuth::OAuth(s) => Some(s),
            TargetAuth::None | TargetAuth::ApiKey(_) | TargetAuth::AwsIam(_) => None,
        },
        None => None,
    };
    let outcome = match settings
        .as_deref()
        .and_then(|s| s.revocation_endpoint.clone().map(|e| (s, e)))
    {
        None => Disconnected::DeletedWithoutRevocation,
        Some((settings, endpoint)) => {
            let secret = state
                .client_secret(settings.client_secret_arn.as_deref())
                .await?;
            let client = TokenEndpoint {
                http: &state.http,
                settings,
                secret: secret.as_ref(),
                dpop: None,
            };
            let (token, hint) = match &grant.tokens.refresh_token {
                Some(rt) => (rt, "refresh_token"),
                None => (&grant.tokens.access_token, "access_token"),
            };
            match client.revoke(&endpoint, token, hint).await {
                Ok(()) => Disconnected::Revoked,
                Err(
                    e @ (OAuthError::Transient(_)
                    | OAuthError::Rejected { .. }
                    | OAuthError::Misconfigured(_)
                    | OAuthError::InteractionRequired { .. }),
                ) => {
                    tracing::warn!(target = %target, error = %e, "revocation failed; deleting the grant anyway");
                    Disconnected::DeletedRevocationFailed(e.to_string())
                }
            }
        }
    };
    state.grants.delete(sub, target).await?;
    forget_sessions(state, sub, target).await?;
    tracing::info!(target = %target, outcome = ?outcome, "disconnected");
    Ok(outcome)
}

/// Deletes the user's upstream sessions with `target` (the 2025 one kept
/// for clients answering its requests too).
async fn forget_sessions(state: &AppState, sub: &str, target: &str) -> Result<(), crate::Error> {
    state.sessions.delete(sub, target).await?;
    state
        .sessions
        .delete(sub, &crate::upstream::legacy_session_key(target))
        .await
}
