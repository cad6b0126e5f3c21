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

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use futures::future::try_join_all;
use secrecy::{ExposeSecret, SecretString};

use crate::crypto::{sha256_hex, Aad};
use crate::domain::{
    Grant, GrantKey, GrantStatus, Lease, PendingAuthorization, SealedGrant, StateParam, Target,
    UpstreamSession,
};
use crate::error::{Error, Result};
use crate::ports::{AuthorizationStore, GrantStore, KeyProvider, SessionStore, TargetCatalog};

mod reseal;
pub use reseal::{Resealed, SealedItem, SealedKind};

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

    // ----- grants -----

    /// The grant an item holds. The ciphertext is opened for the user and
    /// target of the item's key (never of attributes stored beside it), and
    /// the fields that say where tokens go come from the ciphertext alone.
    async fn grant_from_item(&self, item: &Item) -> Result<Grant> {
        let (sub, target) = match (
            s(item, "pk")?.strip_prefix("USER#"),
            s(item, "sk")?.strip_prefix("GRANT#"),
        ) {
            (Some(sub), Some(target)) => (sub.to_owned(), target.to_owned()),
            _ => return Err(Error::Malformed("not a grant's key".into())),
        };
        let sealed = s(item, "tokens")?;
        let plain = self.open(&sealed, &Aad::grant(&sub, &target)).await?;
        let SealedGrant {
            tokens,
            token_endpoint,
            issuer,
            resource,
            scopes,
        } = SealedGrant::from_plaintext(&plain).ok_or(Error::Decrypt(
            "the grant's sealed payload is of an older or unknown form",
        ))?;
        let status = GrantStatus::parse(&s(item, "status")?)
            .ok_or_else(|| Error::Malformed("grant status".into()))?;
        let lease = match (opt_s(item, "lease_owner"), opt_n(item, "lease_until")?) {
            (Some(owner), Some(until)) => Some(Lease { owner, until }),
            _ => None,
        };
        Ok(Grant {
            sub,
            target,
            tokens,
            expires_at: opt_n(item, "expires_at")?,
            scopes,
            issuer,
            token_endpoint,
            resource,
            status,
            version: n(item, "version")? as u64,
            lease,
            created_at: n(item, "created_at")?,
            updated_at: n(item, "updated_at")?,
        })
    }

    /// The attributes a grant write sets (all but keys, version, lease and
    /// timestamps), and the optional ones it removes.
    async fn grant_fields(
        &self,
        g: &Grant,
    ) -> Result<(Vec<(&'static str, AttributeValue)>, Vec<&'static str>)> {
        let sealed = self
            .seal(&g.sealed().to_plaintext(), &Aad::grant(&g.sub, &g.target))
            .await?;
        let mut set = vec![
            ("sub", sv(&g.sub)),
            ("target", sv(&g.target)),
            ("tokens", sv(&sealed)),
            (
                "scopes",
                AttributeValue::L(g.scopes.iter().map(sv).collect()),
            ),
            ("status", sv(g.status.as_str())),
            ("type", sv("grant")),
        ];
        let mut remove = vec![];
        let mut opt = |name: &'static str, v: Option<AttributeValue>| match v {
            Some(v) => set.push((name, v)),
            None => remove.push(name),
        };
        opt("expires_at", g.expires_at.map(nv));
        opt("issuer", g.issuer.as_deref().map(sv));
        opt("token_endpoint", g.token_endpoint.as_deref().map(sv));
        opt("resource", g.resource.as_deref().map(sv));
        match g.refresh_due() {
            Some(at) => {
                opt(
                    "rd_shard",
                    Some(sv(format!("RD#{}", self.shard_of(&g.sub, &g.target)))),
                );
                opt("rd_at", Some(nv(at)));
            }
            None => {
                opt("rd_shard", None);
                opt("rd_at", None);
            }
        }
        Ok((set, remove))
    }

    /// The update that writes `g` as the next version after `g.version`
    /// (`:expected` holds `g.version`; the caller adds the condition).
    async fn versioned_update(&self, g: &Grant) -> Result<UpdateBuilder> {
        let (set, remove) = self.grant_fields(g).await?;
        let mut u = UpdateBuilder::new();
        for (k, v) in set {
            u.set(k, v);
        }
        for k in remove {
            u.remove(k);
        }
        u.set("version", nv(g.version as i64 + 1))
            .set("updated_at", nv(g.updated_at))
            .value(":expected", nv(g.version as i64));
        Ok(u)
    }

    /// Runs the conditional update `u` of grant (`sub`, `target`) under
    /// `condition`; returns the grant as stored, or `refusal(item)` when the
    /// condition failed on an existing grant (`NotFound` when there is none).
    async fn conditional_grant_update(
        &self,
        u: UpdateBuilder,
        sub: &str,
        target: &str,
        condition_expression: String,
        refusal: impl FnOnce(&Item) -> Error,
    ) -> Result<Grant> {
        let res = u
            .apply(self.client.update_item())
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(grant_sk(target)))
            .condition_expression(condition_expression)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                self.grant_from_item(&out.attributes.unwrap_or_default())
                    .await
            }
            Err(e) => {
                let old = self
                    .old_item(condition(e)?, grant_pk(sub), &grant_sk(target))
                    .await?;
                Err(match old {
                    None => Error::NotFound("grant"),
                    Some(item) => refusal(&item),
                })
            }
        }
    }

    /// An item read with ConsistentRead.
    async fn consistent_item(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
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
    async fn old_item(&self, reported: Option<Item>, pk: String, sk: &str) -> Result<Option<Item>> {
        if let Some(item) = reported.filter(|i| !i.is_empty()) {
            return Ok(Some(item));
        }
        self.consistent_item(&pk, sk).await
    }

    // ----- pending authorizations -----

    async fn authorization_from_item(&self, item: &Item) -> Result<PendingAuthorization> {
        // The id the item is stored under (its key), never an attribute
        // beside it: the sealed values are bound to it.
        let id = s(item, "pk")?
            .strip_prefix("AUTHZ#")
            .ok_or_else(|| Error::Malformed("not a pending authorization's key".into()))?
            .to_owned();
        let sub = s(item, "sub")?;
        let target = s(item, "target")?;
        let (resource, issuer, scopes) = (
            opt_s(item, "resource"),
            opt_s(item, "issuer"),
            list_s(item, "scopes"),
        );
        let context = authorization_context(resource.as_deref(), issuer.as_deref(), &scopes);
        let verifier = self
            .open(
                &s(item, "verifier")?,
                &Aad::pkce_verifier(&id, &sub, &target, &context),
            )
            .await?;
        let verifier = String::from_utf8(verifier)
            .map_err(|_| Error::Malformed("PKCE verifier is not text".into()))?;
        let secret = self
            .open(
                &s(item, "state_secret")?,
                &Aad::oauth_state(&id, &sub, &target, &context),
            )
            .await?;
        let secret =
            String::from_utf8(secret).map_err(|_| Error::Malformed("state is not text".into()))?;
        let browser = match opt_s(item, "browser") {
            Some(sealed) => Some(
                String::from_utf8(
                    self.open(&sealed, &Aad::consent_browser(&id, &sub, &target))
                        .await?,
                )
                .map_err(|_| Error::Malformed("browser binding is not text".into()))?,
            ),
            None => None,
        };
        let return_url = match opt_s(item, "return_url") {
            Some(sealed) => Some(
                String::from_utf8(
                    self.open(&sealed, &Aad::consent_return(&id, &sub, &target))
                        .await?,
                )
                .map_err(|_| Error::Malformed("return URL is not text".into()))?,
            ),
            None => None,
        };
        Ok(PendingAuthorization {
            browser,
            return_url,
            state: StateParam::from_parts(id.clone(), secret),
            id,
            sub,
            target,
            pkce_verifier: SecretString::from(verifier),
            scopes,
            resource,
            issuer,
            created_at: n(item, "created_at")?,
            expires_at: n(item, "expires_at")?,
        })
    }
}

