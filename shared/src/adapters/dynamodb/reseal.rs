//! Key rotation's side of the table: which items hold values sealed with
//! which keys, and rewriting one item with the current key beside live
//! traffic (see [`crate::crypto::rotation`]).

use super::{condition, opt_s, s, sv, target_config, target_sk, DynamoStore, Item, TARGETS_PK};
use crate::crypto::Aad;
use crate::domain::Target;
use crate::error::{Error, Result};
use crate::ports::GrantStore;

/// What kind of item holds sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// A user's grant (its tokens and routing fields).
    Grant,
    /// A pending authorization (verifier, state secret, browser, return URL).
    Authorization,
    /// A target (the integrity seal of its configuration).
    Target,
    /// The policy set (the integrity seal of its text).
    Policies,
}

/// An item holding sealed values, and the ids of the keys that sealed them.
#[derive(Debug, Clone)]
pub struct SealedItem {
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
    /// What it is.
    pub kind: SealedKind,
    /// Key ids its sealed values name.
    pub key_ids: std::collections::BTreeSet<String>,
}

impl SealedItem {
    /// True when every sealed value uses `current` (and there is one).
    pub fn sealed_with(&self, current: &str) -> bool {
        !self.key_ids.is_empty() && self.key_ids.iter().all(|k| k == current)
    }
}

/// What resealing one item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resealed {
    /// Rewritten with the current key.
    Done,
    /// A refresh holds the grant's lease: try again later.
    Busy,
    /// Gone meanwhile (used, deleted), or changed by someone else meanwhile.
    Gone,
    /// A target without an integrity seal, left alone: adopting it is the
    /// operator's decision (it may have been altered in the table).
    Unsealed,
}

/// Attributes that hold sealed values, by kind.
const SEALED_ATTRIBUTES: &[&str] = &[
    "tokens",
    "verifier",
    "state_secret",
    "browser",
    "return_url",
    "seal",
];

