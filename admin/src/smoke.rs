//! `gateway-admin smoke --url`: checks a deployed gateway from outside, as
//! an MCP client would meet it: its Protected Resource Metadata, the 401
//! challenge that points to it, and (with a token) a `tools/list`.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};

/// One check's result line.
fn report(ok: bool, what: &str, detail: &str) -> bool {
    println!(
        "{} {what}{}",
        if ok { "ok  " } else { "FAIL" },
        if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        }
    );
    ok
}

/// Runs the checks against the MCP endpoint `url`; `token` (a bearer
/// token the gateway accepts) enables the `tools/list` check. Fails when a
/// check fails.
pub(crate) async fn smoke(
    url: &str,
    token_stdin: bool,
    token: Option<String>,
) -> Result<(), String> {
    let mcp = url::Url::parse(url).map_err(|e| format!("--url: {e}"))?;
    if !matches!(mcp.scheme(), "https" | "http") {
        return Err("--url must be an http(s) URL".into());
    }
    let token = if token_stdin {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .map_err(|e| format!("reading the token from stdin: {e}"))?;
        // Asked for a token and given none: the check would silently skip.
        let t = t.trim().to_owned();
        if t.is_empty() {
            return Err("--token-stdin: no token on standard input".into());
        }
        Some(t)
    } else {
        token
    };
    gateway_shared::state::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut ok = true;

    // 1. Protected Resource Metadata (RFC 9728) at the path-suffixed URL.
    let path = mcp.path().trim_end_matches('/');
    let mut prm_url = mcp.clone();
    prm_url.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
    prm_url.set_query(None);
    let metadata = match http.get(prm_url.clone()).send().await {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
        Ok(r) => {
            ok &= report(
                false,
                "protected resource metadata",
                &format!("{prm_url} answered HTTP {}", r.status()),
            );
            None
        }
        Err(e) => {
            ok &= report(
                false,
                "protected resource metadata",
                &format!("{prm_url}: {e}"),
            );
            None
        }
    };
    if let Some(m) = &metadata {
        let resource = m["resource"].as_str().unwrap_or_default();
        let servers = m["authorization_servers"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        ok &= report(
            resource.trim_end_matches('/') == url.trim_end_matches('/') && servers > 0,
            "protected resource metadata",
            &format!("resource {resource}, {servers} authorization server(s)"),
        );
    }

    // 2. Without a token: 401 and a challenge naming the metadata.
    let rpc = |method: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "gateway-admin smoke", "version": env!("CARGO_PKG_VERSION")},
        }}})
    };
    let post = |token: Option<&str>| {
        let mut req = http
            .post(mcp.clone())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .json(&rpc("tools/list"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    match post(None).await {
        Ok(r) => {
            let challenge = r
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            ok &= report(
                r.status() == 401
                    && challenge.starts_with("Bearer")
                    && challenge.contains("resource_metadata=")
                    && challenge.contains("/.well-known/oauth-protected-resource"),
                "401 challenge without a token",
                &format!("HTTP {}, WWW-Authenticate: {challenge}", r.status()),
            );
        }
        Err(e) => ok &= report(false, "401 challenge without a token", &e.to_string()),
    }

    // 3. With a token: tools/list answers with tools.
    match token.as_deref() {
        None => println!("skip tools/list (no token: --token-stdin or SMOKE_TOKEN)"),
        Some(t) => match post(Some(t)).await {
            Ok(r) => {
                let status = r.status();
                let body: Value = r.json().await.unwrap_or_default();
                let tools = body["result"]["tools"].as_array().map(Vec::len);
                ok &= report(
                    status.is_success() && tools.is_some(),
                    "tools/list with the token",
                    &match tools {
                        Some(n) => format!("{n} tool(s)"),
                        None => format!(
                            "HTTP {status}: {}",
                            gateway_shared::telemetry::clean(&body.to_string(), 300)
                        ),
                    },
                );
            }
            Err(e) => ok &= report(false, "tools/list with the token", &e.to_string()),
        },
    }
    if ok {
        Ok(())
    } else {
        Err("smoke test failed".into())
    }
}
