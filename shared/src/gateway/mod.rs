//! What the proxy does with each MCP request: aggregate the targets'
//! tools, prompts and resources under prefixed names, route calls to the
//! right target with the caller's own upstream token, and ask for consent
//! (a URL elicitation) when the caller has not connected a target.
//!
//! The HTTP edge (`edge::proxy`) has already validated the caller and the
//! protocol framing; this module sees a [`Caller`] and a method.

mod catalog;
pub use catalog::LIST_PAGE_SIZE;
pub mod client_requests;
pub use client_requests::AnswerRefused;
mod updates;
pub use updates::LOOK_AGAIN;
mod consent;
mod guard;
pub mod names;
pub mod options;
mod own_tools;
mod routing;

use crate::crypto::dpop::DpopKey;
use crate::tokens::ExchangeFailure;
use std::sync::Arc;

use serde_json::{json, Value};
use url::Url;

use self::names::default_prefix;
use crate::crypto::random_token;
use crate::domain::{Target, TargetAuth};
use crate::tokens::{LeasePolicy, NoGrant};
use crate::upstream::{Call, UpstreamError};
use crate::wire::envelope::{Method, Params};
use crate::wire::{codes, meta, MODERN};
use crate::AppState;

#[cfg(test)]
pub(crate) use catalog::decode_cursor;
use consent::strip_gateway_fields;
use own_tools::{connect_tool, connect_tool_name, gateway_tools};
pub use routing::template_matches;

/// Prefix of the gateway's own tools.
pub const GATEWAY_PREFIX: &str = "gateway___";
/// How long a `requestState` stays valid.
pub const REQUEST_STATE_TTL: i64 = 900;
/// The log level asked of 2026-07-28 upstreams for 2025 clients, whose
/// logging/setLevel applies to a session the gateway does not keep.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Upstream retries after a consent-worthy refusal, per call.
pub const MAX_STEP_UP: usize = 1;

/// Who is calling, as the inbound token (or API Gateway's authorizer)
/// says: what policies see of the principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user's subject.
    pub sub: String,
    /// The user's groups (`groups`, `cognito:groups` or `roles` claims).
    pub groups: Vec<String>,
    /// The token's scopes (`scope` or `scp`).
    pub scopes: Vec<String>,
    /// The agent's OAuth client id (`client_id`, `azp` or `cid`), if named.
    pub client_id: Option<String>,
}

/// The validated caller and what its client can do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's subject.
    pub sub: String,
    /// The rest of what the inbound token says about the caller.
    pub identity: Identity,
    /// The protocol version of the exchange.
    pub version: String,
    /// The client declared URL-mode elicitation (2025-11-25 and later).
    pub url_elicitation: bool,
    /// What a 2026-07-28 client declared of the capabilities an upstream's
    /// `input_required` rounds can use (`elicitation`, `sampling`,
    /// `roots`), passed on to upstreams with the client's own calls.
    pub relayed_capabilities: Option<serde_json::Map<String, Value>>,
    /// What a 2025 client declared of `sampling`, `elicitation` and
    /// `roots`, when its answers stream: the requests a 2025 upstream
    /// sends during a call are put to it on the call's stream (see
    /// [`client_requests`]); none: they are refused.
    pub answers: Option<serde_json::Map<String, Value>>,
    /// The `Mcp-Param-*` headers a 2026-07-28 client sent (lowercase names
    /// without the prefix, and values as sent).
    pub param_headers: Vec<(String, String)>,
    /// The bearer token the caller presented, as presented: the subject
    /// token of token-exchange targets, sent nowhere else.
    pub inbound_token: Option<secrecy::SecretString>,
}

impl Caller {
    /// `identity` speaking `version`, with nothing else declared.
    pub fn new(identity: Identity, version: &str) -> Caller {
        Caller {
            sub: identity.sub.clone(),
            identity,
            version: version.to_owned(),
            url_elicitation: false,
            relayed_capabilities: None,
            answers: None,
            param_headers: vec![],
            inbound_token: None,
        }
    }

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
    /// Notifications upstreams sent during the calls of this request
    /// (progress, log messages), for the client.
    relayed: crate::upstream::Relay,
    /// Puts a 2025 upstream's requests during the call to the client
    /// (when it declared them and its answer streams).
    asks: Option<client_requests::ToClient>,
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
    /// The person must open this page of the target's authorization
    /// server (a token exchange answered `interaction_required`).
    Interaction(String),
    /// Retry later.
    Retry(String),
    /// The upstream failed.
    Upstream(String),
}

impl Blocked {
    /// Why, in words, outside a call (where no consent can be asked for).
    fn reason(self) -> String {
        match self {
            Blocked::Consent(_) | Blocked::Interaction(_) => {
                "the service's connection needs the user's consent again".into()
            }
            Blocked::Retry(why) | Blocked::Upstream(why) => why,
        }
    }
}