/// What a pending authorization will ask for (resource, issuer, scopes), as
/// bound into its sealed values' associated data.
fn authorization_context(
    resource: Option<&str>,
    issuer: Option<&str>,
    scopes: &[String],
) -> String {
    serde_json::json!([resource, issuer, scopes]).to_string()
}

fn grant_pk(sub: &str) -> String {
    format!("USER#{sub}")
}
fn grant_sk(target: &str) -> String {
    format!("GRANT#{target}")
}
fn authz_pk(id: &str) -> String {
    format!("AUTHZ#{id}")
}
const AUTHZ_SK: &str = "AUTHZ";
const TARGETS_PK: &str = "TARGETS";
fn target_sk(name: &str) -> String {
    format!("TARGET#{name}")
}
fn session_sk(target: &str) -> String {
    format!("SESSION#{target}")
}

/// Builds `SET a = :a, ... REMOVE x, ...` with one placeholder per attribute,
/// plus extra clauses.
struct UpdateBuilder {
    sets: Vec<String>,
    removes: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl UpdateBuilder {
    fn new() -> Self {
        UpdateBuilder {
            sets: vec![],
            removes: vec![],
            names: HashMap::new(),
            values: HashMap::new(),
        }
    }
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }
    fn set(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        let n = self.name(attr);
        let v = format!(":{attr}");
        self.sets.push(format!("{n} = {v}"));
        self.values.insert(v, value);
        self
    }
    fn set_expr(&mut self, attr: &str, expr: &str) -> &mut Self {
        let n = self.name(attr);
        self.sets.push(format!("{n} = {expr}"));
        self
    }
    fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.removes.push(n);
        self
    }
    fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }
    fn expression(&self) -> String {
        let mut out = String::new();
        if !self.sets.is_empty() {
            out.push_str("SET ");
            out.push_str(&self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            out.push_str(" REMOVE ");
            out.push_str(&self.removes.join(", "));
        }
        out
    }
    fn apply(
        self,
        req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let expr = self.expression();
        let mut req = req.update_expression(expr);
        for (k, v) in self.names {
            req = req.expression_attribute_names(k, v);
        }
        for (k, v) in self.values {
            req = req.expression_attribute_values(k, v);
        }
        req
    }
}

