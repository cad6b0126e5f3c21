//! What the proxy does with each MCP request: aggregate the targets'
//! tools, prompts and resources under prefixed names, route calls to the
//! right target with the caller's own upstream token, and ask for consent
//! (a URL elicitation) when the caller has not connected a target.
//!
//! The HTTP edge (`edge::proxy`) has already validated the caller and the
//! protocol framing; this module sees a [`Caller`] and a method.

mod caller;
pub use caller::{Caller, Identity};
mod catalog;
pub use catalog::LIST_PAGE_SIZE;
pub mod client_requests;
pub use client_requests::AnswerRefused;
mod updates;
pub use updates::LOOK_AGAIN;
mod consent;
mod forward;
mod guard;
pub mod names;
pub mod options;
mod own_tools;
mod resources;
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
use crate::upstream::{Answer, Call, UpstreamError};
use crate::wire::envelope::{Method, Params};
use crate::wire::{codes, meta};
use crate::AppState;

#[cfg(test)]
pub(crate) use catalog::decode_cursor;
use consent::strip_gateway_fields;
use own_tools::{connect_tool, connect_tool_name, gateway_tools, is_connect_tool_name};
pub use resources::template_matches;

/// Prefix of the gateway's own tools.
pub const GATEWAY_PREFIX: &str = "gateway___";
/// How long a `requestState` stays valid.
pub const REQUEST_STATE_TTL: i64 = 900;
/// The log level asked of 2026-07-28 upstreams for 2025 clients, whose
/// logging/setLevel applies to a session the gateway does not keep.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Upstream retries after a consent-worthy refusal, per call.
pub const MAX_STEP_UP: usize = 1;

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A JSON-RPC result.
    Result(Value),
    /// An upstream's result passed on as it was written (see
    /// [`crate::upstream::Answer`]).
    AsIs(crate::upstream::AsIs),
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

/// The exposed targets of the last list of targets an instance read: the
/// same while the list is (a cached list is shared, see
/// [`crate::ports::TargetCatalog::list_shared`]), so that a call does not
/// work out every target's prefix again.
#[derive(Default)]
pub struct ExposedCache {
    kept: std::sync::RwLock<Option<TargetsExposed>>,
}

/// A list of targets and how its targets are exposed.
type TargetsExposed = (Arc<Vec<Arc<Target>>>, Arc<Vec<Exposed>>);

impl ExposedCache {
    /// The exposed targets of `targets`: kept, or worked out and kept.
    fn of(&self, targets: Arc<Vec<Arc<Target>>>) -> Arc<Vec<Exposed>> {
        if let Some((list, exposed)) = &*self.kept.read().unwrap_or_else(|e| e.into_inner()) {
            if Arc::ptr_eq(list, &targets) {
                return exposed.clone();
            }
        }
        let single = targets.len() == 1;
        let exposed: Arc<Vec<Exposed>> = Arc::new(
            targets
                .iter()
                .map(|t| {
                    let prefix = match &t.tool_prefix {
                        Some(p) => p.clone(),
                        None if single => String::new(),
                        None => default_prefix(&t.name),
                    };
                    Exposed {
                        target: t.clone(),
                        prefix,
                    }
                })
                .collect(),
        );
        *self.kept.write().unwrap_or_else(|e| e.into_inner()) = Some((targets, exposed.clone()));
        exposed
    }
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
                sub: caller.sub().to_owned(),
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

    async fn exposed_targets(&self) -> Result<Arc<Vec<Exposed>>, Reply> {
        let targets = self.state.targets.list_shared().await.map_err(|e| {
            tracing::error!(error = %e, "listing targets failed");
            Reply::error(
                codes::RETRY_LATER,
                "the gateway could not read its targets; retry later",
            )
        })?;
        Ok(self.state.exposed.of(targets))
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

#[cfg(test)]
mod exposed_tests {
    use super::*;
    use crate::wire::MODERN;

    fn target(name: &str, prefix: Option<&str>) -> Arc<Target> {
        Arc::new(Target {
            name: name.into(),
            display_name: None,
            mcp_url: "http://127.0.0.1:9/mcp".into(),
            auth: TargetAuth::None,
            tool_prefix: prefix.map(str::to_owned),
            return_to: Default::default(),
            tool_catalog: Default::default(),
        })
    }

    fn prefixes(exposed: &[Exposed]) -> Vec<(&str, &str)> {
        exposed
            .iter()
            .map(|e| (e.target.name.as_str(), e.prefix.as_str()))
            .collect()
    }

    #[test]
    fn exposed_targets_are_worked_out_once_per_list() {
        let cache = ExposedCache::default();
        let one = Arc::new(vec![target("gh", None)]);
        let first = cache.of(one.clone());
        assert_eq!(prefixes(&first), [("gh", "")], "a lone target: no prefix");
        assert!(
            Arc::ptr_eq(&first, &cache.of(one.clone())),
            "kept for the same list"
        );
        // Another list (another read, or a change): worked out again.
        let two = Arc::new(vec![target("gh", None), target("jira", Some("j_"))]);
        let second = cache.of(two.clone());
        assert_eq!(prefixes(&second), [("gh", "gh___"), ("jira", "j_")]);
        assert!(Arc::ptr_eq(&second, &cache.of(two)));
        // Equal contents in a list read again are not the kept list.
        let again = cache.of(Arc::new(vec![target("gh", None)]));
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(prefixes(&again), [("gh", "")]);
    }

    /// A call's targets come through the instance's cache: the same
    /// exposed list while the cached target list stands, a new one after a
    /// write through the instance.
    #[tokio::test]
    async fn calls_use_the_exposed_targets_of_the_cached_list() {
        use crate::adapters::cache::CachedTargets;
        use crate::adapters::memory::{MemoryKeys, MemoryStore};
        use crate::ports::{SystemClock, TargetCatalog};
        let vars: std::collections::HashMap<&str, &str> = [
            ("TABLE_NAME", "gateway"),
            ("KEYSET_SECRET_ARN", "keys"),
            ("INBOUND_AUTH_MODE", "dev"),
            ("PUBLIC_BASE_URL", "http://localhost:3000"),
        ]
        .into();
        let config = crate::Config::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        let keys =
            MemoryKeys::new(r#"{"current":"k1","k1":"0123456789abcdefghijklmnopqrstuvwxyzABCD"}"#)
                .unwrap();
        let store = MemoryStore::new();
        let mut state =
            AppState::in_memory(config, store.clone(), Arc::new(keys), Arc::new(SystemClock));
        let cached = Arc::new(CachedTargets::new(
            Arc::new(store),
            std::time::Duration::from_secs(60),
        ));
        state.targets = cached.clone();
        cached.put(&target("gh", None)).await.unwrap();
        let caller = Caller::new(
            Identity {
                sub: "alice".into(),
                ..Default::default()
            },
            MODERN,
        );
        let gateway = Gateway::new(
            &state,
            url::Url::parse("http://localhost:3000").unwrap(),
            caller,
        );
        let first = gateway.exposed_targets().await.ok().unwrap();
        let again = gateway.exposed_targets().await.ok().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "worked out once for the cached list"
        );
        cached.put(&target("jira", None)).await.unwrap();
        let after = gateway.exposed_targets().await.ok().unwrap();
        assert_eq!(prefixes(&after), [("gh", "gh___"), ("jira", "jira___")]);
    }
}
