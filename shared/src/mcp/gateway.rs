//! What the proxy does with each MCP request: aggregate the targets'
//! tools, prompts and resources under prefixed names, route calls to the
//! right target with the caller's own upstream token, and ask for consent
//! (a URL elicitation) when the caller has not connected a target.
//!
//! The HTTP edge (`http::proxy`) has already validated the caller and the
//! protocol framing; this module sees a [`Caller`] and a method.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures::future::join_all;
use serde_json::{json, Map, Value};
use url::Url;

use super::names::{default_prefix, expose};
use super::options::consent_options;
use super::upstream::{Call, UpstreamError};
use super::{codes, meta, MODERN};
use crate::connections;
use crate::crypto::{random_token, sha256_hex, Aad};
use crate::domain::{PendingAuthorization, Target, TargetAuth};
use crate::tokens::{LeasePolicy, NoGrant};
use crate::urls::connect_url;
use crate::AppState;

/// Prefix of the gateway's own tools.
pub const GATEWAY_PREFIX: &str = "gateway___";
/// How long a `requestState` stays valid.
pub const REQUEST_STATE_TTL: i64 = 900;
/// Upstream retries after a consent-worthy refusal, per call.
pub const MAX_STEP_UP: usize = 1;

/// The validated caller and what its client can do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's subject.
    pub sub: String,
    /// The protocol version of the exchange.
    pub version: String,
    /// The client declared URL-mode elicitation (2025-11-25 and later).
    pub url_elicitation: bool,
}

