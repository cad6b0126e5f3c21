//! DynamoDB adapter: one table, single-table design.
//!
//! | item                  | pk              | sk                | extra keys                    |
//! |-----------------------|-----------------|-------------------|-------------------------------|
//! | target                | `TARGETS`       | `TARGET#<name>`   |                               |
//! | grant                 | `USER#<sub>`    | `GRANT#<target>`  | `rd_shard`, `rd_at` (GSI)     |
//! | pending authorization | `AUTHZ#<id>`    | `AUTHZ`           | `ttl`                         |
//! | upstream session      | `USER#<sub>`    | `SESSION#<target>`| `ttl`                         |
//!
//! Targets share one partition so that listing them (on every `tools/list`)
//! is a single Query rather than a Scan of the whole table; there are few of
//! them and they change rarely.
//!
//! The `refresh-due` GSI is sparse: only active grants with a refresh token
//! and a known expiry carry `rd_shard` (`RD#<n>`, from a hash of user and
//! target) and `rd_at` (the access token's expiry). Sharding spreads the
//! index's writes over `shards` partitions; the scheduler queries each shard.
//!
//! Every refusal is a condition expression evaluated by DynamoDB, never a
//! read-then-write in code: two Lambda instances racing see exactly one win.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use crate::crypto::{sha256_hex, Aad};
use crate::error::{Error, Result};
use crate::ports::KeyProvider;

mod authorizations;
mod codec;
mod expr;
mod grants;
mod policies;
mod reseal;
mod schema;
mod sessions;
mod targets;

use codec::*;
use expr::*;
use targets::target_config;

pub use reseal::{Resealed, SealedItem, SealedKind};
pub use schema::create_table;

type Item = HashMap<String, AttributeValue>;

/// Name of the refresh-due global secondary index.
pub const REFRESH_INDEX: &str = "refresh-due";
/// Name of the TTL attribute.
pub const TTL_ATTRIBUTE: &str = "ttl";

/// The gateway's table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    keys: Arc<dyn KeyProvider>,
    shards: u16,
}

impl DynamoStore {
    /// A store on `table`; `shards` must match across all functions.
    pub fn new(
        client: Client,
        table: impl Into<String>,
        keys: Arc<dyn KeyProvider>,
        shards: u16,
    ) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            keys,
            shards: shards.max(1),
        }
    }

    /// The shard of the refresh-due index a grant lives in.
    pub fn shard_of(&self, sub: &str, target: &str) -> u16 {
        let digest = sha256_hex(format!("{sub}\u{0}{target}").as_bytes());
        let n = u16::from_str_radix(&digest[..4], 16).unwrap_or(0);
        n % self.shards
    }

    async fn seal(&self, plaintext: &[u8], aad: &Aad) -> Result<String> {
        Ok(self.keys.key_set().await?.seal(plaintext, aad))
    }

    async fn open(&self, sealed: &str, aad: &Aad) -> Result<Vec<u8>> {
        let kid =
            crate::crypto::KeySet::key_id_of(sealed).ok_or(Error::Decrypt("not a sealed value"))?;
        self.keys.key_set_with(kid).await?.open(sealed, aad)
    }

    /// An item read with ConsistentRead.
    pub(super) async fn consistent_item(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", sv(pk))
            .key("sk", sv(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(Error::dynamo)?;
        Ok(out.item)
    }

    /// The item a failed condition saw; DynamoDB returns it with
    /// `ReturnValuesOnConditionCheckFailure`, else it is read (consistently).
    pub(super) async fn old_item(
        &self,
        reported: Option<Item>,
        pk: String,
        sk: &str,
    ) -> Result<Option<Item>> {
        if let Some(item) = reported.filter(|i| !i.is_empty()) {
            return Ok(Some(item));
        }
        self.consistent_item(&pk, sk).await
    }
}

pub(super) fn grant_pk(sub: &str) -> String {
    format!("USER#{sub}")
}
pub(super) fn grant_sk(target: &str) -> String {
    format!("GRANT#{target}")
}
pub(super) fn authz_pk(id: &str) -> String {
    format!("AUTHZ#{id}")
}
pub(super) const AUTHZ_SK: &str = "AUTHZ";
pub(super) const TARGETS_PK: &str = "TARGETS";
pub(super) fn target_sk(name: &str) -> String {
    format!("TARGET#{name}")
}
pub(super) fn session_sk(target: &str) -> String {
    format!("SESSION#{target}")
}
