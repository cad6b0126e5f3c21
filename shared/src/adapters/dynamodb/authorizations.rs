//! Pending authorizations: consent state, single use, expiring.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use secrecy::{ExposeSecret, SecretString};

use crate::crypto::Aad;
use crate::domain::{PendingAuthorization, StateParam};
use crate::error::{Error, Result};
use crate::ports::AuthorizationStore;

use super::codec::*;
use super::expr::*;
use super::*;

impl DynamoStore {
    // ----- pending authorizations -----

    pub(super) async fn authorization_from_item(
        &self,
        item: &Item,
    ) -> Result<PendingAuthorization> {
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
pub(super) fn authorization_context(
    resource: Option<&str>,
    issuer: Option<&str>,
    scopes: &[String],
) -> String {
    serde_json::json!([resource, issuer, scopes]).to_string()
}
impl DynamoStore {
    /// The item of a pending authorization, its secrets sealed with the
    /// current key.
    pub(super) async fn authorization_item(&self, p: &PendingAuthorization) -> Result<Item> {
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
