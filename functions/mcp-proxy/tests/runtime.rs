//! The `mcp-proxy` binary under a local Lambda Runtime API (served here),
//! with moto_server as DynamoDB and Secrets Manager: how many invocations
//! one process takes at once. On classic Lambda it is one; with
//! `AWS_LAMBDA_MAX_CONCURRENCY` (Lambda Managed Instances) it is that many,
//! and every one of them is answered.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use gateway_tests::{serve_runtime_api, workspace_root, Gateway};

/// What the Runtime API has seen.
#[derive(Default)]
struct Seen {
    /// `/next` polls waiting now.
    open: usize,
    /// The most that waited at once.
    most: usize,
    /// Events handed out.
    handed: usize,
    /// Responses posted: request id, the response mode the function
    /// named (`streaming` for a streamed one), and the body.
    answers: Vec<(String, Option<String>, String)>,
}

#[derive(Clone)]
struct Api {
    event: Arc<String>,
    seen: Arc<Mutex<Seen>>,
    /// How many events the API may hand out so far; polls beyond it wait.
    allowed: Arc<tokio::sync::watch::Sender<usize>>,
}

async fn next(State(api): State<Api>) -> axum::response::Response {
    {
        let mut seen = api.seen.lock().unwrap();
        seen.open += 1;
        seen.most = seen.most.max(seen.open);
    }
    let mut allowed = api.allowed.subscribe();
    let id = loop {
        {
            let mut seen = api.seen.lock().unwrap();
            if seen.handed < *allowed.borrow_and_update() {
                seen.handed += 1;
                seen.open -= 1;
                break format!("req-{}", seen.handed);
            }
        }
        if allowed.changed().await.is_err() {
            // The test is over; the process is being stopped.
            std::future::pending::<()>().await;
        }
    };
    gateway_tests::runtime_invocation(&id, &api.event)
}

async fn respond(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let mode = headers
        .get("lambda-runtime-function-response-mode")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    api.seen.lock().unwrap().answers.push((id, mode, body));
    axum::http::StatusCode::ACCEPTED
}

/// A running function process and the Runtime API it polls.
struct Function {
    api: Api,
    child: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
    /// Where the process's standard error goes.
    log: std::path::PathBuf,
}

impl Function {
    async fn start(gw: &Gateway, extra: &[(&str, &str)]) -> Function {
        let event = std::fs::read_to_string(
            workspace_root().join("events/apigw-v2-protected-resource-metadata.json"),
        )
        .unwrap();
        let api = Api {
            event: Arc::new(event),
            seen: Default::default(),
            allowed: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let (address, server) = serve_runtime_api(api.clone(), get(next), post(respond)).await;
        let log = std::env::temp_dir().join(format!(
            "mcp-proxy-runtime-{}-{}.log",
            std::process::id(),
            address.replace([':', '.'], "-")
        ));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
            .env_clear()
            .envs(gw.function_env())
            .envs(extra.iter().copied())
            .env("AWS_LAMBDA_RUNTIME_API", address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("a file for the function's log"),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("start the mcp-proxy binary");
        Function {
            api,
            child,
            server,
            log,
        }
    }

    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.api.seen.lock().unwrap())
    }

    /// Waits (up to 30 s: the process loads its key set first) until
    /// `done` holds; fails at once, with what it wrote, if the process
    /// ends.
    async fn until(&mut self, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.seen(&done) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("the function ended ({status}) before {what}: {err}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets the API hand out `n` events in all.
    fn allow(&self, n: usize) {
        self.api.allowed.send_replace(n);
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        self.server.abort();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Every response is the Protected Resource Metadata document, answered
/// with 200 for its own request id, streamed or whole as configured.
fn assert_answered(seen: &Seen, n: usize, streamed: bool) {
    let mut ids: Vec<&str> = seen.answers.iter().map(|(id, ..)| id.as_str()).collect();
    ids.sort();
    let want: Vec<String> = (1..=n).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids, want, "one response per invocation");
    for (id, mode, body) in &seen.answers {
        assert_eq!(
            mode.as_deref(),
            streamed.then_some("streaming"),
            "{id}'s response mode"
        );
        assert!(
            body.contains("\"statusCode\":200") && body.contains("authorization_servers"),
            "{id} was answered with its document: {body}"
        );
    }
}

#[tokio::test]
async fn a_process_takes_as_many_invocations_at_once_as_the_platform_allows() {
    let gw = Gateway::start(&[]).await;

    // Classic Lambda: one poll at a time, the next only after the answer.
    let mut one = Function::start(&gw, &[]).await;
    one.until("the first poll", |s| s.open == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(one.seen(|s| s.most), 1, "one invocation at a time");
    for n in 1..=3 {
        one.allow(n);
        one.until("the answer", |s| s.answers.len() == n).await;
        one.until("the next poll", |s| s.open == 1).await;
    }
    assert_eq!(one.seen(|s| s.most), 1, "never two at once");
    one.seen(|s| assert_answered(s, 3, false));
    one.stop().await;

    // Lambda Managed Instances: four polls held open at once, each of the
    // four invocations answered, and the four polls open again.
    let mut four = Function::start(&gw, &[("AWS_LAMBDA_MAX_CONCURRENCY", "4")]).await;
    four.until("four polls at once", |s| s.open == 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(four.seen(|s| s.most), 4, "no more polls than allowed");
    four.allow(4);
    four.until("four answers", |s| s.answers.len() == 4).await;
    four.until("four polls again", |s| s.open == 4).await;
    four.seen(|s| assert_answered(s, 4, false));
    four.stop().await;

    // The same with streamed responses (a function URL in
    // RESPONSE_STREAM mode).
    let mut streamed = Function::start(
        &gw,
        &[
            ("AWS_LAMBDA_MAX_CONCURRENCY", "2"),
            ("RESPONSE_STREAMING", "on"),
        ],
    )
    .await;
    streamed.until("two polls at once", |s| s.open == 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(streamed.seen(|s| s.most), 2, "no more polls than allowed");
    streamed.allow(2);
    streamed
        .until("two answers", |s| s.answers.len() == 2)
        .await;
    streamed.seen(|s| assert_answered(s, 2, true));
    streamed.stop().await;
}
