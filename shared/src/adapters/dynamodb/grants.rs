//! Grants: one item per user and target, tokens sealed for both.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use futures::future::try_join_all;

use crate::crypto::Aad;
use crate::domain::{Grant, GrantKey, GrantStatus, Lease, SealedGrant};
use crate::error::{Error, Result};
use crate::ports::GrantStore;

use super::codec::*;
use super::expr::*;
use super::*;

impl DynamoStore {
    // ----- grants -----

    /// The grant an item holds. The ciphertext is opened for the user and
    /// target of the item's key (never of attributes stored beside it), and
    /// the fields that say where tokens go come from the ciphertext alone.
    pub(super) async fn grant_from_item(&self, item: &Item) -> Result<Grant> {
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
    pub(super) async fn grant_fields(
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
    pub(super) async fn versioned_update(&self, g: &Grant) -> Result<UpdateBuilder> {
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
    pub(super) async fn conditional_grant_update(
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