impl Caller {
    fn modern(&self) -> bool {
        self.version == MODERN
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A JSON-RPC result.
    Result(Value),
    /// A JSON-RPC error.
    Error {
        /// Code.
        code: i64,
        /// Message.
        message: String,
        /// Data.
        data: Option<Value>,
    },
}

impl Reply {
    fn error(code: i64, message: impl Into<String>) -> Self {
        Reply::Error {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// The proxy logic for one request.
pub struct Gateway<'a> {
    state: &'a AppState,
    base: Url,
    caller: Caller,
    owner: String,
}

/// How a target is exposed.
struct Exposed {
    target: Arc<Target>,
    prefix: String,
}

/// Why a target cannot be called for this user right now.
enum Blocked {
    /// Ask for consent (with these extra scopes).
    Consent(Vec<String>),
    /// Retry later.
    Retry(String),
    /// The upstream failed.
    Upstream(String),
}

impl<'a> Gateway<'a> {
    /// The logic for `caller`, with the public base URL of this request.
    pub fn new(state: &'a AppState, base: Url, caller: Caller) -> Self {
        Gateway {
            state,
            base,
            caller,
            owner: lease_owner(),
        }
    }

    /// Handles one request.
    pub async fn handle(&self, method: &str, params: Option<&Value>) -> Reply {
        match method {
            "ping" => Reply::Result(json!({})),
            "logging/setLevel" => Reply::Result(json!({})),
            "tools/list" => self.list("tools/list", "tools", params).await,
            "prompts/list" => self.list("prompts/list", "prompts", params).await,
            "resources/list" => self.list("resources/list", "resources", params).await,
            "resources/templates/list" => {
                self.list("resources/templates/list", "resourceTemplates", params)
                    .await
            }
            "tools/call" => {
                self.call_named("tools/call", "tools/list", "tools", params)
                    .await
            }
            "prompts/get" => {
                self.call_named("prompts/get", "prompts/list", "prompts", params)
                    .await
            }
            "resources/read" => self.read_resource(params).await,
            "completion/complete" => self.complete(params).await,
            other => Reply::error(
                codes::METHOD_NOT_FOUND,
                format!("Method not found: {other}"),
            ),
        }
    }

    async fn exposed_targets(&self) -> Result<Vec<Exposed>, Reply> {
        let targets = self.state.targets.list().await.map_err(|e| {
            tracing::error!(error = %e, "listing targets failed");
            Reply::error(
                codes::RETRY_LATER,
                "the gateway could not read its targets; retry later",
            )
        })?;
        let single = targets.len() == 1;
        Ok(targets
            .into_iter()
            .map(|t| {
                let prefix = match &t.tool_prefix {
                    Some(p) => p.clone(),
                    None if single => String::new(),
                    None => default_prefix(&t.name),
                };
                Exposed { target: t, prefix }
            })
            .collect())
    }

    /// A usable token for the target, or why not.
    async fn token(&self, target: &Target) -> Result<Option<crate::domain::Grant>, Blocked> {
        if matches!(target.auth, TargetAuth::None) {
            return Ok(None);
        }
        match self
            .state
            .tokens
            .usable_grant(
                &self.caller.sub,
                &target.name,
                &self.owner,
                self.state.config.refresh_margin.as_secs() as i64,
                LeasePolicy::default(),
            )
            .await
        {
            Ok(g) => Ok(Some(g)),
            Err(NoGrant::Missing) | Err(NoGrant::NeedsConsent) => Err(Blocked::Consent(vec![])),
            Err(NoGrant::Retry(why)) => Err(Blocked::Retry(why)),
        }
    }

    /// Sends `method` to `target` for the caller: refresh once on 401, ask for
    /// consent when the grant is missing, dead, or lacks scopes.
    async fn forward(
        &self,
        target: &Target,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, Blocked> {
        let mut grant = self.token(target).await?;
        for attempt in 0..=1 {
            let token = grant.as_ref().map(|g| &g.tokens.access_token);
            let call = Call {
                sub: &self.caller.sub,
                target: &target.name,
                url: &target.mcp_url,
                token,
                method,
                params: params.as_ref(),
            };
            match self.state.upstream.request(&call).await {
                Ok(message) => return Ok(message),
                Err(UpstreamError::Unauthorized) if attempt == 0 && grant.is_some() => {
                    let Some(g) = &grant else { break };
                    match self
                        .state
                        .tokens
                        .after_unauthorized(g, &self.owner, LeasePolicy::default())
                        .await
                    {
                        Ok(fresh) => grant = Some(fresh),
                        Err(NoGrant::Retry(why)) => return Err(Blocked::Retry(why)),
                        Err(_) => return Err(Blocked::Consent(vec![])),
                    }
                }
                Err(UpstreamError::Unauthorized) => return Err(Blocked::Consent(vec![])),
                Err(UpstreamError::InsufficientScope { scope }) => {
                    let wanted: Vec<String> = scope
                        .map(|s| s.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default();
                    let have = grant.as_ref().map(|g| g.scopes.clone()).unwrap_or_default();
                    if wanted.is_empty() || wanted.iter().all(|w| have.contains(w)) {
                        // Already granted and still refused: a new consent would loop.
                        return Err(Blocked::Upstream(
                            "the upstream refused the call for lack of permission".into(),
                        ));
                    }
                    return Err(Blocked::Consent(wanted));
                }
                Err(e) if e.is_retryable() => return Err(Blocked::Retry(e.to_string())),
                Err(e) => return Err(Blocked::Upstream(e.to_string())),
            }
        }
        Err(Blocked::Consent(vec![]))
    }

    // ----- listing -----

    async fn list(&self, method: &str, key: &str, params: Option<&Value>) -> Reply {
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let cursor = params.and_then(|p| p.get("cursor")).and_then(Value::as_str);
        let wanted: Option<BTreeMap<String, String>> = match cursor {
            None => None,
            Some(c) => match decode_cursor(c) {
                Some(m) => Some(m),
                None => return Reply::error(codes::INVALID_PARAMS, "invalid cursor"),
            },
        };
        let jobs = exposed.iter().filter_map(|e| {
            let upstream_cursor = match &wanted {
                None => None,
                Some(m) => Some(m.get(&e.target.name)?.clone()),
            };
            Some(async move {
                let mut p = json!({});
                if let Some(c) = &upstream_cursor {
                    p["cursor"] = json!(c);
                }
                (e, self.forward(&e.target, method, Some(p)).await)
            })
        });
        let results = join_all(jobs).await;
        let mut items = vec![];
        let mut next = BTreeMap::new();
        for (e, result) in results {
            match result {
                Ok(message) => {
                    let Some(result) = message.get("result") else {
                        tracing::warn!(target = %e.target.name, method, "upstream listing failed: {}", message.get("error").cloned().unwrap_or_default());
                        continue;
                    };
                    if let Some(list) = result.get(key).and_then(Value::as_array) {
                        items.extend(list.iter().filter_map(|i| rename(i, &e.prefix, key)));
                        if key == "tools" && wanted.is_none() {
                            self.remember_catalog(&e.target, list).await;
                        }
                    }
                    if let Some(c) = result.get("nextCursor").and_then(Value::as_str) {
                        next.insert(e.target.name.clone(), c.to_owned());
                    }
                }
                Err(blocked) => {
                    if let Blocked::Retry(why) | Blocked::Upstream(why) = &blocked {
                        tracing::warn!(target = %e.target.name, method, reason = %why, "upstream listing unavailable; using the cached catalog");
                    }
                    // Not connected (or unavailable): the cached catalog for tools.
                    if key == "tools" && wanted.is_none() {
                        if e.target.tool_catalog.is_empty()
                            && matches!(blocked, Blocked::Consent(_))
                        {
                            // Nothing known about its tools yet: a tool that
                            // starts the consent, so the agent can offer it.
                            items.push(connect_tool(&e.target));
                        }
                        items.extend(
                            e.target
                                .tool_catalog
                                .iter()
                                .filter_map(|i| rename(i, &e.prefix, key)),
                        );
                    }
                }
            }
        }
        if key == "tools" && wanted.is_none() {
            items.extend(gateway_tools());
        }
        let mut result = json!({ key: items });
        if !next.is_empty() {
            result["nextCursor"] = json!(encode_cursor(&next));
        }
        Reply::Result(result)
    }

    /// Keeps the target's catalog current for users who have not connected.
    async fn remember_catalog(&self, target: &Target, tools: &[Value]) {
        if target.tool_catalog.as_slice() == tools {
            return;
        }
        // Only the catalog, and only while the target is stored as it was
        // read: a removed target stays removed, an operator's change stays.
        match self.state.targets.put_catalog(target, tools).await {
            Ok(()) => {}
            Err(crate::Error::StaleVersion) => {
                tracing::debug!(target = %target.name, "target changed since it was read; catalog not stored")
            }
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "could not update the cached catalog")
            }
        }
    }

    // ----- named calls (tools, prompts) -----

    async fn call_named(
        &self,
        method: &str,
        list_method: &str,
        key: &str,
        params: Option<&Value>,
    ) -> Reply {
        let Some(params) = params.and_then(Value::as_object) else {
            return Reply::error(codes::INVALID_PARAMS, "params must be an object");
        };
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Reply::error(codes::INVALID_PARAMS, "params.name is required");
        };
        if method == "tools/call" && name.starts_with(GATEWAY_PREFIX) {
            return self.gateway_tool(name, params.get("arguments")).await;
        }
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        if method == "tools/call" {
            if let Some(e) = exposed
                .iter()
                .find(|e| connect_tool_name(&e.target) == name)
            {
                return self.connect_target(&e.target, params).await;
            }
        }
        let Some((e, upstream_name)) = self.resolve(&exposed, name, list_method, key).await else {
            return if method == "tools/call" {
                Reply::error(codes::INVALID_PARAMS, format!("Unknown tool: {name}"))
            } else {
                Reply::error(codes::INVALID_PARAMS, format!("Unknown prompt: {name}"))
            };
        };
        if let Some(r) = self.check_request_state(method, params).await {
            return r;
        }
        let force = match consent_options(params) {
            Ok(o) => o.force && params.get("requestState").is_none(),
            Err(why) => return Reply::error(codes::INVALID_PARAMS, why),
        };
        let mut forwarded = strip_gateway_fields(params);
        forwarded.insert("name".into(), json!(upstream_name));
        if force && !matches!(e.target.auth, TargetAuth::None) {
            return self.consent(&e.target, &[], method, params).await;
        }
        match self
            .forward(&e.target, method, Some(Value::Object(forwarded)))
            .await
        {
            Ok(message) => pass_through(message),
            Err(Blocked::Consent(extra)) => self.consent(&e.target, &extra, method, params).await,
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

    /// A failure as the method's client expects it: an `isError` tool result
    /// for tools, a JSON-RPC error otherwise.
    fn failure(&self, method: &str, text: &str, retryable: bool) -> Reply {
        if method == "tools/call" {
            Reply::Result(json!({"content": [{"type": "text", "text": text}], "isError": true}))
        } else {
            Reply::error(
                if retryable {
                    codes::RETRY_LATER
                } else {
                    codes::INTERNAL_ERROR
                },
                text,
            )
        }
    }

    /// The target and upstream name behind an exposed name.
    async fn resolve<'e>(
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
        for e in candidates {
            let rest = &name[e.prefix.len()..];
            if !rest.is_empty() && expose(&e.prefix, rest) == name {
                return Some((e, rest.to_owned()));
            }
            // A shortened name: find the upstream name that maps to it.
            let known: Vec<Value> = if key == "tools" && !e.target.tool_catalog.is_empty() {
                e.target.tool_catalog.clone()
            } else {
                match self.forward(&e.target, list_method, Some(json!({}))).await {
                    Ok(m) => m
                        .get("result")
                        .and_then(|r| r.get(key))
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    Err(_) => vec![],
                }
            };
            for item in known {
                if let Some(n) = item.get("name").and_then(Value::as_str) {
                    if expose(&e.prefix, n) == name {
                        return Some((e, n.to_owned()));
                    }
                }
            }
        }
        None
    }

    // ----- resources -----

    async fn read_resource(&self, params: Option<&Value>) -> Reply {
        let Some(params) = params.and_then(Value::as_object) else {
            return Reply::error(codes::INVALID_PARAMS, "params must be an object");
        };
        let Some(uri) = params.get("uri").and_then(Value::as_str) else {
            return Reply::error(codes::INVALID_PARAMS, "params.uri is required");
        };
        if let Some(r) = self.check_request_state("resources/read", params).await {
            return r;
        }
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let Some(e) = self.owner_of_uri(&exposed, uri).await else {
            return Reply::error(codes::INVALID_PARAMS, format!("Unknown resource: {uri}"));
        };
        let forwarded = Value::Object(strip_gateway_fields(params));
        match self
            .forward(&e.target, "resources/read", Some(forwarded))
            .await
        {
            Ok(message) => pass_through(message),
            Err(Blocked::Consent(extra)) => {
                self.consent(&e.target, &extra, "resources/read", params)
                    .await
            }
            Err(Blocked::Retry(why)) => {
                // The reason may name the upstream's URL: logged, not returned.
                tracing::warn!(target = %e.target.name, reason = %why, "read failed; retryable");
                Reply::error(
                    codes::RETRY_LATER,
                    format!(
                        "{} is temporarily unavailable; retry later",
                        e.target.title()
                    ),
                )
            }
            Err(Blocked::Upstream(why)) => Reply::error(
                codes::INTERNAL_ERROR,
                format!("{} failed: {why}", e.target.title()),
            ),
        }
    }

    /// The target that lists `uri` (or a template matching it).
    async fn owner_of_uri<'e>(&self, exposed: &'e [Exposed], uri: &str) -> Option<&'e Exposed> {
        if exposed.len() == 1 {
            return exposed.first();
        }
        let lookups = exposed.iter().map(|e| async move {
            let listed = |m: Result<Value, Blocked>, key: &str, field: &str| -> Vec<String> {
                m.ok()
                    .and_then(|m| {
                        m.get("result")
                            .and_then(|r| r.get(key))
                            .and_then(Value::as_array)
                            .cloned()
                    })
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i.get(field).and_then(Value::as_str).map(str::to_owned))
                    .collect()
            };
            let resources = listed(
                self.forward(&e.target, "resources/list", Some(json!({})))
                    .await,
                "resources",
                "uri",
            );
            if resources.iter().any(|r| r == uri) {
                return Some(e);
            }
            let templates = listed(
                self.forward(&e.target, "resources/templates/list", Some(json!({})))
                    .await,
                "resourceTemplates",
                "uriTemplate",
            );
            templates
                .iter()
                .any(|t| template_matches(t, uri))
                .then_some(e)
        });
        join_all(lookups).await.into_iter().flatten().next()
    }

