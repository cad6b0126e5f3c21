//! Test harness: real servers on 127.0.0.1, started and stopped by each test.
//!
//! - [`Moto`]: moto's server (DynamoDB and Secrets Manager) from the
//!   project's venv (`scripts/tools.sh python`), one request at a time
//!   (`tests/python/moto_serial.py`).
//! - [`Gateway`]: a table and key set on a `Moto`, and an [`AppState`] wired to them.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{Credentials, Region};
use axum::response::IntoResponse;
use gateway_shared::ports::Clock;
use gateway_shared::{AppState, Config};

/// A plain HTTP client for tests (redirects followed, no timeouts).
///
/// The gateway's binaries link one TLS crypto provider and install it at
/// start; this does the same before building the client.
pub fn http() -> reqwest::Client {
    http_builder()
        .build()
        .expect("a client with static settings builds")
}

/// A client builder for tests that need other settings (redirects off, ...).
pub fn http_builder() -> reqwest::ClientBuilder {
    gateway_shared::state::install_crypto_provider();
    reqwest::Client::builder()
}

/// GET `url` with a fresh [`http`] client.
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 30 s");
}

/// The RSA key pairs of `tests/fixtures/jwt-test-keys.json`, by key id:
/// `{"<kid>": {"jwk": {...}, "private_pem": "..."}}`.
pub fn jwt_test_keys() -> serde_json::Value {
    let text = std::fs::read_to_string(workspace_root().join("tests/fixtures/jwt-test-keys.json"))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A local identity provider: discovery and a JWKS that tests can change.
pub struct Idp {
    /// Issuer URL (http://127.0.0.1:port).
    pub issuer: String,
    /// The JWKS served; tests may change it.
    pub jwks: Arc<std::sync::Mutex<serde_json::Value>>,
    /// How many times the JWKS was fetched.
    pub jwks_hits: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an [`Idp`] serving the public keys `kids` of [`jwt_test_keys`].
pub async fn idp(kids: &[&str]) -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let k = jwt_test_keys();
    let jwks = Arc::new(std::sync::Mutex::new(
        serde_json::json!({"keys": kids.iter().map(|kid| k[kid]["jwk"].clone()).collect::<Vec<_>>()}),
    ));
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (iss, j, h) = (issuer.clone(), jwks.clone(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let iss = iss.clone();
                async move {
                    axum::Json(serde_json::json!({"issuer": iss, "authorization_endpoint": format!("{iss}/auth"), "token_endpoint": format!("{iss}/token"), "jwks_uri": format!("{iss}/jwks")}))
                }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                let (j, h) = (j.clone(), h.clone());
                async move {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(j.lock().unwrap().clone())
                }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Idp {
        issuer,
        jwks,
        jwks_hits: hits,
        task,
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An RS256 JWT of `claims` signed with test key `kid`.
pub fn sign(kid: &str, claims: serde_json::Value) -> String {
    let k = jwt_test_keys();
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(k[kid]["private_pem"].as_str().unwrap().as_bytes())
            .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// A running `moto_server`, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto (`tests/python/moto_serial.py`: moto_server's application,
    /// one request at a time, so that conditional writes are atomic as in
    /// DynamoDB) on a free port, and waits until it listens. The Python is
    /// the project's venv (`scripts/tools.sh python`) or `MOTO_PYTHON`.
    pub fn start() -> Moto {
        let python = std::env::var_os("MOTO_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".tools/venv/bin/python"));
        let script = workspace_root().join("tests/python/moto_serial.py");
        let port = free_port();
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run scripts/tools.sh python",
                    python.display()
                )
            });
        wait_for_port(port, &mut child, "moto_server");
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SDK configuration pointing at this server.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                Credentials::new("test", "test", None, None, "tests"),
            ))
            .build()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clock tests can move.
#[derive(Debug, Default)]
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    /// Starts at the real time.
    pub fn now_real() -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(
            gateway_shared::ports::SystemClock.now(),
        )))
    }
    /// Moves time forward.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Key material for tests (not secret anywhere).
pub const KEY_1: &str = "test-key-one-0123456789abcdefghijklmnop";
/// A second key, for rotation.
pub const KEY_2: &str = "test-key-two-0123456789abcdefghijklmnop";

