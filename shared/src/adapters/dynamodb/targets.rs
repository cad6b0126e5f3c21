//! Targets: their configuration sealed-tagged, their tool catalog beside it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::Aad;
use crate::domain::Target;
use crate::error::{Error, Result};
use crate::ports::TargetCatalog;

use super::codec::*;
use super::expr::*;
use super::*;

/// A target's configuration as stored: everything but the tool catalog,
/// which the proxy updates on its own.
pub(super) fn target_config(target: &Target) -> Result<String> {
    let mut config = target.clone();
    config.tool_catalog = Default::default();
    serde_json::to_string(&config).map_err(|e| Error::Malformed(e.to_string()))
}

impl DynamoStore {
    /// Opens a target item: its configuration must carry the integrity tag
    /// sealed for its name (from the key) and its exact text, so a table
    /// writer without the keys cannot change where tokens, codes or client
    /// secrets go.
    pub(super) async fn target_from_item(&self, item: &Item) -> Result<Target> {
        let name = s(item, "sk")?
            .strip_prefix("TARGET#")
            .ok_or_else(|| Error::Malformed("not a target's key".into()))?
            .to_owned();
        let config = s(item, "config")?;
        let tag = opt_s(item, "seal").ok_or(Error::Decrypt(
            "the target has no integrity seal (written by an older version, or altered): check it, then gateway-admin keys reseal --adopt-unsealed-targets",
        ))?;
        self.open(&tag, &Aad::target_config(&name, &config))
            .await
            .map_err(|_| Error::Decrypt("the target's configuration fails its integrity check"))?;
        let mut target: Target = serde_json::from_str(&config)
            .map_err(|e| Error::Malformed(format!("target config: {e}")))?;
        if target.name != name {
            return Err(Error::Malformed("target name differs from its key".into()));
        }
        if let Some(catalog) = opt_s(item, "catalog") {
            target.tool_catalog = serde_json::from_str(&catalog)
                .map_err(|e| Error::Malformed(format!("target catalog: {e}")))?;
        }
        Ok(target)
    }
}

#[async_trait]
impl TargetCatalog for DynamoStore {
    async fn put(&self, target: &Target) -> Result<()> {
        let config = target_config(target)?;
        let tag = self
            .seal(b"", &Aad::target_config(&target.name, &config))
            .await?;
        let catalog = serde_json::to_string(&target.tool_catalog)
            .map_err(|e| Error::Malformed(e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", sv(TARGETS_PK))
            .item("sk", sv(target_sk(&target.name)))
            .item("type", sv("target"))
            .item("name", sv(&target.name))
            .item("config", sv(&config))
            .item("seal", sv(&tag))
            .item("catalog", sv(&catalog))
            .send()
            .await
            .map_err(Error::dynamo)?;
        Ok(())
    }

    async fn put_catalog(&self, target: &Target, catalog: &[serde_json::Value]) -> Result<()> {
        let config = target_config(target)?;
        let catalog =
            serde_json::to_string(catalog).map_err(|e| Error::Malformed(e.to_string()))?;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", sv(TARGETS_PK))
            .key("sk", sv(target_sk(&target.name)))
            // `catalog` is a DynamoDB reserved word; both go by name.
            .update_expression("SET #catalog = :catalog")
            .condition_expression("attribute_exists(pk) AND #config = :config")
            .expression_attribute_names("#catalog", "catalog")
            .expression_attribute_names("#config", "config")
            .expression_attribute_values(":catalog", sv(&catalog))
            .expression_attribute_values(":config", sv(&config))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => {
                condition(e)?;
                Err(Error::StaleVersion)
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Option<Target>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", sv(TARGETS_PK))
            .key("sk", sv(target_sk(name)))
            .send()
            .await
            .map_err(Error::dynamo)?;
        match out.item {
            Some(item) => Ok(Some(self.target_from_item(&item).await?)),
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<Arc<Target>>> {
        let mut targets = vec![];
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", sv(TARGETS_PK))
                .expression_attribute_values(":prefix", sv("TARGET#"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(Error::dynamo)?;
            for item in out.items() {
                match self.target_from_item(item).await {
                    Ok(t) => targets.push(Arc::new(t)),
                    // An altered (or unsealed) target is left out, loudly;
                    // the others stay usable.
                    Err(e) if e.is_unreadable() => tracing::error!(
                        audit = "target_unreadable",
                        target = ?opt_s(item, "sk"),
                        error = %e,
                        "a target is left out"
                    ),
                    Err(e) => return Err(e),
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(targets)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", sv(TARGETS_PK))
            .key("sk", sv(target_sk(name)))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => {
                condition(e)?;
                Err(Error::NotFound("target"))
            }
        }
    }
}
