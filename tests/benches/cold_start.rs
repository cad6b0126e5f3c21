//! Benchmark: cold start of each function's release binary, from process
//! start to the first completed invocation, under a local Lambda Runtime API
//! (this benchmark serves it) with moto_server as DynamoDB and Secrets
//! Manager. Includes configuration, SDK clients and the key-set fetch. The
//! baseline is the same binary started with a configuration error, which
//! exits after loading: the cost of starting the process at all. The same
//! event is then invoked again in the same process: that warm invocation
//! is what the work itself costs (storage answers included), so the first
//! invocation minus the warm one is what being cold costs. Also reports
//! each process's peak RSS (VmHWM) after its first invocation.
//!
//!     cargo build --release -p mcp-proxy -p oauth-callback -p token-refresh
//!     cargo bench -p gateway-tests --bench cold_start

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use gateway_tests::{serve_runtime_api, workspace_root, Gateway};

/// Invocations served per process: the cold one, then a warm one.
const INVOCATIONS: usize = 2;

#[derive(Clone)]
struct Runtime {
    event: Arc<String>,
    /// When each event was handed out.
    served: Arc<Mutex<Vec<Instant>>>,
    /// When each response came.
    answered: Arc<Mutex<Vec<Instant>>>,
    done: Arc<tokio::sync::Notify>,
    response: Arc<Mutex<Option<String>>>,
}

async fn next(State(rt): State<Runtime>) -> axum::response::Response {
    let more = {
        let mut s = rt.served.lock().unwrap();
        let more = s.len() < INVOCATIONS;
        if more {
            s.push(Instant::now());
        }
        more
    };
    if !more {
        // The function waits for its next event: keep it waiting.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    gateway_tests::runtime_invocation("req-1", &rt.event)
}

async fn respond(State(rt): State<Runtime>, body: String) -> axum::http::StatusCode {
    let all = {
        let mut a = rt.answered.lock().unwrap();
        a.push(Instant::now());
        a.len() >= INVOCATIONS
    };
    rt.response.lock().unwrap().get_or_insert(body);
    if all {
        rt.done.notify_one();
    }
    axum::http::StatusCode::ACCEPTED
}

/// What one run measured.
struct Run {
    /// Process start to the first response.
    cold: Duration,
    /// The second (warm) invocation: event handed out to response.
    warm: Option<Duration>,
    rss_kib: Option<u64>,
    response: String,
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

async fn one(binary: &std::path::Path, event: &str, env: &[(String, String)], broken: bool) -> Run {
    let rt = Runtime {
        event: Arc::new(event.to_owned()),
        served: Default::default(),
        answered: Default::default(),
        done: Arc::new(tokio::sync::Notify::new()),
        response: Arc::new(Mutex::new(None)),
    };
    let (api, server) = serve_runtime_api(rt.clone(), get(next), post(respond)).await;
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
    let mut run = Run {
        cold: Duration::ZERO,
        warm: None,
        rss_kib: None,
        response: String::new(),
    };
    if broken {
        let _ = child.wait().await;
        run.cold = started.elapsed();
    } else {
        tokio::time::timeout(Duration::from_secs(30), rt.done.notified())
            .await
            .expect("the function answered");
        run.rss_kib = child.id().and_then(peak_rss_kib);
        let _ = child.kill().await;
        let served = rt.served.lock().unwrap().clone();
        let answered = rt.answered.lock().unwrap().clone();
        run.cold = answered[0] - started;
        run.warm = Some(answered[1] - served[1]);
    }
    server.abort();
    run.response = rt.response.lock().unwrap().clone().unwrap_or_default();
    run
}

#[tokio::main]
async fn main() {
    let gw = Gateway::start(&[]).await;
    let root = workspace_root();
    let env = gw.function_env();

    println!("## Cold start: process start to the first completed invocation (median of 7)\n");
    println!("The warm invocation is the same event again in the same process; the first invocation minus it is what being cold costs (the storage's answers are in both).\n");
    println!("| function | event | first invocation (cold) | the same, warm | cost of being cold | process start alone (baseline) | ratio cold / baseline | peak RSS after the first invocation |");
    println!("|---|---|---|---|---|---|---|---|");
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
            println!("| {function} | | not built: cargo build --release -p {function} | | | | | |");
            continue;
        }
        let event_json = std::fs::read_to_string(root.join("events").join(event)).unwrap();
        let mut cold = vec![];
        let mut warm = vec![];
        let mut cost = vec![];
        let mut base = vec![];
        let mut rss = vec![];
        for _ in 0..7 {
            let run = one(&binary, &event_json, &env, false).await;
            assert!(!run.response.is_empty(), "{function} answered");
            let w = run.warm.unwrap_or_default();
            cold.push(run.cold);
            warm.push(w);
            cost.push(run.cold.saturating_sub(w));
            rss.extend(run.rss_kib);
            base.push(one(&binary, &event_json, &env, true).await.cold);
        }
        for v in [&mut cold, &mut warm, &mut cost, &mut base] {
            v.sort();
        }
        rss.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (c, b) = (cold[3], base[3]);
        println!(
            "| {function} | {shown_event} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} | {} |",
            ms(c),
            ms(warm[3]),
            ms(cost[3]),
            ms(b),
            c.as_secs_f64() / b.as_secs_f64(),
            rss.last()
                .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        );
    }
}
