//! A key provider over a key set held in memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::KeySet;
use crate::error::{Error, Result};
use crate::ports::KeyProvider;
/// A key provider over a key set held in memory, which a test can make
/// unreadable (as a Secrets Manager outage would).
pub struct MemoryKeys {
    set: Arc<KeySet>,
    readable: AtomicBool,
}

impl MemoryKeys {
    /// Keys from a key-set secret's text (see [`KeySet::from_secret_string`]).
    pub fn new(secret: &str) -> std::result::Result<Self, String> {
        Ok(MemoryKeys {
            set: Arc::new(KeySet::from_secret_string(secret)?),
            readable: AtomicBool::new(true),
        })
    }

    /// From now on, reading the key set fails (or works again).
    pub fn set_readable(&self, readable: bool) {
        self.readable.store(readable, Ordering::SeqCst);
    }
}

#[async_trait]
impl KeyProvider for MemoryKeys {
    async fn key_set(&self) -> Result<Arc<KeySet>> {
        if self.readable.load(Ordering::SeqCst) {
            Ok(self.set.clone())
        } else {
            Err(Error::SecretsManager(
                "the key set cannot be read (in-memory outage)".into(),
            ))
        }
    }

    async fn key_set_with(&self, _key_id: &str) -> Result<Arc<KeySet>> {
        self.key_set().await
    }
}
