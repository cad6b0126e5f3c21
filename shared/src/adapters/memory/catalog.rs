//! Targets, the policy set and client secrets.

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;

use super::*;
use crate::domain::Target;
use crate::error::{Error, Result};
use crate::ports::{SecretSource, TargetCatalog};

#[async_trait]
impl TargetCatalog for MemoryStore {
    async fn put(&self, target: &Target) -> Result<()> {
        self.lock()
            .targets
            .insert(target.name.clone(), Arc::new(target.clone()));
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Target>> {
        Ok(self.lock().targets.get(name).map(|t| (**t).clone()))
    }

    async fn list(&self) -> Result<Vec<Arc<Target>>> {
        Ok(self.lock().targets.values().cloned().collect())
    }

    async fn put_catalog(&self, target: &Target, catalog: &[serde_json::Value]) -> Result<()> {
        let mut inner = self.lock();
        match inner.targets.get_mut(&target.name) {
            // Stored exactly as `target` says, but for the catalog itself.
            Some(stored)
                if **stored
                    == Target {
                        tool_catalog: stored.tool_catalog.clone(),
                        ..target.clone()
                    } =>
            {
                Arc::make_mut(stored).tool_catalog = catalog
                    .iter()
                    .map(crate::domain::CatalogTool::new)
                    .collect();
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
impl crate::ports::PolicyStore for MemoryStore {
    async fn get_policies(&self) -> Result<Option<String>> {
        Ok(self.lock().policies.clone())
    }

    async fn put_policies(&self, text: Option<&str>) -> Result<()> {
        self.lock().policies = text.map(str::to_owned);
        Ok(())
    }
}
