//! Who may call what: Cedar policies evaluated in process.
//!
//! The request a policy sees:
//! - principal `Gateway::User::"<sub>"`, with attributes `sub`, `groups`
//!   (a set), `scopes` (a set) and `client_id` (the agent; `""` when the
//!   token names none), and a member of `Gateway::Group::"<g>"` for each of
//!   its groups;
//! - action `Gateway::Action::"<MCP method>"`: `tools/call`,
//!   `resources/read`, `prompts/get`;
//! - resource `Gateway::Tool::"<target>___<name>"` and
//!   `Gateway::Prompt::"<target>___<name>"` (the upstream's own name, see
//!   [`item_id`], whatever prefix the tool is exposed under) or
//!   `Gateway::Resource::"<uri>"`, with attributes `name` and `target`,
//!   each in its `Gateway::Target::"<target>"`;
//! - context `{time: <unix seconds>, arguments: {...}}` (the call's
//!   arguments: objects as records, arrays as sets, integers as longs,
//!   other numbers as strings; nulls left out). The upstream is sent the
//!   arguments as parsed here, so that both read the same values.
//!
//! No policy set stored: everything is allowed. A stored set decides as
//! Cedar does: allowed when a `permit` matches and no `forbid` does.
//! Listings and tool search show only what the user may call: each item is
//! evaluated with the arguments unknown (Cedar's partial evaluation), and
//! hidden when no arguments could allow it. (Conditions are evaluated left
//! to right: write those on the principal before those on the arguments,
//! so that a listing can rule a tool out.) The gateway's own tools
//! (`gateway___...`) are not subject to policies.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};
use serde_json::Value;

/// The id a policy knows a tool or prompt by: its target's name and the
/// upstream's own name, `<target>___<name>`, whatever prefix (or none) the
/// gateway exposes it under, so that a policy keeps matching when targets
/// are added or prefixes change.
pub fn item_id(target: &str, upstream_name: &str) -> String {
    format!("{target}___{upstream_name}")
}

/// Deepest argument nesting passed to policies; deeper values are left out.
const MAX_ARGUMENT_DEPTH: usize = 16;

/// A parsed policy set, sliced by target: a request on an item of target
/// `t` is evaluated against the policies whose resource scope is not
/// `in Gateway::Target::"u"` for another `u` (those can never match it).
#[derive(Debug)]
pub struct Policies {
    set: PolicySet,
    /// Policies that may apply to any target.
    general: PolicySet,
    /// Per target named in a `resource in Gateway::Target::"..."` scope:
    /// the general policies and that target's.
    by_target: HashMap<String, PolicySet>,
    authorizer: Authorizer,
    /// The text it was parsed from.
    pub text: String,
}

/// The caller, as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The user's subject.
    pub sub: &'a str,
    /// Its groups.
    pub groups: &'a [String],
    /// The scopes of its token.
    pub scopes: &'a [String],
    /// The agent's client id, if the token names one.
    pub client_id: Option<&'a str>,
}

/// What is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// A tool, by exposed name.
    Tool {
        /// Its target.
        target: &'a str,
        /// Its exposed name.
        name: &'a str,
    },
    /// A prompt, by exposed name.
    Prompt {
        /// Its target.
        target: &'a str,
        /// Its exposed name.
        name: &'a str,
    },
    /// A resource, by URI.
    Resource {
        /// Its target.
        target: &'a str,
        /// Its URI.
        uri: &'a str,
    },
}

impl Resource<'_> {
    fn parts(&self) -> (&'static str, &str, &str) {
        match *self {
            Resource::Tool { target, name } => ("Tool", target, name),
            Resource::Prompt { target, name } => ("Prompt", target, name),
            Resource::Resource { target, uri } => ("Resource", target, uri),
        }
    }
}

