//! Router tests of what the catalog shows and who may call it: tool search,
//! the search-only listing, Cedar policies on calls, listings, search and
//! completions, and listings paged by the gateway.

use serde_json::{json, Value};

use super::*;

/// A target whose upstream is unreachable, with a remembered catalog.
async fn catalog_target(edge: &Edge, name: &str, tools: &[(&str, &str, &[&str])]) {
    let catalog = tools
        .iter()
        .map(|(tool, description, params)| {
            let props: serde_json::Map<String, Value> = params
                .iter()
                .map(|p| (p.to_string(), json!({"type": "string"})))
                .collect();
            json!({"name": tool, "description": description, "inputSchema": {"type": "object", "properties": props}})
        })
        .map(crate::domain::CatalogTool::from)
        .collect();
    crate::ports::TargetCatalog::put(
        &edge.store,
        &Target {
            name: name.into(),
            display_name: None,
            mcp_url: "http://127.0.0.1:9/mcp".into(),
            auth: TargetAuth::None,
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: catalog,
        },
    )
    .await
    .unwrap();
}

async fn call_tool(edge: &Edge, session: &str, name: &str, arguments: Value) -> Answer {
    edge.request(
        "tools/call",
        json!({"name": name, "arguments": arguments}),
        &[
            ("x-gateway-dev-user", "alice"),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-session-id", session),
        ],
    )
    .await
}