    // ----- completion -----

    async fn complete(&self, params: Option<&Value>) -> Reply {
        let Some(params) = params.and_then(Value::as_object) else {
            return Reply::error(codes::INVALID_PARAMS, "params must be an object");
        };
        let Some(reference) = params.get("ref").and_then(Value::as_object) else {
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
                let mut r = reference.clone();
                r.insert("name".into(), json!(upstream));
                forwarded.insert("ref".into(), Value::Object(r));
                e
            }
            Some("ref/resource") => {
                let Some(uri) = reference.get("uri").and_then(Value::as_str) else {
                    return Reply::error(codes::INVALID_PARAMS, "ref.uri is required");
                };
                match self.owner_of_uri(&exposed, uri).await {
                    Some(e) => e,
                    None => {
                        return Reply::error(
                            codes::INVALID_PARAMS,
                            format!("Unknown resource: {uri}"),
                        )
                    }
                }
            }
            _ => {
                return Reply::error(
                    codes::INVALID_PARAMS,
                    "ref.type must be ref/prompt or ref/resource",
                )
            }
        };
        match self
            .forward(
                &target.target,
                "completion/complete",
                Some(Value::Object(forwarded)),
            )
            .await
        {
            Ok(message) => pass_through(message),
            // No grant: nothing to complete with.
            Err(_) => Reply::Result(json!({"completion": {"values": [], "hasMore": false}})),
        }
    }

    // ----- consent -----

    /// Starts a consent for `target` and tells the client, as its protocol
    /// version allows.
    async fn consent(
        &self,
        target: &Target,
        extra_scopes: &[String],
        method: &str,
        params: &Map<String, Value>,
    ) -> Reply {
        let TargetAuth::OAuth(settings) = &target.auth else {
            return self.failure(
                method,
                &format!("{} refused the call.", target.title()),
                false,
            );
        };
        // Where the success page sends the person: the call's own URL if it
        // is allowed (a clear error if not), else the target's default.
        let requested = match consent_options(params) {
            Ok(o) => o.return_url,
            Err(why) => return Reply::error(codes::INVALID_PARAMS, why),
        };
        let return_url = match requested {
            Some(url) => match target
                .return_to
                .check(url, &self.state.config.return_url_allowlist)
            {
                Ok(u) => Some(u.to_string()),
                Err(why) => return Reply::error(codes::INVALID_PARAMS, why),
            },
            None => target.return_to.default_url.clone(),
        };
        let now = self.state.clock.now();
        let mut pending = PendingAuthorization::for_target(
            &self.caller.sub,
            target,
            settings,
            extra_scopes,
            now,
            self.state.config.authorization_ttl.as_secs() as i64,
        );
        pending.return_url = return_url;
        if let Err(e) = self.state.authorizations.create(&pending).await {
            tracing::error!(error = %e, "could not store a pending authorization");
            return self.failure(
                method,
                "The gateway could not start the connection; retry in a moment.",
                true,
            );
        }
        let url = connect_url(&self.base, &pending.id);
        let message = format!(
            "{} needs your permission. Open {url} to connect your account, then retry.",
            target.title()
        );
        tracing::info!(
            target = %target.name,
            authorization = %self.state.config.authorization_log_ref(&pending.id),
            "consent needed"
        );
        let prompt = format!("Connect your {} account to continue.", target.title());
        // The client's declared capability, not its protocol era, decides:
        // a client that did not declare URL elicitation gets the link as
        // text it can show (a 2026-07-28 client without an elicitation
        // handler would otherwise fail on `input_required` and the user
        // would never see the link).
        if self.caller.modern() && self.caller.url_elicitation {
            // 2026-07-28 URL elicitations carry no elicitationId.
            let elicitation = json!({"mode": "url", "url": url, "message": prompt});
            let state = match self.seal_request_state(method, params, now).await {
                Some(s) => s,
                None => {
                    return self.failure(
                        method,
                        "The gateway could not start the connection; retry in a moment.",
                        true,
                    )
                }
            };
            return Reply::Result(json!({
                "resultType": "input_required",
                "inputRequests": {
                    format!("connect-{}", target.name): {"method": "elicitation/create", "params": elicitation}
                },
                "requestState": state,
            }));
        }
        let elicitation =
            json!({"mode": "url", "elicitationId": pending.id, "url": url, "message": prompt});
        if self.caller.url_elicitation {
            return Reply::Error {
                code: codes::URL_ELICITATION_REQUIRED,
                message: "URL elicitation required".into(),
                data: Some(json!({"elicitations": [elicitation]})),
            };
        }
        if method == "tools/call" {
            return Reply::Result(
                json!({"content": [{"type": "text", "text": message}], "isError": true}),
            );
        }
        Reply::Error {
            code: codes::URL_ELICITATION_REQUIRED,
            message,
            data: Some(json!({"elicitations": [elicitation]})),
        }
    }

    async fn seal_request_state(
        &self,
        method: &str,
        params: &Map<String, Value>,
        now: i64,
    ) -> Option<String> {
        let body = json!({
            "sub": self.caller.sub,
            "method": method,
            "digest": params_digest(params),
            "exp": now + REQUEST_STATE_TTL,
        });
        let keys = self.state.keys.key_set().await.ok()?;
        Some(keys.seal(body.to_string().as_bytes(), &request_state_aad()))
    }

    /// A retry that carries a `requestState` must carry ours, for this
    /// user, method and parameters, unexpired.
    async fn check_request_state(
        &self,
        method: &str,
        params: &Map<String, Value>,
    ) -> Option<Reply> {
        let state = params.get("requestState")?;
        let bad = || {
            Some(Reply::error(
                codes::INVALID_PARAMS,
                "invalid or expired requestState",
            ))
        };
        let Some(sealed) = state.as_str() else {
            return bad();
        };
        let kid = crate::crypto::KeySet::key_id_of(sealed).unwrap_or_default();
        let Ok(keys) = self.state.keys.key_set_with(kid).await else {
            return bad();
        };
        let Ok(plain) = keys.open(sealed, &request_state_aad()) else {
            return bad();
        };
        let Ok(body) = serde_json::from_slice::<Value>(&plain) else {
            return bad();
        };
        let ok = body["sub"] == json!(self.caller.sub)
            && body["method"] == json!(method)
            && body["digest"] == json!(params_digest(params))
            && body["exp"]
                .as_i64()
                .is_some_and(|e| e > self.state.clock.now());
        if ok {
            None
        } else {
            bad()
        }
    }

    /// The `<target>___connect` tool: consent if needed, else say so.
    async fn connect_target(&self, target: &Target, params: &Map<String, Value>) -> Reply {
        if let Some(r) = self.check_request_state("tools/call", params).await {
            return r;
        }
        match self.token(target).await {
            Ok(_) => Reply::Result(json!({
                "content": [{"type": "text", "text": format!("{} is connected. List the tools again to see its tools.", target.title())}],
                "isError": false,
            })),
            Err(Blocked::Consent(extra)) => {
                self.consent(target, &extra, "tools/call", params).await
            }
            Err(Blocked::Retry(why)) | Err(Blocked::Upstream(why)) => {
                tracing::warn!(target = %target.name, reason = %why, "connect tool: grant unavailable");
                self.failure(
                    "tools/call",
                    "The gateway could not check the connection; retry in a moment.",
                    true,
                )
            }
        }
    }

    // ----- the gateway's own tools -----

    async fn gateway_tool(&self, name: &str, args: Option<&Value>) -> Reply {
        let text = |t: String, is_error: bool| {
            Reply::Result(json!({"content": [{"type": "text", "text": t}], "isError": is_error}))
        };
        match name.strip_prefix(GATEWAY_PREFIX) {
            Some("connections") => match connections::list(self.state, &self.caller.sub).await {
                Ok(list) => {
                    let structured = json!({"connections": list});
                    Reply::Result(json!({
                        "content": [{"type": "text", "text": structured.to_string()}],
                        "structuredContent": structured,
                        "isError": false,
                    }))
                }
                Err(e) => {
                    tracing::error!(error = %e, "listing connections failed");
                    text(
                        "Your connections could not be read; retry in a moment.".into(),
                        true,
                    )
                }
            },
            Some("disconnect") => {
                let Some(target) = args.and_then(|a| a.get("target")).and_then(Value::as_str)
                else {
                    return Reply::error(codes::INVALID_PARAMS, "arguments.target is required");
                };
                match connections::disconnect(self.state, &self.caller.sub, target).await {
                    Ok(connections::Disconnected::NotConnected) => text(format!("You are not connected to {target}."), false),
                    Ok(_) => text(format!("Disconnected from {target}. The gateway will ask for your permission again the next time it is needed."), false),
                    Err(e) => {
                        tracing::error!(error = %e, "disconnect failed");
                        text(format!("Disconnecting from {target} failed; retry in a moment."), true)
                    }
                }
            }
            _ => Reply::error(codes::INVALID_PARAMS, format!("Unknown tool: {name}")),
        }
    }
}

