//! An in-memory store: grants (with their refresh lease), pending
//! authorizations, targets, upstream sessions and secrets in a process's
//! memory, and a key provider over a fixed key set, for unit tests of the
//! flows and router tests of the edge that need no peer.
//!
//! Every write applies the same condition as the DynamoDB adapter's
//! condition expression, under one lock, so two tasks racing see exactly
//! one win, as two Lambda instances do against the table. What this store
//! cannot show (attribute codecs, sealing, GSI paging, TTL attributes) is
//! tested against DynamoDB (moto) in the integration tests.
//!
//! Faults can be injected per operation to play what a network does to a
//! table client: a write that is applied but whose answer is lost, or a
//! slow write.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::crypto::KeySet;
use crate::domain::{
    Grant, GrantKey, GrantStatus, Lease, PendingAuthorization, Target, UpstreamSession,
};
use crate::error::{Error, Result};
use crate::ports::{
    AuthorizationStore, GrantStore, KeyProvider, SecretSource, SessionStore, TargetCatalog,
};

/// The grant operations faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantOp {
    /// [`GrantStore::acquire_lease`].
    AcquireLease,
    /// [`GrantStore::update`].
    Update,
    /// [`GrantStore::update_and_release`].
    UpdateAndRelease,
    /// [`GrantStore::release_lease`].
    ReleaseLease,
    /// [`GrantStore::mark_needs_consent`].
    MarkNeedsConsent,
}

/// What happens to the next call of an operation.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The write is applied, then the caller gets a passing error (the
    /// answer was lost on the way back).
    LoseAnswer,
    /// The call waits this long before it is applied.
    Delay(Duration),
}

#[derive(Default)]
struct Inner {
    grants: BTreeMap<(String, String), Grant>,
    unreadable: std::collections::HashSet<(String, String)>,
    targets: BTreeMap<String, Target>,
    authorizations: BTreeMap<String, PendingAuthorization>,
    sessions: BTreeMap<(String, String), UpstreamSession>,
    secrets: HashMap<String, SecretString>,
    faults: HashMap<GrantOp, Vec<Fault>>,
    calls: HashMap<GrantOp, usize>,
}

/// The in-memory store. Clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

fn key(sub: &str, target: &str) -> (String, String) {
    (sub.to_owned(), target.to_owned())
}

fn lost() -> Error {
    Error::DynamoDb("the answer to a write was lost (injected)".into())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `fault` for the next call of `op` (faults queue up in order).
    pub fn inject(&self, op: GrantOp, fault: Fault) {
        self.lock().faults.entry(op).or_default().push(fault);
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: GrantOp) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Makes a stored grant fail to open, as a tampered or moved item does
    /// in the table: reads fail with an unreadable error until the grant is
    /// written again.
    pub fn make_unreadable(&self, sub: &str, target: &str) {
        self.lock().unreadable.insert(key(sub, target));
    }

    /// Stores a secret value under `arn`.
    pub fn put_secret(&self, arn: &str, value: &str) {
        self.lock()
            .secrets
            .insert(arn.to_owned(), SecretString::from(value.to_owned()));
    }

    /// The grant as stored, lease included, without any check (for
    /// assertions).
    pub fn peek(&self, sub: &str, target: &str) -> Option<Grant> {
        self.lock().grants.get(&key(sub, target)).cloned()
    }

    /// Counts the call and takes its fault, if one is queued; a delay is
    /// slept here, before the operation is applied.
    async fn enter(&self, op: GrantOp) -> Option<Fault> {
        let fault = {
            let mut inner = self.lock();
            *inner.calls.entry(op).or_default() += 1;
            match inner.faults.get_mut(&op) {
                Some(queue) if !queue.is_empty() => Some(queue.remove(0)),
                _ => None,
            }
        };
        match fault {
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                None
            }
            other => other,
        }
    }

    /// Applies `write` to the stored grant under the lock; `refusal` says
    /// why the condition failed. Mirrors the table adapter's conditional
    /// update: `NotFound` when there is no grant.
    async fn conditional(
        &self,
        op: GrantOp,
        sub: &str,
        target: &str,
        write: impl FnOnce(&mut Grant) -> Result<()>,
    ) -> Result<Grant> {
        let fault = self.enter(op).await;
        let mut inner = self.lock();
        let k = key(sub, target);
        let stored = inner.grants.get_mut(&k).ok_or(Error::NotFound("grant"))?;
        let mut next = stored.clone();
        write(&mut next)?;
        *stored = next.clone();
        inner.unreadable.remove(&k);
        match fault {
            Some(Fault::LoseAnswer) => Err(lost()),
            _ => Ok(next),
        }
    }
}