/// A decision and the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The policies that determined it, by their `@id("...")` annotation
    /// (else their position, `policy0`, ...); none for a default deny.
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that failed on this request is skipped).
    pub errors: Vec<String>,
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = EntityTypeName::from_str(&format!("Gateway::{kind}"))
        .map_err(|e| format!("entity type {kind}: {e}"))?;
    let id = EntityId::from_str(id).map_err(|e| format!("entity id: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(kind, id))
}

fn strings(values: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(values.iter().cloned().map(RestrictedExpression::new_string))
}

/// The call's arguments as a Cedar value (see the module docs); `None`
/// for what is left out.
fn cedar_value(value: &Value, depth: usize) -> Option<RestrictedExpression> {
    if depth > MAX_ARGUMENT_DEPTH {
        return None;
    }
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_string(n.to_string()),
        }),
        Value::Array(items) => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|v| cedar_value(v, depth + 1)),
        )),
        // Built as a value, never parsed as Cedar's JSON: a member named
        // `__entity` or `__extn` is just a member.
        Value::Object(members) => RestrictedExpression::new_record(
            members
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), cedar_value(v, depth + 1)?))),
        )
        .ok(),
    }
}

impl Policies {
    /// Parses a policy set in Cedar's language; the error lists every
    /// problem with its place.
    pub fn parse(text: &str) -> Result<Self, String> {
        let set = PolicySet::from_str(text).map_err(|e| {
            let report = miette_free(&e);
            format!("the policies do not parse: {report}")
        })?;
        let mut general = PolicySet::new();
        let mut scoped: HashMap<String, Vec<cedar_policy::Policy>> = HashMap::new();
        for p in set.policies() {
            match p.resource_constraint() {
                cedar_policy::ResourceConstraint::In(uid)
                | cedar_policy::ResourceConstraint::IsIn(_, uid)
                    if uid.type_name().to_string() == "Gateway::Target" =>
                {
                    scoped
                        .entry(uid.id().unescaped().to_owned())
                        .or_default()
                        .push(p.clone())
                }
                _ => general.add(p.clone()).map_err(|e| e.to_string())?,
            }
        }
        let mut by_target = HashMap::new();
        for (target, policies) in scoped {
            let mut s = general.clone();
            for p in policies {
                s.add(p).map_err(|e| e.to_string())?;
            }
            by_target.insert(target, s);
        }
        Ok(Policies {
            set,
            general,
            by_target,
            authorizer: Authorizer::new(),
            text: text.to_owned(),
        })
    }

    /// The policies that may apply to an item of `target`.
    fn slice(&self, target: &str) -> &PolicySet {
        self.by_target.get(target).unwrap_or(&self.general)
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.set.policies().count()
    }

    /// True for an empty set (which denies everything).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides whether `principal` may do `action` on `resource`, with the
    /// call's `arguments`, at `now` (Unix seconds). A request the gateway
    /// cannot express (an id Cedar refuses) is denied.
    pub fn decide(
        &self,
        principal: &Principal<'_>,
        action: &str,
        resource: &Resource<'_>,
        arguments: Option<&Value>,
        now: i64,
    ) -> Verdict {
        match self.try_decide(principal, action, resource, arguments, now) {
            Ok(v) => v,
            Err(e) => Verdict {
                allowed: false,
                policies: vec![],
                errors: vec![e],
            },
        }
    }

    /// Whether `principal` may do `action` on `resource` with some
    /// arguments: what listings and search show. The arguments are left
    /// unknown (Cedar's partial evaluation): a tool whose permit depends on
    /// them is listed, and its calls are decided one by one.
    pub fn may_list(
        &self,
        principal: &Principal<'_>,
        action: &str,
        resource: &Resource<'_>,
        now: i64,
    ) -> bool {
        let request = (|| -> Result<(Request, Entities), String> {
            let (user, item, entities) = self.entities(principal, resource)?;
            let context = Context::from_pairs([
                ("time".to_owned(), RestrictedExpression::new_long(now)),
                (
                    "arguments".to_owned(),
                    RestrictedExpression::new_unknown("arguments"),
                ),
            ])
            .map_err(|e| e.to_string())?;
            let request = cedar_policy::RequestBuilder::default()
                .principal(user)
                .action(uid("Action", action)?)
                .resource(item)
                .context(context)
                .build();
            Ok((request, entities))
        })();
        match request {
            Ok((request, entities)) => {
                let target = resource.parts().1;
                self.authorizer
                    .is_authorized_partial(&request, self.slice(target), &entities)
                    .decision()
                    != Some(Decision::Deny)
            }
            Err(_) => false,
        }
    }