/// A lease owner name unique to this request: a random name for the
/// process, drawn once, and a counter (no system call per request).
fn lease_owner() -> String {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let process = PROCESS.get_or_init(|| random_token(9));
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("proxy-{process}-{n}")
}

fn request_state_aad() -> Aad {
    Aad::new("request-state", &[])
}

/// Digest of the parameters that identify a request (not the retry fields).
fn params_digest(params: &Map<String, Value>) -> String {
    let mut p = params.clone();
    p.remove("requestState");
    p.remove("inputResponses");
    p.remove("_meta");
    // serde_json's Map is ordered by key: a canonical form.
    sha256_hex(Value::Object(p).to_string().as_bytes())
}

/// Params as the upstream should see them: without the gateway's retry fields.
fn strip_gateway_fields(params: &Map<String, Value>) -> Map<String, Value> {
    let mut p = params.clone();
    p.remove("requestState");
    p.remove("inputResponses");
    if let Some(Value::Object(m)) = p.get_mut("_meta") {
        super::options::strip(m);
        m.remove(meta::PROTOCOL_VERSION);
        m.remove(meta::CLIENT_CAPABILITIES);
        m.remove(meta::CLIENT_INFO);
    }
    if p.get("_meta")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        p.remove("_meta");
    }
    p
}

