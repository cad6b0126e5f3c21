//! Pending authorizations: one consent in progress.

use std::fmt;

use secrecy::SecretString;

use crate::crypto::{random_token, sha256_hex};

/// A consent in progress, created when a user without a grant calls a target.
///
/// It is single-use (consumed atomically by the callback), expires after a
/// short time, and is bound to one user and one target.
#[derive(Clone)]
pub struct PendingAuthorization {
    /// Random id (128 bits), the `<id>` of `/connect/<id>`.
    pub id: String,
    /// The user who triggered the consent.
    pub sub: String,
    /// The target to connect.
    pub target: String,
    /// The OAuth `state` (sealed at rest; only its digest is compared).
    pub state: StateParam,
    /// The PKCE code verifier (sealed at rest).
    pub pkce_verifier: SecretString,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// Resource indicator (RFC 8707) to request, if any.
    pub resource: Option<String>,
    /// The issuer the authorization is expected to come back from (RFC 9207).
    pub issuer: Option<String>,
    /// SHA-256 (hex) of the browser-binding cookie of the browser the
    /// consent belongs to, once the gateway knows it (sealed at rest). The
    /// callback refuses a browser whose cookie does not match.
    pub browser: Option<String>,
    /// Where the success page sends the person back to, if anywhere (an
    /// allowed URL; sealed at rest so the table cannot redirect people).
    pub return_url: Option<String>,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Unix seconds after which the authorization can no longer be used.
    pub expires_at: i64,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("id", &self.id)
            .field("sub", &self.sub)
            .field("target", &self.target)
            .field("state", &self.state)
            .field("pkce_verifier", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .field("issuer", &self.issuer)
            .field("browser", &self.browser.as_ref().map(|_| "[bound]"))
            .field("return_url", &self.return_url)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The OAuth `state` parameter: `<authorization id>.<secret>`.
///
/// The id finds the pending authorization; only a digest of the secret is
/// stored, so the state cannot be rebuilt from the table and a state with a
/// guessed or altered secret does not consume anything.
#[derive(Clone)]
pub struct StateParam {
    /// The pending authorization's id.
    pub id: String,
    secret: String,
}

impl StateParam {
    /// Parses a `state` received on the callback.
    pub fn parse(state: &str) -> Option<Self> {
        let (id, secret) = state.split_once('.')?;
        let ok = |s: &str| {
            (16..=128).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (ok(id) && ok(secret)).then(|| StateParam {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The digest stored with the pending authorization.
    pub fn digest(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }

    /// The value sent to the authorization server. It is a secret: keep it
    /// out of logs.
    pub fn to_param(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Rebuilds a state from its parts (storage adapters).
    pub fn from_parts(id: String, secret: String) -> Self {
        StateParam { id, secret }
    }

    /// The secret half (storage adapters seal it).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for StateParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateParam({}.[redacted])", self.id)
    }
}

impl PendingAuthorization {
    /// Creates a new pending authorization with fresh random id, state and
    /// PKCE verifier.
    pub fn new(
        sub: &str,
        target: &str,
        scopes: Vec<String>,
        resource: Option<String>,
        issuer: Option<String>,
        now: i64,
        ttl_seconds: i64,
    ) -> Self {
        let state = StateParam {
            id: random_token(16),
            secret: random_token(16),
        };
        PendingAuthorization {
            id: state.id.clone(),
            sub: sub.to_owned(),
            target: target.to_owned(),
            state,
            // 32 random bytes: 43 characters, within RFC 7636's 43..=128.
            pkce_verifier: random_token(32).into(),
            scopes,
            resource,
            issuer,
            browser: None,
            return_url: None,
            created_at: now,
            expires_at: now + ttl_seconds,
        }
    }

    /// A new pending authorization for `sub` to connect `target`: the
    /// target's scopes plus `extra_scopes`, its resource indicator (when the
    /// target sends one) and its issuer, valid for `ttl_seconds`.
    pub fn for_target(
        sub: &str,
        target: &crate::domain::Target,
        settings: &crate::domain::OAuthSettings,
        extra_scopes: &[String],
        now: i64,
        ttl_seconds: i64,
    ) -> Self {
        let mut scopes = settings.scopes.clone();
        for s in extra_scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        Self::new(
            sub,
            &target.name,
            scopes,
            settings.send_resource.then(|| {
                settings
                    .resource
                    .clone()
                    .unwrap_or_else(|| target.mcp_url.clone())
            }),
            settings.issuer.clone(),
            now,
            ttl_seconds,
        )
    }

    /// True when the authorization can no longer be used at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn new_authorizations_are_random_and_bound() {
        let a = PendingAuthorization::new("alice", "gh", vec![], None, None, 100, 600);
        let b = PendingAuthorization::new("alice", "gh", vec![], None, None, 100, 600);
        let sa = a.state.clone();
        assert_ne!(a.id, b.id);
        assert_ne!(
            a.pkce_verifier.expose_secret(),
            b.pkce_verifier.expose_secret()
        );
        assert_eq!(a.pkce_verifier.expose_secret().len(), 43);
        assert_eq!(a.expires_at, 700);
        assert!(!a.is_expired(699) && a.is_expired(700));
        let parsed = StateParam::parse(&sa.to_param()).unwrap();
        assert_eq!(parsed.id, a.id);
        assert_eq!(parsed.digest(), a.state.digest());
        assert_ne!(a.state.digest(), b.state.digest());
        let debug = format!("{a:?}{sa:?}");
        assert!(!debug.contains(a.pkce_verifier.expose_secret()));
        assert!(!debug.contains(sa.secret()));
    }

    #[test]
    fn malformed_states_are_refused() {
        for s in [
            "",
            "abc",
            "no-dot-here-at-all-1234",
            "short.short",
            "aaaaaaaaaaaaaaaaaaaa.bb/bbbbbbbbbbbbbbbbbbb",
        ] {
            assert!(StateParam::parse(s).is_none(), "{s}");
        }
    }
}
