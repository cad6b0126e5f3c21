//! The gateway's own tools (`gateway___connections`, `gateway___disconnect`)
//! and the per-target connect tool.

use serde_json::{json, Value};

use std::sync::Arc;

use super::names::expose;
use crate::connections;
use crate::domain::Target;
use crate::search::{Entry, ToolIndex};
use crate::wire::codes;

use super::*;

impl Gateway<'_> {
    // ----- the gateway's own tools -----

    pub(super) async fn gateway_tool(&self, name: &str, args: Option<&Value>) -> Reply {
        let text = |t: String, is_error: bool| {
            Reply::Result(json!({"content": [{"type": "text", "text": t}], "isError": is_error}))
        };
        match name.strip_prefix(GATEWAY_PREFIX) {
            Some("connections") => match connections::list(self.state, self.caller.sub()).await {
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
                // A metric dimension: only a registered target's name.
                if let Ok(Some(t)) = self.state.targets.get(target).await {
                    crate::observe::note(|r| r.target = Some(t.name));
                }
                match connections::disconnect(self.state, self.caller.sub(), target).await {
                    Ok(connections::Disconnected::NotConnected) => text(format!("You are not connected to {target}."), false),
                    Ok(_) => text(format!("Disconnected from {target}. The gateway will ask for your permission again the next time it is needed."), false),
                    Err(e) => {
                        tracing::error!(error = %e, "disconnect failed");
                        text(format!("Disconnecting from {target} failed; retry in a moment."), true)
                    }
                }
            }
            Some("search_tools") => self.search_tools(args).await,
            _ => Reply::error(codes::INVALID_PARAMS, format!("Unknown tool: {name}")),
        }
    }

    /// `gateway___search_tools`: the best tools for a query across every
    /// target's catalog (connected or not), with the exact names to call.
    async fn search_tools(&self, args: Option<&Value>) -> Reply {
        let Some(query) = args.and_then(|a| a.get("query")).and_then(Value::as_str) else {
            return Reply::error(
                codes::INVALID_PARAMS,
                "arguments.query (a string) is required",
            );
        };
        let limit = match args.and_then(|a| a.get("limit")) {
            None | Some(Value::Null) => DEFAULT_SEARCH_LIMIT,
            Some(v) => match v.as_u64() {
                Some(n @ 1..=MAX_SEARCH_LIMIT) => n as usize,
                _ => {
                    return Reply::error(
                        codes::INVALID_PARAMS,
                        format!("arguments.limit must be an integer from 1 to {MAX_SEARCH_LIMIT}"),
                    )
                }
            },
        };
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let policies = match self.policies().await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let index = self.search_index(&exposed);
        // Only tools the caller may call are found.
        let hits = index.search(query, limit, |hit| match &policies {
            None => true,
            Some(set) => self.may(
                set,
                "tools/call",
                &crate::policy::Resource::Tool {
                    target: &hit.target.name,
                    name: &crate::policy::item_id(&hit.target.name, hit.upstream_name),
                },
            ),
        });
        let tools: Vec<Value> = hits
            .iter()
            .map(|h| {
                let t = &h.tool();
                let mut hit = json!({
                    "name": h.name,
                    "target": h.target.name,
                    "score": (h.score * 1000.0).round() / 1000.0,
                });
                for key in ["title", "description", "inputSchema", "annotations"] {
                    if let Some(v) = t.get(key) {
                        hit[key] = v.clone();
                    }
                }
                hit
            })
            .collect();
        let structured = json!({"tools": tools});
        Reply::Result(json!({
            "content": [{"type": "text", "text": structured.to_string()}],
            "structuredContent": structured,
            "isError": false,
        }))
    }

    /// The search index over the exposed targets' catalogs, rebuilt only
    /// when the list of targets (or a prefix) changed.
    pub(super) fn search_index(&self, exposed: &[Exposed]) -> Arc<ToolIndex> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for e in exposed {
            // The cached targets are shared: a reload is a new allocation.
            (Arc::as_ptr(&e.target) as usize).hash(&mut h);
            e.target.name.hash(&mut h);
            e.prefix.hash(&mut h);
            e.target.tool_catalog.len().hash(&mut h);
        }
        self.state.search.get_or_build(h.finish(), || {
            ToolIndex::new(exposed.iter().flat_map(|e| {
                e.target
                    .tool_catalog
                    .iter()
                    .enumerate()
                    .filter_map(|(position, tool)| {
                        let name = tool.name()?;
                        Some(Entry {
                            target: e.target.clone(),
                            position,
                            name: expose(&e.prefix, &name),
                            tool,
                        })
                    })
            }))
        })
    }
}

/// Hits `gateway___search_tools` returns unless asked for another number.
pub const DEFAULT_SEARCH_LIMIT: usize = 10;
/// The most hits one search returns.
pub const MAX_SEARCH_LIMIT: u64 = 50;

/// The name of a target's connect tool (always `<target>___connect`).
pub(super) fn connect_tool_name(target: &Target) -> String {
    format!("{}{}connect", target.name, super::names::SEPARATOR)
}

/// `name == connect_tool_name(target)`, without building it (asked on
/// every call, for every target).
pub(super) fn is_connect_tool_name(target: &Target, name: &str) -> bool {
    name.strip_prefix(target.name.as_str())
        .and_then(|rest| rest.strip_prefix(super::names::SEPARATOR))
        == Some("connect")
}

/// A tool that connects a target whose tools are not known yet.
pub(super) fn connect_tool(target: &Target) -> Value {
    json!({
        "name": connect_tool_name(target),
        "description": format!("Connect your {} account through the gateway, so that its tools become available.", target.title()),
        "inputSchema": {"type": "object", "properties": {}},
    })
}

/// The gateway's own tools.
pub(super) fn gateway_tools() -> Vec<Value> {
    vec![
        json!({
            "name": format!("{GATEWAY_PREFIX}connections"),
            "description": "Lists the services you have connected through the gateway: their status, expiry and scopes.",
            "inputSchema": {"type": "object", "properties": {}},
            "annotations": {"readOnlyHint": true},
        }),
        json!({
            "name": format!("{GATEWAY_PREFIX}search_tools"),
            "description": "Searches the tools of every service the gateway offers, connected or not, and returns the best matches with the exact name to call each by, its description and its input schema.",
            "inputSchema": {"type": "object", "properties": {
                "query": {"type": "string", "description": "What the tool should do, in words (e.g. \"create a calendar event\")"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_LIMIT, "description": "How many tools to return (default 10)"},
            }, "required": ["query"]},
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
    fn the_connect_tool_is_recognized_without_building_its_name() {
        let target = crate::domain::target::oauth_target_for_tests("demo");
        assert!(is_connect_tool_name(&target, &connect_tool_name(&target)));
        for other in [
            "demo___connectx",
            "demo__connect",
            "demoxconnect",
            "demo___",
            "connect",
            "x___connect",
            "",
        ] {
            assert!(!is_connect_tool_name(&target, other), "{other}");
        }
    }
}