/// The upstream's answer as ours: its result (without the fields a
/// 2026-07-28 upstream adds for its own client; the edge adds the gateway's)
/// or its error.
pub(crate) fn pass_through(mut message: Value) -> Reply {
    if let Some(result) = message.get_mut("result") {
        let mut result = result.take();
        if let Some(obj) = result.as_object_mut() {
            if obj.get("resultType").and_then(Value::as_str) == Some("input_required") {
                // The upstream wants input the gateway cannot relay.
                return Reply::error(
                    codes::INTERNAL_ERROR,
                    "the upstream asked for input the gateway cannot relay",
                );
            }
            for k in ["resultType", "ttlMs", "cacheScope"] {
                obj.remove(k);
            }
            if let Some(Value::Object(m)) = obj.get_mut("_meta") {
                m.remove("io.modelcontextprotocol/serverInfo");
                if m.is_empty() {
                    obj.remove("_meta");
                }
            }
        }
        return Reply::Result(result);
    }
    if let Some(error) = message.get("error") {
        return Reply::Error {
            code: error
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(codes::INTERNAL_ERROR),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error")
                .to_owned(),
            data: error.get("data").cloned(),
        };
    }
    Reply::error(
        codes::INTERNAL_ERROR,
        "the upstream answered without a result",
    )
}

