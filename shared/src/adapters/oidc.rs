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

/// What an inbound access token must satisfy.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Accepted `client_id` claims (Cognito access tokens carry no `aud`).
    pub client_ids: Vec<String>,
    /// Scopes every token must carry.
    pub required_scopes: Vec<String>,
}

/// The claims the gateway uses from a validated access token.
#[derive(Debug, Clone)]
pub struct AccessClaims {
    /// The subject.
    pub sub: String,
    /// Granted scopes (`scope` string or `scp` array).
    pub scopes: Vec<String>,
}

/// Why an access token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not a valid token for this gateway (401).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Valid, but without the required scopes (403).
    #[error("insufficient scope")]
    InsufficientScope,
    /// The provider could not be reached (503).
    #[error("{0}")]
    Unavailable(String),
}

impl OidcProvider {
    /// Validates an inbound access token: signature (asymmetric, from the
    /// JWKS), exact `iss`, `aud` or `client_id` in the policy's lists,
    /// `exp`/`nbf` with [`LEEWAY_SECONDS`], and the required scopes.
    pub async fn validate_access_token(
        &self,
        token: &str,
        policy: &AccessPolicy,
    ) -> Result<AccessClaims, AccessError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AccessError::Invalid(format!("malformed: {e}")))?;
        let alg = header.alg;
        if !is_asymmetric(alg) {
            return Err(AccessError::Invalid(format!(
                "algorithm {alg:?} is not accepted"
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await.map_err(|e| match e {
            OidcError::Unavailable(m) => AccessError::Unavailable(m),
            OidcError::Rejected(m) => AccessError::Invalid(m),
        })?;
        if let Some(key_alg) = jwk.common.key_algorithm {
            if format!("{key_alg:?}") != format!("{alg:?}") {
                return Err(AccessError::Invalid(
                    "the token's algorithm does not match its key".into(),
                ));
            }
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| AccessError::Invalid(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| AccessError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let auds: Vec<&str> = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => vec![],
        };
        let client_id = claims.get("client_id").and_then(|v| v.as_str());
        let audience_ok = auds.iter().any(|a| policy.audiences.iter().any(|p| p == a))
            || client_id.is_some_and(|c| policy.client_ids.iter().any(|p| p == c));
        if !audience_ok {
            return Err(AccessError::Invalid(
                "the token is not for this gateway (aud / client_id)".into(),
            ));
        }
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AccessError::Invalid("no sub".into()))?
            .to_owned();
        let mut scopes: Vec<String> = claims
            .get("scope")
            .and_then(|v| v.as_str())
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        if let Some(scp) = claims.get("scp").and_then(|v| v.as_array()) {
            scopes.extend(scp.iter().filter_map(|v| v.as_str()).map(str::to_owned));
        }
        if !policy.required_scopes.iter().all(|r| scopes.contains(r)) {
            return Err(AccessError::InsufficientScope);
        }
        Ok(AccessClaims { sub, scopes })
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
