//! Real peers: oidc-provider, the demo MCP server, a scriptable HTTP server.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::*;

/// A running oidc-provider (`tests/node/oidc-server.mjs`), stopped on drop.
pub struct OidcProvider {
    _child: ChildGuard,
    _dir: TempDir,
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
}

impl OidcProvider {
    /// Starts the provider with `config` (see `oidc-server.mjs`); the port is chosen here.
    pub fn start(mut config: serde_json::Value) -> OidcProvider {
        let port = free_port();
        config["port"] = port.into();
        let dir = TempDir::new("oidc");
        let file = dir.path.join("config.json");
        std::fs::write(&file, config.to_string()).expect("write oidc config");
        let mut child = Command::new("node")
            .arg(node_dir().join("oidc-server.mjs"))
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node (scripts/tools.sh node installs the test peers)");
        wait_for_port(port, &mut child, "oidc-provider");
        OidcProvider {
            _child: ChildGuard(child),
            _dir: dir,
            issuer: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// The demo OAuth-protected MCP server (`tests/python/demo_mcp_server.py`).
pub struct DemoMcpServer {
    _child: ChildGuard,
    /// Its MCP endpoint, which is also its resource identifier.
    pub url: String,
}

impl DemoMcpServer {
    /// Starts it for tokens from `issuer`; `stateless` serves without sessions.
    pub fn start(issuer: &str, stateless: bool) -> DemoMcpServer {
        Self::start_with(issuer, stateless, &[])
    }

    /// Like [`DemoMcpServer::start`] with extra arguments (`--era 2025`).
    pub fn start_with(issuer: &str, stateless: bool, extra: &[&str]) -> DemoMcpServer {
        let port = free_port();
        let python = workspace_root().join(".tools/venv/bin/python");
        let mut cmd = Command::new(python);
        cmd.arg(workspace_root().join("tests/python/demo_mcp_server.py"))
            .args(["--port", &port.to_string(), "--issuer", issuer])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("DEMO_MCP_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if stateless {
            cmd.arg("--stateless");
        }
        cmd.args(extra);
        let mut child = cmd
            .spawn()
            .expect("start the demo MCP server (scripts/tools.sh python)");
        wait_for_port(port, &mut child, "demo MCP server");
        DemoMcpServer {
            _child: ChildGuard(child),
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

/// Starts `tests/python/<script>` with `--port P` and `args` (from
/// `tests/python`, so it can import its neighbours); its guard and port.
pub fn python_peer(script: &str, args: &[&str], what: &str) -> (ChildGuard, u16) {
    let port = free_port();
    let root = workspace_root();
    let mut child = Command::new(root.join(".tools/venv/bin/python"))
        .arg(root.join("tests/python").join(script))
        .args(["--port", &port.to_string()])
        .args(args)
        .current_dir(root.join("tests/python"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what} (scripts/tools.sh python): {e}"));
    wait_for_port(port, &mut child, what);
    (ChildGuard(child), port)
}

/// The MCP server of the conformance suite's fixtures
/// (`tests/python/conformance_fixtures.py`, no authentication): its guard
/// and MCP URL.
pub fn conformance_fixtures() -> (ChildGuard, String) {
    let (guard, port) = python_peer("conformance_fixtures.py", &[], "the conformance fixtures");
    (guard, format!("http://127.0.0.1:{port}/mcp"))
}

/// A tiny HTTP server on 127.0.0.1 answering every request with one fixed
/// response (or never, with `hang`), counting requests. Stopped on drop.
pub struct FakeHttp {
    task: tokio::task::JoinHandle<()>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl FakeHttp {
    /// Serves `status` with the JSON `body` (after `delay`) to every request.
    pub async fn start(status: u16, body: serde_json::Value, delay: Duration) -> FakeHttp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let body = body.clone();
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                (
                    http::StatusCode::from_u16(status).expect("a valid status"),
                    [("content-type", "application/json")],
                    body.to_string(),
                )
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeHttp { task, hits, base }
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts of requests oidc-provider served (`/test/counts` of `oidc-server.mjs`).
pub async fn provider_counts(op: &OidcProvider) -> serde_json::Value {
    get(format!("{}/test/counts", op.issuer))
        .await
        .expect("counts")
        .json()
        .await
        .expect("counts JSON")
}
