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

mod catalog;
mod grants;
mod keys;
mod records;

pub use keys::MemoryKeys;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::{Grant, PendingAuthorization, Target, UpstreamSession};
use crate::error::{Error, Result};

/// The grant operations faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantOp {
    /// [`crate::ports::GrantStore::acquire_lease`].
    AcquireLease,
    /// [`crate::ports::GrantStore::update`].
    Update,
    /// [`crate::ports::GrantStore::update_and_release`].
    UpdateAndRelease,
    /// [`crate::ports::GrantStore::release_lease`].
    ReleaseLease,
    /// [`crate::ports::GrantStore::mark_needs_consent`].
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
    /// Shared, as the cached list of a warm instance is: a target's `Arc`
    /// changes only when it is written.
    targets: BTreeMap<String, std::sync::Arc<Target>>,
    authorizations: BTreeMap<String, PendingAuthorization>,
    sessions: BTreeMap<(String, String), UpstreamSession>,
    secrets: HashMap<String, SecretString>,
    policies: Option<String>,
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
