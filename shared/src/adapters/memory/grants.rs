//! Grants and their refresh lease, under the same conditions as the table.

use async_trait::async_trait;

use super::*;
use crate::domain::{Grant, GrantKey, GrantStatus, Lease};
use crate::error::{Error, Result};
use crate::ports::GrantStore;

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
