//! Pending authorizations (single use, bound to one browser) and upstream sessions.

use async_trait::async_trait;

use super::*;
use crate::domain::{PendingAuthorization, UpstreamSession};
use crate::error::{Error, Result};
use crate::ports::{AuthorizationStore, SessionStore};

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

    async fn delete_if(&self, sub: &str, target: &str, session_id: &str) -> Result<bool> {
        let mut store = self.lock();
        let k = key(sub, target);
        if store
            .sessions
            .get(&k)
            .is_some_and(|s| s.session_id == session_id)
        {
            store.sessions.remove(&k);
            return Ok(true);
        }
        Ok(false)
    }
}
