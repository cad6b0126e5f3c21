//! Upstream MCP sessions (2025 revisions), per user and target, expiring.

use async_trait::async_trait;

use crate::domain::UpstreamSession;
use crate::error::{Error, Result};
use crate::ports::SessionStore;

use super::codec::*;
use super::expr::condition;
use super::*;

#[async_trait]
impl SessionStore for DynamoStore {
    async fn put(&self, session: &UpstreamSession) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", sv(grant_pk(&session.sub)))
            .item("sk", sv(session_sk(&session.target)))
            .item("type", sv("session"))
            .item("sub", sv(&session.sub))
            .item("target", sv(&session.target))
            .item("session_id", sv(&session.session_id))
            .item("protocol_version", sv(&session.protocol_version))
            .item("expires_at", nv(session.expires_at))
            .item(TTL_ATTRIBUTE, nv(session.expires_at))
            .send()
            .await
            .map_err(Error::dynamo)?;
        Ok(())
    }

    async fn get(&self, sub: &str, target: &str, now: i64) -> Result<Option<UpstreamSession>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(session_sk(target)))
            .send()
            .await
            .map_err(Error::dynamo)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let expires_at = n(&item, "expires_at")?;
        if expires_at <= now {
            return Ok(None);
        }
        Ok(Some(UpstreamSession {
            sub: s(&item, "sub")?,
            target: s(&item, "target")?,
            session_id: s(&item, "session_id")?,
            protocol_version: s(&item, "protocol_version")?,
            expires_at,
        }))
    }

    async fn delete(&self, sub: &str, target: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(session_sk(target)))
            .send()
            .await
            .map_err(Error::dynamo)?;
        Ok(())
    }

    async fn delete_if(&self, sub: &str, target: &str, session_id: &str) -> Result<bool> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(session_sk(target)))
            .condition_expression("#session = :session")
            .expression_attribute_names("#session", "session_id")
            .expression_attribute_values(":session", sv(session_id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => {
                condition(e)?;
                Ok(false)
            }
        }
    }
}
