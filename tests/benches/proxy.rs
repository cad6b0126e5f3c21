//! Benchmark: the proxy's cost on the hot path, each figure beside its
//! baseline from the same run.
//!
//! 1. `tools/call` through the gateway's Router on a local listener against
//!    the same call made directly to a fast local upstream, at concurrency 1
//!    and 32: added latency (p50, p99) and throughput ratio; with the grant
//!    cached in the instance (warm) and read from DynamoDB on every call
//!    (`GRANT_CACHE_SECONDS=0`).
//! 2. DynamoDB and Secrets Manager requests per `tools/call` (counted by a
//!    forwarder in front of moto_server).
//! 3. `tools/list` across 10 targets that each take 50 ms, against one.
//!
//!     cargo bench -p gateway-tests --bench proxy_overhead
//!
//! With `PROXY_BENCH_PROFILE_CALLS=N` it makes only N warm calls at
//! concurrency 32 through the gateway, for a profiler.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use futures::StreamExt;
use gateway_shared::domain::{Target, TargetAuth};
use gateway_shared::{AppState, Config};
use gateway_tests::{refreshable_grant, stack_target_for_fake, Gateway, GatewayServer};
use serde_json::{json, Value};

/// The allocator the `mcp-proxy` function uses (mimalloc), counting
/// allocations while [`COUNTING`] is set (one untimed pass; a relaxed
/// load otherwise). Load generator, forwarder and upstream share it.
struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to mimalloc unchanged.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        }
        mimalloc::MiMalloc.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        mimalloc::MiMalloc.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(n as u64, Ordering::Relaxed);
        }
        mimalloc::MiMalloc.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations and bytes allocated per call of `tool` at `url`
/// (the whole process: load generator, path and upstream), counted over
/// `n` calls one at a time.
async fn allocations(url: &str, headers: &[(&str, String)], n: usize) -> (f64, f64) {
    measure(url, headers, "fast", 1, 20).await; // warm up
    let (a, b) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    COUNTING.store(true, Ordering::Relaxed);
    measure(url, headers, "fast", 1, n).await;
    COUNTING.store(false, Ordering::Relaxed);
    // `measure` warms up with 20 calls of its own.
    let calls = (n + 20) as f64;
    (
        (ALLOCS.load(Ordering::Relaxed) - a) as f64 / calls,
        (BYTES.load(Ordering::Relaxed) - b) as f64 / calls,
    )
}

/// A fast upstream MCP server (2026-07-28, stateless), optionally slow.
async fn upstream(delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| async move {
        let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
        let id = msg["id"].clone();
        let result = match msg["method"].as_str().unwrap_or_default() {
            "server/discover" => {
                json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}})
            }
            "tools/list" => {
                tokio::time::sleep(delay).await;
                json!({"tools": [{"name": "fast", "inputSchema": {"type": "object"}}]})
            }
            "tools/call" => json!({"content": [{"type": "text", "text": "ok"}]}),
            _ => return axum::http::StatusCode::ACCEPTED.into_response(),
        };
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The least any HTTP proxy does here: axum receives the body, reqwest
/// sends it to `upstream` over a pooled connection, the answer goes back.
/// No authentication, no JSON, no tokens: the floor for the gateway.
async fn bare_forwarder(upstream: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (upstream, http) = (upstream.to_owned(), gateway_shared::state::http_client());
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (upstream, http) = (upstream.clone(), http.clone());
        async move {
            let res = http
                .post(&upstream)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body)
                .send()
                .await
                .unwrap();
            let bytes = res.bytes().await.unwrap_or_default();
            ([("content-type", "application/json")], bytes).into_response()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// Forwards to moto_server, counting requests by AWS API action.
async fn counting_forwarder(moto: &str) -> (String, Arc<Mutex<BTreeMap<String, usize>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let (c, moto, http) = (counts.clone(), moto.to_owned(), gateway_tests::http());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (c, moto, http) = (c.clone(), moto.clone(), http.clone());
        async move {
            let (parts, body) = req.into_parts();
            let action = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("other")
                .to_owned();
            *c.lock().unwrap().entry(action).or_insert(0) += 1;
            let body = axum::body::to_bytes(body, 1 << 24)
                .await
                .unwrap_or_default();
            let mut out = http.request(parts.method.clone(), format!("{moto}{}", parts.uri));
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            let res = out.body(body).send().await.unwrap();
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
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, counts)
}

struct Run {
    p50: Duration,
    p99: Duration,
    per_second: f64,
    /// CPU time this process spent per call (load generator, path and
    /// upstream together): less sensitive than throughput to a noisy
    /// machine's stolen time.
    cpu_per_call: Duration,
}

/// CPU time (user and system) this process has used so far.
fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces), from `state`.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // Clock ticks are 100 per second on Linux.
    Duration::from_millis(ticks * 10)
}

