//! An OpenID provider as seen by a relying party: discovery, JWKS, and ID
//! token validation. The gateway uses it to learn who is in the browser at
//! `/connect` (session binding).
//!
//! Keys come from the provider's discovery document and JWKS, cached in the
//! warm instance and refetched when a token names an unknown `kid` (at most
//! once per [`MIN_REFETCH`]). Only asymmetric algorithms are accepted, and the
//! algorithm must match the key's type: never `none`, never HMAC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

/// How often an unknown `kid` may trigger a JWKS refetch.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// How long discovery and keys are kept.
pub const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Clock skew allowed on `exp`/`nbf`/`iat`.
pub const LEEWAY_SECONDS: u64 = 60;

/// Why an OpenID operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered badly (retryable).
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// A token is not acceptable.
    #[error("token rejected: {0}")]
    Rejected(String),
}

/// The discovery fields the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    /// Issuer identifier.
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// JWKS URL.
    pub jwks_uri: String,
}

struct Cached {
    metadata: ProviderMetadata,
    keys: JwkSet,
    fetched: Instant,
}

/// A cached view of one OpenID provider.
pub struct OidcProvider {
    issuer: String,
    http: reqwest::Client,
    cache: RwLock<Option<Arc<Cached>>>,
    last_refetch: Mutex<Option<Instant>>,
}

/// Claims of a validated ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    /// The subject.
    pub sub: String,
    /// The nonce the token answers.
    #[serde(default)]
    pub nonce: Option<String>,
}

impl OidcProvider {
    /// A provider identified by `issuer`; nothing is fetched until needed.
    pub fn new(issuer: &str, http: reqwest::Client) -> Self {
        OidcProvider {
            issuer: issuer.trim_end_matches('/').to_owned(),
            http,
            cache: RwLock::new(None),
            last_refetch: Mutex::new(None),
        }
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, OidcError> {
        let res =
            self.http.get(url).send().await.map_err(|e| {
                OidcError::Unavailable(format!("{url}: {}", crate::error::chain(&e)))
            })?;
        if !res.status().is_success() {
            return Err(OidcError::Unavailable(format!(
                "{url}: HTTP {}",
                res.status()
            )));
        }
        res.json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("{url}: {}", crate::error::chain(&e))))
    }

    async fn load(&self) -> Result<Arc<Cached>, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let metadata: ProviderMetadata = self.get_json(&url).await?;
        if metadata.issuer.trim_end_matches('/') != self.issuer {
            return Err(OidcError::Unavailable(format!(
                "discovery at {url} names issuer {:?}",
                metadata.issuer
            )));
        }
        let keys: JwkSet = self.get_json(&metadata.jwks_uri).await?;
        let cached = Arc::new(Cached {
            metadata,
            keys,
            fetched: Instant::now(),
        });
        *self.cache.write().await = Some(cached.clone());
        Ok(cached)
    }

    async fn cached(&self) -> Result<Arc<Cached>, OidcError> {
        if let Some(c) = &*self.cache.read().await {
            if c.fetched.elapsed() < CACHE_TTL {
                return Ok(c.clone());
            }
        }
        self.load().await
    }

    /// The provider's metadata (cached).
    pub async fn metadata(&self) -> Result<ProviderMetadata, OidcError> {
        Ok(self.cached().await?.metadata.clone())
    }

    async fn key(&self, kid: Option<&str>) -> Result<Jwk, OidcError> {
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let cached = self.cached().await?;
        if let Some(k) = find(&cached.keys) {
            return Ok(k);
        }
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return Err(OidcError::Rejected("signed with an unknown key".into()));
        }
        *last = Some(Instant::now());
        let fresh = self.load().await?;
        find(&fresh.keys).ok_or_else(|| OidcError::Rejected("signed with an unknown key".into()))
    }

    /// Validates an ID token for `client_id` and `nonce`: signature (an
    /// asymmetric key from the JWKS), `iss`, `aud`, `exp`, `nonce`.
    pub async fn validate_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<IdClaims, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| OidcError::Rejected(format!("malformed: {e}")))?;
        let alg = header.alg;
        if !is_asymmetric(alg) {
            return Err(OidcError::Rejected(format!(
                "algorithm {alg:?} is not accepted"
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(key_alg) = jwk.common.key_algorithm {
            if format!("{key_alg:?}") != format!("{alg:?}") {
                return Err(OidcError::Rejected(
                    "the token's algorithm does not match its key".into(),
                ));
            }
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| OidcError::Rejected(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
            .map_err(|e| OidcError::Rejected(e.to_string()))?;
        if data.claims.nonce.as_deref() != Some(nonce) {
            return Err(OidcError::Rejected("nonce mismatch".into()));
        }
        Ok(data.claims)
    }
}

/// True for the signature algorithms the gateway accepts (public-key only).
pub fn is_asymmetric(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    )
}