/// The item a failed condition check reported, if the error is one.
trait ConditionFailure {
    fn condition_item(&self) -> Option<Option<Item>>;
}
macro_rules! condition_failure {
    ($($t:ty),*) => {$(
        impl ConditionFailure for $t {
            fn condition_item(&self) -> Option<Option<Item>> {
                match self {
                    Self::ConditionalCheckFailedException(e) => Some(e.item().cloned()),
                    _ => None,
                }
            }
        }
    )*};
}
condition_failure!(UpdateItemError, PutItemError, DeleteItemError);

/// Splits an SDK error into "the condition failed (with the item it saw)" or a real failure.
fn condition<E, R>(err: SdkError<E, R>) -> Result<Option<Item>>
where
    E: ConditionFailure + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(old) = err.as_service_error().and_then(|e| e.condition_item()) {
        return Ok(old);
    }
    Err(Error::dynamo(err))
}

#[async_trait]
impl GrantStore for DynamoStore {
    async fn get(&self, sub: &str, target: &str, consistent: bool) -> Result<Option<Grant>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(grant_sk(target)))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(Error::dynamo)?;
        match out.item {
            Some(item) => Ok(Some(self.grant_from_item(&item).await?)),
            None => Ok(None),
        }
    }

    async fn create(&self, grant: &Grant) -> Result<Grant> {
        let (set, _) = self.grant_fields(grant).await?;
        let mut item: Item = set.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        item.insert("pk".into(), sv(grant_pk(&grant.sub)));
        item.insert("sk".into(), sv(grant_sk(&grant.target)));
        item.insert("version".into(), nv(1));
        item.insert("created_at".into(), nv(grant.created_at));
        item.insert("updated_at".into(), nv(grant.updated_at));
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(Grant {
                version: 1,
                lease: None,
                ..grant.clone()
            }),
            Err(e) => {
                condition(e)?;
                Err(Error::AlreadyExists("grant"))
            }
        }
    }

    async fn update(&self, grant: &Grant) -> Result<Grant> {
        let mut u = self.versioned_update(grant).await?;
        let version = u.name("version");
        self.conditional_grant_update(
            u,
            &grant.sub,
            &grant.target,
            format!("attribute_exists(pk) AND {version} = :expected"),
            |_| Error::StaleVersion,
        )
        .await
    }

    async fn update_and_release(&self, grant: &Grant, owner: &str) -> Result<Grant> {
        let mut u = self.versioned_update(grant).await?;
        u.remove("lease_owner")
            .remove("lease_until")
            .value(":owner", sv(owner));
        let (version, lo) = (u.name("version"), u.name("lease_owner"));
        let expected = grant.version as i64;
        self.conditional_grant_update(
            u,
            &grant.sub,
            &grant.target,
            format!("attribute_exists(pk) AND {version} = :expected AND {lo} = :owner"),
            // The version still matches: the lease is what failed.
            |old| match n(old, "version") {
                Ok(v) if v == expected => Error::NotLeaseOwner,
                _ => Error::StaleVersion,
            },
        )
        .await
    }

    async fn put_after_consent(&self, grant: &Grant) -> Result<Grant> {
        let (set, remove) = self.grant_fields(grant).await?;
        let mut u = UpdateBuilder::new();
        for (k, v) in set {
            u.set(k, v);
        }
        for k in remove {
            u.remove(k);
        }
        let version = u.name("version");
        let created = u.name("created_at");
        u.set_expr(
            "version",
            &format!("if_not_exists({version}, :zero) + :one"),
        )
        .set_expr("created_at", &format!("if_not_exists({created}, :created)"))
        .set("updated_at", nv(grant.updated_at))
        .value(":zero", nv(0))
        .value(":one", nv(1))
        .value(":created", nv(grant.created_at))
        .remove("lease_owner")
        .remove("lease_until");
        let out = u
            .apply(self.client.update_item())
            .table_name(&self.table)
            .key("pk", sv(grant_pk(&grant.sub)))
            .key("sk", sv(grant_sk(&grant.target)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(Error::dynamo)?;
        self.grant_from_item(&out.attributes.unwrap_or_default())
            .await
    }

    async fn acquire_lease(
        &self,
        sub: &str,
        target: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Grant> {
        let mut u = UpdateBuilder::new();
        u.set("lease_owner", sv(owner))
            .set("lease_until", nv(until))
            .value(":now", nv(now));
        let (lo, lu) = (u.name("lease_owner"), u.name("lease_until"));
        self.conditional_grant_update(u, sub, target, format!(
                "attribute_exists(pk) AND (attribute_not_exists({lu}) OR {lu} <= :now OR {lo} = :lease_owner)"
            ), |_| Error::LeaseHeld)
            .await
    }

    async fn release_lease(&self, sub: &str, target: &str, owner: &str) -> Result<()> {
        let mut u = UpdateBuilder::new();
        u.remove("lease_owner")
            .remove("lease_until")
            .value(":owner", sv(owner));
        let lo = u.name("lease_owner");
        let res = u
            .apply(self.client.update_item())
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(grant_sk(target)))
            .condition_expression(format!("{lo} = :owner"))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => {
                condition(e)?;
                Err(Error::NotLeaseOwner)
            }
        }
    }

    async fn mark_needs_consent(
        &self,
        sub: &str,
        target: &str,
        expected_version: u64,
    ) -> Result<Grant> {
        let mut u = UpdateBuilder::new();
        u.set("status", sv(GrantStatus::NeedsConsent.as_str()))
            .set("version", nv(expected_version as i64 + 1))
            .value(":expected", nv(expected_version as i64))
            .remove("rd_shard")
            .remove("rd_at")
            .remove("lease_owner")
            .remove("lease_until");
        let version = u.name("version");
        self.conditional_grant_update(
            u,
            sub,
            target,
            format!("attribute_exists(pk) AND {version} = :expected"),
            |_| Error::StaleVersion,
        )
        .await
    }

    async fn mark_unreadable(&self, sub: &str, target: &str) -> Result<()> {
        // Only the item that failed: re-read it, make sure it still does not
        // open, and write conditional on its very ciphertext, so a consent
        // that replaced it meanwhile is left alone.
        let Some(item) = self
            .consistent_item(&grant_pk(sub), &grant_sk(target))
            .await?
        else {
            return Ok(());
        };
        match self.grant_from_item(&item).await {
            Err(e) if e.is_unreadable() => {}
            _ => return Ok(()),
        }
        let mut u = UpdateBuilder::new();
        u.set("status", sv(GrantStatus::NeedsConsent.as_str()))
            .remove("rd_shard")
            .remove("rd_at")
            .remove("lease_owner")
            .remove("lease_until")
            .value(":tokens", item.get("tokens").cloned().unwrap_or(sv("")));
        let tokens = u.name("tokens");
        let res = u
            .apply(self.client.update_item())
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(grant_sk(target)))
            .condition_expression(format!("attribute_exists(pk) AND {tokens} = :tokens"))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => condition(e).map(|_| ()),
        }
    }

    async fn delete(&self, sub: &str, target: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", sv(grant_pk(sub)))
            .key("sk", sv(grant_sk(target)))
            .send()
            .await
            .map_err(Error::dynamo)?;
        Ok(())
    }

    async fn due_for_refresh(&self, until: i64, limit: usize) -> Result<Vec<GrantKey>> {
        let queries = (0..self.shards).map(|shard| async move {
            let mut found: Vec<(i64, GrantKey)> = vec![];
            let mut start: Option<Item> = None;
            loop {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(REFRESH_INDEX)
                    .key_condition_expression("rd_shard = :shard AND rd_at <= :until")
                    .expression_attribute_values(":shard", sv(format!("RD#{shard}")))
                    .expression_attribute_values(":until", nv(until))
                    .set_exclusive_start_key(start.take())
                    .limit(limit.clamp(1, 1000) as i32)
                    .send()
                    .await
                    .map_err(Error::dynamo)?;
                for item in out.items() {
                    let pk = s(item, "pk")?;
                    let sk = s(item, "sk")?;
                    let (Some(sub), Some(target)) =
                        (pk.strip_prefix("USER#"), sk.strip_prefix("GRANT#"))
                    else {
                        return Err(Error::Malformed(format!("refresh index entry {pk}/{sk}")));
                    };
                    found.push((
                        n(item, "rd_at")?,
                        GrantKey {
                            sub: sub.to_owned(),
                            target: target.to_owned(),
                        },
                    ));
                }
                match out.last_evaluated_key {
                    Some(k) if found.len() < limit => start = Some(k),
                    _ => break,
                }
            }
            Ok::<_, Error>(found)
        });
        let mut all: Vec<(i64, GrantKey)> =
            try_join_all(queries).await?.into_iter().flatten().collect();
        all.sort();
        all.truncate(limit);
        Ok(all.into_iter().map(|(_, k)| k).collect())
    }

    async fn list_for_user(&self, sub: &str) -> Result<Vec<Grant>> {
        let mut grants = vec![];
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", sv(grant_pk(sub)))
                .expression_attribute_values(":prefix", sv("GRANT#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(Error::dynamo)?;
            for item in out.items() {
                match self.grant_from_item(item).await {
                    Ok(g) => grants.push(g),
                    // One unusable item must not hide the others.
                    Err(e) if e.is_unreadable() => {
                        tracing::error!(error = %e, sk = ?opt_s(item, "sk"), "a grant cannot be opened; it is left out (the user connects again)")
                    }
                    Err(e) => return Err(e),
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(grants)
    }
}

impl DynamoStore {
    /// The item of a pending authorization, its secrets sealed with the
    /// current key.
    async fn authorization_item(&self, p: &PendingAuthorization) -> Result<Item> {
        let context = authorization_context(p.resource.as_deref(), p.issuer.as_deref(), &p.scopes);
        let verifier = self
            .seal(
                p.pkce_verifier.expose_secret().as_bytes(),
                &Aad::pkce_verifier(&p.id, &p.sub, &p.target, &context),
            )
            .await?;
        let state_secret = self
            .seal(
                p.state.secret().as_bytes(),
                &Aad::oauth_state(&p.id, &p.sub, &p.target, &context),
            )
            .await?;
        let mut item: Item = HashMap::from([
            ("pk".to_owned(), sv(authz_pk(&p.id))),
            ("sk".to_owned(), sv(AUTHZ_SK)),
            ("type".to_owned(), sv("authorization")),
            ("id".to_owned(), sv(&p.id)),
            ("sub".to_owned(), sv(&p.sub)),
            ("target".to_owned(), sv(&p.target)),
            ("state_digest".to_owned(), sv(p.state.digest())),
            ("state_secret".to_owned(), sv(&state_secret)),
            ("verifier".to_owned(), sv(&verifier)),
            (
                "scopes".to_owned(),
                AttributeValue::L(p.scopes.iter().map(sv).collect()),
            ),
            ("created_at".to_owned(), nv(p.created_at)),
            ("expires_at".to_owned(), nv(p.expires_at)),
            (TTL_ATTRIBUTE.to_owned(), nv(p.expires_at)),
        ]);
        if let Some(r) = &p.resource {
            item.insert("resource".into(), sv(r));
        }
        if let Some(i) = &p.issuer {
            item.insert("issuer".into(), sv(i));
        }
        if let Some(r) = &p.return_url {
            let sealed = self
                .seal(r.as_bytes(), &Aad::consent_return(&p.id, &p.sub, &p.target))
                .await?;
            item.insert("return_url".into(), sv(sealed));
        }
        if let Some(b) = &p.browser {
            let sealed = self
                .seal(
                    b.as_bytes(),
                    &Aad::consent_browser(&p.id, &p.sub, &p.target),
                )
                .await?;
            item.insert("browser".into(), sv(sealed));
        }
        Ok(item)
    }
}

#[async_trait]
impl AuthorizationStore for DynamoStore {
    async fn create(&self, p: &PendingAuthorization) -> Result<()> {
        let item = self.authorization_item(p).await?;
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => {
                condition(e)?;
                Err(Error::AlreadyExists("authorization"))
            }
        }
    }

    async fn peek(&self, id: &str, now: i64) -> Result<PendingAuthorization> {
        let item = self
            .consistent_item(&authz_pk(id), AUTHZ_SK)
            .await?
            .ok_or(Error::AuthorizationUsed)?;
        if n(&item, "expires_at")? <= now {
            return Err(Error::AuthorizationExpired);
        }
        self.authorization_from_item(&item).await
    }

    async fn bind_browser(
        &self,
        p: &PendingAuthorization,
        browser_digest: &str,
        now: i64,
    ) -> Result<()> {
        let sealed = self
            .seal(
                browser_digest.as_bytes(),
                &Aad::consent_browser(&p.id, &p.sub, &p.target),
            )
            .await?;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", sv(authz_pk(&p.id)))
            .key("sk", sv(AUTHZ_SK))
            .update_expression("SET browser = :browser")
            .condition_expression(
                "attribute_exists(pk) AND expires_at > :now AND attribute_not_exists(browser)",
            )
            .expression_attribute_values(":browser", sv(&sealed))
            .expression_attribute_values(":now", nv(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let Err(e) = res else {
            return Ok(());
        };
        let Some(old) = self
            .old_item(condition(e)?, authz_pk(&p.id), AUTHZ_SK)
            .await?
        else {
            return Err(Error::AuthorizationUsed);
        };
        if n(&old, "expires_at")? <= now {
            return Err(Error::AuthorizationExpired);
        }
        // Bound already: by this browser (a reload) or by another one.
        match self.authorization_from_item(&old).await?.browser {
            Some(bound) if bound == browser_digest => Ok(()),
            _ => Err(Error::OtherBrowser),
        }
    }

    async fn consume(
        &self,
        id: &str,
        state_digest: &str,
        now: i64,
    ) -> Result<PendingAuthorization> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", sv(authz_pk(id)))
            .key("sk", sv(AUTHZ_SK))
            .condition_expression(
                "attribute_exists(pk) AND state_digest = :digest AND expires_at > :now",
            )
            .expression_attribute_values(":digest", sv(state_digest))
            .expression_attribute_values(":now", nv(now))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                let item = out.attributes.ok_or(Error::AuthorizationUsed)?;
                self.authorization_from_item(&item).await
            }
            Err(e) => {
                let old = self.old_item(condition(e)?, authz_pk(id), AUTHZ_SK).await?;
                let Some(old) = old else {
                    return Err(Error::AuthorizationUsed);
                };
                if n(&old, "expires_at")? <= now {
                    // Expired: remove it now rather than wait for the TTL sweep.
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .key("pk", sv(authz_pk(id)))
                        .key("sk", sv(AUTHZ_SK))
                        .send()
                        .await
                        .map_err(Error::dynamo)?;
                    Err(Error::AuthorizationExpired)
                } else {
                    Err(Error::StateMismatch)
                }
            }
        }
    }
}

/// A target's configuration as stored: everything but the tool catalog,
/// which the proxy updates on its own.
fn target_config(target: &Target) -> Result<String> {
    let mut config = target.clone();
    config.tool_catalog = vec![];
    serde_json::to_string(&config).map_err(|e| Error::Malformed(e.to_string()))
}

impl DynamoStore {
    /// Opens a target item: its configuration must carry the integrity tag
    /// sealed for its name (from the key) and its exact text, so a table
    /// writer without the keys cannot change where tokens, codes or client
    /// secrets go.
    async fn target_from_item(&self, item: &Item) -> Result<Target> {
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
}

/// Creates the gateway table (the same schema as `template.yaml`) and turns
/// on TTL. Used by the local stack and the tests; an existing table is left
/// as it is.
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema fields are set")
    };
    let attr = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .expect("attribute definition fields are set")
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(REFRESH_INDEX)
        .key_schema(key("rd_shard", KeyType::Hash))
        .key_schema(key("rd_at", KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .expect("index fields are set");
    let res = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::S))
        .attribute_definitions(attr("rd_shard", ScalarAttributeType::S))
        .attribute_definitions(attr("rd_at", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(gsi)
        .send()
        .await;
    match res {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(())
        }
        Err(e) => return Err(Error::dynamo(e)),
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(TTL_ATTRIBUTE)
                .enabled(true)
                .build()
                .expect("TTL fields are set"),
        )
        .send()
        .await
        .map_err(Error::dynamo)?;
    Ok(())
}

// ----- attribute helpers -----

fn sv(v: impl AsRef<str>) -> AttributeValue {
    AttributeValue::S(v.as_ref().to_owned())
}
fn nv(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn opt_s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}
fn s(item: &Item, name: &str) -> Result<String> {
    opt_s(item, name).ok_or_else(|| Error::Malformed(format!("missing string attribute {name}")))
}
fn opt_n(item: &Item, name: &str) -> Result<Option<i64>> {
    match item.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_n()
            .ok()
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::Malformed(format!("attribute {name} is not an integer"))),
    }
}
fn n(item: &Item, name: &str) -> Result<i64> {
    opt_n(item, name)?.ok_or_else(|| Error::Malformed(format!("missing number attribute {name}")))
}
fn list_s(item: &Item, name: &str) -> Vec<String> {
    item.get(name)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}