/// A gateway environment on moto: table, key-set secret, state.
pub struct Gateway {
    /// The moto server (dropped last).
    pub moto: Moto,
    /// Table name.
    pub table: String,
    /// Key-set secret ARN.
    pub keyset_arn: String,
    /// Raw DynamoDB client.
    pub dynamo: aws_sdk_dynamodb::Client,
    /// Raw Secrets Manager client.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The clock `state` uses.
    pub clock: Arc<ManualClock>,
    /// The gateway state.
    pub state: AppState,
}

impl Gateway {
    /// Starts moto, creates the table and key set, builds the state.
    /// `extra` adds or overrides configuration variables.
    pub async fn start(extra: &[(&str, &str)]) -> Gateway {
        let moto = Moto::start();
        let sdk = moto.sdk_config();
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let table = "gateway-test".to_string();
        gateway_shared::adapters::dynamodb::create_table(&dynamo, &table)
            .await
            .expect("create table");
        let keyset_arn = secrets
            .create_secret()
            .name("gateway-keyset")
            .secret_string(serde_json::json!({"current": "k1", "k1": KEY_1}).to_string())
            .send()
            .await
            .expect("create key set")
            .arn
            .expect("secret ARN");
        let mut vars: HashMap<String, String> = [
            ("TABLE_NAME", table.as_str()),
            ("KEYSET_SECRET_ARN", keyset_arn.as_str()),
            ("INBOUND_AUTH_MODE", "dev"),
            ("PUBLIC_BASE_URL", "https://gateway.example.test"),
            ("REFRESH_SHARDS", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test configuration");
        let clock = ManualClock::now_real();
        let state = AppState::with_sdk_config(config, &sdk)
            .await
            .expect("state")
            .with_clock(clock.clone());
        Gateway {
            moto,
            table,
            keyset_arn,
            dynamo,
            secrets,
            clock,
            state,
        }
    }

    /// The raw item at (pk, sk), read consistently.
    pub async fn raw_item(
        &self,
        pk: &str,
        sk: &str,
    ) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        use aws_sdk_dynamodb::types::AttributeValue;
        self.dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get_item")
            .item
    }
}

impl Gateway {
    /// The environment a gateway process (`gateway-serve`, `gateway-admin`)
    /// needs to use this table and key set in `dev` mode.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("TABLE_NAME", self.table.clone()),
            ("KEYSET_SECRET_ARN", self.keyset_arn.clone()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("INBOUND_AUTH_MODE", "dev".into()),
            (
                "REFRESH_SHARDS",
                self.state.config.refresh_shards.to_string(),
            ),
        ]
    }