impl<'a> Gateway<'a> {
    /// The logic for `caller`, with the public base URL of this request.
    pub fn new(state: &'a AppState, base: Url, caller: Caller) -> Self {
        let asks = caller
            .answers
            .clone()
            .map(|declared| client_requests::ToClient {
                keys: state.keys.clone(),
                clock: state.clock.clone(),
                sub: caller.sub.clone(),
                declared,
                ttl: state.config.stream_for.as_secs() as i64 + 3,
            });
        Gateway {
            state,
            // Consent links and client registrations name the consent web.
            base: state.config.consent_base_url.clone().unwrap_or(base),
            caller,
            owner: lease_owner(),
            relayed: Default::default(),
            asks,
        }
    }

    /// The notifications upstreams sent during this request's calls, in
    /// the order they came, for the client's event stream.
    pub fn take_relayed(&self) -> Vec<Value> {
        self.relayed.take()
    }

    /// Relays the notifications of this request's calls through `relay`
    /// (passed on as they come, for a streamed answer).
    pub fn with_relay(mut self, relay: crate::upstream::Relay) -> Self {
        self.relayed = relay;
        self
    }

    /// Handles one request.
    pub async fn handle(&self, method: &Method, params: Option<&Params>) -> Reply {
        match method {
            Method::Ping | Method::LoggingSetLevel => Reply::Result(json!({})),
            Method::ToolsList => self.list("tools/list", "tools", params).await,
            Method::PromptsList => self.list("prompts/list", "prompts", params).await,
            Method::ResourcesList => self.list("resources/list", "resources", params).await,
            Method::ResourcesTemplatesList => {
                self.list("resources/templates/list", "resourceTemplates", params)
                    .await
            }
            Method::ToolsCall => {
                self.call_named("tools/call", "tools/list", "tools", params)
                    .await
            }
            Method::PromptsGet => {
                self.call_named("prompts/get", "prompts/list", "prompts", params)
                    .await
            }
            Method::ResourcesRead => self.read_resource(params).await,
            // Subscriptions need the updates' stream: 2025 clients of a
            // gateway whose answers stream (see `edge::proxy::standalone`).
            Method::ResourcesSubscribe | Method::ResourcesUnsubscribe
                if self.state.config.relays_to_clients() && !self.caller.modern() =>
            {
                self.subscription(method.as_str(), params).await
            }
            Method::CompletionComplete => self.complete(params).await,
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
        self.token_for(target, false).await
    }

    /// [`Gateway::token`]; `renew` asks for a new exchanged token (the
    /// upstream refused the cached one).
    async fn token_for(
        &self,
        target: &Target,
        renew: bool,
    ) -> Result<Option<crate::domain::Grant>, Blocked> {
        let TargetAuth::OAuth(settings) = &target.auth else {
            return Ok(None);
        };
        // Token exchange: the caller's own token, exchanged per user.
        if settings.flow.is_exchange() {
            return match self
                .state
                .tokens
                .exchanged_grant(
                    &self.caller.sub,
                    target,
                    self.caller.inbound_token.as_ref(),
                    self.state.config.refresh_margin.as_secs() as i64,
                    renew,
                )
                .await
            {
                Ok(g) => Ok(Some(g)),
                Err(ExchangeFailure::Interaction(url)) => Err(Blocked::Interaction(url)),
                Err(ExchangeFailure::Retry(why)) => Err(Blocked::Retry(why)),
                Err(ExchangeFailure::NoSubjectToken) => Err(Blocked::Upstream(
                    "this service needs the bearer token you signed in with, and the request carried none".into(),
                )),
                Err(ExchangeFailure::Refused(code)) => {
                    tracing::warn!(target = %target.name, error = %crate::telemetry::clean(&code, 64), "token exchange refused");
                    Err(Blocked::Upstream(
                        "its authorization server refused to exchange your token".into(),
                    ))
                }
            };
        }
        // Client credentials or a JWT bearer grant: the target's machine
        // token, for every user.
        if settings.flow.is_machine() {
            return match self
                .state
                .tokens
                .machine_grant(
                    target,
                    &self.owner,
                    self.state.config.refresh_margin.as_secs() as i64,
                    LeasePolicy::default(),
                )
                .await
            {
                Ok(g) => Ok(Some(g)),
                Err(NoGrant::Retry(why)) => Err(Blocked::Retry(why)),
                Err(_) => Err(refused_credentials()),
            };
        }
        // Only these hold per-user grants (and ever need a consent).
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
        params: Option<Params>,
    ) -> Result<Value, Blocked> {
        let mut grant = self.token(target).await?;
        let api_key = self.api_key(target).await?;
        let param_headers = self.param_headers_for(target, method, params.as_ref());
        for attempt in 0..=1 {
            let token = grant.as_ref().map(|g| &g.tokens.access_token);
            let dpop = dpop_key(target, grant.as_ref())?;
            let call = Call {
                sub: &self.caller.sub,
                target: &target.name,
                url: &target.mcp_url,
                token,
                dpop: dpop.as_ref(),
                api_key: api_key.as_ref().map(|(k, key)| (*k, key)),
                aws_iam: match &target.auth {
                    TargetAuth::AwsIam(a) => Some(a),
                    _ => None,
                },
                method,
                params: params.as_ref(),
                // Only the call the client made relays (not listings or
                // the lookups made to route it).
                relay: answers_client(method).then_some(&self.relayed),
                // A 2025 client's log messages, as a 2025 server would
                // send them without a logging/setLevel.
                log_level: (!self.caller.modern()).then_some(DEFAULT_LOG_LEVEL),
                param_headers: &param_headers,
                client_capabilities: self
                    .caller
                    .relayed_capabilities
                    .as_ref()
                    .filter(|_| answers_client(method)),
                legacy: is_subscription(method),
                client_requests: self
                    .asks
                    .as_ref()
                    .filter(|_| answers_client(method))
                    .map(|a| a as &dyn crate::upstream::ClientRequests),
            };
            let started = std::time::Instant::now();
            let answer = self.state.upstream.request(&call).await;
            let took = started.elapsed();
            crate::observe::note(|r| {
                r.upstream_time += took;
                r.upstream_errors += u32::from(answer.is_err());
            });
            match answer {
                Ok(message) => return Ok(message),
                Err(UpstreamError::Unauthorized { .. })
                    if attempt == 0 && grant.is_some() && target.auth.is_exchange() =>
                {
                    // A cached exchanged token the upstream no longer takes:
                    // exchange the caller's token again, once.
                    grant = self.token_for(target, true).await?;
                }
                Err(UpstreamError::Unauthorized {
                    resource_metadata,
                    scope,
                }) if attempt == 0 && grant.is_some() => {
                    let Some(g) = &grant else { break };
                    match self
                        .state
                        .tokens
                        .after_unauthorized(g, &self.owner, LeasePolicy::default())
                        .await
                    {
                        Ok(fresh) => grant = Some(fresh),
                        Err(NoGrant::Retry(why)) => return Err(Blocked::Retry(why)),
                        Err(_) => return Err(self.refused(target, resource_metadata, scope).await),
                    }
                }
                Err(UpstreamError::Unauthorized {
                    resource_metadata,
                    scope,
                }) => return Err(self.refused(target, resource_metadata, scope).await),
                Err(UpstreamError::InsufficientScope { .. }) if !target.auth.is_per_user() => {
                    return Err(refused_credentials())
                }
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

    /// The target's API key (read from Secrets Manager), for API key targets.
    async fn api_key<'t>(
        &self,
        target: &'t Target,
    ) -> Result<Option<(&'t crate::domain::ApiKeySettings, secrecy::SecretString)>, Blocked> {
        let TargetAuth::ApiKey(k) = &target.auth else {
            return Ok(None);
        };
        match self.state.secrets.secret(&k.secret_arn).await {
            Ok(key) => Ok(Some((k, key))),
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "the target's API key could not be read");
                Err(Blocked::Retry(
                    "the target's API key could not be read".into(),
                ))
            }
        }
    }

    /// The `Mcp-Param-*` headers of a `tools/call` for a 2026-07-28
    /// upstream: written from the arguments for the headers the tool's
    /// schema (in the target's catalog) declares; the client's own, as
    /// sent, when the catalog does not know the tool.
    fn param_headers_for(
        &self,
        target: &Target,
        method: &str,
        params: Option<&Params>,
    ) -> Vec<(String, String)> {
        if method != "tools/call" {
            return vec![];
        }
        let Some(name) = params.and_then(|p| p.str("name")) else {
            return vec![];
        };
        let Some(declared) = target.tool_catalog.param_headers(&name) else {
            return self
                .caller
                .param_headers
                .iter()
                .map(|(k, v)| (format!("{}{k}", crate::wire::params::PREFIX), v.clone()))
                .collect();
        };
        let arguments = params.and_then(|p| p.get::<Value>("arguments"));
        crate::wire::params::headers(&declared, arguments.as_ref())
    }

    /// The upstream refused the user's token for good (no refresh helped):
    /// a consent, at the authorization server the upstream names now, for
    /// the challenge's `scope` besides the target's. When its metadata names
    /// a different server than the target's, the target follows it first
    /// (discovery and a client there), so the consent does not loop at a
    /// server whose tokens the upstream no longer takes.
    async fn refused(
        &self,
        target: &Target,
        resource_metadata: Option<String>,
        scope: Option<String>,
    ) -> Blocked {
        if !target.auth.is_per_user() {
            return refused_credentials();
        }
        let wanted: Vec<String> = scope
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let outcome = crate::targets::follow_authorization_server(
            self.state,
            &self.base,
            target,
            resource_metadata.as_deref(),
        )
        .await;
        match outcome {
            Ok(crate::targets::Migration::Unchanged) => Blocked::Consent(wanted),
            Ok(crate::targets::Migration::Moved { from, to }) => {
                tracing::warn!(
                    audit = "target_moved",
                    target = %target.name,
                    from = %crate::telemetry::clean(&from, 200),
                    to = %crate::telemetry::clean(&to, 200),
                    "the upstream names another authorization server; registered there, users consent again"
                );
                Blocked::Consent(vec![])
            }
            Err(why) => {
                // Consent where the target points: the metadata may be down
                // for a moment; a later refusal looks again.
                tracing::warn!(target = %target.name, reason = %crate::telemetry::clean(&why, 300), "could not check the upstream's authorization metadata after a refusal");
                Blocked::Consent(wanted)
            }
        }
    }

    /// A failure as the method's client expects it: an `isError` tool result
    /// for tools, a JSON-RPC error otherwise.
    pub(super) fn failure(&self, method: &str, text: &str, retryable: bool) -> Reply {
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
}

/// A caller's credentials for one target, for the exchanges made outside
/// a call (a client's answer to an upstream's request, the standalone
/// stream).
struct Credentials<'t> {
    grant: Option<crate::domain::Grant>,
    api_key: Option<(&'t crate::domain::ApiKeySettings, secrecy::SecretString)>,
    dpop: Option<DpopKey>,
}

impl Gateway<'_> {
    /// The caller's credentials for `target`, or why there are none.
    async fn credentials<'t>(&self, target: &'t Target) -> Result<Credentials<'t>, Blocked> {
        let grant = self.token(target).await?;
        let api_key = self.api_key(target).await?;
        let dpop = dpop_key(target, grant.as_ref())?;
        Ok(Credentials {
            grant,
            api_key,
            dpop,
        })
    }

    /// A [`Call`] to `target` with `credentials` that is no request of the
    /// caller's (method and params empty; nothing relayed).
    fn bare_call<'c>(&'c self, target: &'c Target, credentials: &'c Credentials<'_>) -> Call<'c> {
        Call {
            sub: &self.caller.sub,
            target: &target.name,
            url: &target.mcp_url,
            token: credentials.grant.as_ref().map(|g| &g.tokens.access_token),
            dpop: credentials.dpop.as_ref(),
            api_key: credentials.api_key.as_ref().map(|(k, key)| (*k, key)),
            aws_iam: match &target.auth {
                TargetAuth::AwsIam(a) => Some(a),
                _ => None,
            },
            method: "",
            params: None,
            relay: None,
            log_level: None,
            client_capabilities: None,
            param_headers: &[],
            legacy: false,
            client_requests: None,
        }
    }
}

