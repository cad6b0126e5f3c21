//! Application-level encryption of stored secrets (tokens, PKCE verifiers).
//!
//! Design:
//! - AES-256-GCM with a random 96-bit nonce per ciphertext.
//! - The gateway key set lives in one Secrets Manager secret, a JSON object
//!   `{"current": "<kid>", "<kid>": "<at least 32 random characters>", ...}`.
//!   That shape is what CloudFormation's `GenerateSecretString` produces, so
//!   the deployed stack generates its first key itself. Each key string is
//!   stretched with HKDF-SHA256 into a 256-bit AEAD key.
//! - Every ciphertext carries the id of the key that sealed it, so a key can
//!   be rotated: add a new key, point `current` at it, and old items still open
//!   while new writes use the new key.
//! - Associated data binds a ciphertext to what it belongs to (purpose, user,
//!   target, ...), so a ciphertext copied into another user's item does not
//!   open.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;

use crate::error::{Error, Result};

const NONCE_LEN: usize = 12;
/// What [`KeySet::open`] says of a value sealed with a key it does not hold.
pub const UNKNOWN_KEY: &str = "sealed with a key that is not in the key set";
const MIN_KEY_CHARS: usize = 32;
const HKDF_INFO: &[u8] = b"mcp-oauth-gateway/v1/aead";

/// The context a ciphertext is bound to, fed to the AEAD as associated data.
///
/// Parts are length-prefixed so that no two different contexts encode alike.
#[derive(Clone, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    /// Builds associated data from a purpose and the values it binds.
    pub fn new(purpose: &str, parts: &[&str]) -> Self {
        let mut out = Vec::with_capacity(64);
        for part in std::iter::once(purpose).chain(parts.iter().copied()) {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        Aad(out)
    }

    /// Binding for a grant's token set: the user and the target.
    pub fn grant(sub: &str, target: &str) -> Self {
        Aad::new("grant-tokens", &[sub, target])
    }

    /// Binding for a pending authorization's OAuth state secret: its id,
    /// user and target, and `context` (what it will ask for: resource,
    /// issuer, scopes), so none of them can be changed in the table.
    pub fn oauth_state(authorization_id: &str, sub: &str, target: &str, context: &str) -> Self {
        Aad::new("oauth-state", &[authorization_id, sub, target, context])
    }

    /// Binding for the digest of the browser a pending authorization belongs to.
    pub fn consent_browser(authorization_id: &str, sub: &str, target: &str) -> Self {
        Aad::new("consent-browser", &[authorization_id, sub, target])
    }

    /// The integrity tag of a target's configuration: its name (from the
    /// item's key) and the exact stored configuration text.
    pub fn target_config(name: &str, config: &str) -> Self {
        Aad::new("target-config", &[name, config])
    }

    /// Binding for the URL a pending authorization returns the person to.
    pub fn consent_return(authorization_id: &str, sub: &str, target: &str) -> Self {
        Aad::new("consent-return", &[authorization_id, sub, target])
    }

    /// Binding for a pending authorization's PKCE verifier (as for the state).
    pub fn pkce_verifier(authorization_id: &str, sub: &str, target: &str, context: &str) -> Self {
        Aad::new("pkce-verifier", &[authorization_id, sub, target, context])
    }
}

impl fmt::Debug for Aad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aad({} bytes)", self.0.len())
    }
}

/// The gateway's keys, as loaded from Secrets Manager.
#[derive(Clone)]
pub struct KeySet {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field("key_ids", &ids)
            .finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeySet {
    /// Parses the key-set secret. Errors name what is wrong, never a key.
    pub fn from_secret_string(secret: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(secret).map_err(|_| "the key set is not a JSON object")?;
        let obj = value
            .as_object()
            .ok_or("the key set is not a JSON object")?;
        let current = obj
            .get("current")
            .and_then(|v| v.as_str())
            .ok_or("the key set has no string member \"current\"")?
            .to_owned();
        let mut keys = HashMap::new();
        for (id, material) in obj {
            if id == "current" {
                continue;
            }
            if !valid_key_id(id) {
                return Err(format!(
                    "key id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'"
                ));
            }
            let material = material
                .as_str()
                .ok_or_else(|| format!("key {id:?} is not a string"))?;
            if material.chars().count() < MIN_KEY_CHARS {
                return Err(format!(
                    "key {id:?} is shorter than {MIN_KEY_CHARS} characters"
                ));
            }
            keys.insert(id.clone(), derive(material.as_bytes()));
        }
        if !keys.contains_key(&current) {
            return Err(format!(
                "\"current\" names key {current:?}, which is not in the set"
            ));
        }
        Ok(KeySet { current, keys })
    }

    /// The id of the key new ciphertexts are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// True when the set holds a key with this id.
    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Encrypts `plaintext` with the current key, bound to `aad`.
    ///
    /// The result is `<key id>.<base64url(nonce || ciphertext)>`.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad) -> String {
        let cipher = &self.keys[&self.current];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad.0,
                },
            )
            // AES-GCM only fails on inputs of more than 64 GiB.
            .expect("AES-GCM encryption of a small buffer cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        format!("{}.{}", self.current, B64.encode(blob))
    }

    /// The key id a sealed value names, if it is well formed.
    pub fn key_id_of(sealed: &str) -> Option<&str> {
        sealed.split_once('.').map(|(kid, _)| kid)
    }

    /// Decrypts a value made by [`KeySet::seal`] with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &Aad) -> Result<Vec<u8>> {
        let (kid, body) = sealed
            .split_once('.')
            .ok_or(Error::Decrypt("not a sealed value"))?;
        let cipher = self.keys.get(kid).ok_or(Error::Decrypt(UNKNOWN_KEY))?;
        let blob = B64
            .decode(body)
            .map_err(|_| Error::Decrypt("not a sealed value"))?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(Error::Decrypt("sealed value too short"));
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad.0,
                },
            )
            .map_err(|_| Error::Decrypt("authentication failed (wrong binding or tampered)"))
    }
}

