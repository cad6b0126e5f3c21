//! The key set: AES-256-GCM keys derived with HKDF-SHA256 from the
//! key-set secret, sealing with the current key and opening with any.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::aead::{self, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

use super::Aad;
use crate::error::{Error, Result};

/// What [`KeySet::open`] says of a value sealed with a key it does not hold.
pub const UNKNOWN_KEY: &str = "sealed with a key that is not in the key set";
const MIN_KEY_CHARS: usize = 32;
const HKDF_INFO: &[u8] = b"mcp-oauth-gateway/v1/aead";
const TAG_LEN: usize = 16;

/// The gateway's keys, as loaded from Secrets Manager.
pub struct KeySet {
    current: String,
    keys: HashMap<String, RandomizedNonceKey>,
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
    /// The result is `<key id>.<base64url(nonce || ciphertext || tag)>`.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad) -> String {
        let key = &self.keys[&self.current];
        let mut blob = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        blob.extend_from_slice(&[0u8; NONCE_LEN]);
        blob.extend_from_slice(plaintext);
        let (nonce, tag) = key
            .seal_in_place_separate_tag(aead::Aad::from(aad.as_bytes()), &mut blob[NONCE_LEN..])
            // AES-GCM fails only on inputs of more than 64 GiB, and when the
            // system gives no entropy for the nonce.
            .expect("AES-GCM sealing of a small buffer cannot fail");
        blob[..NONCE_LEN].copy_from_slice(nonce.as_ref());
        blob.extend_from_slice(tag.as_ref());
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
        let key = self.keys.get(kid).ok_or(Error::Decrypt(UNKNOWN_KEY))?;
        let mut blob = B64
            .decode(body)
            .map_err(|_| Error::Decrypt("not a sealed value"))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Decrypt("sealed value too short"));
        }
        let nonce = Nonce::try_assume_unique_for_key(&blob[..NONCE_LEN])
            .map_err(|_| Error::Decrypt("not a sealed value"))?;
        let len = key
            .open_in_place(
                nonce,
                aead::Aad::from(aad.as_bytes()),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| Error::Decrypt("authentication failed (wrong binding or tampered)"))?
            .len();
        blob.drain(..NONCE_LEN);
        blob.truncate(len);
        Ok(blob)
    }
}

/// The AEAD key for one key string: HKDF-SHA256 (no salt, RFC 5869's zero
/// salt) with the gateway's info string, 256 bits for AES-256-GCM.
fn derive(material: &[u8]) -> RandomizedNonceKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(material);
    let mut key = [0u8; 32];
    prk.expand(&[HKDF_INFO], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut key))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    RandomizedNonceKey::new(&AES_256_GCM, &key).expect("a 32-byte key is an AES-256 key")
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
        let a = super::super::random_token(16);
        assert_eq!(a.len(), 22);
        assert_ne!(a, super::super::random_token(16));
        assert_eq!(
            super::super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Values sealed before the AEAD moved to aws-lc (AES-256-GCM and HKDF
    /// from RustCrypto) still open: stored grants survive an upgrade.
    #[test]
    fn values_sealed_by_earlier_releases_still_open() {
        let ks = set(serde_json::json!({"current": "k1", "k1": K1}));
        let earlier = "k1.Wd7PqsRgrnPSllHeYTO5RC_Pmfo8isxvg8YD426Dz0KFk_gFrGYnjT7L94cQ0j6Uw3AMiHTQFukkbtdE4Sao";
        assert_eq!(
            ks.open(earlier, &Aad::grant("alice", "github")).unwrap(),
            b"tokens sealed by an earlier release"
        );
        assert!(ks.open(earlier, &Aad::grant("alice", "gitlab")).is_err());
    }
}