/// The grant `g` as the next version after `stored`, keeping the stored
/// lease and creation time (what a versioned update writes).
fn next_version(stored: &Grant, g: &Grant) -> Grant {
    Grant {
        version: g.version + 1,
        lease: stored.lease.clone(),
        created_at: stored.created_at,
        ..g.clone()
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn get(&self, sub: &str, target: &str, _consistent: bool) -> Result<Option<Grant>> {
        let inner = self.lock();
        let k = key(sub, target);
        if inner.grants.contains_key(&k) && inner.unreadable.contains(&k) {
            return Err(Error::Decrypt("the grant was altered (injected)"));
        }
        Ok(inner.grants.get(&k).cloned())
    }

    async fn create(&self, grant: &Grant) -> Result<Grant> {
        let mut inner = self.lock();
        let k = key(&grant.sub, &grant.target);
        if inner.grants.contains_key(&k) {
            return Err(Error::AlreadyExists("grant"));
        }
        let stored = Grant {
            version: 1,
            lease: None,
            ..grant.clone()
        };
        inner.grants.insert(k, stored.clone());
        Ok(stored)
    }

    async fn update(&self, grant: &Grant) -> Result<Grant> {
        self.conditional(GrantOp::Update, &grant.sub, &grant.target, |stored| {
            if stored.version != grant.version {
                return Err(Error::StaleVersion);
            }
            *stored = next_version(stored, grant);
            Ok(())
        })
        .await
    }

    async fn update_and_release(&self, grant: &Grant, owner: &str) -> Result<Grant> {
        self.conditional(
            GrantOp::UpdateAndRelease,
            &grant.sub,
            &grant.target,
            |stored| {
                if stored.version != grant.version {
                    return Err(Error::StaleVersion);
                }
                if stored.lease.as_ref().is_none_or(|l| l.owner != owner) {
                    return Err(Error::NotLeaseOwner);
                }
                *stored = Grant {
                    lease: None,
                    ..next_version(stored, grant)
                };
                Ok(())
            },
        )
        .await
    }

    async fn put_after_consent(&self, grant: &Grant) -> Result<Grant> {
        let mut inner = self.lock();
        let k = key(&grant.sub, &grant.target);
        let (version, created_at) = match inner.grants.get(&k) {
            Some(old) => (old.version + 1, old.created_at),
            None => (1, grant.created_at),
        };
        let stored = Grant {
            version,
            created_at,
            lease: None,
            ..grant.clone()
        };
        inner.grants.insert(k.clone(), stored.clone());
        inner.unreadable.remove(&k);
        Ok(stored)
    }

    async fn acquire_lease(
        &self,
        sub: &str,
        target: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Grant> {
        self.conditional(GrantOp::AcquireLease, sub, target, |stored| {
            let free = stored
                .lease
                .as_ref()
                .is_none_or(|l| l.until <= now || l.owner == owner);
            if !free {
                return Err(Error::LeaseHeld);
            }
            stored.lease = Some(Lease {
                owner: owner.to_owned(),
                until,
            });
            Ok(())
        })
        .await
    }

    async fn release_lease(&self, sub: &str, target: &str, owner: &str) -> Result<()> {
        let released = self
            .conditional(GrantOp::ReleaseLease, sub, target, |stored| {
                if stored.lease.as_ref().is_none_or(|l| l.owner != owner) {
                    return Err(Error::NotLeaseOwner);
                }
                stored.lease = None;
                Ok(())
            })
            .await;
        match released {
            // The table's condition fails on a missing item too.
            Err(Error::NotFound(_)) => Err(Error::NotLeaseOwner),
            other => other.map(|_| ()),
        }
    }

    async fn mark_needs_consent(
        &self,
        sub: &str,
        target: &str,
        expected_version: u64,
    ) -> Result<Grant> {
        self.conditional(GrantOp::MarkNeedsConsent, sub, target, |stored| {
            if stored.version != expected_version {
                return Err(Error::StaleVersion);
            }
            stored.status = GrantStatus::NeedsConsent;
            stored.version = expected_version + 1;
            stored.lease = None;
            Ok(())
        })
        .await
    }

    async fn mark_unreadable(&self, sub: &str, target: &str) -> Result<()> {
        let mut inner = self.lock();
        let k = key(sub, target);
        if inner.unreadable.contains(&k) {
            if let Some(g) = inner.grants.get_mut(&k) {
                g.status = GrantStatus::NeedsConsent;
                g.lease = None;
            }
        }
        Ok(())
    }

    async fn delete(&self, sub: &str, target: &str) -> Result<()> {
        let mut inner = self.lock();
        let k = key(sub, target);
        inner.grants.remove(&k);
        inner.unreadable.remove(&k);
        Ok(())
    }

    async fn due_for_refresh(&self, until: i64, limit: usize) -> Result<Vec<GrantKey>> {
        let inner = self.lock();
        let mut due: Vec<(i64, GrantKey)> = inner
            .grants
            .values()
            .filter_map(|g| g.refresh_due().map(|at| (at, g.key())))
            .filter(|(at, _)| *at <= until)
            .collect();
        due.sort();
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, k)| k).collect())
    }

    async fn list_for_user(&self, sub: &str) -> Result<Vec<Grant>> {
        let inner = self.lock();
        Ok(inner
            .grants
            .iter()
            .filter(|((s, _), _)| s == sub)
            .filter(|(k, _)| !inner.unreadable.contains(*k))
            .map(|(_, g)| g.clone())
            .collect())
    }
}