impl DynamoStore {
    /// Every item that holds sealed values (a full, paginated Scan), with
    /// the key ids they use. A target written before targets were sealed
    /// has no key id.
    pub async fn sealed_items(&self) -> Result<Vec<SealedItem>> {
        let mut items = vec![];
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(Error::dynamo)?;
            for item in out.items() {
                let (Some(pk), Some(sk)) = (opt_s(item, "pk"), opt_s(item, "sk")) else {
                    continue;
                };
                let kind = if pk.starts_with("USER#") && sk.starts_with("GRANT#") {
                    SealedKind::Grant
                } else if pk.starts_with("AUTHZ#") {
                    SealedKind::Authorization
                } else if pk == TARGETS_PK {
                    SealedKind::Target
                } else if pk == super::policies::POLICIES_PK {
                    SealedKind::Policies
                } else {
                    continue;
                };
                let key_ids = SEALED_ATTRIBUTES
                    .iter()
                    .filter_map(|a| opt_s(item, a))
                    .filter_map(|v| crate::crypto::KeySet::key_id_of(&v).map(str::to_owned))
                    .collect();
                items.push(SealedItem {
                    pk,
                    sk,
                    kind,
                    key_ids,
                });
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(items)
    }

    /// Writes `target` (sealed with the current key) only while the stored
    /// item still has `read`'s configuration and seal.
    async fn put_target_if_unchanged(&self, target: &Target, read: &Item) -> Result<Resealed> {
        let config = target_config(target)?;
        let tag = self
            .seal(b"", &Aad::target_config(&target.name, &config))
            .await?;
        let catalog = serde_json::to_string(&target.tool_catalog)
            .map_err(|e| Error::Malformed(e.to_string()))?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", sv(TARGETS_PK))
            .item("sk", sv(target_sk(&target.name)))
            .item("type", sv("target"))
            .item("name", sv(&target.name))
            .item("config", sv(&config))
            .item("seal", sv(&tag))
            .item("catalog", sv(&catalog))
            .expression_attribute_names("#config", "config")
            .expression_attribute_values(":config", read.get("config").cloned().unwrap_or(sv("")));
        put = match read.get("seal") {
            Some(old) => put
                .condition_expression("#config = :config AND seal = :seal")
                .expression_attribute_values(":seal", old.clone()),
            None => put.condition_expression("#config = :config AND attribute_not_exists(seal)"),
        };
        match put.send().await {
            Ok(_) => Ok(Resealed::Done),
            Err(e) => {
                condition(e)?;
                Ok(Resealed::Gone)
            }
        }
    }

    /// Rewrites one item with the current key, safely beside live traffic:
    /// a grant under its refresh lease (taken as `owner`, only if it lapsed
    /// a minute ago by `now`, so a fast clock here takes no live lease;
    /// written with the versioned release), a pending authorization only
    /// while its state and browser binding are unchanged, a target only
    /// while its configuration and seal are unchanged. A target without a
    /// seal (written by an older version, or altered) is sealed only with
    /// `adopt_unsealed`: the operator vouches for its content.
    pub async fn reseal(
        &self,
        item: &SealedItem,
        owner: &str,
        now: i64,
        adopt_unsealed: bool,
    ) -> Result<Resealed> {
        match item.kind {
            SealedKind::Grant => {
                let (sub, target) = (
                    item.pk.trim_start_matches("USER#"),
                    item.sk.trim_start_matches("GRANT#"),
                );
                let grant = match self
                    .acquire_lease(sub, target, owner, now - 60, now + 30)
                    .await
                {
                    Ok(g) => g,
                    Err(Error::LeaseHeld) => return Ok(Resealed::Busy),
                    Err(Error::NotFound(_)) => return Ok(Resealed::Gone),
                    Err(e) => return Err(e),
                };
                match self.update_and_release(&grant, owner).await {
                    Ok(_) => Ok(Resealed::Done),
                    Err(Error::NotLeaseOwner) | Err(Error::StaleVersion) => Ok(Resealed::Busy),
                    Err(Error::NotFound(_)) => Ok(Resealed::Gone),
                    Err(e) => Err(e),
                }
            }
            SealedKind::Authorization => {
                let Some(raw) = self.consistent_item(&item.pk, &item.sk).await? else {
                    return Ok(Resealed::Gone);
                };
                let pending = self.authorization_from_item(&raw).await?;
                let fresh = self.authorization_item(&pending).await?;
                // Unchanged since read: the same state, and the same browser
                // binding (or still none), so a binding made meanwhile stays.
                let mut put = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(fresh))
                    .expression_attribute_values(":digest", sv(pending.state.digest()));
                put = match raw.get("browser") {
                    Some(b) => put
                        .condition_expression(
                            "attribute_exists(pk) AND state_digest = :digest AND browser = :browser",
                        )
                        .expression_attribute_values(":browser", b.clone()),
                    None => put.condition_expression(
                        "attribute_exists(pk) AND state_digest = :digest AND attribute_not_exists(browser)",
                    ),
                };
                let res = put.send().await;
                match res {
                    Ok(_) => Ok(Resealed::Done),
                    Err(e) => {
                        condition(e)?;
                        Ok(Resealed::Gone)
                    }
                }
            }
            SealedKind::Policies => {
                let Some(raw) = self.consistent_item(&item.pk, &item.sk).await? else {
                    return Ok(Resealed::Gone);
                };
                // Only a set whose seal holds is carried over to the new key.
                let text = self.policy_text(&raw).await?;
                Ok(match self.put_policy_item(&text, Some(&raw)).await? {
                    true => Resealed::Done,
                    false => Resealed::Gone,
                })
            }
            SealedKind::Target => {
                let Some(raw) = self.consistent_item(&item.pk, &item.sk).await? else {
                    return Ok(Resealed::Gone);
                };
                let target = if raw.contains_key("seal") {
                    self.target_from_item(&raw).await?
                } else if adopt_unsealed {
                    // Written before targets were sealed: the whole target
                    // (catalog included) is in `config`.
                    serde_json::from_str(&s(&raw, "config")?)
                        .map_err(|e| Error::Malformed(format!("target config: {e}")))?
                } else {
                    return Ok(Resealed::Unsealed);
                };
                self.put_target_if_unchanged(&target, &raw).await
            }
        }
    }
}
