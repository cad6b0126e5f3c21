//! Secrets Manager: client secrets by ARN and the gateway key set, cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, RwLock};

use crate::crypto::KeySet;
use crate::error::{Error, Result};
use crate::ports::{KeyProvider, SecretSource};

/// Reads secrets from Secrets Manager and keeps them for `ttl` in the warm
/// instance, so requests do not call Secrets Manager.
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    ttl: Duration,
    cache: RwLock<HashMap<String, (SecretString, Instant)>>,
    /// Held while fetching, so that callers who miss together (the
    /// scheduler's concurrent refreshes) share one request.
    loading: Mutex<()>,
}

impl SecretsManagerSource {
    /// Wraps a client; `ttl` bounds how stale a cached secret may be.
    pub fn new(client: aws_sdk_secretsmanager::Client, ttl: Duration) -> Self {
        SecretsManagerSource {
            client,
            ttl,
            cache: RwLock::new(HashMap::new()),
            loading: Mutex::new(()),
        }
    }

    async fn cached(&self, arn: &str) -> Option<SecretString> {
        match self.cache.read().await.get(arn) {
            Some((value, at)) if at.elapsed() < self.ttl => Some(value.clone()),
            _ => None,
        }
    }

    /// Reads the secret from Secrets Manager, without the cache.
    pub async fn fetch(&self, arn: &str) -> Result<SecretString> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception())
                {
                    Error::Secret {
                        arn: arn.to_owned(),
                        reason: "not found".into(),
                    }
                } else {
                    Error::secrets(e)
                }
            })?;
        let value: SecretString = out
            .secret_string()
            .ok_or_else(|| Error::Secret {
                arn: arn.to_owned(),
                reason: "has no string value".into(),
            })?
            .to_owned()
            .into();
        Ok(value)
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn secret(&self, arn: &str) -> Result<SecretString> {
        if let Some(value) = self.cached(arn).await {
            return Ok(value);
        }
        let _loading = self.loading.lock().await;
        if let Some(value) = self.cached(arn).await {
            return Ok(value);
        }
        let value = self.fetch(arn).await?;
        self.cache
            .write()
            .await
            .insert(arn.to_owned(), (value.clone(), Instant::now()));
        Ok(value)
    }

    async fn store(&self, name: &str, value: &SecretString) -> Result<String> {
        let created = self
            .client
            .create_secret()
            .name(name)
            .secret_string(value.expose_secret())
            .send()
            .await;
        let arn = match created {
            Ok(out) => out.arn,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_exists_exception()) =>
            {
                self.client
                    .put_secret_value()
                    .secret_id(name)
                    .secret_string(value.expose_secret())
                    .send()
                    .await
                    .map_err(Error::secrets)?
                    .arn
            }
            Err(e) => return Err(Error::secrets(e)),
        };
        let arn = arn.ok_or_else(|| Error::Secret {
            arn: name.to_owned(),
            reason: "Secrets Manager returned no ARN".into(),
        })?;
        self.cache.write().await.remove(&arn);
        Ok(arn)
    }
}

/// The gateway key set, parsed once and kept for the cache lifetime.
///
/// A ciphertext naming a key the cached set lacks triggers one refetch, at
/// most once per `min_refetch` so that garbage cannot make every request call
/// Secrets Manager.
pub struct SecretKeyProvider {
    source: Arc<SecretsManagerSource>,
    arn: String,
    ttl: Duration,
    min_refetch: Duration,
    cached: RwLock<Option<(Arc<KeySet>, Instant)>>,
    refetch: Mutex<Option<Instant>>,
    /// Held while loading: callers who miss together share one fetch.
    loading: Mutex<()>,
}

impl SecretKeyProvider {
    /// Key set stored in the secret `arn`.
    pub fn new(source: Arc<SecretsManagerSource>, arn: String, ttl: Duration) -> Self {
        SecretKeyProvider {
            source,
            arn,
            ttl,
            min_refetch: Duration::from_secs(10),
            cached: RwLock::new(None),
            refetch: Mutex::new(None),
            loading: Mutex::new(()),
        }
    }

    async fn fresh(&self) -> Option<Arc<KeySet>> {
        match &*self.cached.read().await {
            Some((set, at)) if at.elapsed() < self.ttl => Some(set.clone()),
            _ => None,
        }
    }

    async fn load(&self) -> Result<Arc<KeySet>> {
        let raw = self.source.fetch(&self.arn).await?;
        let set =
            KeySet::from_secret_string(raw.expose_secret()).map_err(|reason| Error::Secret {
                arn: self.arn.clone(),
                reason,
            })?;
        let set = Arc::new(set);
        *self.cached.write().await = Some((set.clone(), Instant::now()));
        Ok(set)
    }
}

#[async_trait]
impl KeyProvider for SecretKeyProvider {
    async fn key_set(&self) -> Result<Arc<KeySet>> {
        if let Some(set) = self.fresh().await {
            return Ok(set);
        }
        let _loading = self.loading.lock().await;
        if let Some(set) = self.fresh().await {
            return Ok(set);
        }
        self.load().await
    }

    async fn key_set_with(&self, key_id: &str) -> Result<Arc<KeySet>> {
        let set = self.key_set().await?;
        if set.has_key(key_id) {
            return Ok(set);
        }
        let mut last = self.refetch.lock().await;
        // Someone may have refetched while this caller waited for the lock.
        let set = self.key_set().await?;
        if set.has_key(key_id) {
            return Ok(set);
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return Ok(set);
        }
        *last = Some(Instant::now());
        self.load().await
    }
}

/// A fixed key set (unit tests and tools).
pub struct StaticKeys(pub Arc<KeySet>);

#[async_trait]
impl KeyProvider for StaticKeys {
    async fn key_set(&self) -> Result<Arc<KeySet>> {
        Ok(self.0.clone())
    }
    async fn key_set_with(&self, _key_id: &str) -> Result<Arc<KeySet>> {
        Ok(self.0.clone())
    }
}