/// `gateway___search_tools` ranks every target's remembered tools (the
/// upstreams are not even reachable) and names each hit exactly as it is
/// called; bad arguments get `invalid params`; with `TOOLS_LISTING=search`
/// the listing holds only the gateway's own tools, the search among them.
#[tokio::test]
async fn tool_search_finds_tools_across_targets_by_their_callable_names() {
    for listing in ["all", "search"] {
        let edge = Edge::new(&[("TOOLS_LISTING", listing)]);
        catalog_target(
            &edge,
            "github",
            &[
                (
                    "list_issues",
                    "List the issues of a repository.",
                    &["repo", "state"],
                ),
                (
                    "create_pull_request",
                    "Open a pull request.",
                    &["repo", "head"],
                ),
            ],
        )
        .await;
        catalog_target(
            &edge,
            "calendar",
            &[(
                "createEvent",
                "Create an event in the user's calendar.",
                &["start", "title"],
            )],
        )
        .await;
        let session = initialize(&edge, "alice").await;
        let found = call_tool(
            &edge,
            &session,
            "gateway___search_tools",
            json!({"query": "create a calendar event", "limit": 2}),
        )
        .await;
        let tools = found.body["result"]["structuredContent"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{:?}", found.body))
            .clone();
        assert_eq!(tools.len(), 2, "{tools:?}");
        assert_eq!(tools[0]["name"], "calendar___createEvent");
        assert_eq!(tools[0]["target"], "calendar");
        assert_eq!(
            tools[0]["inputSchema"]["properties"]["start"]["type"],
            "string"
        );
        assert_eq!(found.body["result"]["isError"], false);
        let text: Value =
            serde_json::from_str(found.body["result"]["content"][0]["text"].as_str().unwrap())
                .unwrap();
        assert_eq!(text["tools"][0]["name"], "calendar___createEvent");

        for bad in [
            json!({}),
            json!({"query": 7}),
            json!({"query": "x", "limit": 0}),
            json!({"query": "x", "limit": 51}),
            json!({"query": "x", "limit": "5"}),
        ] {
            let r = call_tool(&edge, &session, "gateway___search_tools", bad.clone()).await;
            assert_eq!(r.body["error"]["code"], -32602, "{bad} -> {:?}", r.body);
        }
        let none = call_tool(
            &edge,
            &session,
            "gateway___search_tools",
            json!({"query": "zzzz"}),
        )
        .await;
        assert_eq!(none.body["result"]["structuredContent"]["tools"], json!([]));

        let listed = edge
            .request(
                "tools/list",
                json!({}),
                &[
                    ("x-gateway-dev-user", "alice"),
                    ("mcp-protocol-version", "2025-06-18"),
                    ("mcp-session-id", &session),
                ],
            )
            .await;
        let names: Vec<&str> = listed.body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(names.contains(&"gateway___search_tools"), "{names:?}");
        assert_eq!(
            names.contains(&"github___list_issues"),
            listing == "all",
            "{listing}: {names:?}"
        );
    }
    assert!(Config::from_lookup(|k| match k {
        "TOOLS_LISTING" => Some("some".into()),
        "TABLE_NAME" | "KEYSET_SECRET_ARN" => Some("x".into()),
        "INBOUND_AUTH_MODE" => Some("dev".into()),
        _ => None,
    })
    .is_err());
}

/// Cedar policies at the edge: a call the policies refuse never leaves the
/// gateway (a tool error naming the tool, no policy); listings and tool
/// search show each user only what they may call; arguments and the agent
/// are in the request; with no policy set everything is allowed.
#[tokio::test]
async fn policies_decide_calls_listings_and_search_per_user() {
    let edge = Edge::new(&[("TARGETS_CACHE_SECONDS", "0")]);
    catalog_target(
        &edge,
        "github",
        &[
            ("list_issues", "List the issues of a repository.", &["repo"]),
            ("delete_repo", "Delete a repository.", &["repo"]),
        ],
    )
    .await;
    catalog_target(&edge, "pay", &[("send", "Send a payment.", &["amount"])]).await;
    let policies = r#"
        @id("engineers-github")
        permit(principal in Gateway::Group::"engineers", action, resource in Gateway::Target::"github");
        @id("no-deletes")
        forbid(principal, action, resource == Gateway::Tool::"github___delete_repo");
        @id("small-payments")
        permit(principal, action == Gateway::Action::"tools/call", resource == Gateway::Tool::"pay___send")
            when { principal.client_id == "approved-agent" && context.arguments.amount < 100 };
    "#;
    let user = |sub: &'static str, groups: &'static str| {
        let edge = &edge;
        async move {
            let headers = [
                ("x-gateway-dev-user", sub),
                ("x-gateway-dev-groups", groups),
                ("x-gateway-dev-client", "approved-agent"),
            ];
            let r = edge
                .request(
                    "initialize",
                    json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
                    &headers,
                )
                .await;
            let session = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
            move |method: &'static str, params: Value| {
                let session = session.clone();
                async move {
                    edge.request(
                        method,
                        params,
                        &[
                            ("x-gateway-dev-user", sub),
                            ("x-gateway-dev-groups", groups),
                            ("x-gateway-dev-client", "approved-agent"),
                            ("mcp-protocol-version", "2025-06-18"),
                            ("mcp-session-id", &session),
                        ],
                    )
                    .await
                    .body
                }
            }
        }
    };
    let names = |listed: &Value| -> Vec<String> {
        listed["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .filter(|n| !n.starts_with("gateway___"))
            .collect()
    };
    let refused = |answer: &Value| {
        answer["result"]["isError"] == true
            && answer["result"]["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("policy does not allow") && !t.contains("no-deletes"))
    };

    // No policy set: everything listed and callable (the unreachable
    // upstream fails, not the policy).
    let alice = user("alice", "engineers").await;
    let bob = user("bob", "").await;
    assert_eq!(names(&bob("tools/list", json!({})).await).len(), 3);
    let call = bob(
        "tools/call",
        json!({"name": "github___list_issues", "arguments": {}}),
    )
    .await;
    assert!(!refused(&call), "{call}");

    crate::ports::PolicyStore::put_policies(&edge.store, Some(policies))
        .await
        .unwrap();
    // Listings: alice sees GitHub without the forbidden tool (and the
    // payment tool, allowed for some arguments); bob, the payment tool only.
    let mut seen = names(&alice("tools/list", json!({})).await);
    seen.sort();
    assert_eq!(seen, ["github___list_issues", "pay___send"]);
    assert_eq!(names(&bob("tools/list", json!({})).await), ["pay___send"]);
    // Calls.
    let call = bob(
        "tools/call",
        json!({"name": "github___list_issues", "arguments": {}}),
    )
    .await;
    assert!(refused(&call), "{call}");
    let call = alice(
        "tools/call",
        json!({"name": "github___delete_repo", "arguments": {"repo": "x"}}),
    )
    .await;
    assert!(refused(&call), "{call}");
    let call = alice(
        "tools/call",
        json!({"name": "github___list_issues", "arguments": {}}),
    )
    .await;
    assert!(
        !refused(&call),
        "allowed, then the upstream is unreachable: {call}"
    );
    let call = bob(
        "tools/call",
        json!({"name": "pay___send", "arguments": {"amount": 500}}),
    )
    .await;
    assert!(refused(&call), "{call}");
    let call = bob(
        "tools/call",
        json!({"name": "pay___send", "arguments": {"amount": 50}}),
    )
    .await;
    assert!(!refused(&call), "{call}");
    // The gateway's own tools are not subject to policies; search shows
    // each user only what they may call.
    let search = |who: &'static str| {
        let (alice, bob) = (&alice, &bob);
        async move {
            let args = json!({"name": "gateway___search_tools", "arguments": {"query": "repository issues delete payment"}});
            let found = if who == "alice" {
                alice("tools/call", args).await
            } else {
                bob("tools/call", args).await
            };
            found["result"]["structuredContent"]["tools"]
                .as_array()
                .unwrap_or_else(|| panic!("{found}"))
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    let mut found = search("alice").await;
    found.sort();
    assert_eq!(found, ["github___list_issues", "pay___send"]);
    assert_eq!(search("bob").await, ["pay___send"]);
}

/// A listing longer than a page (large cached catalogs) comes in pages of
/// `LIST_PAGE_SIZE` with the gateway's own cursor: every tool once, in
/// order, the gateway's tools at the end; a forged offset is refused.
#[tokio::test]
async fn long_listings_come_in_pages() {
    let edge = Edge::new(&[]);
    let per_target = 700;
    for name in ["a", "b", "c"] {
        let tools: Vec<(String, String)> = (0..per_target)
            .map(|i| (format!("tool_{i}"), format!("Tool {i} of {name}.")))
            .collect();
        let refs: Vec<(&str, &str, &[&str])> = tools
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_str(), &[][..]))
            .collect();
        catalog_target(&edge, name, &refs).await;
    }
    let session = initialize(&edge, "alice").await;
    let list = |cursor: Option<String>| {
        let (edge, session) = (&edge, &session);
        async move {
            let params = match cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            edge.request(
                "tools/list",
                params,
                &[
                    ("x-gateway-dev-user", "alice"),
                    ("mcp-protocol-version", "2025-06-18"),
                    ("mcp-session-id", session),
                ],
            )
            .await
            .body
        }
    };
    let mut names: Vec<String> = vec![];
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = list(cursor.take()).await;
        let tools = page["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"));
        assert!(tools.len() <= crate::gateway::LIST_PAGE_SIZE);
        names.extend(
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned)),
        );
        pages += 1;
        match page["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let own = names.iter().filter(|n| n.starts_with("gateway___")).count();
    assert_eq!(names.len(), 3 * per_target + own);
    let unique: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "no tool twice");
    assert!(names.last().unwrap().starts_with("gateway___"));
    assert!(names.contains(&"b___tool_699".to_owned()));
    // Cursors are checked.
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        br#"{"@offset":"many"}"#,
    );
    assert_eq!(list(Some(forged)).await["error"]["code"], -32602);
}

