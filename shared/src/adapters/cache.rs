//! In-instance caches in front of the stores, so that a warm instance does
//! not read the table for data that changes rarely.
//!
//! Targets: the whole list is kept for `ttl` (`TARGETS_CACHE_SECONDS`);
//! writes through this instance drop it at once, writes elsewhere are seen
//! within `ttl`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::RwLock;

use crate::domain::Target;
use crate::error::Result;
use crate::ports::TargetCatalog;

/// A [`TargetCatalog`] that keeps the list in memory for a while.
pub struct CachedTargets {
    inner: Arc<dyn TargetCatalog>,
    ttl: Duration,
    cached: RwLock<Option<(Arc<Vec<Target>>, Instant)>>,
}

impl CachedTargets {
    /// Caches `inner`'s list for `ttl` (zero: no caching).
    pub fn new(inner: Arc<dyn TargetCatalog>, ttl: Duration) -> Self {
        CachedTargets {
            inner,
            ttl,
            cached: RwLock::new(None),
        }
    }

    async fn all(&self) -> Result<Arc<Vec<Target>>> {
        if let Some((list, at)) = &*self.cached.read().await {
            if at.elapsed() < self.ttl {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(self.inner.list().await?);
        *self.cached.write().await = Some((list.clone(), Instant::now()));
        Ok(list)
    }

    async fn invalidate(&self) {
        *self.cached.write().await = None;
    }
}

#[async_trait]
impl TargetCatalog for CachedTargets {
    async fn put(&self, target: &Target) -> Result<()> {
        let r = self.inner.put(target).await;
        self.invalidate().await;
        r
    }

    async fn get(&self, name: &str) -> Result<Option<Target>> {
        if self.ttl.is_zero() {
            return self.inner.get(name).await;
        }
        Ok(self.all().await?.iter().find(|t| t.name == name).cloned())
    }

    async fn list(&self) -> Result<Vec<Target>> {
        Ok(self.all().await?.as_ref().clone())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let r = self.inner.delete(name).await;
        self.invalidate().await;
        r
    }
}
