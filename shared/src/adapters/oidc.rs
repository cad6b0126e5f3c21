//! An OpenID provider as seen by a relying party: discovery, JWKS, and ID
//! token validation. The gateway uses it to learn who is in the browser at
//! `/connect` (session binding).
//!
//! Keys come from the provider's discovery document and JWKS, cached in the
//! warm instance and refetched when a token names an unknown `kid` (at most
//! once per [`MIN_REFETCH`]). Only asymmetric algorithms are accepted, and the
//! algorithm must match the key's type: never `none`, never HMAC.
//!
//! Checking an RS256 signature is the largest cost of a warm proxied call, and
//! an agent sends the same access token on every call. So a token whose
//! signature, issuer and times checked out is remembered by its SHA-256 for
//! at most [`VERIFIED_TTL`] and never past its `exp`; the policy (audience,
//! client, scopes) is applied to its claims on every call.
//!
//! A key withdrawn from the JWKS stops being honoured within the key cache's
//! lifetime ([`CACHE_TTL`] by default, 5 minutes): keys are refetched when
//! they are older than that, and a remembered verification counts only while
//! the key set it was checked against is younger than that too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::ports::{Clock, SystemClock};

/// How often an unknown `kid` may trigger a JWKS refetch.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// How long discovery and keys are kept by default: the bound on how long a
/// key withdrawn from the JWKS is still honoured.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Clock skew allowed on `exp`/`nbf`/`iat`.
pub const LEEWAY_SECONDS: u64 = 60;
/// How long a verified access token is remembered (never past its `exp`).
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// How many verified access tokens a warm instance remembers.
pub const VERIFIED_CAPACITY: usize = 4096;

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
    cache_ttl: Duration,
    cache: RwLock<Option<Arc<Cached>>>,
    last_refetch: Mutex<Option<Instant>>,
    verified: std::sync::Mutex<VerifiedTokens>,
}

/// Claims of a validated ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    /// The issuer.
    pub iss: String,
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
            cache_ttl: CACHE_TTL,
            cache: RwLock::new(None),
            last_refetch: Mutex::new(None),
            verified: std::sync::Mutex::new(VerifiedTokens::default()),
        }
    }

    /// Keeps discovery and keys for `ttl` (at most [`CACHE_TTL`]) instead
    /// of [`CACHE_TTL`].
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl.min(CACHE_TTL);
        self
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
            if c.fetched.elapsed() < self.cache_ttl {
                return Ok(c.clone());
            }
        }
        self.load().await
    }

    /// The provider's metadata (cached).
    pub async fn metadata(&self) -> Result<ProviderMetadata, OidcError> {
        Ok(self.cached().await?.metadata.clone())
    }

    /// The key `kid` names, and when the key set holding it was fetched.
    async fn key(&self, kid: Option<&str>) -> Result<(Jwk, Instant), OidcError> {
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let cached = self.cached().await?;
        if let Some(k) = find(&cached.keys) {
            return Ok((k, cached.fetched));
        }
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return Err(OidcError::Rejected("signed with an unknown key".into()));
        }
        *last = Some(Instant::now());
        let fresh = self.load().await?;
        find(&fresh.keys)
            .map(|k| (k, fresh.fetched))
            .ok_or_else(|| OidcError::Rejected("signed with an unknown key".into()))
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
        let (jwk, _) = self.key(header.kid.as_deref()).await?;
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

/// What an inbound access token must satisfy (borrowed from the
/// configuration: nothing copied per request).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessPolicy<'a> {
    /// Accepted `aud` values.
    pub audiences: &'a [String],
    /// Accepted `client_id` claims (Cognito access tokens carry no `aud`).
    pub client_ids: &'a [String],
    /// Scopes every token must carry.
    pub required_scopes: &'a [String],
    /// Require the RFC 9068 header `typ: at+jwt`.
    pub require_at_jwt: bool,
}