/// `n` calls of `tool` at `url`, `concurrency` at a time, each with `headers`.
async fn measure(
    url: &str,
    headers: &[(&str, String)],
    tool: &str,
    concurrency: usize,
    n: usize,
) -> Run {
    let http = gateway_tests::http();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string();
    let call = |http: reqwest::Client, body: String| {
        let url = url.to_owned();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        async move {
            let t = Instant::now();
            let mut req = http
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18");
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let res = req.body(body).send().await.unwrap();
            let text = res.text().await.unwrap();
            assert!(text.contains("\"ok\""), "{text}");
            t.elapsed()
        }
    };
    for _ in 0..20 {
        call(http.clone(), body.clone()).await; // warm up
    }
    let started = Instant::now();
    let cpu = process_cpu();
    let mut times: Vec<Duration> = futures::stream::iter(0..n)
        .map(|_| call(http.clone(), body.clone()))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let total = started.elapsed();
    let cpu_per_call = (process_cpu().saturating_sub(cpu)) / n.max(1) as u32;
    times.sort();
    Run {
        cpu_per_call,
        p50: times[times.len() / 2],
        p99: times[(times.len() * 99 / 100).min(times.len() - 1)],
        per_second: n as f64 / total.as_secs_f64(),
    }
}

/// One path under test: where calls go, with what headers, on a client
/// of its own (its connections stay warm between blocks).
struct Path<'a> {
    url: &'a str,
    headers: &'a [(&'a str, String)],
    http: reqwest::Client,
}

