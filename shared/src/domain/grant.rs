//! A user's grant for one target: the upstream tokens and their lifecycle state.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The tokens an upstream authorization server issued. Debug output redacts them.
#[derive(Clone)]
pub struct TokenSet {
    /// The bearer token sent to the upstream MCP server.
    pub access_token: SecretString,
    /// The refresh token, when the server issued one.
    pub refresh_token: Option<SecretString>,
    /// The token type the server reported: `Bearer`, or `DPoP` for a
    /// token bound to [`TokenSet::dpop_key`].
    pub token_type: String,
    /// The grant's DPoP key (RFC 9449), PKCS#8 in base64url, when its
    /// authorization server binds tokens to one.
    pub dpop_key: Option<SecretString>,
}

impl TokenSet {
    /// Whether the access token goes with the `DPoP` scheme and a proof.
    pub fn is_dpop(&self) -> bool {
        self.dpop_key.is_some() && self.token_type.eq_ignore_ascii_case("dpop")
    }
}

/// What a grant's ciphertext holds: the tokens, and every field that says
/// where they (and the target's client secret) may be sent or what they
/// mean. Those fields are also stored in the clear for operators, but only
/// the sealed copies are ever used, so a table writer without the keys
/// cannot redirect a refresh token or a client secret.
#[derive(Clone)]
pub struct SealedGrant {
    /// The tokens.
    pub tokens: TokenSet,
    /// Token endpoint the tokens came from.
    pub token_endpoint: Option<String>,
    /// Issuer of the authorization server.
    pub issuer: Option<String>,
    /// Resource indicator the tokens were issued for.
    pub resource: Option<String>,
    /// Scopes granted.
    pub scopes: Vec<String>,
}

/// Version tag of the sealed grant payload.
const SEALED_GRANT_VERSION: u32 = 2;

impl SealedGrant {
    /// The plaintext to seal. The output is secret material.
    pub fn to_plaintext(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "v": SEALED_GRANT_VERSION,
            "access_token": self.tokens.access_token.expose_secret(),
            "refresh_token": self.tokens.refresh_token.as_ref().map(|t| t.expose_secret()),
            "token_type": self.tokens.token_type,
            "dpop_key": self.tokens.dpop_key.as_ref().map(|k| k.expose_secret()),
            "token_endpoint": self.token_endpoint,
            "issuer": self.issuer,
            "resource": self.resource,
            "scopes": self.scopes,
        }))
        .expect("serializing strings to JSON cannot fail")
    }

    /// Parses what [`SealedGrant::to_plaintext`] produced; `None` for
    /// anything else (including the tokens-only payload of earlier versions,
    /// which did not protect the routing fields).
    pub fn from_plaintext(bytes: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Raw {
            v: u32,
            #[serde(flatten)]
            tokens: RawTokens,
            token_endpoint: Option<String>,
            issuer: Option<String>,
            resource: Option<String>,
            scopes: Vec<String>,
        }
        #[derive(serde::Deserialize)]
        struct RawTokens {
            access_token: String,
            refresh_token: Option<String>,
            token_type: String,
            #[serde(default)]
            dpop_key: Option<String>,
        }
        let raw: Raw = serde_json::from_slice(bytes).ok()?;
        (raw.v == SEALED_GRANT_VERSION).then(|| SealedGrant {
            tokens: TokenSet {
                access_token: raw.tokens.access_token.into(),
                refresh_token: raw.tokens.refresh_token.map(Into::into),
                token_type: raw.tokens.token_type,
                dpop_key: raw.tokens.dpop_key.map(Into::into),
            },
            token_endpoint: raw.token_endpoint,
            issuer: raw.issuer,
            resource: raw.resource,
            scopes: raw.scopes,
        })
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("token_type", &self.token_type)
            .field("dpop_key", &self.dpop_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Whether a grant can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    /// Tokens are usable (possibly after a refresh).
    Active,
    /// The authorization server refused the refresh token: the user must consent again.
    NeedsConsent,
}

impl GrantStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::NeedsConsent => "needs_consent",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(GrantStatus::Active),
            "needs_consent" => Some(GrantStatus::NeedsConsent),
            _ => None,
        }
    }
}

/// A refresh lease: who is refreshing the grant, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Opaque id of the instance holding the lease.
    pub owner: String,
    /// Unix seconds after which the lease is void.
    pub until: i64,
}

/// Identifies a grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantKey {
    /// The user's validated subject.
    pub sub: String,
    /// The target's name.
    pub target: String,
}

/// The subject under which a client-credentials target's machine token is
/// stored: no user's (inbound subjects starting with `gateway:` are
/// refused), shared by every user of the target.
pub const MACHINE_SUB: &str = "gateway:client-credentials";

/// A user's grant for one target.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The user's validated subject.
    pub sub: String,
    /// The target's name.
    pub target: String,
    /// The tokens (sealed at rest).
    pub tokens: TokenSet,
    /// Unix seconds when the access token expires, when the server said.
    pub expires_at: Option<i64>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Issuer of the authorization server that issued the tokens.
    pub issuer: Option<String>,
    /// Token endpoint to refresh at (where the login went).
    pub token_endpoint: Option<String>,
    /// The resource indicator (RFC 8707) the tokens were issued for.
    pub resource: Option<String>,
    /// Whether the grant is usable.
    pub status: GrantStatus,
    /// Optimistic-concurrency version, bumped by every write.
    pub version: u64,
    /// The current refresh lease, if any (possibly expired).
    pub lease: Option<Lease>,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Unix seconds of the last write.
    pub updated_at: i64,
}

