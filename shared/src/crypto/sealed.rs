//! One shape for the short-lived values the gateway hands out and takes
//! back without storing them: the 2025 client session (`Mcp-Session-Id`),
//! the 2026-07-28 `requestState`, the sign-in's OAuth `state` and the
//! connections page's session cookie.
//!
//! Each is a typed value with an expiry, serialized as JSON and sealed with
//! the current key under its own purpose, so a token of one kind never opens
//! as another. Opening finds the key the token names (refetching the key set
//! once if it was added since the instance warmed up), checks the binding and
//! the expiry, and says which of those failed.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Aad, KeySet};
use crate::error::{Error, Result};
use crate::ports::KeyProvider;

/// A value that can be sealed into a token: it says when it expires.
pub trait Sealable: Serialize + DeserializeOwned {
    /// Unix seconds from which the value is refused.
    fn expires_at(&self) -> i64;
}

/// Why a token did not open.
#[derive(Debug)]
pub enum OpenError {
    /// The key set could not be read: a passing storage failure, retry.
    Keys(Error),
    /// Not a token of this kind sealed by this gateway: unknown key,
    /// tampered, another purpose, or not JSON of the expected shape.
    Invalid,
    /// A genuine token whose time is up.
    Expired,
}

/// The sealer and opener of tokens holding a `T`, for one purpose.
pub struct Sealed<T> {
    purpose: &'static str,
    _value: PhantomData<fn() -> T>,
}

impl<T: Sealable> Sealed<T> {
    /// Tokens of `T` bound to `purpose` (a name no other kind uses).
    pub const fn new(purpose: &'static str) -> Self {
        Sealed {
            purpose,
            _value: PhantomData,
        }
    }

    fn aad(&self) -> Aad {
        Aad::new(self.purpose, &[])
    }

    /// Seals `value` with a key set already at hand.
    pub fn seal_with(&self, keys: &KeySet, value: &T) -> String {
        // Serializing the gateway's own plain structs cannot fail.
        let plain = serde_json::to_vec(value).unwrap_or_default();
        keys.seal(&plain, &self.aad())
    }

    /// Seals `value` with the current key.
    pub async fn seal(&self, keys: &dyn KeyProvider, value: &T) -> Result<String> {
        Ok(self.seal_with(&*keys.key_set().await?, value))
    }

    /// Opens `token`, refusing it from `now` on if it has expired.
    pub async fn open(
        &self,
        keys: &dyn KeyProvider,
        token: &str,
        now: i64,
    ) -> std::result::Result<T, OpenError> {
        let kid = KeySet::key_id_of(token).ok_or(OpenError::Invalid)?;
        let set = keys.key_set_with(kid).await.map_err(OpenError::Keys)?;
        let plain = set
            .open(token, &self.aad())
            .map_err(|_| OpenError::Invalid)?;
        let value: T = serde_json::from_slice(&plain).map_err(|_| OpenError::Invalid)?;
        if value.expires_at() <= now {
            return Err(OpenError::Expired);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pass {
        who: String,
        exp: i64,
    }

    impl Sealable for Pass {
        fn expires_at(&self) -> i64 {
            self.exp
        }
    }

    const PASS: Sealed<Pass> = Sealed::new("test-pass");
    const OTHER_PURPOSE: Sealed<Pass> = Sealed::new("test-other");

    struct Keys(Option<Arc<KeySet>>);

    #[async_trait]
    impl KeyProvider for Keys {
        async fn key_set(&self) -> Result<Arc<KeySet>> {
            self.0.clone().ok_or(Error::NotFound("key set"))
        }
        async fn key_set_with(&self, _: &str) -> Result<Arc<KeySet>> {
            self.key_set().await
        }
    }

    fn keys(current: &str) -> Keys {
        let secret = serde_json::json!({
            "current": current,
            "k1": "0123456789abcdefghijklmnopqrstuvwxyzABCD",
            "k2": "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxw",
        });
        Keys(Some(Arc::new(
            KeySet::from_secret_string(&secret.to_string()).unwrap(),
        )))
    }

    #[tokio::test]
    async fn round_trip_expiry_purpose_and_key_failures() {
        let k = keys("k1");
        let pass = Pass {
            who: "alice".into(),
            exp: 100,
        };
        let token = PASS.seal(&k, &pass).await.unwrap();
        assert!(token.starts_with("k1."));
        assert_eq!(PASS.open(&k, &token, 99).await.unwrap(), pass);
        assert!(matches!(
            PASS.open(&k, &token, 100).await,
            Err(OpenError::Expired)
        ));
        // Another purpose, another type, garbage: not ours.
        assert!(matches!(
            OTHER_PURPOSE.open(&k, &token, 0).await,
            Err(OpenError::Invalid)
        ));
        for junk in [
            "",
            "no-dot",
            "k1.!!",
            "k9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(matches!(
                PASS.open(&k, junk, 0).await,
                Err(OpenError::Invalid)
            ));
        }
        // Sealed before a rotation, opened after it.
        assert_eq!(
            PASS.open(&keys("k2"), &token, 0).await.unwrap().who,
            "alice"
        );
        // The key set unreadable: a storage failure, not a forgery.
        assert!(matches!(
            PASS.open(&Keys(None), &token, 0).await,
            Err(OpenError::Keys(_))
        ));
        assert!(PASS.seal(&Keys(None), &pass).await.is_err());
    }
}
