//! The gateway served on a port, and MCP clients of it (JSON-RPC over HTTP).

use std::sync::atomic::Ordering;

use gateway_shared::AppState;

use crate::*;

/// The gateway's Routers served on a 127.0.0.1 listener, stopped on drop.
pub struct GatewayServer {
    task: tokio::task::JoinHandle<()>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl GatewayServer {
    /// Binds a listener first, so that the base URL can go into the configuration.
    pub async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        (listener, base)
    }

    /// Serves both Routers (proxy and consent) on `listener`.
    pub fn serve(
        listener: tokio::net::TcpListener,
        base: String,
        state: AppState,
    ) -> GatewayServer {
        let app = gateway_shared::edge::gateway_router(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GatewayServer { task, base }
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Calls one tool on an MCP server over Streamable HTTP with a bearer
/// token: `initialize`, `notifications/initialized`, `tools/call`. Returns the
/// HTTP status of the first failing step, or the `tools/call` JSON-RPC message.
pub async fn mcp_call_tool(
    url: &str,
    token: &str,
    tool: &str,
    args: serde_json::Value,
) -> Result<serde_json::Value, u16> {
    let http = http();
    let post = |body: serde_json::Value, session: Option<String>| {
        let mut req = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "gateway-tests", "version": "1"}}});
    let res = post(init, None).await.map_err(|_| 0u16)?;
    if !res.status().is_success() {
        return Err(res.status().as_u16());
    }
    let session = res
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = read_jsonrpc(res, 1).await;
    let res = post(
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        session.clone(),
    )
    .await
    .map_err(|_| 0u16)?;
    if !res.status().is_success() {
        return Err(res.status().as_u16());
    }
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    let res = post(call, session).await.map_err(|_| 0u16)?;
    if !res.status().is_success() {
        return Err(res.status().as_u16());
    }
    read_jsonrpc(res, 2).await.ok_or(0)
}

/// The JSON-RPC message with `id` from a JSON or SSE response.
pub async fn read_jsonrpc(res: reqwest::Response, id: i64) -> Option<serde_json::Value> {
    let sse = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let text = res.text().await.ok()?;
    if !sse {
        return serde_json::from_str(&text).ok();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
        .find(|m| m.get("id").and_then(|v| v.as_i64()) == Some(id))
}

/// A raw Streamable HTTP MCP client for tests that look at the wire.
pub struct RawClient {
    http: reqwest::Client,
    /// The MCP endpoint.
    pub url: String,
    /// Extra headers on every request (auth, dev user).
    pub headers: Vec<(String, String)>,
    /// Version header to send (after initialize).
    pub version: Option<String>,
    /// The session id the server handed out.
    pub session: Option<String>,
    next_id: std::sync::atomic::AtomicI64,
}

/// One HTTP exchange.
#[derive(Debug)]
pub struct Exchange {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (Null when empty or not JSON).
    pub body: serde_json::Value,
    /// The body as it came.
    pub text: String,
}

impl RawClient {
    /// A client of `url` sending `headers`.
    pub fn new(url: &str, headers: &[(&str, &str)]) -> RawClient {
        RawClient {
            http: http(),
            url: url.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            version: None,
            session: None,
            next_id: std::sync::atomic::AtomicI64::new(1),
        }
    }

    /// POSTs `body` with `extra` headers.
    pub async fn post_raw(&self, body: String, extra: &[(&str, String)]) -> Exchange {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(v) = &self.version {
            req = req.header("mcp-protocol-version", v);
        }
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Exchange {
            status,
            headers,
            body,
            text,
        }
    }

    /// A JSON-RPC request; returns the exchange.
    pub async fn request(&self, method: &str, params: serde_json::Value) -> Exchange {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.post_raw(body.to_string(), &[]).await
    }

    /// `initialize` with `version` and `capabilities`; keeps the session and version.
    pub async fn initialize(&mut self, version: &str, capabilities: serde_json::Value) -> Exchange {
        let ex = self
            .request(
                "initialize",
                serde_json::json!({"protocolVersion": version, "capabilities": capabilities, "clientInfo": {"name": "raw", "version": "1"}}),
            )
            .await;
        self.session = ex
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.version = ex.body["result"]["protocolVersion"]
            .as_str()
            .map(str::to_owned);
        let note = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let n = self.post_raw(note.to_string(), &[]).await;
        assert_eq!(n.status, 202, "notifications are accepted with 202");
        ex
    }

    /// A 2026-07-28 request: version header, `Mcp-Method`, `Mcp-Name`, `_meta`.
    pub async fn modern(
        &self,
        method: &str,
        mut params: serde_json::Value,
        capabilities: serde_json::Value,
    ) -> Exchange {
        params["_meta"] = serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        });
        let name = match method {
            "tools/call" | "prompts/get" => params["name"].as_str().map(str::to_owned),
            "resources/read" => params["uri"].as_str().map(str::to_owned),
            _ => None,
        };
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut extra = vec![
            ("mcp-protocol-version", "2026-07-28".to_string()),
            ("mcp-method", method.to_string()),
        ];
        if let Some(n) = name {
            extra.push(("mcp-name", gateway_shared::wire::header_value(&n)));
        }
        self.post_raw(body.to_string(), &extra).await
    }
}

/// The text of the first content item of a tool result.
pub fn tool_text(result: &serde_json::Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What the demo MCP server's `whoami` tool answers for `token` at `url`
/// (panics when the server refuses the token).
pub async fn whoami(url: &str, token: &str) -> String {
    let answer = mcp_call_tool(url, token, "whoami", serde_json::json!({}))
        .await
        .unwrap_or_else(|status| panic!("the MCP server refused the token: HTTP {status}"));
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