    /// The principal's, the target's and the item's entities, and the
    /// principal's and item's ids.
    fn entities(
        &self,
        principal: &Principal<'_>,
        resource: &Resource<'_>,
    ) -> Result<(EntityUid, EntityUid, Entities), String> {
        let user = uid("User", principal.sub)?;
        let groups: HashSet<EntityUid> = principal
            .groups
            .iter()
            .map(|g| uid("Group", g))
            .collect::<Result<_, _>>()?;
        let mut entities: Vec<Entity> = groups
            .iter()
            .map(|g| Entity::new_no_attrs(g.clone(), HashSet::new()))
            .collect();
        let attrs = HashMap::from([
            (
                "sub".to_owned(),
                RestrictedExpression::new_string(principal.sub.to_owned()),
            ),
            ("groups".to_owned(), strings(principal.groups)),
            ("scopes".to_owned(), strings(principal.scopes)),
            (
                "client_id".to_owned(),
                RestrictedExpression::new_string(principal.client_id.unwrap_or("").to_owned()),
            ),
        ]);
        entities.push(Entity::new(user.clone(), attrs, groups).map_err(|e| e.to_string())?);
        let (kind, target, name) = resource.parts();
        let target_uid = uid("Target", target)?;
        entities.push(Entity::new_no_attrs(target_uid.clone(), HashSet::new()));
        let item = uid(kind, name)?;
        let attrs = HashMap::from([
            (
                "name".to_owned(),
                RestrictedExpression::new_string(name.to_owned()),
            ),
            (
                "target".to_owned(),
                RestrictedExpression::new_string(target.to_owned()),
            ),
        ]);
        entities.push(
            Entity::new(item.clone(), attrs, HashSet::from([target_uid]))
                .map_err(|e| e.to_string())?,
        );
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        Ok((user, item, entities))
    }

    fn try_decide(
        &self,
        principal: &Principal<'_>,
        action: &str,
        resource: &Resource<'_>,
        arguments: Option<&Value>,
        now: i64,
    ) -> Result<Verdict, String> {
        let (user, item, entities) = self.entities(principal, resource)?;
        let arguments = arguments
            .filter(|a| a.is_object())
            .and_then(|a| cedar_value(a, 0))
            .map_or_else(|| RestrictedExpression::new_record([]), Ok)
            .map_err(|e| format!("arguments: {e}"))?;
        let context = Context::from_pairs([
            ("time".to_owned(), RestrictedExpression::new_long(now)),
            ("arguments".to_owned(), arguments),
        ])
        .map_err(|e| format!("context: {e}"))?;
        let request = Request::new(user, uid("Action", action)?, item, context, None)
            .map_err(|e| e.to_string())?;
        let response =
            self.authorizer
                .is_authorized(&request, self.slice(resource.parts().1), &entities);
        // Cedar skips a policy whose evaluation fails; for a `forbid` that
        // would let a call through on odd arguments (a string where a
        // number was compared), so a forbid that fails denies.
        let failed_forbid = response.diagnostics().errors().any(|e| {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
            self.set
                .policy(e.policy_id())
                .is_some_and(|p| p.effect() == cedar_policy::Effect::Forbid)
        });
        Ok(Verdict {
            allowed: response.decision() == Decision::Allow && !failed_forbid,
            policies: response
                .diagnostics()
                .reason()
                .map(|p| {
                    self.set
                        .annotation(p, "id")
                        .map(str::to_owned)
                        .unwrap_or_else(|| p.to_string())
                })
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        })
    }
}