/// The claims the gateway uses from a validated access token.
#[derive(Debug, Clone)]
pub struct AccessClaims {
    /// The subject.
    pub sub: String,
    /// Granted scopes (`scope` string or `scp` array).
    pub scopes: Vec<String>,
    /// Groups (`groups`, `cognito:groups` or `roles`: arrays of strings).
    pub groups: Vec<String>,
    /// The client the token was issued to (`client_id`, `azp` or `cid`).
    pub client_id: Option<String>,
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
        policy: &AccessPolicy<'_>,
    ) -> Result<AccessClaims, AccessError> {
        let digest = crate::crypto::sha256(token.as_bytes());
        let now = SystemClock.now();
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|v| v.get(&digest, now, Instant::now()));
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                // Boxed: the signature check is off the path of a token
                // already seen.
                let (claims, keys_fetched) =
                    Box::pin(self.verify_access_token(token, policy)).await?;
                let claims = Arc::new(claims);
                let exp = claims.get("exp").and_then(serde_json::Value::as_i64);
                if let (Some(exp), Ok(mut v)) = (exp, self.verified.lock()) {
                    v.insert(
                        digest,
                        claims.clone(),
                        exp,
                        Instant::now(),
                        (keys_fetched, self.cache_ttl),
                    );
                }
                claims
            }
        };
        apply_policy(&claims, policy)
    }

    /// Checks an access token's signature, `iss`, `exp` and `nbf` (and its
    /// `typ` when the policy asks); returns its claims and when the key set
    /// that verified it was fetched.
    async fn verify_access_token(
        &self,
        token: &str,
        policy: &AccessPolicy<'_>,
    ) -> Result<(serde_json::Value, Instant), AccessError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AccessError::Invalid(format!("malformed: {e}")))?;
        let alg = header.alg;
        if policy.require_at_jwt
            && !header.typ.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
            })
        {
            return Err(AccessError::Invalid(
                "not an access token (typ is not at+jwt)".into(),
            ));
        }
        if !is_asymmetric(alg) {
            return Err(AccessError::Invalid(format!(
                "algorithm {alg:?} is not accepted"
            )));
        }
        let (jwk, keys_fetched) = self.key(header.kid.as_deref()).await.map_err(|e| match e {
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
        Ok((data.claims, keys_fetched))
    }
}