/// `resources/subscribe` or `resources/unsubscribe`: sent in a 2025
/// session, where updates come.
fn is_subscription(method: &str) -> bool {
    matches!(method, "resources/subscribe" | "resources/unsubscribe")
}

/// The key a DPoP-bound grant's token goes with (none for a bearer
/// token); a grant whose key is unusable needs a new consent.
fn dpop_key(
    target: &Target,
    grant: Option<&crate::domain::Grant>,
) -> Result<Option<DpopKey>, Blocked> {
    match grant.filter(|g| g.tokens.is_dpop()) {
        Some(g) => match g.tokens.dpop_key.as_ref().map(DpopKey::from_secret) {
            Some(Ok(key)) => Ok(Some(key)),
            _ => {
                tracing::error!(target = %target.name, "a grant's DPoP key is unusable");
                Err(Blocked::Consent(vec![]))
            }
        },
        None => Ok(None),
    }
}

/// An upstream refused credentials no person can renew (an API key): the
/// operator's to fix, never a consent.
fn refused_credentials() -> Blocked {
    Blocked::Upstream(
        "it refused the gateway's credentials; ask the gateway's operator to check this target"
            .into(),
    )
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

/// The calls an upstream answers for the client itself (not listings or
/// the lookups made to route them): those whose notifications and input
/// rounds go to the client.
fn answers_client(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// The capabilities of a 2026-07-28 client's declaration that an upstream's
/// `input_required` rounds may use, as declared (the gateway relays those
/// rounds; anything else stays between the client and the gateway).
pub fn relayed_capabilities(declared: Option<&Value>) -> serde_json::Map<String, Value> {
    ["elicitation", "sampling", "roots"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), declared?.get(k)?.clone())))
        .collect()
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
        crate::observe::note(|r| r.error_from_upstream = true);
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
