//! The grants an instance read, kept for `GRANT_CACHE_SECONDS` (see
//! [`CachedGrants`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::{Grant, GrantKey};
use crate::error::Result;
use crate::ports::GrantStore;

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
    /// Bumped by every write through this instance: a read that began
    /// before a write (a disconnect, a refresh) does not keep the grant
    /// it read, which the write has replaced or revoked.
    generation: AtomicU64,
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
            generation: AtomicU64::new(0),
        }
    }

    /// Keeps `grant` as written by this instance (it replaces what was kept).
    fn remember(&self, grant: &Grant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.cached.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        Self::insert(&mut entries, Arc::new(grant.clone()), self.ttl);
    }

    /// Keeps `grant`, read when the generation was `read_at`, unless a
    /// write through this instance came since.
    fn keep(&self, grant: Arc<Grant>, read_at: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.cached.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) == read_at {
            Self::insert(&mut entries, grant, self.ttl);
        }
    }

    fn insert(entries: &mut GrantEntries, grant: Arc<Grant>, ttl: Duration) {
        if entries.len >= MAX_CACHED_GRANTS {
            entries.expire(ttl);
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

    /// Drops the kept grant, after a write through this instance.
    fn forget(&self, sub: &str, target: &str) {
        let mut entries = self.cached.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(sub, target);
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
        let read_at = self.generation.load(Ordering::SeqCst);
        let found = self.inner.get(sub, target, consistent).await?.map(Arc::new);
        match &found {
            Some(g) => self.keep(g.clone(), read_at),
            // Nothing to keep, and nothing a read could make stale: the
            // entry goes without invalidating other reads.
            None => self
                .cached
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(sub, target),
        }
        Ok(found)
    }

    async fn create(&self, grant: &Grant) -> Result<Grant> {
        let r = self.inner.create(grant).await;
        self.forget(&grant.sub, &grant.target);
        r
    }

    async fn update(&self, grant: &Grant) -> Result<Grant> {
        let r = self.inner.update(grant).await;
        match &r {
            Ok(g) => self.remember(g),
            Err(_) => self.forget(&grant.sub, &grant.target),
        }
        r
    }

    async fn update_and_release(&self, grant: &Grant, owner: &str) -> Result<Grant> {
        let r = self.inner.update_and_release(grant, owner).await;
        match &r {
            Ok(g) => self.remember(g),
            Err(_) => self.forget(&grant.sub, &grant.target),
        }
        r
    }

    async fn put_after_consent(&self, grant: &Grant) -> Result<Grant> {
        let r = self.inner.put_after_consent(grant).await;
        self.forget(&grant.sub, &grant.target);
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
        self.forget(sub, target);
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
        self.forget(sub, target);
        r
    }

    async fn mark_unreadable(&self, sub: &str, target: &str) -> Result<()> {
        let r = self.inner.mark_unreadable(sub, target).await;
        self.forget(sub, target);
        r
    }

    async fn delete(&self, sub: &str, target: &str) -> Result<()> {
        let r = self.inner.delete(sub, target).await;
        self.forget(sub, target);
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

/// The grant `cached` hands out for (`sub`, target `a`), if any.
#[cfg(test)]
async fn read_a(cached: &CachedGrants, sub: &str, consistent: bool) -> Option<Arc<Grant>> {
    cached.get_shared(sub, "a", consistent).await.unwrap()
}

#[cfg(test)]
mod shared_grants {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::grant::grant_for_tests as grant;

    /// The grant `cached` hands out for (`sub`, target `a`), which must exist.
    async fn shared(cached: &CachedGrants, sub: &str, consistent: bool) -> Arc<Grant> {
        read_a(cached, sub, consistent).await.expect("a grant")
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
        assert!(read_a(&cached, "alice", true).await.is_none());
        assert!(read_a(&cached, "alice", false).await.is_none());
        // Without caching, every read is the store's.
        let uncached = CachedGrants::new(store.clone(), Duration::ZERO);
        store.create(&grant("bob", "a")).await.unwrap();
        let one = shared(&uncached, "bob", false).await;
        let two = shared(&uncached, "bob", false).await;
        assert!(!Arc::ptr_eq(&one, &two));
    }
}

#[cfg(test)]
mod read_racing_a_write {
    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::grant::grant_for_tests as grant;
    use crate::domain::GrantKey;
    use tokio::sync::Semaphore;

    /// The in-memory store, whose reads wait for a permit after reading:
    /// a read's answer can be held back while a write goes through.
    struct HeldReads {
        store: MemoryStore,
        release: Semaphore,
    }

    #[async_trait]
    impl GrantStore for HeldReads {
        async fn get(&self, sub: &str, target: &str, consistent: bool) -> Result<Option<Grant>> {
            let read = self.store.get(sub, target, consistent).await;
            let _ = self.release.acquire().await.map(|p| p.forget());
            read
        }
        async fn create(&self, g: &Grant) -> Result<Grant> {
            self.store.create(g).await
        }
        async fn update(&self, g: &Grant) -> Result<Grant> {
            self.store.update(g).await
        }
        async fn update_and_release(&self, g: &Grant, owner: &str) -> Result<Grant> {
            self.store.update_and_release(g, owner).await
        }
        async fn put_after_consent(&self, g: &Grant) -> Result<Grant> {
            self.store.put_after_consent(g).await
        }
        async fn acquire_lease(
            &self,
            sub: &str,
            target: &str,
            owner: &str,
            now: i64,
            until: i64,
        ) -> Result<Grant> {
            self.store
                .acquire_lease(sub, target, owner, now, until)
                .await
        }
        async fn release_lease(&self, sub: &str, target: &str, owner: &str) -> Result<()> {
            self.store.release_lease(sub, target, owner).await
        }
        async fn mark_needs_consent(&self, sub: &str, target: &str, v: u64) -> Result<Grant> {
            self.store.mark_needs_consent(sub, target, v).await
        }
        async fn mark_unreadable(&self, sub: &str, target: &str) -> Result<()> {
            self.store.mark_unreadable(sub, target).await
        }
        async fn delete(&self, sub: &str, target: &str) -> Result<()> {
            GrantStore::delete(&self.store, sub, target).await
        }
        async fn due_for_refresh(&self, until: i64, limit: usize) -> Result<Vec<GrantKey>> {
            self.store.due_for_refresh(until, limit).await
        }
        async fn list_for_user(&self, sub: &str) -> Result<Vec<Grant>> {
            self.store.list_for_user(sub).await
        }
    }

    #[tokio::test]
    async fn a_grant_read_before_a_disconnect_is_not_kept_after_it() {
        // The attack: a user disconnects (or the gateway revokes) while a
        // call of theirs is reading the grant. The read's answer, older
        // than the delete, must not be cached and served after it.
        let store = MemoryStore::new();
        store.create(&grant("alice", "a")).await.unwrap();
        let held = Arc::new(HeldReads {
            store,
            release: Semaphore::new(0),
        });
        let cached = Arc::new(CachedGrants::new(held.clone(), Duration::from_secs(30)));
        let reading = tokio::spawn({
            let cached = cached.clone();
            async move { cached.get_shared("alice", "a", false).await }
        });
        tokio::task::yield_now().await;
        cached.delete("alice", "a").await.unwrap();
        held.release.add_permits(1);
        let read = reading.await.unwrap().unwrap();
        assert!(read.is_some(), "the read itself saw the grant");
        // After the delete, the instance reads the store, which has none.
        held.release.add_permits(1);
        assert!(read_a(&cached, "alice", false).await.is_none());
        // A read with no write during it is kept: the next one is served
        // from memory (no permit is needed).
        held.store.create(&grant("alice", "a")).await.unwrap();
        held.release.add_permits(1);
        assert!(read_a(&cached, "alice", false).await.is_some());
        assert!(read_a(&cached, "alice", false).await.is_some());
    }
}
