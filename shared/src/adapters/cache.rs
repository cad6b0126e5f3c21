//! In-instance caches in front of the stores, so that a warm instance does
//! not read the table for data that changes rarely.
//!
//! Targets: the whole list is kept for `ttl` (`TARGETS_CACHE_SECONDS`);
//! writes through this instance drop it at once, writes elsewhere are seen
//! within `ttl`. Grants: see [`CachedGrants`] (`GRANT_CACHE_SECONDS`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::{Grant, GrantKey, Target};
use crate::error::Result;
use crate::ports::{GrantStore, TargetCatalog};

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

/// A [`GrantStore`] that keeps grants read by this instance for `ttl`.
///
/// Only eventually consistent reads (`consistent = false`, the proxy's hot
/// path) are served from memory; the lease protocol's consistent reads and
/// every write go to the table, and a write through this instance replaces or
/// drops its entry at once. A grant changed or revoked by another instance is
/// seen within `ttl` (`GRANT_CACHE_SECONDS`): until then this instance may
/// still call the upstream with the old access token, which the upstream
/// refuses once it is revoked there (the proxy then refreshes or asks for
/// consent).
pub struct CachedGrants {
    inner: Arc<dyn GrantStore>,
    ttl: Duration,
    cached: std::sync::RwLock<GrantEntries>,
}

/// The cached grants by user, then target: looked up by the request's
/// `&str`s, with no key built per read. The lock is never held across an
/// await.
#[derive(Default)]
struct GrantEntries {
    by_user: HashMap<String, HashMap<String, (Arc<Grant>, Instant)>>,
    len: usize,
}

impl GrantEntries {
    fn get(&self, sub: &str, target: &str) -> Option<&(Arc<Grant>, Instant)> {
        self.by_user.get(sub)?.get(target)
    }

    fn insert(&mut self, grant: Arc<Grant>) {
        let targets = self.by_user.entry(grant.sub.clone()).or_default();
        let target = grant.target.clone();
        let entry = (grant, Instant::now());
        if targets.insert(target, entry).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, sub: &str, target: &str) {
        let Some(targets) = self.by_user.get_mut(sub) else {
            return;
        };
        if targets.remove(target).is_some() {
            self.len -= 1;
        }
        if targets.is_empty() {
            self.by_user.remove(sub);
        }
    }

    /// Drops the entries older than `ttl`.
    fn expire(&mut self, ttl: Duration) {
        let now = Instant::now();
        let mut len = 0;
        self.by_user.retain(|_, targets| {
            targets.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            len += targets.len();
            !targets.is_empty()
        });
        self.len = len;
    }
}

impl CachedGrants {
    /// Caches `inner`'s grants for `ttl` (zero: no caching).
    pub fn new(inner: Arc<dyn GrantStore>, ttl: Duration) -> Self {
        CachedGrants {
            inner,
            ttl,
            cached: Default::default(),
        }
    }

    async fn remember(&self, grant: &Grant) {
        if !self.ttl.is_zero() {
            self.keep(Arc::new(grant.clone()));
        }
    }

    fn keep(&self, grant: Arc<Grant>) {
        let mut entries = self.cached.write().unwrap_or_else(|e| e.into_inner());
        if entries.len >= MAX_CACHED_GRANTS {
            entries.expire(self.ttl);
            if entries.len >= MAX_CACHED_GRANTS {
                *entries = GrantEntries::default();
            }
        }
        entries.insert(grant);
    }

    /// The cached grant, while it is fresh.
    fn cached(&self, sub: &str, target: &str) -> Option<Arc<Grant>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.cached.read().unwrap_or_else(|e| e.into_inner());
        let (g, at) = entries.get(sub, target)?;
        (at.elapsed() < self.ttl).then(|| g.clone())
    }

    async fn forget(&self, sub: &str, target: &str) {
        self.cached
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sub, target);
    }
}

/// Bound on the grants one instance keeps.
const MAX_CACHED_GRANTS: usize = 10_000;