impl Grant {
    /// What the grant's ciphertext holds.
    pub fn sealed(&self) -> SealedGrant {
        SealedGrant {
            tokens: self.tokens.clone(),
            token_endpoint: self.token_endpoint.clone(),
            issuer: self.issuer.clone(),
            resource: self.resource.clone(),
            scopes: self.scopes.clone(),
        }
    }

    /// The grant's key.
    pub fn key(&self) -> GrantKey {
        GrantKey {
            sub: self.sub.clone(),
            target: self.target.clone(),
        }
    }

    /// When the scheduled refresh should pick the grant up: the access
    /// token's expiry, for active grants that can be refreshed at all (with
    /// a refresh token, or a target's machine token, renewed by a new
    /// Client Credentials request).
    pub fn refresh_due(&self) -> Option<i64> {
        let renewable = self.tokens.refresh_token.is_some() || self.sub == MACHINE_SUB;
        match (self.status, renewable, self.expires_at) {
            (GrantStatus::Active, true, Some(exp)) => Some(exp),
            _ => None,
        }
    }

    /// True when the access token is expired or expires within `margin`
    /// seconds, or within half its lifetime when that is shorter.
    pub fn needs_refresh(&self, now: i64, margin: i64) -> bool {
        // The margin is at most half the token's lifetime: a token that
        // lives 5 s is fresh for its first half, though the margin is 60 s
        // (else a token just refreshed would never count as fresh).
        self.expires_at.is_some_and(|exp| {
            let lifetime = exp - self.updated_at;
            exp - margin.min((lifetime / 2).max(0)) <= now
        })
    }
}

/// A grant for unit tests: `sub`'s active grant for `target` (version 1),
/// access token `at-secret`, refresh token `rt-secret`, expiring at 1000.
#[cfg(test)]
pub(crate) fn grant_for_tests(sub: &str, target: &str) -> Grant {
    Grant {
        sub: sub.into(),
        target: target.into(),
        tokens: TokenSet {
            access_token: "at-secret".to_string().into(),
            refresh_token: Some("rt-secret".to_string().into()),
            token_type: "Bearer".into(),
            dpop_key: None,
        },
        expires_at: Some(1_000),
        scopes: vec![],
        issuer: None,
        token_endpoint: None,
        resource: None,
        status: GrantStatus::Active,
        version: 1,
        lease: None,
        created_at: 0,
        updated_at: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        grant_for_tests("u", "t")
    }

    #[test]
    fn debug_never_shows_tokens() {
        let s = format!("{:?}", grant());
        assert!(!s.contains("at-secret") && !s.contains("rt-secret"), "{s}");
    }

    #[test]
    fn plaintext_round_trip() {
        let g = grant();
        let back = SealedGrant::from_plaintext(&g.sealed().to_plaintext()).unwrap();
        assert_eq!(back.tokens.access_token.expose_secret(), "at-secret");
        assert_eq!(
            back.tokens.refresh_token.unwrap().expose_secret(),
            "rt-secret"
        );
    }

    #[test]
    fn a_dpop_key_is_sealed_with_the_tokens_and_never_printed() {
        let mut g = grant();
        g.tokens.token_type = "DPoP".into();
        g.tokens.dpop_key = Some("key-secret".to_string().into());
        assert!(g.tokens.is_dpop());
        assert!(!format!("{g:?}").contains("key-secret"));
        let back = SealedGrant::from_plaintext(&g.sealed().to_plaintext()).unwrap();
        assert_eq!(back.tokens.dpop_key.unwrap().expose_secret(), "key-secret");
        assert_eq!(back.tokens.token_type, "DPoP");
        // A DPoP token type without a key (or a key with a Bearer token) is
        // sent as Bearer.
        let mut g = grant();
        g.tokens.token_type = "DPoP".into();
        assert!(!g.tokens.is_dpop());
    }

    #[test]
    fn refresh_due_only_for_refreshable_active_grants() {
        let mut g = grant();
        assert_eq!(g.refresh_due(), Some(1_000));
        g.status = GrantStatus::NeedsConsent;
        assert_eq!(g.refresh_due(), None);
        let mut g = grant();
        g.tokens.refresh_token = None;
        assert_eq!(g.refresh_due(), None);
        assert!(grant().needs_refresh(950, 60));
        assert!(!grant().needs_refresh(900, 60));
        // A 5-second token is fresh for its first half, whatever the margin.
        let mut short = grant();
        short.updated_at = 995;
        short.expires_at = Some(1_000);
        assert!(!short.needs_refresh(996, 60));
        assert!(short.needs_refresh(998, 60));
        assert!(short.needs_refresh(1_000, 0));
    }

    #[test]
    fn the_sealed_payload_carries_the_routing_fields() {
        let mut g = grant();
        g.token_endpoint = Some("https://as.example/token".into());
        g.issuer = Some("https://as.example".into());
        g.resource = Some("https://mcp.example/mcp".into());
        let back = SealedGrant::from_plaintext(&g.sealed().to_plaintext()).unwrap();
        assert_eq!(back.token_endpoint, g.token_endpoint);
        assert_eq!(back.issuer, g.issuer);
        assert_eq!(back.resource, g.resource);
        assert_eq!(back.scopes, g.scopes);
        assert_eq!(
            back.tokens.access_token.expose_secret(),
            g.tokens.access_token.expose_secret()
        );
        // The tokens-only payload of earlier versions is not accepted.
        let old = br#"{"access_token":"a","refresh_token":null,"token_type":"Bearer"}"#;
        assert!(SealedGrant::from_plaintext(old).is_none());
    }
}
