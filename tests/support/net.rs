//! Processes, ports and HTTP helpers shared by the tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

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

/// A free TCP port on 127.0.0.1 for a child process to listen on.
///
/// Chosen below the kernel's ephemeral range (32768-60999 on Linux): a port
/// the OS handed out for `bind(0)` and released could be handed out again
/// to another test's listener before the child binds it, and that
/// listener would then answer in the child's place.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // A per-process start, so that test binaries running side by side
    // rarely probe the same ports.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 600) * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..12_000 {
        let port = 20_000 + (NEXT.fetch_add(1, Ordering::SeqCst) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in 20000-31999")
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

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
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

/// Serves a local Lambda Runtime API on 127.0.0.1, for a function binary
/// started with `AWS_LAMBDA_RUNTIME_API` set to the address returned:
/// `next` answers the binary's polls for its next invocation, `respond`
/// takes its responses, invocation errors and initialization error. Abort
/// the task returned to stop serving.
pub async fn serve_runtime_api<S: Clone + Send + Sync + 'static>(
    state: S,
    next: axum::routing::MethodRouter<S>,
    respond: axum::routing::MethodRouter<S>,
) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", next)
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            respond.clone(),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", respond.clone())
        .route("/2018-06-01/runtime/init/error", respond)
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the Runtime API");
    let address = listener
        .local_addr()
        .expect("the Runtime API's address")
        .to_string();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (address, server)
}

/// The Runtime API's answer to a poll for the next invocation: `event`
/// as invocation `request_id`, due in 30 seconds.
pub fn runtime_invocation(request_id: &str, event: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 30_000;
    (
        [
            ("lambda-runtime-aws-request-id", request_id.to_owned()),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:gateway".to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        event.to_owned(),
    )
        .into_response()
}
