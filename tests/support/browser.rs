//! Headless Chromium (playwright-core) through a consent, and the captured logs.

use std::process::Stdio;
use std::sync::Arc;

use crate::*;

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

thread_local! {
    /// The buffer this thread's log events go to, if a test asked for one.
    static CAPTURE: std::cell::RefCell<Option<LogBuffer>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the calling thread's capture buffer, or nowhere.
struct ThreadCapture;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadCapture {
    type Writer = Box<dyn std::io::Write>;
    fn make_writer(&'a self) -> Self::Writer {
        match CAPTURE.with(|c| c.borrow().clone()) {
            Some(buffer) => Box::new(buffer),
            None => Box::new(std::io::sink()),
        }
    }
}

/// Stops a capture started by [`capture_logs`] when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// Sends this thread's log events, in the gateway's text format (its field
/// escaping included), to a buffer until the guard is dropped.
///
/// One process-wide subscriber routes each event to the buffer of the thread
/// that logs it. A subscriber per test (`set_default`) loses events: tracing
/// caches each call site's interest process-wide, and a call site first hit
/// by a test without a subscriber, while another installs one, can stay
/// cached as "never log".
pub fn capture_logs() -> (LogBuffer, CaptureGuard) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(gateway_shared::telemetry::text_fields())
            .with_target(false)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(ThreadCapture)
            .finish();
        // Fails only if the binary already set one; the events then go there.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    let buffer = LogBuffer::default();
    CAPTURE.with(|c| *c.borrow_mut() = Some(buffer.clone()));
    (buffer, CaptureGuard(()))
}