/// The policy set of a warm instance: read from the store at most once
/// per `ttl`, parsed once per read. A set that cannot be read or parsed
/// (an outage, a failed integrity check) is an error, never "no policy":
/// the gateway fails closed.
pub struct PolicyCache {
    store: Arc<dyn crate::ports::PolicyStore>,
    ttl: Duration,
    /// A set must be stored (`POLICY_REQUIRED`): none is an error.
    required: bool,
    /// A plain lock: read by every call, never held across an await.
    cached: std::sync::RwLock<Option<(Instant, Option<Arc<Policies>>)>>,
}

impl PolicyCache {
    /// A cache of `store`'s set, kept for `ttl` (zero: read every time).
    pub fn new(store: Arc<dyn crate::ports::PolicyStore>, ttl: Duration, required: bool) -> Self {
        PolicyCache {
            store,
            ttl,
            required,
            cached: Default::default(),
        }
    }

    /// The current set (`None`: no set stored, everything allowed).
    pub async fn current(&self) -> Result<Option<Arc<Policies>>, String> {
        let cached = self
            .cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((at, set)) = cached {
            if at.elapsed() < self.ttl {
                return Ok(set);
            }
        }
        let text = self.store.get_policies().await.map_err(|e| e.to_string())?;
        let set = match text {
            Some(t) => Some(Arc::new(Policies::parse(&t)?)),
            None if self.required => {
                return Err("no policy set is stored, and POLICY_REQUIRED is set".into())
            }
            None => None,
        };
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// The stored set's text, read past the cache.
    pub async fn stored(&self) -> Result<Option<String>, String> {
        self.store.get_policies().await.map_err(|e| e.to_string())
    }

    /// Checks that `text` parses, then stores it (`None`: removes the set,
    /// and everything is allowed again). This instance uses it at once;
    /// others within their `ttl`.
    pub async fn store(&self, text: Option<&str>) -> Result<(), String> {
        if let Some(t) = text {
            Policies::parse(t)?;
        }
        self.store
            .put_policies(text)
            .await
            .map_err(|e| e.to_string())?;
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

/// An error's message with its causes, one line.
fn miette_free(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error::chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POLICIES: &str = r#"
        // Engineers may use GitHub.
        @id("engineers-github")
        permit(principal in Gateway::Group::"engineers", action == Gateway::Action::"tools/call", resource in Gateway::Target::"github");
        // Nobody deletes repositories through an agent.
        @id("no-deletes")
        forbid(principal, action, resource == Gateway::Tool::"github___delete_repo");
        // Anyone may read docs, with the docs:read scope.
        @id("docs")
        permit(principal, action in [Gateway::Action::"resources/read", Gateway::Action::"tools/call"], resource in Gateway::Target::"docs")
            when { principal.scopes.contains("docs:read") };
        // Payments under 100 only, and only from the approved agent.
        @id("small-payments")
        permit(principal, action == Gateway::Action::"tools/call", resource == Gateway::Tool::"pay___send")
            when { principal.client_id == "approved-agent" && context.arguments has amount && context.arguments.amount < 100 };
    "#;

    fn who<'a>(sub: &'a str, groups: &'a [String], scopes: &'a [String]) -> Principal<'a> {
        Principal {
            sub,
            groups,
            scopes,
            client_id: Some("approved-agent"),
        }
    }

    fn tool<'a>(target: &'a str, name: &'a str) -> Resource<'a> {
        Resource::Tool { target, name }
    }

    #[test]
    fn permits_forbids_and_the_default_deny() {
        let p = Policies::parse(POLICIES).unwrap();
        assert_eq!(p.len(), 4);
        let eng = ["engineers".to_owned()];
        let alice = who("alice", &eng, &[]);
        let bob = who("bob", &[], &[]);
        let v = p.decide(
            &alice,
            "tools/call",
            &tool("github", "github___list_issues"),
            None,
            0,
        );
        assert!(v.allowed);
        assert_eq!(v.policies, ["engineers-github"]);
        assert!(
            !p.decide(
                &bob,
                "tools/call",
                &tool("github", "github___list_issues"),
                None,
                0
            )
            .allowed
        );
        // A forbid wins over a permit.
        let v = p.decide(
            &alice,
            "tools/call",
            &tool("github", "github___delete_repo"),
            None,
            0,
        );
        assert!(!v.allowed);
        assert_eq!(v.policies, ["no-deletes"]);
        // Another action on a permitted target: denied by default.
        assert!(
            !p.decide(
                &alice,
                "prompts/get",
                &Resource::Prompt {
                    target: "github",
                    name: "github___p"
                },
                None,
                0
            )
            .allowed
        );
        // Scopes.
        let scoped = ["docs:read".to_owned()];
        let reader = who("carol", &[], &scoped);
        let read = Resource::Resource {
            target: "docs",
            uri: "file:///a.md",
        };
        assert!(p.decide(&reader, "resources/read", &read, None, 0).allowed);
        assert!(!p.decide(&bob, "resources/read", &read, None, 0).allowed);
    }

    #[test]
    fn arguments_and_the_agent_are_in_the_request() {
        let p = Policies::parse(POLICIES).unwrap();
        let pay = tool("pay", "pay___send");
        let bob = who("bob", &[], &[]);
        assert!(
            p.decide(&bob, "tools/call", &pay, Some(&json!({"amount": 50})), 0)
                .allowed
        );
        assert!(
            !p.decide(&bob, "tools/call", &pay, Some(&json!({"amount": 500})), 0)
                .allowed
        );
        assert!(!p.decide(&bob, "tools/call", &pay, None, 0).allowed);
        // A float is a string to Cedar: the comparison fails, the policy
        // does not apply, the call is denied (and the error is reported).
        let v = p.decide(&bob, "tools/call", &pay, Some(&json!({"amount": 5.5})), 0);
        assert!(!v.allowed);
        let other_agent = Principal {
            client_id: Some("other"),
            ..bob
        };
        assert!(
            !p.decide(
                &other_agent,
                "tools/call",
                &pay,
                Some(&json!({"amount": 50})),
                0
            )
            .allowed
        );
    }

    /// The README's example set parses and decides as the README says.
    #[test]
    fn the_readme_example_decides_as_documented() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```cedar").expect("a cedar block") + "```cedar".len();
        let end = start + readme[start..].find("```").unwrap();
        let p = Policies::parse(&readme[start..end]).unwrap();
        let eng = ["engineers".to_owned()];
        let alice = who("alice", &eng, &[]);
        let bob = who("bob", &[], &[]);
        let t2026 = 1_780_000_000;
        let pay = tool("pay", "pay___send");
        let amount = |a: i64| json!({ "amount": a });
        assert!(
            p.decide(
                &alice,
                "tools/call",
                &tool("github", "github___list_issues"),
                None,
                t2026
            )
            .allowed
        );
        assert!(
            !p.decide(
                &alice,
                "tools/call",
                &tool("github", "github___delete_repo"),
                None,
                t2026
            )
            .allowed
        );
        assert!(
            p.decide(&bob, "tools/call", &pay, Some(&amount(50)), t2026)
                .allowed
        );
        assert!(
            !p.decide(&bob, "tools/call", &pay, Some(&amount(150)), t2026)
                .allowed
        );
        assert!(
            !p.decide(&bob, "tools/call", &pay, Some(&amount(50)), 1_800_000_000)
                .allowed
        );
    }

