//! The gateway's own tools (`gateway___connections`, `gateway___disconnect`)
//! and the per-target connect tool.

use serde_json::{json, Value};

use crate::connections;
use crate::domain::Target;
use crate::wire::codes;

use super::*;

impl Gateway<'_> {
    // ----- the gateway's own tools -----

    pub(super) async fn gateway_tool(&self, name: &str, args: Option<&Value>) -> Reply {
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

/// The name of a target's connect tool (always `<target>___connect`).
pub(super) fn connect_tool_name(target: &Target) -> String {
    format!("{}{}connect", target.name, super::names::SEPARATOR)
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
            "name": format!("{GATEWAY_PREFIX}disconnect"),
            "description": "Disconnects a service: revokes the gateway's access at the service and forgets it. The next use asks for your permission again.",
            "inputSchema": {"type": "object", "properties": {"target": {"type": "string", "description": "The service's name, as listed by gateway___connections"}}, "required": ["target"]},
            "annotations": {"destructiveHint": true},
        }),
    ]
}