/// A listed item under its exposed name (URIs stay as they are).
fn rename(item: &Value, prefix: &str, key: &str) -> Option<Value> {
    let mut item = item.clone();
    if key == "tools" || key == "prompts" {
        let name = item.get("name")?.as_str()?.to_owned();
        item["name"] = json!(expose(prefix, &name));
    }
    Some(item)
}

fn encode_cursor(next: &BTreeMap<String, String>) -> String {
    B64.encode(serde_json::to_vec(next).unwrap_or_default())
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<BTreeMap<String, String>> {
    let bytes = B64.decode(cursor).ok()?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).ok()?;
    (!map.is_empty()).then_some(map)
}

/// True when `uri` could be produced by the RFC 6570 level-1 `template`.
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut rest = uri;
    let mut parts = template.split('{');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(r) = rest.strip_prefix(first) else {
        return false;
    };
    rest = r;
    for part in parts {
        let Some((_, literal)) = part.split_once('}') else {
            return false;
        };
        if literal.is_empty() {
            return !rest.is_empty();
        }
        match rest.find(literal) {
            Some(i) if i > 0 => rest = &rest[i + literal.len()..],
            _ => return false,
        }
    }
    rest.is_empty()
}

/// The name of a target's connect tool (always `<target>___connect`).
fn connect_tool_name(target: &Target) -> String {
    format!("{}{}connect", target.name, super::names::SEPARATOR)
}

