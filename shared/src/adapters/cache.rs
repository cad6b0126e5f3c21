//! In-instance caches in front of the stores, so that a warm instance does
//! not read the table for data that changes rarely.
//!
//! Targets: the whole list is kept for `ttl` (`TARGETS_CACHE_SECONDS`);
//! writes through this instance drop it at once, writes elsewhere are seen
//! within `ttl`. Grants: see [`CachedGrants`] (`GRANT_CACHE_SECONDS`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::Target;
use crate::error::Result;
use crate::ports::TargetCatalog;

mod grants;

pub use grants::CachedGrants;

/// The targets as cached: one shared list of shared targets.
type TargetList = Arc<Vec<Arc<Target>>>;

/// A [`TargetCatalog`] that keeps the list in memory for a while.
pub struct CachedTargets {
    inner: Arc<dyn TargetCatalog>,
    ttl: Duration,
    /// A plain lock: read by every call, held for a clone of an `Arc`
    /// and never across an await (an async lock's release takes a mutex
    /// of its own).
    cached: std::sync::RwLock<Option<(TargetList, Instant)>>,
    /// Held while loading, so that callers who miss together (a listing's
    /// fan-out, the scheduler's concurrent refreshes) share one read.
    loading: tokio::sync::Mutex<()>,
    /// Bumped by every write through this instance: a load that began
    /// before a write does not keep its (older) list.
    generation: std::sync::atomic::AtomicU64,
}

impl CachedTargets {
    /// Caches `inner`'s list for `ttl` (zero: no caching).
    pub fn new(inner: Arc<dyn TargetCatalog>, ttl: Duration) -> Self {
        CachedTargets {
            inner,
            ttl,
            cached: std::sync::RwLock::new(None),
            loading: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn fresh(&self) -> Option<TargetList> {
        match &*self.cached.read().unwrap_or_else(|e| e.into_inner()) {
            Some((list, at)) if at.elapsed() < self.ttl => Some(list.clone()),
            _ => None,
        }
    }

    async fn all(&self) -> Result<TargetList> {
        if self.ttl.is_zero() {
            return Ok(Arc::new(self.inner.list().await?));
        }
        if let Some(list) = self.fresh() {
            return Ok(list);
        }
        let _loading = self.loading.lock().await;
        if let Some(list) = self.fresh() {
            return Ok(list);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let list = Arc::new(self.inner.list().await?);
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            *cached = Some((list.clone(), Instant::now()));
        }
        Ok(list)
    }

    async fn invalidate(&self) {
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *cached = None;
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
        Ok(self
            .all()
            .await?
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.as_ref().clone()))
    }

    async fn get_fresh(&self, name: &str) -> Result<Option<Target>> {
        self.inner.get(name).await
    }

    async fn list(&self) -> Result<Vec<Arc<Target>>> {
        Ok(self.all().await?.as_ref().clone())
    }

    async fn list_shared(&self) -> Result<TargetList> {
        self.all().await
    }

    async fn put_catalog(&self, target: &Target, catalog: &[serde_json::Value]) -> Result<()> {
        let r = self.inner.put_catalog(target, catalog).await;
        self.invalidate().await;
        r
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let r = self.inner.delete(name).await;
        self.invalidate().await;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TargetAuth;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn target() -> Target {
        Target {
            name: "t".into(),
            display_name: None,
            mcp_url: "http://127.0.0.1:9/mcp".into(),
            auth: TargetAuth::None,
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: Default::default(),
        }
    }

    /// A slow catalog that counts how often it is listed.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl TargetCatalog for Counting {
        async fn put(&self, _: &Target) -> Result<()> {
            Ok(())
        }
        async fn get(&self, _: &str) -> Result<Option<Target>> {
            Ok(None)
        }
        async fn list(&self) -> Result<Vec<Arc<Target>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(vec![Arc::new(target())])
        }
        async fn put_catalog(&self, _: &Target, _: &[serde_json::Value]) -> Result<()> {
            Ok(())
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_load_older_than_a_write_is_not_kept() {
        let inner = Arc::new(Counting::default());
        let cache = Arc::new(CachedTargets::new(inner.clone(), Duration::from_secs(60)));
        // A load starts (it takes 50 ms), and a write through this instance
        // lands while it runs: the load's list predates the write.
        let loading = tokio::spawn({
            let cache = cache.clone();
            async move { cache.list().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        cache.put_catalog(&target(), &[]).await.unwrap();
        loading.await.unwrap().unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        // So the next reader loads again instead of getting that list.
        cache.list().await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
        cache.list().await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 2, "and then it is cached");
    }

    #[tokio::test]
    async fn callers_who_miss_together_share_one_read() {
        let inner = Arc::new(Counting::default());
        let cached = CachedTargets::new(inner.clone(), Duration::from_secs(30));
        let lists = futures::future::join_all((0..16).map(|_| cached.list())).await;
        assert!(lists.iter().all(|l| l.as_ref().unwrap().len() == 1));
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        // A write through this instance drops the list: the next call reads.
        cached.put(&lists[0].as_ref().unwrap()[0]).await.unwrap();
        cached.list().await.unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_cached_list_is_handed_out_itself_until_it_changes() {
        let inner = Arc::new(Counting::default());
        let cached = CachedTargets::new(inner.clone(), Duration::from_secs(30));
        let first = cached.list_shared().await.unwrap();
        assert!(Arc::ptr_eq(&first, &cached.list_shared().await.unwrap()));
        cached.put(&first[0]).await.unwrap();
        let after = cached.list_shared().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &after), "a new list after a write");
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
        // Without caching, each call is a list of its own.
        let uncached = CachedTargets::new(inner.clone(), Duration::ZERO);
        let (a, b) = (
            uncached.list_shared().await.unwrap(),
            uncached.list_shared().await.unwrap(),
        );
        assert!(!Arc::ptr_eq(&a, &b));
    }

    #[tokio::test]
    async fn no_caching_reads_every_time() {
        let inner = Arc::new(Counting::default());
        let cached = CachedTargets::new(inner.clone(), Duration::ZERO);
        futures::future::join_all((0..4).map(|_| cached.list())).await;
        assert_eq!(inner.0.load(Ordering::SeqCst), 4);
    }
}