    /// Writes `item` as it is (a table writer's edit, no keys involved).
    pub async fn put_raw_item(
        &self,
        item: HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) {
        self.dynamo
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .expect("put_item");
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The project's Node.js test peers (`tests/node`, installed by `scripts/tools.sh node`).
pub fn node_dir() -> PathBuf {
    workspace_root().join("tests/node")
}

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
            .stderr(Stdio::null());
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

/// A temporary directory removed on drop.
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "gw-{prefix}-{}",
            gateway_shared::crypto::random_token(9)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What a person saw at the end of a browser consent (`consent-browser.mjs`).
#[derive(Debug, serde::Deserialize)]
pub struct BrowserResult {
    /// HTTP status of the last page.
    pub status: u16,
    /// Its URL.
    pub url: String,
    /// The gateway page's headline, if it is one of ours.
    pub title: Option<String>,
    /// The gateway page's message.
    pub message: Option<String>,
    /// What the page says to do next.
    pub next: Option<String>,
    /// Where the page returns the person to (the success page's link).
    #[serde(default)]
    pub back: Option<String>,
    /// The page's text.
    pub body: String,
}

/// Runs the browser driver `tests/node/<script>` with `opts` and parses the
/// JSON it prints.
async fn browser_driver<T: serde::de::DeserializeOwned>(
    script: &str,
    opts: &serde_json::Value,
) -> T {
    let out = tokio::process::Command::new("node")
        .arg(node_dir().join(script))
        .arg(opts.to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the browser driver");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs headless Chromium through a consent starting at `url`.
pub async fn browser_consent(
    url: &str,
    logins: &[&str],
    action: &str,
    screenshot: Option<&str>,
) -> BrowserResult {
    let opts = serde_json::json!({"url": url, "logins": logins, "action": action, "screenshot": screenshot});
    browser_driver("consent-browser.mjs", &opts).await
}

/// Runs the forwarded-authorization-URL attack (`forwarded-consent.mjs`):
/// the attacker opens `url` signing in as `attacker` (if asked), the upstream
/// authorization URL is captured and opened by `victim` in another browser
/// profile, who signs in and approves. With `probe`, also reports which
/// cross-site requests carried the binding cookie. Returns the JSON report.
pub async fn forwarded_consent(
    url: &str,
    attacker: &[&str],
    victim: &[&str],
    probe: bool,
) -> serde_json::Value {
    let opts =
        serde_json::json!({"url": url, "attacker": attacker, "victim": victim, "probe": probe});
    browser_driver("forwarded-consent.mjs", &opts).await
}

/// Runs a person at the connections page (`connections-browser.mjs`):
/// sign in at `url` with `logins`, then the `actions` (`{"do": "disconnect"
/// | "connect", "target": ..., "logins": [...]}`). Returns the JSON report.
pub async fn connections_browser(
    url: &str,
    logins: &[&str],
    actions: serde_json::Value,
) -> serde_json::Value {
    let opts = serde_json::json!({"url": url, "logins": logins, "actions": actions});
    browser_driver("connections-browser.mjs", &opts).await
}

/// Log lines written while a test runs, for tests that check what reaches
/// the log. Install with [`capture_logs`] on a current-thread runtime (the
/// default of `#[tokio::test]`), so the gateway's tasks log into it.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this thread's log events, in the gateway's text format (its field
/// escaping included), to a
/// buffer until the guard is dropped.
pub fn capture_logs() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .fmt_fields(gateway_shared::telemetry::text_fields())
        .with_target(false)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

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

/// The secret of the confidential test clients.
pub const CLIENT_SECRET: &str = "gateway-client-secret-for-tests";

/// Everything a consent needs, wired together: moto, the gateway on a
/// listener, oidc-provider, the demo MCP server.
pub struct Stack {
    /// Gateway state on moto.
    pub gw: Gateway,
    /// The gateway's listener.
    pub server: GatewayServer,
    /// The authorization server (and identity provider).
    pub op: OidcProvider,
    /// The demo MCP server.
    pub mcp: DemoMcpServer,
}

/// Starts the stack. `op_config` extends the provider configuration; the
/// gateway's redirect URI is registered for every client. With `binding`,
/// `/connect` asks the person to sign in at the same provider (client
/// `gw-login`) and compares users.
pub async fn stack_with(op_config: serde_json::Value, binding: bool) -> Stack {
    let (listener, base) = GatewayServer::bind().await;
    let redirect = format!("{base}/oauth/callback");
    let mut config = serde_json::json!({
        "clients": [
            {"client_id": "gw-login", "redirect_uris": [format!("{base}/connect/verify")], "token_endpoint_auth_method": "none"},
            {"client_id": "gw-basic", "client_secret": CLIENT_SECRET, "redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_basic"},
            {"client_id": "gw-post", "client_secret": CLIENT_SECRET, "redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_post"},
            {"client_id": "gw-public", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"}
        ],
        "resourceScopes": "read write"
    });
    if let (Some(c), Some(extra)) = (config.as_object_mut(), op_config.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    let op = OidcProvider::start(config);
    let mut vars = vec![("PUBLIC_BASE_URL", base.clone())];
    if binding {
        vars.push(("CONSENT_BINDING", "oidc".into()));
        vars.push(("CONSENT_LOGIN_ISSUER", op.issuer.clone()));
        vars.push(("CONSENT_LOGIN_CLIENT_ID", "gw-login".into()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start(&vars).await;
    let mcp = DemoMcpServer::start(&op.issuer, false);
    let server = GatewayServer::serve(listener, base, gw.state.clone());
    Stack {
        gw,
        server,
        op,
        mcp,
    }
}

/// [`stack_with`] without session binding.
pub async fn stack(op_config: serde_json::Value) -> Stack {
    stack_with(op_config, false).await
}

impl Stack {
    /// The stored grant of `sub` for `target` (read consistently); it must exist.
    pub async fn grant(&self, sub: &str, target: &str) -> gateway_shared::domain::Grant {
        self.gw
            .state
            .grants
            .get(sub, target, true)
            .await
            .expect("read the grant")
            .unwrap_or_else(|| panic!("no grant for {sub}/{target}"))
    }

    /// Stores the test clients' secret in Secrets Manager.
    pub async fn client_secret_arn(&self) -> String {
        self.gw
            .secrets
            .create_secret()
            .name(format!(
                "mcp-oauth-gateway/targets/demo-{}",
                gateway_shared::crypto::random_token(4)
            ))
            .secret_string(CLIENT_SECRET)
            .send()
            .await
            .unwrap()
            .arn
            .unwrap()
    }

    /// Registers the demo MCP server as target `name` with the given client.
    pub async fn target(
        &self,
        name: &str,
        client_id: &str,
        method: gateway_shared::domain::TokenEndpointAuthMethod,
    ) -> gateway_shared::domain::Target {
        let url = self.mcp.url.clone();
        self.target_at(name, &url, client_id, method).await
    }

    /// Registers the MCP server at `url` as target `name` with the given client.
    pub async fn target_at(
        &self,
        name: &str,
        url: &str,
        client_id: &str,
        method: gateway_shared::domain::TokenEndpointAuthMethod,
    ) -> gateway_shared::domain::Target {
        let secret = match method {
            gateway_shared::domain::TokenEndpointAuthMethod::None => None,
            _ => Some(self.client_secret_arn().await),
        };
        let issuer = &self.op.issuer;
        let target = gateway_shared::domain::Target {
            name: name.into(),
            display_name: Some("Demo Service".into()),
            mcp_url: url.to_owned(),
            auth: gateway_shared::domain::TargetAuth::OAuth(Box::new(
                gateway_shared::domain::OAuthSettings {
                    issuer: Some(issuer.clone()),
                    authorization_endpoint: format!("{issuer}/auth"),
                    token_endpoint: format!("{issuer}/token"),
                    revocation_endpoint: Some(format!("{issuer}/token/revocation")),
                    client_id: client_id.into(),
                    client_secret_arn: secret,
                    token_endpoint_auth_method: method,
                    scopes: vec!["read".into()],
                    extra_authorize_params: Default::default(),
                    send_resource: true,
                    authorization_response_iss_parameter_supported: true,
                    code_challenge_methods_supported: vec!["S256".into()],
                },
            )),
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: vec![],
        };
        self.gw.state.targets.put(&target).await.unwrap();
        target
    }

    /// A consent link for `sub` and `target`, as the proxy would hand out.
    pub async fn link(
        &self,
        sub: &str,
        target: &str,
    ) -> (gateway_shared::domain::PendingAuthorization, String) {
        let now = self.gw.state.clock.now();
        let pending = gateway_shared::domain::PendingAuthorization::new(
            sub,
            target,
            vec!["read".into()],
            Some(self.mcp.url.clone()),
            Some(self.op.issuer.clone()),
            now,
            600,
        );
        self.gw.state.authorizations.create(&pending).await.unwrap();
        let link = format!("{}/connect/{}", self.server.base, pending.id);
        (pending, link)
    }
}

/// How a [`Switch`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchMode {
    /// Forward to the upstream.
    Forward = 0,
    /// Answer 500.
    Fail = 1,
    /// Never answer.
    Hang = 2,
    /// Forward, after [`SLOW_SWITCH_DELAY`].
    Slow = 3,
}

/// How long a [`SwitchMode::Slow`] switch holds each request.
pub const SLOW_SWITCH_DELAY: Duration = Duration::from_secs(2);

/// An HTTP forwarder in front of a real server, whose behaviour a test can
/// switch: forward, forward slowly, fail with 500, hang, or stop listening (connections
/// refused) and start again on the same port.
pub struct Switch {
    port: u16,
    upstream: String,
    mode: Arc<std::sync::atomic::AtomicU8>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Switch {
    /// Forwards to `upstream` (a base URL) until told otherwise.
    pub async fn start(upstream: &str) -> Switch {
        let port = free_port();
        let mut s = Switch {
            port,
            upstream: upstream.trim_end_matches('/').to_owned(),
            mode: Arc::new(std::sync::atomic::AtomicU8::new(0)),
            task: None,
            base: format!("http://127.0.0.1:{port}"),
        };
        s.listen().await;
        s
    }

    /// Sets the mode.
    pub fn set(&self, mode: SwitchMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again (after [`Switch::stop`]) on the same port.
    pub async fn listen(&mut self) {
        self.stop();
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.expect("rebind the switch's port");
        let upstream = self.upstream.clone();
        let mode = self.mode.clone();
        let http = http();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let upstream = upstream.clone();
            let mode = mode.clone();
            let http = http.clone();
            async move {
                match mode.load(Ordering::SeqCst) {
                    1 => {
                        return (http::StatusCode::INTERNAL_SERVER_ERROR, "switched to fail")
                            .into_response()
                    }
                    2 => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return http::StatusCode::GATEWAY_TIMEOUT.into_response();
                    }
                    3 => tokio::time::sleep(SLOW_SWITCH_DELAY).await,
                    _ => {}
                }
                let (parts, body) = req.into_parts();
                let url = format!(
                    "{upstream}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                );
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let mut out = http.request(parts.method.clone(), url).body(body);
                for (k, v) in &parts.headers {
                    if k != "host" && k != "content-length" {
                        out = out.header(k, v);
                    }
                }
                match out.send().await {
                    Ok(res) => {
                        let status = res.status();
                        let headers = res.headers().clone();
                        let bytes = res.bytes().await.unwrap_or_default();
                        let mut r = (status, bytes).into_response();
                        for (k, v) in &headers {
                            if k != "content-length" && k != "transfer-encoding" {
                                r.headers_mut().insert(k, v.clone());
                            }
                        }
                        r
                    }
                    Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        });
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
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

/// Another Lambda instance of the gateway: its own SDK clients, caches and
/// HTTP pool over the same table and secrets, with its own clock.
pub async fn instance(gw: &Gateway, clock: Arc<dyn Clock>) -> AppState {
    AppState::with_sdk_config((*gw.state.config).clone(), &gw.moto.sdk_config())
        .await
        .expect("another instance")
        .with_clock(clock)
}

/// An OAuth target whose token endpoint is `token_endpoint` (public client,
/// no revocation), for tests against fake token endpoints.
pub fn stack_target_for_fake(token_endpoint: &str) -> gateway_shared::domain::Target {
    gateway_shared::domain::Target {
        name: "fake".into(),
        display_name: None,
        mcp_url: "https://mcp.example.test/mcp".into(),
        auth: gateway_shared::domain::TargetAuth::OAuth(Box::new(
            gateway_shared::domain::OAuthSettings {
                issuer: None,
                authorization_endpoint: "https://as.example.test/authorize".into(),
                token_endpoint: token_endpoint.into(),
                revocation_endpoint: None,
                client_id: "gw".into(),
                client_secret_arn: None,
                token_endpoint_auth_method: gateway_shared::domain::TokenEndpointAuthMethod::None,
                scopes: vec!["read".into()],
                extra_authorize_params: Default::default(),
                send_resource: false,
                authorization_response_iss_parameter_supported: false,
                code_challenge_methods_supported: vec!["S256".into()],
            },
        )),
        tool_prefix: None,
        return_to: Default::default(),
        tool_catalog: vec![],
    }
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

/// An active grant of `sub` for `target` with the given tokens and expiry,
/// as a consent would store it (version 0: `create` makes it 1).
pub fn refreshable_grant(
    sub: &str,
    target: &str,
    access: &str,
    refresh: &str,
    expires_at: i64,
    now: i64,
) -> gateway_shared::domain::Grant {
    gateway_shared::domain::Grant {
        sub: sub.into(),
        target: target.into(),
        tokens: gateway_shared::domain::TokenSet {
            access_token: access.to_owned().into(),
            refresh_token: Some(refresh.to_owned().into()),
            token_type: "Bearer".into(),
        },
        expires_at: Some(expires_at),
        scopes: vec!["read".into()],
        issuer: None,
        token_endpoint: None,
        resource: None,
        status: gateway_shared::domain::GrantStatus::Active,
        version: 0,
        lease: None,
        created_at: now,
        updated_at: now,
    }
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