impl<'a> Path<'a> {
    fn new(url: &'a str, headers: &'a [(&'a str, String)]) -> Path<'a> {
        Path {
            url,
            headers,
            http: gateway_tests::http(),
        }
    }

    /// One `tools/call` of `fast`; its latency.
    async fn call(&self) -> Duration {
        let t = Instant::now();
        let mut req = self
            .http
            .post(self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18");
        for (k, v) in self.headers {
            req = req.header(*k, v);
        }
        let res = req.body(CALL_BODY).send().await.unwrap();
        let text = res.text().await.unwrap();
        assert!(text.contains("\"ok\""), "{text}");
        t.elapsed()
    }
}

const CALL_BODY: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fast","arguments":{}}}"#;

/// The paths measured in turns: `rounds` rounds, in each of which every
/// path makes `block` calls, `concurrency` at a time (the order rotating
/// from round to round). A machine whose speed drifts within seconds
/// slows every path alike, so the ratios between them hold where one long
/// run per path would compare different minutes. Each path's throughput
/// is its calls over the time its own blocks took.
async fn in_turns(paths: &[Path<'_>], concurrency: usize, block: usize, rounds: usize) -> Vec<Run> {
    for p in paths {
        for _ in 0..20 {
            p.call().await; // warm up
        }
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(block * rounds); paths.len()];
    let mut busy = vec![Duration::ZERO; paths.len()];
    let mut cpu = vec![Duration::ZERO; paths.len()];
    for round in 0..rounds {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            let p = &paths[i];
            let (started, c) = (Instant::now(), process_cpu());
            let t: Vec<Duration> = futures::stream::iter(0..block)
                .map(|_| p.call())
                .buffer_unordered(concurrency)
                .collect()
                .await;
            busy[i] += started.elapsed();
            cpu[i] += process_cpu().saturating_sub(c);
            times[i].extend(t);
        }
    }
    let n = (block * rounds) as f64;
    times
        .into_iter()
        .zip(busy.into_iter().zip(cpu))
        .map(|(mut t, (busy, cpu))| {
            t.sort();
            Run {
                p50: t[t.len() / 2],
                p99: t[(t.len() * 99 / 100).min(t.len() - 1)],
                per_second: n / busy.as_secs_f64(),
                cpu_per_call: cpu.div_f64(n),
            }
        })
        .collect()
}

/// This process's peak resident set (VmHWM), as text.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} MiB", kb / 1024.0))
        .unwrap_or_else(|| "unknown".into())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn gateway_on(
    gw: &Gateway,
    endpoint: &str,
    extra: &[(&str, &str)],
) -> (GatewayServer, AppState) {
    let (listener, base) = GatewayServer::bind().await;
    let mut vars: std::collections::HashMap<String, String> = [
        ("TABLE_NAME", gw.table.as_str()),
        ("KEYSET_SECRET_ARN", gw.keyset_arn.as_str()),
        ("INBOUND_AUTH_MODE", "dev"),
        ("PUBLIC_BASE_URL", base.as_str()),
        ("REFRESH_SHARDS", "4"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "bench"),
        ))
        .build();
    let mut state = AppState::with_sdk_config(config, &sdk).await.unwrap();
    // Metrics and audit events are made for every call, as in a deployment,
    // and dropped instead of written to this benchmark's output.
    state.observe.metrics = gateway_shared::observe::LineSink::Discard;
    state.observe.audit =
        gateway_shared::observe::AuditSink::Lines(gateway_shared::observe::LineSink::Discard);
    (GatewayServer::serve(listener, base, state.clone()), state)
}

#[tokio::main]
async fn main() {
    let gw = Gateway::start(&[]).await;
    let (endpoint, counts) = counting_forwarder(&gw.moto.endpoint).await;
    let up = upstream(Duration::ZERO).await;
    // One OAuth target, one connected user with a long-lived token.
    let mut target = stack_target_for_fake("http://127.0.0.1:9/token");
    target.name = "fast".into();
    target.mcp_url = up.clone();
    target.tool_prefix = Some(String::new());
    // A catalog the size of a real server's, as the gateway keeps it once
    // any user listed the tools.
    target.tool_catalog = (0..40)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "description": "Does one thing to a record of the service and returns the result as text.",
                   "inputSchema": {"type": "object", "properties": {"id": {"type": "string", "description": "The record"}, "limit": {"type": "integer", "minimum": 1}}, "required": ["id"]}})
            .into()
        })
        .collect();
    gw.state.targets.put(&target).await.unwrap();
    let now = gw.state.clock.now();
    gw.state
        .grants
        .create(&refreshable_grant(
            "bench-user",
            "fast",
            "at",
            "rt",
            now + 86_400,
            now,
        ))
        .await
        .unwrap();

    let (warm, _) = gateway_on(&gw, &endpoint, &[]).await;
    let (cold, _) = gateway_on(&gw, &endpoint, &[("GRANT_CACHE_SECONDS", "0")]).await;
    // The deployed default: every call's bearer JWT checked (RS256, JWKS).
    let idp = gateway_tests::idp(&["test-key-1"]).await;
    let (jwt, _) = gateway_on(
        &gw,
        &endpoint,
        &[
            ("INBOUND_AUTH_MODE", "jwt"),
            ("INBOUND_ISSUER", &idp.issuer),
            ("INBOUND_AUDIENCES", "https://gateway.example.test/mcp"),
            ("CONSENT_BINDING", "link"),
        ],
    )
    .await;
    let token = gateway_tests::sign(
        "test-key-1",
        json!({"iss": idp.issuer, "sub": "bench-user", "aud": "https://gateway.example.test/mcp",
               "exp": gateway_tests::unix_now() + 3600, "scope": "mcp:invoke"}),
    );
    let forwarder = bare_forwarder(&up).await;
    let warm_url = format!("{}/mcp", warm.base);
    let cold_url = format!("{}/mcp", cold.base);
    let jwt_url = format!("{}/mcp", jwt.base);
    let dev = [("x-gateway-dev-user", "bench-user".to_owned())];
    let bearer = [("authorization", format!("Bearer {token}"))];
    if let Ok(n) = std::env::var("PROXY_BENCH_PROFILE_CALLS") {
        // Only warm calls at concurrency 32, for a profiler to watch:
        //     PROXY_BENCH_PROFILE_CALLS=100000 perf record -g <bench binary>
        // `PROXY_BENCH_PROFILE_PATH` picks the path: `jwt` (default), `dev`
        // (warm, no JWT) or `bare` (the bare forwarder), so that profiles of
        // the gateway and of its floor can be compared call for call.
        let n: usize = n.parse().expect("PROXY_BENCH_PROFILE_CALLS is a number");
        let path = std::env::var("PROXY_BENCH_PROFILE_PATH").unwrap_or_else(|_| "jwt".into());
        if path == "compare" {
            let rounds: usize = std::env::var("PROXY_BENCH_ROUNDS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(3);
            // Each set measures the paths in turns (see `in_turns`).
            let paths = [
                Path::new(&forwarder, &[]),
                Path::new(&warm_url, &dev),
                Path::new(&jwt_url, &bearer),
            ];
            for _ in 0..rounds {
                let r = in_turns(&paths, 32, 200, (n / 200).max(1)).await;
                let one = in_turns(&paths, 1, 20, (n / 200).max(1)).await;
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                println!(
                    "concurrency 32: bare {:.0}/s ({:.1} us CPU), dev {:.2} of it ({:.1} us), jwt {:.2} ({:.1} us); concurrency 1: bare p50 {:.1} us ({:.1} us CPU), dev {:+.1} us ({:.1} us CPU), jwt {:+.1} us ({:.1} us CPU)",
                    r[0].per_second, us(r[0].cpu_per_call),
                    r[1].per_second / r[0].per_second, us(r[1].cpu_per_call),
                    r[2].per_second / r[0].per_second, us(r[2].cpu_per_call),
                    us(one[0].p50), us(one[0].cpu_per_call),
                    us(one[1].p50) - us(one[0].p50), us(one[1].cpu_per_call),
                    us(one[2].p50) - us(one[0].p50), us(one[2].cpu_per_call),
                );
            }
            return;
        }
        // `PROXY_BENCH_CONCURRENCY` sets the concurrency (32 by default).
        let concurrency: usize = std::env::var("PROXY_BENCH_CONCURRENCY")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(32);
        let r = match path.as_str() {
            "bare" => measure(&forwarder, &[], "fast", concurrency, n).await,
            "dev" => measure(&warm_url, &dev, "fast", concurrency, n).await,
            _ => measure(&jwt_url, &bearer, "fast", concurrency, n).await,
        };
        println!(
            "{n} warm calls ({path}) at concurrency {concurrency}: {:.0} calls/s",
            r.per_second
        );
        return;
    }

    println!("## Proxy overhead: tools/call, fast local upstream (2026-07-28, stateless)\n");
    println!("Load generator, gateway and upstream share this machine's cores, so each row also pays for the others' work. The bare forwarder (axum in, reqwest out, nothing else) is the floor for any HTTP proxy in this setting; the last column compares the gateway with it.\n");
    println!("| concurrency | path | p50 | p99 | added p50 | added p99 | calls/s | throughput vs direct | throughput vs bare forwarder |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // The fast paths in turns (200 rounds of a few milliseconds each);
    // the path through moto, two orders of magnitude slower, on its own.
    for (concurrency, block, n) in [(1usize, 20usize, 4000usize), (32, 200, 40_000)] {
        let paths = [
            Path::new(&up, &[]),
            Path::new(&forwarder, &[]),
            Path::new(&warm_url, &dev),
            Path::new(&jwt_url, &bearer),
        ];
        let runs = in_turns(&paths, concurrency, block, n / block).await;
        let [direct, bare, w, j] = &runs[..] else {
            unreachable!("four paths")
        };
        let c = measure(&cold_url, &dev, "fast", concurrency, n / 40).await;
        println!(
            "| {concurrency} | direct | {} | {} | | | {:.0} | 1.00 | |",
            ms(direct.p50),
            ms(direct.p99),
            direct.per_second
        );
        for (name, r) in [
            ("bare forwarder (no gateway logic)", bare),
            ("gateway, grant cached (warm)", w),
            ("gateway, warm, inbound JWT checked (RS256)", j),
            ("gateway, grant read from DynamoDB (moto) per call", &c),
        ] {
            println!(
                "| {concurrency} | {name} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
                ms(r.p50),
                ms(r.p99),
                ms(r.p50.saturating_sub(direct.p50)),
                ms(r.p99.saturating_sub(direct.p99)),
                r.per_second,
                r.per_second / direct.per_second,
                r.per_second / bare.per_second
            );
        }
    }

    println!(
        "\nPeak RSS of this whole benchmark process (load generator, gateway and upstream together, an upper bound for the gateway) after the concurrency-32 runs: {}.",
        peak_rss()
    );

    println!("\n## Heap allocations per tools/call\n");
    println!("Counted in an untimed pass of 1000 calls, one at a time, in the whole process (load generator, path and upstream): unlike throughput on a shared machine, these numbers repeat to within one or two. The gateway's own share is its row minus the bare forwarder's.\n");
    println!("| path | allocations per call | bytes allocated per call | allocations beyond the bare forwarder |");
    println!("|---|---|---|---|");
    let (bare_allocs, _) = allocations(&forwarder, &[], 1000).await;
    for (name, url, headers) in [
        ("direct", up.as_str(), &[][..]),
        ("bare forwarder", forwarder.as_str(), &[][..]),
        ("gateway, grant cached (warm)", warm_url.as_str(), &dev[..]),
        (
            "gateway, warm, inbound JWT checked",
            jwt_url.as_str(),
            &bearer[..],
        ),
    ] {
        let (allocs, bytes) = allocations(url, headers, 1000).await;
        let beyond = match name {
            "direct" => String::new(),
            "bare forwarder" => "0".into(),
            _ => format!("{:.0}", allocs - bare_allocs),
        };
        println!("| {name} | {allocs:.0} | {bytes:.0} | {beyond} |");
    }

    println!("\n## AWS requests per tools/call\n");
    println!(
        "| path | calls | DynamoDB GetItem | DynamoDB Query | DynamoDB other | Secrets Manager |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, url) in [
        ("warm (grant cached)", &warm_url),
        ("GRANT_CACHE_SECONDS=0", &cold_url),
    ] {
        counts.lock().unwrap().clear();
        let n = 200;
        measure(url, &dev, "fast", 1, n).await;
        let c = counts.lock().unwrap().clone();
        let per = |k: &str| *c.get(k).unwrap_or(&0) as f64 / (n + 20) as f64;
        let other: usize = c
            .iter()
            .filter(|(k, _)| {
                k.starts_with("DynamoDB") && !k.ends_with(".GetItem") && !k.ends_with(".Query")
            })
            .map(|(_, v)| *v)
            .sum();
        let sm: usize = c
            .iter()
            .filter(|(k, _)| k.starts_with("secretsmanager"))
            .map(|(_, v)| *v)
            .sum();
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            n + 20,
            per("DynamoDB_20120810.GetItem"),
            per("DynamoDB_20120810.Query"),
            other as f64 / (n + 20) as f64,
            sm as f64 / (n + 20) as f64
        );
    }

    println!("\n## tools/list across targets that each take 50 ms\n");
    let slow = gateway_tests::Gateway::start(&[]).await;
    let mut ups = vec![];
    for _ in 0..10 {
        ups.push(upstream(Duration::from_millis(50)).await);
    }
    let list = |url: String| async move {
        let http = gateway_tests::http();
        let t = Instant::now();
        let res = http
            .post(&url)
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-06-18")
            .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string())
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        (
            t.elapsed(),
            v["result"]["tools"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0),
        )
    };
    // One warm-up, then the best of 5 (and the number of tools listed).
    let best_of_5 = |url: String| async move {
        list(url.clone()).await;
        let mut best = (Duration::MAX, 0);
        for _ in 0..5 {
            let (d, k) = list(url.clone()).await;
            best = (best.0.min(d), k);
        }
        best
    };
    let put = |i: usize, url: &str| Target {
        name: format!("t{i}"),
        display_name: None,
        mcp_url: url.to_owned(),
        auth: TargetAuth::None,
        tool_prefix: None,
        return_to: Default::default(),
        tool_catalog: Default::default(),
    };
    slow.state.targets.put(&put(0, &ups[0])).await.unwrap();
    let (one_server, _) = gateway_on(&slow, &slow.moto.endpoint, &[]).await;
    let (one, tools_one) = best_of_5(format!("{}/mcp", one_server.base)).await;
    for (i, u) in ups.iter().enumerate().skip(1) {
        slow.state.targets.put(&put(i, u)).await.unwrap();
    }
    let (ten_server, _) = gateway_on(&slow, &slow.moto.endpoint, &[]).await;
    let (ten, tools_ten) = best_of_5(format!("{}/mcp", ten_server.base)).await;
    println!("| targets | tools listed | tools/list (best of 5) | ratio to one target | sum of the targets' delays |");
    println!("|---|---|---|---|---|");
    println!("| 1 | {tools_one} | {} | 1.00 | 50 ms |", ms(one));
    println!(
        "| 10 | {tools_ten} | {} | {:.2} | 500 ms |",
        ms(ten),
        ten.as_secs_f64() / one.as_secs_f64()
    );
}
