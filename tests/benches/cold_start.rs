//! Benchmark: cold start of each function's release binary, from process
//! start to the first completed invocation, under a local Lambda Runtime API
//! (this benchmark serves it) with moto_server as DynamoDB and Secrets
//! Manager. Includes configuration, SDK clients and the key-set fetch. The
//! baseline is the same binary started with a configuration error, which
//! exits after loading: the cost of starting the process at all. Also
//! reports each process's peak RSS (VmHWM) after its first invocation.
//!
//!     cargo build --release -p mcp-proxy -p oauth-callback -p token-refresh
//!     cargo bench -p gateway-tests --bench cold_start

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use gateway_tests::{workspace_root, Gateway};

#[derive(Clone)]
struct Runtime {
    event: Arc<String>,
    served: Arc<Mutex<bool>>,
    done: Arc<tokio::sync::Notify>,
    response: Arc<Mutex<Option<String>>>,
}

async fn next(State(rt): State<Runtime>) -> axum::response::Response {
    let first = {
        let mut s = rt.served.lock().unwrap();
        let first = !*s;
        *s = true;
        first
    };
    if !first {
        // The function waits for its next event: keep it waiting.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000;
    (
        [
            ("lambda-runtime-aws-request-id", "req-1".to_string()),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench".to_string(),
            ),
            ("content-type", "application/json".to_string()),
        ],
        rt.event.as_str().to_owned(),
    )
        .into_response()
}

async fn respond(State(rt): State<Runtime>, body: String) -> axum::http::StatusCode {
    *rt.response.lock().unwrap() = Some(body);
    rt.done.notify_one();
    axum::http::StatusCode::ACCEPTED
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn one(
    binary: &std::path::Path,
    event: &str,
    env: &[(String, String)],
    broken: bool,
) -> (Duration, Option<u64>, String) {
    let rt = Runtime {
        event: Arc::new(event.to_owned()),
        served: Arc::new(Mutex::new(false)),
        done: Arc::new(tokio::sync::Notify::new()),
        response: Arc::new(Mutex::new(None)),
    };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(respond),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(respond))
        .route("/2018-06-01/runtime/init/error", post(respond))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if broken {
        cmd.env("TABLE_NAME", "");
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start the function binary");
    let elapsed;
    let mut rss = None;
    if broken {
        let _ = child.wait().await;
        elapsed = started.elapsed();
    } else {
        tokio::time::timeout(Duration::from_secs(30), rt.done.notified())
            .await
            .expect("the function answered");
        elapsed = started.elapsed();
        rss = child.id().and_then(peak_rss_kib);
        let _ = child.kill().await;
    }
    server.abort();
    let response = rt.response.lock().unwrap().clone().unwrap_or_default();
    (elapsed, rss, response)
}

#[tokio::main]
async fn main() {
    let gw = Gateway::start(&[]).await;
    let root = workspace_root();
    let env: Vec<(String, String)> = [
        ("TABLE_NAME", gw.table.as_str()),
        ("KEYSET_SECRET_ARN", gw.keyset_arn.as_str()),
        ("INBOUND_AUTH_MODE", "jwt"),
        ("INBOUND_ISSUER", "https://idp.example.com"),
        ("INBOUND_AUDIENCES", "gateway"),
        ("CONSENT_LOGIN_CLIENT_ID", "login"),
        ("PUBLIC_BASE_URL", "https://gateway.example.com"),
        ("AWS_ENDPOINT_URL", gw.moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "bench"),
        ("RUST_LOG", "warn"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    println!("## Cold start: process start to the first completed invocation (median of 7)\n");
    println!("| function | event | cold start | process start alone (baseline) | ratio | peak RSS after the first invocation |");
    println!("|---|---|---|---|---|---|");
    // token-refresh queries every shard of the refresh-due index on its
    // first invocation; moto answers one request at a time, so with the
    // default 16 shards the row mostly measures 16 queries in a row (in
    // DynamoDB they run side by side). The single-shard row is the
    // function's own cost.
    for (function, event, extra) in [
        (
            "mcp-proxy",
            "apigw-v2-protected-resource-metadata.json",
            None,
        ),
        ("oauth-callback", "apigw-v2-connect.json", None),
        ("token-refresh", "eventbridge-scheduled.json", None),
        (
            "token-refresh",
            "eventbridge-scheduled.json",
            Some(("REFRESH_SHARDS", "1")),
        ),
    ] {
        let mut env = env.clone();
        env.extend(extra.map(|(k, v): (&str, &str)| (k.to_owned(), v.to_owned())));
        let shown_event = match extra {
            Some((k, v)) => format!("{event}, {k}={v}"),
            None => event.to_owned(),
        };
        let binary = root.join("target/release").join(function);
        if !binary.exists() {
            println!("| {function} | | not built: cargo build --release -p {function} | | | |");
            continue;
        }
        let event_json = std::fs::read_to_string(root.join("events").join(event)).unwrap();
        let mut cold = vec![];
        let mut base = vec![];
        let mut rss = vec![];
        for _ in 0..7 {
            let (d, r, response) = one(&binary, &event_json, &env, false).await;
            assert!(!response.is_empty(), "{function} answered");
            cold.push(d);
            rss.extend(r);
            base.push(one(&binary, &event_json, &env, true).await.0);
        }
        cold.sort();
        base.sort();
        rss.sort();
        let (c, b) = (cold[3], base[3]);
        println!(
            "| {function} | {shown_event} | {:.1} ms | {:.1} ms | {:.1} | {} |",
            c.as_secs_f64() * 1000.0,
            b.as_secs_f64() * 1000.0,
            c.as_secs_f64() / b.as_secs_f64(),
            rss.last()
                .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        );
    }
}