    #[test]
    fn policies_scoped_to_a_target_never_decide_for_another() {
        let p = Policies::parse(
            r#"
            permit(principal, action, resource);
            forbid(principal, action, resource in Gateway::Target::"a");
            forbid(principal, action, resource is Gateway::Prompt in Gateway::Target::"b");
            "#,
        )
        .unwrap();
        let bob = who("bob", &[], &[]);
        assert!(
            !p.decide(&bob, "tools/call", &tool("a", "a___x"), None, 0)
                .allowed
        );
        assert!(
            p.decide(&bob, "tools/call", &tool("b", "b___x"), None, 0)
                .allowed
        );
        assert!(
            !p.decide(
                &bob,
                "prompts/get",
                &Resource::Prompt {
                    target: "b",
                    name: "b___p"
                },
                None,
                0
            )
            .allowed
        );
        assert!(
            p.decide(&bob, "tools/call", &tool("c", "c___x"), None, 0)
                .allowed
        );
    }

    #[test]
    fn listings_show_what_some_arguments_would_allow() {
        let p = Policies::parse(POLICIES).unwrap();
        let eng = ["engineers".to_owned()];
        let (alice, bob) = (who("alice", &eng, &[]), who("bob", &[], &[]));
        let list =
            |who: &Principal, target, name| p.may_list(who, "tools/call", &tool(target, name), 0);
        assert!(list(&alice, "github", "github___list_issues"));
        assert!(!list(&bob, "github", "github___list_issues"));
        // Forbidden whatever the arguments.
        assert!(!list(&alice, "github", "github___delete_repo"));
        // Allowed for some amounts, from the approved agent only.
        assert!(list(&bob, "pay", "pay___send"));
        let other = Principal {
            client_id: Some("other"),
            ..bob
        };
        assert!(!list(&other, "pay", "pay___send"));
    }

