//! The policy set: one item beside the targets, its text under an
//! integrity seal, so that a table writer without the keys cannot loosen
//! (or tighten) who may call what.

use async_trait::async_trait;

use crate::crypto::Aad;
use crate::error::{Error, Result};
use crate::ports::PolicyStore;

use super::codec::*;
use super::*;

/// Partition and sort key of the policy set's item.
pub(super) const POLICIES_PK: &str = "POLICIES";
pub(super) const POLICIES_SK: &str = "POLICY#default";

impl DynamoStore {
    /// Writes the policy set sealed with the current key; with `read`, only
    /// while the stored item still has that item's text and seal.
    pub(super) async fn put_policy_item(&self, text: &str, read: Option<&Item>) -> Result<bool> {
        let seal = self.seal(b"", &Aad::policy_set(text)).await?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", sv(POLICIES_PK))
            .item("sk", sv(POLICIES_SK))
            .item("type", sv("policies"))
            .item("text", sv(text))
            .item("seal", sv(&seal));
        if let Some(read) = read {
            put = put
                .condition_expression("#text = :text AND seal = :seal")
                .expression_attribute_names("#text", "text")
                .expression_attribute_values(":text", read.get("text").cloned().unwrap_or(sv("")))
                .expression_attribute_values(":seal", read.get("seal").cloned().unwrap_or(sv("")));
        }
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                condition(e)?;
                Ok(false)
            }
        }
    }

    /// The text of a policy item whose seal holds.
    pub(super) async fn policy_text(&self, item: &Item) -> Result<String> {
        let text = s(item, "text")?;
        let seal = opt_s(item, "seal").ok_or(Error::Decrypt(
            "the policy set has no integrity seal: store it again with gateway-admin policy put",
        ))?;
        self.open(&seal, &Aad::policy_set(&text))
            .await
            .map_err(|_| Error::Decrypt("the policy set fails its integrity check"))?;
        Ok(text)
    }
}

#[async_trait]
impl PolicyStore for DynamoStore {
    async fn get_policies(&self) -> Result<Option<String>> {
        match self.consistent_item(POLICIES_PK, POLICIES_SK).await? {
            Some(item) => Ok(Some(self.policy_text(&item).await?)),
            None => Ok(None),
        }
    }

    async fn put_policies(&self, text: Option<&str>) -> Result<()> {
        match text {
            Some(text) => self.put_policy_item(text, None).await.map(|_| ()),
            None => {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", sv(POLICIES_PK))
                    .key("sk", sv(POLICIES_SK))
                    .send()
                    .await
                    .map_err(Error::dynamo)?;
                Ok(())
            }
        }
    }
}