#[async_trait]
impl GrantStore for CachedGrants {
    async fn get(&self, sub: &str, target: &str, consistent: bool) -> Result<Option<Grant>> {
        Ok(self
            .get_shared(sub, target, consistent)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    async fn get_shared(
        &self,
        sub: &str,
        target: &str,
        consistent: bool,
    ) -> Result<Option<Arc<Grant>>> {
        if !consistent {
            if let Some(g) = self.cached(sub, target) {
                return Ok(Some(g));
            }
        }
        let found = self.inner.get(sub, target, consistent).await?.map(Arc::new);
        match &found {
            Some(g) if !self.ttl.is_zero() => self.keep(g.clone()),
            Some(_) => {}
            None => self.forget(sub, target).await,
        }
        Ok(found)
    }

    async fn create(&self, grant: &Grant) -> Result<Grant> {
        let r = self.inner.create(grant).await;
        self.forget(&grant.sub, &grant.target).await;
        r
    }

    async fn update(&self, grant: &Grant) -> Result<Grant> {
        let r = self.inner.update(grant).await;
        match &r {
            Ok(g) => self.remember(g).await,
            Err(_) => self.forget(&grant.sub, &grant.target).await,
        }
        r
    }

    async fn update_and_release(&self, grant: &Grant, owner: &str) -> Result<Grant> {
        let r = self.inner.update_and_release(grant, owner).await;
        match &r {
            Ok(g) => self.remember(g).await,
            Err(_) => self.forget(&grant.sub, &grant.target).await,
        }
        r
    }

    async fn put_after_consent(&self, grant: &Grant) -> Result<Grant> {
        let r = self.inner.put_after_consent(grant).await;
        self.forget(&grant.sub, &grant.target).await;
        r
    }

    async fn acquire_lease(
        &self,
        sub: &str,
        target: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Grant> {
        let r = self
            .inner
            .acquire_lease(sub, target, owner, now, until)
            .await;
        self.forget(sub, target).await;
        r
    }

    async fn release_lease(&self, sub: &str, target: &str, owner: &str) -> Result<()> {
        self.inner.release_lease(sub, target, owner).await
    }

    async fn mark_needs_consent(
        &self,
        sub: &str,
        target: &str,
        expected_version: u64,
    ) -> Result<Grant> {
        let r = self
            .inner
            .mark_needs_consent(sub, target, expected_version)
            .await;
        self.forget(sub, target).await;
        r
    }

    async fn mark_unreadable(&self, sub: &str, target: &str) -> Result<()> {
        let r = self.inner.mark_unreadable(sub, target).await;
        self.forget(sub, target).await;
        r
    }

    async fn delete(&self, sub: &str, target: &str) -> Result<()> {
        let r = self.inner.delete(sub, target).await;
        self.forget(sub, target).await;
        r
    }

    async fn due_for_refresh(&self, until: i64, limit: usize) -> Result<Vec<GrantKey>> {
        self.inner.due_for_refresh(until, limit).await
    }

    async fn list_for_user(&self, sub: &str) -> Result<Vec<Grant>> {
        self.inner.list_for_user(sub).await
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

#[cfg(test)]
mod grant_entries {
    use super::*;
    use crate::domain::grant::grant_for_tests as grant;

    #[test]
    fn grants_are_kept_by_user_and_target_and_counted() {
        let mut e = GrantEntries::default();
        e.insert(Arc::new(grant("alice", "a")));
        e.insert(Arc::new(grant("alice", "b")));
        e.insert(Arc::new(grant("bob", "a")));
        e.insert(Arc::new(grant("alice", "a"))); // replaced, not counted twice
        assert_eq!(e.len, 3);
        assert_eq!(
            e.get("alice", "b").map(|(g, _)| g.target.as_str()),
            Some("b")
        );
        assert_eq!(e.get("bob", "b").map(|(g, _)| g.sub.as_str()), None);
        e.remove("alice", "a");
        e.remove("alice", "a"); // already gone
        e.remove("carol", "a"); // never there
        assert_eq!(e.len, 2);
        assert!(e.get("alice", "a").is_none());
        e.remove("alice", "b");
        assert!(
            !e.by_user.contains_key("alice"),
            "no empty map is left behind"
        );
        assert_eq!(e.len, 1);
        e.expire(Duration::ZERO);
        assert_eq!(e.len, 0);
        assert!(e.by_user.is_empty());
    }
}

#[cfg(test)]
mod shared_grants {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::grant::grant_for_tests as grant;

    /// The grant `cached` hands out for (`sub`, target `a`), which must exist.
    async fn shared(cached: &CachedGrants, sub: &str, consistent: bool) -> Arc<Grant> {
        cached
            .get_shared(sub, "a", consistent)
            .await
            .unwrap()
            .expect("a grant")
    }

    #[tokio::test]
    async fn a_cached_grant_is_handed_out_shared_until_it_changes() {
        let store = Arc::new(MemoryStore::new());
        store.create(&grant("alice", "a")).await.unwrap();
        let cached = CachedGrants::new(store.clone(), Duration::from_secs(30));
        let first = shared(&cached, "alice", false).await;
        let again = shared(&cached, "alice", false).await;
        assert!(
            Arc::ptr_eq(&first, &again),
            "the cached copy, not a new one"
        );
        // A consistent read goes to the store.
        let read = shared(&cached, "alice", true).await;
        assert!(!Arc::ptr_eq(&first, &read));
        // A write through the cache replaces what it hands out.
        let mut changed = Grant::clone(&read);
        changed.scopes = vec!["more".into()];
        cached.update(&changed).await.unwrap();
        let after = shared(&cached, "alice", false).await;
        assert_eq!(after.scopes, vec!["more".to_owned()]);
        assert_eq!(after.version, read.version + 1);
        // Gone from the store: forgotten here too.
        GrantStore::delete(&*store, "alice", "a").await.unwrap();
        assert!(cached
            .get_shared("alice", "a", true)
            .await
            .unwrap()
            .is_none());
        assert!(cached
            .get_shared("alice", "a", false)
            .await
            .unwrap()
            .is_none());
        // Without caching, every read is the store's.
        let uncached = CachedGrants::new(store.clone(), Duration::ZERO);
        store.create(&grant("bob", "a")).await.unwrap();
        let one = shared(&uncached, "bob", false).await;
        let two = shared(&uncached, "bob", false).await;
        assert!(!Arc::ptr_eq(&one, &two));
    }
}