/// The policy checks of [`OidcProvider::validate_access_token`] on verified
/// claims: `aud` or `client_id`, `sub`, required scopes.
fn apply_policy(
    claims: &serde_json::Value,
    policy: &AccessPolicy<'_>,
) -> Result<AccessClaims, AccessError> {
    let auds: Vec<&str> = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => vec![],
    };
    let client_id = claims.get("client_id").and_then(|v| v.as_str());
    let by_audience = auds.iter().any(|a| policy.audiences.iter().any(|p| p == a));
    let by_client = client_id.is_some_and(|c| policy.client_ids.iter().any(|p| p == c));
    if !by_audience && !by_client {
        return Err(AccessError::Invalid(
            "the token is not for this gateway (aud / client_id)".into(),
        ));
    }
    // Cognito marks its tokens: an ID token (`token_use: id`, `aud` = the
    // app client) must never pass as a bearer token, and a token accepted
    // by its `client_id` alone (`INBOUND_CLIENT_IDS`) must say it is an
    // access token.
    // (An RFC 9068 access token accepted by its `client_id` names an
    // audience, its resource; a Cognito access token names none.)
    let token_use = claims.get("token_use").and_then(|v| v.as_str());
    if token_use.is_some_and(|u| u != "access")
        || (!by_audience && auds.is_empty() && token_use != Some("access"))
    {
        return Err(AccessError::Invalid(
            "not an access token (token_use)".into(),
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
    let groups = ["groups", "cognito:groups", "roles"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(|v| v.as_array()))
        .flatten()
        .filter_map(|v| v.as_str())
        .map(str::to_owned)
        .collect();
    let client_id = ["client_id", "azp", "cid"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(|v| v.as_str()))
        .map(str::to_owned);
    Ok(AccessClaims {
        sub,
        scopes,
        groups,
        client_id,
    })
}

/// Verified access tokens by SHA-256: their claims, `exp`, and when they
/// were verified. Bounded: when full, expired entries go, then all.
#[derive(Default)]
struct VerifiedTokens {
    entries: std::collections::HashMap<[u8; 32], VerifiedToken>,
}

struct VerifiedToken {
    claims: Arc<serde_json::Value>,
    exp: i64,
    /// Until when the verification counts: [`VERIFIED_TTL`] after it, and
    /// no longer than the key set that verified it may be kept.
    until: Instant,
}

impl VerifiedTokens {
    /// The claims of a remembered token still within its `exp` (with
    /// [`LEEWAY_SECONDS`], as when it was verified) and its `until`.
    fn get(&self, digest: &[u8; 32], now: i64, at: Instant) -> Option<Arc<serde_json::Value>> {
        self.entries
            .get(digest)
            .filter(|e| Self::live(e, now, at))
            .map(|e| e.claims.clone())
    }

    fn live(e: &VerifiedToken, now: i64, at: Instant) -> bool {
        now < e.exp.saturating_add(LEEWAY_SECONDS as i64) && at < e.until
    }

    /// Remembers a token verified at `at` against keys fetched at
    /// `keys_fetched`, which are kept for `keys_ttl`.
    fn insert(
        &mut self,
        digest: [u8; 32],
        claims: Arc<serde_json::Value>,
        exp: i64,
        at: Instant,
        (keys_fetched, keys_ttl): (Instant, Duration),
    ) {
        if self.entries.len() >= VERIFIED_CAPACITY {
            let now = SystemClock.now();
            self.entries.retain(|_, e| Self::live(e, now, at));
            if self.entries.len() >= VERIFIED_CAPACITY {
                self.entries.clear();
            }
        }
        let until = (at + VERIFIED_TTL).min(keys_fetched + keys_ttl);
        self.entries
            .insert(digest, VerifiedToken { claims, exp, until });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Arc<serde_json::Value> {
        Arc::new(serde_json::json!({"sub": "alice", "aud": "gw", "scope": "a b"}))
    }

    #[test]
    fn remembered_tokens_end_at_exp_with_leeway_and_after_the_ttl() {
        let mut v = VerifiedTokens::default();
        let t0 = Instant::now();
        v.insert([1; 32], claims(), 1_000, t0, (t0, CACHE_TTL));
        assert!(v.get(&[1; 32], 1_000, t0).is_some());
        assert!(v
            .get(&[1; 32], 1_000 + LEEWAY_SECONDS as i64 - 1, t0)
            .is_some());
        assert!(v.get(&[1; 32], 1_000 + LEEWAY_SECONDS as i64, t0).is_none());
        assert!(v.get(&[2; 32], 1_000, t0).is_none());
        let late = t0 + VERIFIED_TTL;
        assert!(v.get(&[1; 32], 1_000, late).is_none());
    }

    #[test]
    fn a_remembered_token_ends_with_the_key_set_that_verified_it() {
        // Keys fetched 4 minutes before the token was verified: the
        // verification counts only for the key set's last minute, so a key
        // withdrawn right after the fetch is honoured for 5 minutes at most.
        let mut v = VerifiedTokens::default();
        let fetched = Instant::now();
        let verified = fetched + Duration::from_secs(240);
        let far = SystemClock.now() + 3_600;
        v.insert([1; 32], claims(), far, verified, (fetched, CACHE_TTL));
        assert!(v
            .get(&[1; 32], 0, verified + Duration::from_secs(59))
            .is_some());
        assert!(v.get(&[1; 32], 0, fetched + CACHE_TTL).is_none());
        // A shorter key cache bounds it further.
        v.insert(
            [2; 32],
            claims(),
            far,
            fetched,
            (fetched, Duration::from_secs(5)),
        );
        assert!(v
            .get(&[2; 32], 0, fetched + Duration::from_secs(5))
            .is_none());
    }

    #[test]
    fn id_tokens_and_unmarked_tokens_are_refused_where_cognito_marks_them() {
        let cognito = AccessPolicy {
            client_ids: &["app".to_owned()],
            ..AccessPolicy::default()
        };
        let access = serde_json::json!({"sub": "u", "client_id": "app", "token_use": "access"});
        assert!(apply_policy(&access, &cognito).is_ok());
        let id =
            serde_json::json!({"sub": "u", "aud": "app", "client_id": "app", "token_use": "id"});
        assert!(matches!(
            apply_policy(&id, &cognito),
            Err(AccessError::Invalid(_))
        ));
        let unmarked = serde_json::json!({"sub": "u", "client_id": "app"});
        assert!(matches!(
            apply_policy(&unmarked, &cognito),
            Err(AccessError::Invalid(_))
        ));
        // An RFC 9068 token (its resource as `aud`, no token_use) accepted by client_id.
        let rfc9068 =
            serde_json::json!({"sub": "u", "client_id": "app", "aud": "https://api.example"});
        assert!(apply_policy(&rfc9068, &cognito).is_ok());
        // Audience-checked deployments: an explicit ID token is refused too.
        let aud = AccessPolicy {
            audiences: &["gw".to_owned()],
            ..AccessPolicy::default()
        };
        let id_for_gw = serde_json::json!({"sub": "u", "aud": "gw", "token_use": "id"});
        assert!(matches!(
            apply_policy(&id_for_gw, &aud),
            Err(AccessError::Invalid(_))
        ));
        assert!(apply_policy(&serde_json::json!({"sub": "u", "aud": "gw"}), &aud).is_ok());
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut v = VerifiedTokens::default();
        let t0 = Instant::now();
        let far = SystemClock.now() + 3_600;
        for i in 0..VERIFIED_CAPACITY + 10 {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            v.insert(d, claims(), far, t0, (t0, CACHE_TTL));
        }
        assert!(v.entries.len() <= VERIFIED_CAPACITY);
    }

    #[test]
    fn the_policy_is_applied_to_remembered_claims() {
        let policy = AccessPolicy {
            audiences: &["gw".to_owned()],
            required_scopes: &["a".to_owned()],
            ..AccessPolicy::default()
        };
        assert_eq!(apply_policy(&claims(), &policy).unwrap().sub, "alice");
        let other = AccessPolicy {
            audiences: &["other".to_owned()],
            ..policy
        };
        assert!(matches!(
            apply_policy(&claims(), &other),
            Err(AccessError::Invalid(_))
        ));
        let more = AccessPolicy {
            required_scopes: &["c".to_owned()],
            ..policy
        };
        assert!(matches!(
            apply_policy(&claims(), &more),
            Err(AccessError::InsufficientScope)
        ));
    }
}