/// Policies name tools by target and upstream name, however the gateway
/// exposes them: a lone target's tools are listed unprefixed, and a forbid
/// on `github___delete_repo` still applies to its `delete_repo`, in the
/// listing and on the call; completions of a refused prompt are refused too.
#[tokio::test]
async fn policies_name_tools_the_same_whatever_their_exposed_names() {
    let edge = Edge::new(&[("TARGETS_CACHE_SECONDS", "0")]);
    catalog_target(
        &edge,
        "github",
        &[
            ("list_issues", "List issues.", &["repo"]),
            ("delete_repo", "Delete a repository.", &["repo"]),
        ],
    )
    .await;
    crate::ports::PolicyStore::put_policies(
        &edge.store,
        Some(
            r#"permit(principal, action, resource);
               forbid(principal, action, resource == Gateway::Tool::"github___delete_repo");
               forbid(principal, action, resource == Gateway::Prompt::"github___secret");"#,
        ),
    )
    .await
    .unwrap();
    let session = initialize(&edge, "alice").await;
    let headers = [
        ("x-gateway-dev-user", "alice"),
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-session-id", session.as_str()),
    ];
    let listed = edge.request("tools/list", json!({}), &headers).await.body;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .filter(|n| !n.starts_with("gateway___"))
        .collect();
    assert_eq!(names, ["list_issues"], "exposed without a prefix: {listed}");
    let call = edge
        .request(
            "tools/call",
            json!({"name": "delete_repo", "arguments": {"repo": "x"}}),
            &headers,
        )
        .await
        .body;
    assert_eq!(call["result"]["isError"], true, "{call}");
    assert!(call.to_string().contains("policy does not allow"), "{call}");
    let completion = edge
        .request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "secret"}, "argument": {"name": "a", "value": ""}}),
            &headers,
        )
        .await
        .body;
    assert_eq!(completion["error"]["code"], -32602, "{completion}");
}