/// A tool that connects a target whose tools are not known yet.
fn connect_tool(target: &Target) -> Value {
    json!({
        "name": connect_tool_name(target),
        "description": format!("Connect your {} account through the gateway, so that its tools become available.", target.title()),
        "inputSchema": {"type": "object", "properties": {}},
    })
}

/// The gateway's own tools.
fn gateway_tools() -> Vec<Value> {
    vec![
        json!({
            "name": format!("{GATEWAY_PREFIX}connections"),
            "description": "Lists the services you have connected through the gateway: their status, expiry and scopes.",
            "inputSchema": {"type": "object", "properties": {}},
            "annotations": {"readOnlyHint": true},
        }),
        json!({
            "name": format!("{GATEWAY_PREFIX}disconnect"),
            "description": "Disconnects a service: revokes the gateway's access at the service and forgets it. The next use asks for your permission again.",
            "inputSchema": {"type": "object", "properties": {"target": {"type": "string", "description": "The service's name, as listed by gateway___connections"}}, "required": ["target"]},
            "annotations": {"destructiveHint": true},
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let mut m = BTreeMap::new();
        m.insert("github".to_string(), "abc".to_string());
        assert_eq!(decode_cursor(&encode_cursor(&m)), Some(m));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&B64.encode(b"{}")), None);
        assert_eq!(decode_cursor(&B64.encode(b"[1]")), None);
    }

    #[test]
    fn templates() {
        assert!(template_matches("file:///{path}", "file:///a/b"));
        assert!(template_matches(
            "users://{id}/profile",
            "users://42/profile"
        ));
        assert!(!template_matches(
            "users://{id}/profile",
            "users://42/other"
        ));
        assert!(!template_matches(
            "users://{id}/profile",
            "other://42/profile"
        ));
        assert!(template_matches("plain://x", "plain://x"));
        assert!(!template_matches("plain://x", "plain://y"));
    }

    #[test]
    fn digests_ignore_retry_fields() {
        let a = json!({"name": "t", "arguments": {"x": 1}});
        let b = json!({"name": "t", "arguments": {"x": 1}, "requestState": "s", "inputResponses": {}, "_meta": {"k": 1}});
        assert_eq!(
            params_digest(a.as_object().unwrap()),
            params_digest(b.as_object().unwrap())
        );
        let c = json!({"name": "t", "arguments": {"x": 2}});
        assert_ne!(
            params_digest(a.as_object().unwrap()),
            params_digest(c.as_object().unwrap())
        );
    }

    #[test]
    fn forwarded_params_lose_gateway_fields() {
        let p = json!({"name": "t", "requestState": "s", "_meta": {"mcp-oauth-gateway/forceConsent": true, "progressToken": 1}});
        let out = strip_gateway_fields(p.as_object().unwrap());
        assert_eq!(
            Value::Object(out),
            json!({"name": "t", "_meta": {"progressToken": 1}})
        );
    }
}
