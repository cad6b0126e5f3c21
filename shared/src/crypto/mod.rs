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

pub mod dpop;
mod keyset;
pub mod rotation;
mod sealed;

use std::fmt;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

pub use keyset::{KeySet, UNKNOWN_KEY};
pub use sealed::{OpenError, Sealable, Sealed};

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

    /// Binding for the policy set's text (its integrity seal).
    pub fn policy_set(text: &str) -> Self {
        Aad::new("policy-set", &[text])
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

impl Aad {
    /// The encoded bytes fed to the AEAD.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Aad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aad({} bytes)", self.0.len())
    }
}

/// Random bytes as unpadded base64url: ids, states and PKCE verifiers.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    B64.encode(buf)
}

/// Fills `buf` from the system's random source (through aws-lc).
pub(crate) fn fill_random(buf: &mut [u8]) {
    // aws-lc's generator fails only when the operating system gives it no
    // entropy at all; nothing can be sealed or drawn safely then.
    aws_lc_rs::rand::fill(buf).expect("the system random source is available");
}

/// SHA-256 of a value.
pub fn sha256(value: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, value).as_ref());
    out
}

/// Hex SHA-256 of a value, for storing digests of secrets instead of secrets.
pub fn sha256_hex(value: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in sha256(value) {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}