#[async_trait]
impl TargetCatalog for MemoryStore {
    async fn put(&self, target: &Target) -> Result<()> {
        self.lock()
            .targets
            .insert(target.name.clone(), target.clone());
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Target>> {
        Ok(self.lock().targets.get(name).cloned())
    }

    async fn list(&self) -> Result<Vec<Arc<Target>>> {
        Ok(self
            .lock()
            .targets
            .values()
            .map(|t| Arc::new(t.clone()))
            .collect())
    }

    async fn put_catalog(&self, target: &Target, catalog: &[serde_json::Value]) -> Result<()> {
        let mut inner = self.lock();
        match inner.targets.get_mut(&target.name) {
            // Stored exactly as `target` says, but for the catalog itself.
            Some(stored)
                if *stored
                    == Target {
                        tool_catalog: stored.tool_catalog.clone(),
                        ..target.clone()
                    } =>
            {
                stored.tool_catalog = catalog.to_vec();
                Ok(())
            }
            _ => Err(Error::StaleVersion),
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.lock()
            .targets
            .remove(name)
            .map(|_| ())
            .ok_or(Error::NotFound("target"))
    }
}

#[async_trait]
impl SecretSource for MemoryStore {
    async fn secret(&self, arn: &str) -> Result<SecretString> {
        self.lock()
            .secrets
            .get(arn)
            .cloned()
            .ok_or_else(|| Error::Secret {
                arn: arn.to_owned(),
                reason: "no such secret".into(),
            })
    }

    async fn store(&self, name: &str, value: &SecretString) -> Result<String> {
        let arn = format!("memory:{name}");
        self.lock().secrets.insert(arn.clone(), value.clone());
        Ok(arn)
    }
}

#[async_trait]
impl AuthorizationStore for MemoryStore {
    async fn create(&self, pending: &PendingAuthorization) -> Result<()> {
        let mut inner = self.lock();
        if inner.authorizations.contains_key(&pending.id) {
            return Err(Error::AlreadyExists("authorization"));
        }
        inner
            .authorizations
            .insert(pending.id.clone(), pending.clone());
        Ok(())
    }

    async fn peek(&self, id: &str, now: i64) -> Result<PendingAuthorization> {
        let inner = self.lock();
        let p = inner
            .authorizations
            .get(id)
            .ok_or(Error::AuthorizationUsed)?;
        if p.expires_at <= now {
            return Err(Error::AuthorizationExpired);
        }
        Ok(p.clone())
    }

    async fn bind_browser(
        &self,
        pending: &PendingAuthorization,
        browser_digest: &str,
        now: i64,
    ) -> Result<()> {
        let mut inner = self.lock();
        let p = inner
            .authorizations
            .get_mut(&pending.id)
            .ok_or(Error::AuthorizationUsed)?;
        if p.expires_at <= now {
            return Err(Error::AuthorizationExpired);
        }
        match &p.browser {
            None => {
                p.browser = Some(browser_digest.to_owned());
                Ok(())
            }
            Some(bound) if bound == browser_digest => Ok(()),
            Some(_) => Err(Error::OtherBrowser),
        }
    }

    async fn consume(
        &self,
        id: &str,
        state_digest: &str,
        now: i64,
    ) -> Result<PendingAuthorization> {
        let mut inner = self.lock();
        let p = inner
            .authorizations
            .get(id)
            .ok_or(Error::AuthorizationUsed)?;
        if p.expires_at <= now {
            inner.authorizations.remove(id);
            return Err(Error::AuthorizationExpired);
        }
        if p.state.digest() != state_digest {
            return Err(Error::StateMismatch);
        }
        inner
            .authorizations
            .remove(id)
            .ok_or(Error::AuthorizationUsed)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn put(&self, session: &UpstreamSession) -> Result<()> {
        self.lock()
            .sessions
            .insert(key(&session.sub, &session.target), session.clone());
        Ok(())
    }

    async fn get(&self, sub: &str, target: &str, now: i64) -> Result<Option<UpstreamSession>> {
        Ok(self
            .lock()
            .sessions
            .get(&key(sub, target))
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn delete(&self, sub: &str, target: &str) -> Result<()> {
        self.lock().sessions.remove(&key(sub, target));
        Ok(())
    }
}

/// A key provider over a key set held in memory, which a test can make
/// unreadable (as a Secrets Manager outage would).
pub struct MemoryKeys {
    set: Mutex<Option<Arc<KeySet>>>,
}

impl MemoryKeys {
    /// Keys from a key-set secret's text (see [`KeySet::from_secret_string`]).
    pub fn new(secret: &str) -> std::result::Result<Self, String> {
        Ok(MemoryKeys {
            set: Mutex::new(Some(Arc::new(KeySet::from_secret_string(secret)?))),
        })
    }

    /// From now on, reading the key set fails (or works again).
    pub fn set_readable(&self, readable: bool, secret: &str) {
        let set = readable
            .then(|| KeySet::from_secret_string(secret).ok().map(Arc::new))
            .flatten();
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = set;
    }
}

#[async_trait]
impl KeyProvider for MemoryKeys {
    async fn key_set(&self) -> Result<Arc<KeySet>> {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                Error::SecretsManager("the key set cannot be read (in-memory outage)".into())
            })
    }

    async fn key_set_with(&self, _key_id: &str) -> Result<Arc<KeySet>> {
        self.key_set().await
    }
}