fn derive(material: &[u8]) -> Aes256Gcm {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, material);
    let mut key = [0u8; 32];
    hk.expand(HKDF_INFO, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new(&key.into())
}

/// Random bytes as unpadded base64url: ids, states and PKCE verifiers.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    B64.encode(buf)
}

/// Hex SHA-256 of a value, for storing digests of secrets instead of secrets.
pub fn sha256_hex(value: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
    const K2: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxw";

    fn set(json: serde_json::Value) -> KeySet {
        KeySet::from_secret_string(&json.to_string()).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let ks = set(serde_json::json!({"current": "k1", "k1": K1}));
        let sealed = ks.seal(b"token", &Aad::grant("alice", "github"));
        assert!(sealed.starts_with("k1."));
        assert!(!sealed.contains("token"));
        assert_eq!(
            ks.open(&sealed, &Aad::grant("alice", "github")).unwrap(),
            b"token"
        );
        assert!(ks.open(&sealed, &Aad::grant("bob", "github")).is_err());
        assert!(ks.open(&sealed, &Aad::grant("alice", "gitlab")).is_err());
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        assert_ne!(Aad::grant("ab", "c"), Aad::grant("a", "bc"));
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let old = set(serde_json::json!({"current": "k1", "k1": K1}));
        let sealed = old.seal(b"v", &Aad::grant("a", "t"));
        let rotated = set(serde_json::json!({"current": "k2", "k1": K1, "k2": K2}));
        assert_eq!(rotated.open(&sealed, &Aad::grant("a", "t")).unwrap(), b"v");
        assert!(rotated.seal(b"v", &Aad::grant("a", "t")).starts_with("k2."));
        let dropped = set(serde_json::json!({"current": "k2", "k2": K2}));
        assert!(matches!(
            dropped.open(&sealed, &Aad::grant("a", "t")),
            Err(Error::Decrypt(_))
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let ks = set(serde_json::json!({"current": "k1", "k1": K1}));
        let sealed = ks.seal(b"secret", &Aad::grant("a", "t"));
        let (kid, body) = sealed.split_once('.').unwrap();
        let mut raw = B64.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let forged = format!("{kid}.{}", B64.encode(raw));
        assert!(ks.open(&forged, &Aad::grant("a", "t")).is_err());
        assert!(ks.open("garbage", &Aad::grant("a", "t")).is_err());
        assert!(ks.open("k1.!!!", &Aad::grant("a", "t")).is_err());
        assert!(ks.open("k1.AAAA", &Aad::grant("a", "t")).is_err());
    }

    #[test]
    fn key_set_errors_name_the_problem_not_the_key() {
        for (json, needle) in [
            ("not json", "not a JSON object"),
            ("[]", "not a JSON object"),
            (r#"{"k1":"x"}"#, "\"current\""),
            (r#"{"current":"k1","k1":"short"}"#, "shorter than 32"),
            (
                r#"{"current":"k9","k1":"0123456789abcdefghijklmnopqrstuvwxyz"}"#,
                "not in the set",
            ),
            (
                r#"{"current":"k.1","k.1":"0123456789abcdefghijklmnopqrstuvwxyz"}"#,
                "key id",
            ),
        ] {
            let err = KeySet::from_secret_string(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
            assert!(!err.contains("0123456789"), "{err}");
        }
        let ks = set(serde_json::json!({"current": "k1", "k1": K1}));
        assert!(!format!("{ks:?}").contains(K1));
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(16);
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_token(16));
        assert_eq!(sha256_hex(b"abc").len(), 64);
    }
}
