//! Policies at the gateway: each call checked before it leaves, listings
//! and search filtered to what the caller may call, decisions logged for
//! audit (`POLICY_LOG`).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::PolicyLog;
use crate::policy::{Policies, Principal, Resource};
use crate::wire::codes;

use super::*;

impl Gateway<'_> {
    /// The policy set in force (`None`: none stored, everything allowed),
    /// or the refusal when it cannot be read: the gateway fails closed.
    pub(super) async fn policies(&self) -> Result<Option<Arc<Policies>>, Reply> {
        self.state.policies.current().await.map_err(|e| {
            tracing::error!(error = %e, "the policy set could not be loaded; refusing calls until it can");
            Reply::error(
                codes::RETRY_LATER,
                "the gateway cannot check its policies right now; retry later",
            )
        })
    }

    fn principal(&self) -> Principal<'_> {
        let id = &self.caller.identity;
        Principal {
            sub: self.caller.sub(),
            groups: &id.groups,
            scopes: &id.scopes,
            client_id: id.client_id.as_deref(),
        }
    }

    /// Whether listings and search show `resource` to the caller: allowed
    /// for some arguments (see [`Policies::may_list`]); not logged.
    pub(super) fn may(&self, set: &Policies, action: &str, resource: &Resource<'_>) -> bool {
        set.may_list(&self.principal(), action, resource, self.state.clock.now())
    }

    /// Checks one call; the reply that refuses it when the policies say no.
    /// Refusals name the call, never a policy.
    pub(super) async fn permit(
        &self,
        action: &str,
        resource: &Resource<'_>,
        arguments: Option<&Value>,
    ) -> Result<(), Reply> {
        let Some(set) = self.policies().await? else {
            return Ok(());
        };
        let verdict = set.decide(
            &self.principal(),
            action,
            resource,
            arguments,
            self.state.clock.now(),
        );
        let log = self.state.config.policy_log;
        if log == PolicyLog::All || (log == PolicyLog::Deny && !verdict.allowed) {
            let (kind, target, name) = match resource {
                Resource::Tool { target, name } => ("tool", target, name),
                Resource::Prompt { target, name } => ("prompt", target, name),
                Resource::Resource { target, uri } => ("resource", target, uri),
            };
            tracing::info!(
                audit = "policy_decision",
                sub = %crate::telemetry::clean(self.caller.sub(), 200),
                client_id = %crate::telemetry::clean(self.caller.identity.client_id.as_deref().unwrap_or(""), 200),
                action,
                kind,
                target = %target,
                name = %crate::telemetry::clean(name, 200),
                allowed = verdict.allowed,
                policies = %verdict.policies.join(","),
                errors = verdict.errors.len(),
                "policy decision"
            );
        }
        if verdict.allowed {
            return Ok(());
        }
        Err(match resource {
            Resource::Tool { name, .. } => Reply::Result(json!({
                "content": [{"type": "text", "text": format!("The gateway's policy does not allow you to call {name}.")}],
                "isError": true,
            })),
            Resource::Prompt { name, .. } => Reply::error(
                codes::INVALID_PARAMS,
                format!("The gateway's policy does not allow you to get the prompt {name}."),
            ),
            Resource::Resource { uri, .. } => Reply::error(
                codes::INVALID_PARAMS,
                format!("The gateway's policy does not allow you to read {uri}."),
            ),
        })
    }
}
