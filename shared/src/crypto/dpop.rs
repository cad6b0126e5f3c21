//! DPoP (RFC 9449): a per-grant P-256 key and the proofs it signs.
//!
//! When a target's authorization server advertises ES256 in
//! `dpop_signing_alg_values_supported`, every grant the gateway obtains
//! there gets its own key: the token requests that issue and refresh the
//! grant carry a proof made with it (so the server binds the tokens to the
//! key), and every request to the upstream carries a fresh proof with the
//! access token's hash. The private key is sealed with the grant's tokens,
//! so a copy of the table without the key set yields neither.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// The only proof algorithm the gateway signs with.
pub const DPOP_ALG: &str = "ES256";

/// A DPoP key pair (cheap to clone). Debug output shows only the public
/// thumbprint.
#[derive(Clone)]
pub struct DpopKey(Arc<Inner>);

struct Inner {
    pair: EcdsaKeyPair,
    /// PKCS#8 DER, base64url: the stored form.
    secret: SecretString,
    /// The public key's `x` and `y`, base64url.
    x: String,
    y: String,
}

/// Why a stored key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the grant's DPoP key is unusable")]
pub struct BadKey;

impl DpopKey {
    /// A new random key.
    pub fn generate() -> Result<Self, BadKey> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| BadKey)?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// The key a grant stored ([`DpopKey::secret`]).
    pub fn from_secret(secret: &SecretString) -> Result<Self, BadKey> {
        let der = B64.decode(secret.expose_secret()).map_err(|_| BadKey)?;
        Self::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, BadKey> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(|_| BadKey)?;
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(BadKey);
        }
        Ok(DpopKey(Arc::new(Inner {
            x: B64.encode(&point[1..33]),
            y: B64.encode(&point[33..]),
            secret: SecretString::from(B64.encode(der)),
            pair,
        })))
    }

    /// The private key in its stored form (secret material).
    pub fn secret(&self) -> &SecretString {
        &self.0.secret
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.0.x, "y": self.0.y})
    }

    /// The RFC 7638 thumbprint of the public key (what a bound token's
    /// `cnf.jkt` holds).
    pub fn thumbprint(&self) -> String {
        // Required members only, in lexicographic order, no whitespace.
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.0.x, self.0.y
        );
        B64.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    /// A fresh proof (RFC 9449 §4.2) for a request: a unique `jti`, the
    /// method, the URL without query or fragment, `iat`; `ath` (the access
    /// token's hash) on resource requests; the server's `nonce` when it
    /// asked for one.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&SecretString>,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<String, BadKey> {
        let header = json!({
            "typ": "dpop+jwt",
            "alg": DPOP_ALG,
            "jwk": self.public_jwk(),
        });
        let mut claims = json!({
            "jti": crate::crypto::random_token(16),
            "htm": method,
            "htu": htu(url),
            "iat": now,
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(B64.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                token.expose_secret().as_bytes()
            )));
        }
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let signature = self
            .0
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| BadKey)?;
        Ok(format!(
            "{signing_input}.{}",
            B64.encode(signature.as_ref())
        ))
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("jkt", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

/// A proof's `htu`: the URL without query and fragment (RFC 9449 §4.2).
fn htu(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or(url).to_owned(),
    }
}

/// True when a server's `dpop_signing_alg_values_supported` lets the
/// gateway use DPoP there.
pub fn supported(algs: &[String]) -> bool {
    algs.iter().any(|a| a == DPOP_ALG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_verifies_with_its_own_jwk_and_carries_the_request() {
        let key = DpopKey::generate().unwrap();
        let token = SecretString::from("at-123".to_owned());
        let proof = key
            .proof(
                "POST",
                "https://mcp.example.com/mcp?x=1#f",
                Some(&token),
                Some("n-1"),
                1_700_000_000,
            )
            .unwrap();
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert!(header["jwk"].get("d").is_none(), "no private part");
        // Verified by an independent implementation from the header's JWK.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(header["jwk"].clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&proof, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://mcp.example.com/mcp");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["nonce"], "n-1");
        let ath = B64.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            b"at-123",
        ));
        assert_eq!(claims["ath"], ath);
        // Two proofs never share a jti.
        let again = key.proof("POST", "https://a/", None, None, 0).unwrap();
        let again: Vec<&str> = again.split('.').collect();
        assert_ne!(decode(again[1])["jti"], claims["jti"]);
        assert!(decode(again[1]).get("ath").is_none());
    }

    #[test]
    fn a_stored_key_comes_back_with_the_same_thumbprint() {
        let key = DpopKey::generate().unwrap();
        let back = DpopKey::from_secret(key.secret()).unwrap();
        assert_eq!(key.thumbprint(), back.thumbprint());
        assert_eq!(key.public_jwk(), back.public_jwk());
        assert!(DpopKey::from_secret(&SecretString::from("not a key".to_owned())).is_err());
        assert!(!format!("{key:?}").contains(key.secret().expose_secret()));
    }

    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        // RFC 7638's method on a P-256 key, checked against the canonical
        // JSON computed independently with serde (sorted keys).
        let key = DpopKey::generate().unwrap();
        let jwk = key.public_jwk();
        let sorted: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_value(jwk).unwrap();
        let canonical = serde_json::to_string(&sorted).unwrap();
        let expected = B64.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ));
        assert_eq!(key.thumbprint(), expected);
    }

    #[test]
    fn only_es256_is_used() {
        assert!(supported(&["RS256".into(), "ES256".into()]));
        assert!(!supported(&["RS256".into()]));
        assert!(!supported(&[]));
    }
}