    #[test]
    fn a_forbid_that_fails_on_odd_arguments_still_denies() {
        let p = Policies::parse(
            r#"
            permit(principal, action, resource);
            forbid(principal, action, resource == Gateway::Tool::"pay___send")
                when { context.arguments.amount > 1000 };
            "#,
        )
        .unwrap();
        let bob = who("bob", &[], &[]);
        let pay = tool("pay", "pay___send");
        assert!(
            p.decide(&bob, "tools/call", &pay, Some(&json!({"amount": 10})), 0)
                .allowed
        );
        assert!(
            !p.decide(&bob, "tools/call", &pay, Some(&json!({"amount": 5000})), 0)
                .allowed
        );
        // A float, a huge integer or a string makes the comparison fail:
        // denied, not skipped.
        for odd in [json!(5000.0), json!(1e30), json!("5000"), json!(u64::MAX)] {
            let v = p.decide(&bob, "tools/call", &pay, Some(&json!({ "amount": odd })), 0);
            assert!(!v.allowed, "{odd}");
        }
        // Missing: the forbid cannot apply either, and denies.
        assert!(
            !p.decide(&bob, "tools/call", &pay, Some(&json!({})), 0)
                .allowed
        );
    }

    #[test]
    fn arguments_cannot_smuggle_entities_or_odd_values() {
        let p = Policies::parse(
            r#"permit(principal, action, resource) when { context.arguments has who && context.arguments.who == Gateway::User::"admin" };"#,
        )
        .unwrap();
        let bob = who("bob", &[], &[]);
        let smuggled = json!({"who": {"__entity": {"type": "Gateway::User", "id": "admin"}}});
        assert!(
            !p.decide(&bob, "tools/call", &tool("t", "t___x"), Some(&smuggled), 0)
                .allowed
        );
        // Nulls and deep nesting are left out, odd keys kept; no errors.
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({"d": deep});
        }
        let odd = json!({"n": null, "deep": deep, "__extn": 1, "list": [1, "a", null]});
        let open = Policies::parse("permit(principal, action, resource);").unwrap();
        assert!(
            open.decide(&bob, "tools/call", &tool("t", "t___x"), Some(&odd), 0)
                .allowed
        );
    }

    #[test]
    fn ids_cedar_cannot_take_and_bad_policies_are_refused_clearly() {
        let open = Policies::parse("permit(principal, action, resource);").unwrap();
        let quote = who("a\"b\\c", &[], &[]);
        // Any string is an entity id; this one is allowed like any other.
        assert!(
            open.decide(&quote, "tools/call", &tool("t", "t___x"), None, 0)
                .allowed
        );
        let err =
            Policies::parse("permit(principal, action, resource) when { nonsense };").unwrap_err();
        assert!(err.starts_with("the policies do not parse"), "{err}");
        assert!(Policies::parse("").unwrap().is_empty());
    }
}
