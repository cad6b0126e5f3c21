//! Routing a named call or a completion to the target that owns the name
//! (resources: `resources.rs`).

use serde_json::{json, Map, Value};

use super::consent::Retry;
use super::names::expose;
use super::options::consent_options;
use crate::policy::Resource;
use crate::wire::codes;

use super::*;

impl Gateway<'_> {
    // ----- named calls (tools, prompts) -----

    pub(super) async fn call_named(
        &self,
        method: &str,
        list_method: &str,
        key: &str,
        params: Option<&Params>,
    ) -> Reply {
        let Some(params) = params else {
            return Reply::error(codes::INVALID_PARAMS, "params must be an object");
        };
        let Some(name) = params.name() else {
            return Reply::error(codes::INVALID_PARAMS, "params.name is required");
        };
        let name = &*name;
        if method == "tools/call" && name.starts_with(GATEWAY_PREFIX) {
            let own = crate::telemetry::clean(name, 128);
            crate::observe::note(|r| r.item = Some(own));
            return Box::pin(self.gateway_tool(name, params.get::<Value>("arguments").as_ref()))
                .await;
        }
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        if method == "tools/call" {
            if let Some(e) = exposed
                .iter()
                .find(|e| is_connect_tool_name(&e.target, name))
            {
                let tool = Resource::Tool {
                    target: &e.target.name,
                    name,
                };
                if let Err(refused) = self.permit(method, &tool, None).await {
                    return refused;
                }
                return Box::pin(self.connect_target(&e.target, params)).await;
            }
        }
        let Some((e, upstream_name)) = self.resolve(&exposed, name, list_method, key).await else {
            return if method == "tools/call" {
                Reply::error(codes::INVALID_PARAMS, format!("Unknown tool: {name}"))
            } else {
                Reply::error(codes::INVALID_PARAMS, format!("Unknown prompt: {name}"))
            };
        };
        crate::observe::note(|r| {
            r.target = Some(e.target.name.clone());
            r.item = Some(upstream_name.clone());
        });
        let id = crate::policy::item_id(&e.target.name, &upstream_name);
        let item = if method == "tools/call" {
            Resource::Tool {
                target: &e.target.name,
                name: &id,
            }
        } else {
            Resource::Prompt {
                target: &e.target.name,
                name: &id,
            }
        };
        let arguments = params.get::<Value>("arguments");
        if self
            .state
            .config
            .observe
            .audit_arguments_targets
            .contains(&e.target.name)
        {
            let kept = arguments.clone();
            crate::observe::note(|r| r.arguments = kept);
        }
        if method == "tools/call" && self.caller.modern() {
            // Checked where the catalog knows the tool's headers; otherwise
            // the upstream checks them.
            if let Some(declared) = e.target.tool_catalog.param_headers(&upstream_name) {
                if let Err(crate::wire::params::Mismatch(why)) = crate::wire::params::check(
                    &declared,
                    arguments.as_ref(),
                    &self.caller.param_headers,
                ) {
                    return Reply::error(codes::HEADER_MISMATCH, why);
                }
            }
        }
        if let Err(refused) = self.permit(method, &item, arguments.as_ref()).await {
            return refused;
        }
        let retry = match self.retry_of(method, params).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        let force = match consent_options(params.meta()) {
            Ok(o) => o.force && !params.has("requestState"),
            Err(why) => return Reply::error(codes::INVALID_PARAMS, why),
        };
        let mut forwarded = super::consent::stripped_for_upstream(params, Some("name"));
        if let Err(r) = answers_for(&e.target, &retry, params, &mut forwarded) {
            return r;
        }
        forwarded.set("name", &upstream_name);
        // Under policies, the upstream gets the arguments as they were
        // judged (a duplicated member read one way here and another there
        // could otherwise pass a forbid).
        if let (Some(args), Ok(Some(_))) = (&arguments, self.state.policies.current().await) {
            forwarded.set("arguments", args);
        }
        if force && e.target.auth.is_per_user() {
            return Box::pin(self.consent(&e.target, &[], method, params)).await;
        }
        match self
            .forward_answer(&e.target, method, Some(forwarded))
            .await
        {
            Ok(answer) => self.relay_answer(&e.target, method, params, answer).await,
            // Boxed: what a call rarely needs stays out of its future.
            Err(Blocked::Consent(extra)) => {
                Box::pin(self.consent(&e.target, &extra, method, params)).await
            }
            Err(Blocked::Interaction(url)) => {
                Box::pin(self.interaction(&e.target, &url, method, params)).await
            }
            Err(Blocked::Retry(why)) => {
                tracing::warn!(target = %e.target.name, reason = %why, "call failed; retryable");
                self.failure(
                    method,
                    &format!(
                        "{} is temporarily unavailable; retry in a moment.",
                        e.target.title()
                    ),
                    true,
                )
            }
            Err(Blocked::Upstream(why)) => {
                tracing::warn!(target = %e.target.name, reason = %why, "upstream failure");
                self.failure(
                    method,
                    &format!("{} failed: {why}", e.target.title()),
                    false,
                )
            }
        }
    }

    /// The target and upstream name behind an exposed name.
    pub(super) async fn resolve<'e>(
        &self,
        exposed: &'e [Exposed],
        name: &str,
        list_method: &str,
        key: &str,
    ) -> Option<(&'e Exposed, String)> {
        // Longest prefix first, so `a___` never shadows `a___b___`.
        let mut candidates: Vec<&Exposed> = exposed
            .iter()
            .filter(|e| name.starts_with(&e.prefix))
            .collect();
        candidates.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        // `name` is `prefix + rest`, which is exposed as is when it fits
        // (see `names::expose`): no need to build it again, unless it has
        // the form of a shortened name. A longer name is never exposed.
        let fits =
            |e: &Exposed| name.len() > e.prefix.len() && name.len() <= super::names::MAX_NAME;
        if super::names::may_be_shortened(name) {
            // Every candidate's names first: under prefixes `gh_` and
            // `gh_issues_`, `gh_issues_..._<hex>` may be `gh_`'s.
            for e in &candidates {
                if let Some(n) = self.shortened_from(e, name, list_method, key).await {
                    return Some((e, n));
                }
            }
        }
        // A name of its own (also one that only looks shortened).
        candidates
            .into_iter()
            .find(|e| fits(e))
            .map(|e| (e, name[e.prefix.len()..].to_owned()))
    }

    /// The upstream name under `e` that is exposed as `name`, shortened:
    /// from the target's catalog for tools, else from a listing.
    async fn shortened_from(
        &self,
        e: &Exposed,
        name: &str,
        list_method: &str,
        key: &str,
    ) -> Option<String> {
        let maps = |n: &str| expose(&e.prefix, n) == name;
        if key == "tools" && !e.target.tool_catalog.is_empty() {
            return e
                .target
                .tool_catalog
                .iter()
                .filter_map(|t| t.name())
                .find(|n| maps(n));
        }
        let listed = Box::pin(self.forward(&e.target, list_method, Some(Params::new())))
            .await
            .ok()?;
        listed
            .get("result")?
            .get(key)?
            .as_array()?
            .iter()
            .filter_map(|item| item.get("name").and_then(Value::as_str))
            .find(|n| maps(n))
            .map(str::to_owned)
    }

    // ----- completion -----

    pub(super) async fn complete(&self, params: Option<&Params>) -> Reply {
        let Some(params) = params else {
            return Reply::error(codes::INVALID_PARAMS, "params must be an object");
        };
        let Some(reference) = params.get::<Map<String, Value>>("ref") else {
            return Reply::error(codes::INVALID_PARAMS, "params.ref is required");
        };
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let mut forwarded = strip_gateway_fields(params);
        let target = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let Some(name) = reference.get("name").and_then(Value::as_str) else {
                    return Reply::error(codes::INVALID_PARAMS, "ref.name is required");
                };
                let Some((e, upstream)) = self
                    .resolve(&exposed, name, "prompts/list", "prompts")
                    .await
                else {
                    return Reply::error(codes::INVALID_PARAMS, format!("Unknown prompt: {name}"));
                };
                let id = crate::policy::item_id(&e.target.name, &upstream);
                let prompt = Resource::Prompt {
                    target: &e.target.name,
                    name: &id,
                };
                if let Err(refused) = self.permit("prompts/get", &prompt, None).await {
                    return refused;
                }
                let mut r = reference.clone();
                r.insert("name".into(), json!(upstream));
                forwarded.set("ref", &r);
                e
            }
            Some("ref/resource") => {
                let Some(uri) = reference.get("uri").and_then(Value::as_str) else {
                    return Reply::error(codes::INVALID_PARAMS, "ref.uri is required");
                };
                // Forwarded as read (one meaning for the gateway and the upstream).
                forwarded.set("ref", &reference);
                let e = match self.owner_of_uri(&exposed, uri).await {
                    Some(e) => e,
                    None => {
                        return Reply::error(
                            codes::INVALID_PARAMS,
                            format!("Unknown resource: {uri}"),
                        )
                    }
                };
                let resource = Resource::Resource {
                    target: &e.target.name,
                    uri,
                };
                if let Err(refused) = self.permit("resources/read", &resource, None).await {
                    return refused;
                }
                e
            }
            _ => {
                return Reply::error(
                    codes::INVALID_PARAMS,
                    "ref.type must be ref/prompt or ref/resource",
                )
            }
        };
        match self
            .forward(&target.target, "completion/complete", Some(forwarded))
            .await
        {
            Ok(message) => pass_through(message),
            // No grant: nothing to complete with.
            Err(_) => Reply::Result(json!({"completion": {"values": [], "hasMore": false}})),
        }
    }
}

/// Puts the client's answers to an upstream's round into the forwarded
/// params: with the upstream's own state for a relayed round (which must be
/// this target's), as sent for a first call (an upstream that kept no state
/// asked for them), and not at all after the gateway's consent round.
pub(super) fn answers_for(
    target: &Target,
    retry: &Retry,
    params: &Params,
    forwarded: &mut Params,
) -> Result<(), Reply> {
    let answers = params.raw("inputResponses");
    match retry {
        Retry::Consent => {}
        Retry::Fresh => {
            if let Some(a) = answers {
                forwarded.set("inputResponses", &a);
            }
        }
        Retry::Upstream(round) => {
            if round.target != target.name {
                return Err(Reply::error(
                    codes::INVALID_PARAMS,
                    "invalid or expired requestState",
                ));
            }
            if let Some(a) = answers {
                forwarded.set("inputResponses", &a);
            }
            if let Some(s) = &round.state {
                forwarded.set("requestState", s);
            }
        }
    }
    Ok(())
}
