//! Benchmark: tool search over a large catalog, each figure beside its
//! baseline from the same run.
//!
//! 100 targets × 1,000 tools (`BENCH_TARGETS`, `BENCH_TOOLS`), generated
//! with descriptions and parameters, remembered as the targets' catalogs in
//! the in-memory store; the gateway's Router on a local listener.
//!
//! 1. `gateway___search_tools` through the gateway (HTTP, warm index)
//!    against `ping` through the same Router (the request's fixed cost) and
//!    against a plain scan of every tool for the query's words (what a
//!    client filtering the whole listing would do, in process).
//! 2. The index build (once per catalog version per instance).
//! 3. `tools/list` in search-only mode (`TOOLS_LISTING=search`) and a
//!    full listing of the cached catalogs.
//! 4. Resident memory of the process: the catalogs, then with the index.
//! 5. Cedar policy evaluation of one call with 100 policies, beside the
//!    same with one policy.
//!
//!     cargo bench -p gateway-tests --bench catalog

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_shared::adapters::memory::{MemoryKeys, MemoryStore};
use gateway_shared::domain::{Target, TargetAuth};
use gateway_shared::ports::{SystemClock, TargetCatalog};
use gateway_shared::search::words;
use gateway_shared::{AppState, Config};
use gateway_tests::GatewayServer;
use serde_json::{json, Value};

const KEYS: &str = r#"{"current":"k1","k1":"0123456789abcdefghijklmnopqrstuvwxyzABCD"}"#;

/// A small deterministic generator (no dependency for randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, from: &'a [String]) -> &'a str {
        &from[(self.next() as usize) % from.len()]
    }
}

/// A vocabulary of 3,000 pronounceable words.
fn vocabulary(rng: &mut Lcg) -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "dor", "fen", "gar",
        "hul", "jin", "mar", "nos", "pel", "rak", "sel", "tor", "ul", "ven", "wis", "yar",
    ];
    (0..3000)
        .map(|_| {
            let n = 2 + rng.next() % 2;
            (0..n)
                .map(|_| SYLLABLES[(rng.next() as usize) % SYLLABLES.len()])
                .collect()
        })
        .collect()
}

fn tool(rng: &mut Lcg, vocab: &[String], i: usize) -> Value {
    let name = format!("{}_{}_{i}", rng.pick(vocab), rng.pick(vocab));
    let description: Vec<&str> = (0..20).map(|_| rng.pick(vocab)).collect();
    let props: serde_json::Map<String, Value> = (0..4)
        .map(|_| {
            (
                rng.pick(vocab).to_owned(),
                json!({"type": "string", "description": format!("The {} to {}.", rng.pick(vocab), rng.pick(vocab))}),
            )
        })
        .collect();
    json!({
        "name": name,
        "description": description.join(" "),
        "inputSchema": {"type": "object", "properties": props},
    })
}

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn state(targets: impl Iterator<Item = Target>, listing: &str) -> AppState {
    let vars = [
        ("TABLE_NAME", "bench"),
        ("KEYSET_SECRET_ARN", "keys"),
        ("INBOUND_AUTH_MODE", "dev"),
        ("PUBLIC_BASE_URL", "http://127.0.0.1"),
        ("TOOLS_LISTING", listing),
        ("TARGETS_CACHE_SECONDS", "3600"),
    ];
    let config = Config::from_lookup(|k| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let store = MemoryStore::new();
    for t in targets {
        store.put(&t).await.unwrap();
    }
    AppState::in_memory(
        config,
        store,
        Arc::new(MemoryKeys::new(KEYS).unwrap()),
        Arc::new(SystemClock),
    )
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> (Duration, Value) {
    let start = Instant::now();
    let res = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", body["method"].as_str().unwrap());
    let res = match body["params"]["name"].as_str() {
        Some(name) => res.header("mcp-name", name),
        None => res,
    };
    let res = res.json(body).send().await.unwrap();
    let v: Value = res.json().await.unwrap();
    (start.elapsed(), v)
}

fn modern(method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n_targets: usize = std::env::var("BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let n_tools: usize = std::env::var("BENCH_TOOLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let queries: usize = 300;
    let mut rng = Lcg(42);
    let vocab = vocabulary(&mut rng);
    let rss_start = rss_mb();
    let mut raw_bytes = 0usize;
    let targets = (0..n_targets).map(|t| {
        let target = Target {
            name: format!("t{t}"),
            display_name: None,
            mcp_url: "http://127.0.0.1:9/mcp".into(),
            auth: TargetAuth::None,
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: (0..n_tools)
                .map(|i| tool(&mut rng, &vocab, i).into())
                .collect(),
        };
        raw_bytes += serde_json::to_string(&target.tool_catalog)
            .map(|s| s.len())
            .unwrap_or(0);
        target
    });
    let state = state(targets, "search").await;
    let (listener, base) = GatewayServer::bind().await;
    let _server = GatewayServer::serve(listener, base.clone(), state.clone());
    let url = format!("{base}/mcp");
    let http = reqwest::Client::new();
    // Warm: the targets cache.
    post(&http, &url, &modern("ping", json!({}))).await;
    let rss_catalog = rss_mb();

    // The first search builds the index.
    let first = modern(
        "tools/call",
        json!({"name": "gateway___search_tools", "arguments": {"query": vocab[0]}}),
    );
    let (build, answer) = post(&http, &url, &first).await;
    assert!(
        answer["result"]["structuredContent"]["tools"].is_array(),
        "{answer}"
    );
    let rss_index = rss_mb();

    let query_texts: Vec<String> = (0..queries)
        .map(|_| {
            let n = 2 + rng.next() % 3;
            (0..n)
                .map(|_| rng.pick(&vocab).to_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut search = vec![];
    let mut ping = vec![];
    let mut hits_total = 0;
    for q in &query_texts {
        let body = modern(
            "tools/call",
            json!({"name": "gateway___search_tools", "arguments": {"query": q, "limit": 10}}),
        );
        let (d, v) = post(&http, &url, &body).await;
        hits_total += v["result"]["structuredContent"]["tools"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        search.push(d);
        ping.push(post(&http, &url, &modern("ping", json!({}))).await.0);
    }
    // Baseline: scan every tool's text for the query's words, in process.
    let all = state.targets.list().await.unwrap();
    let texts: Vec<(String, String)> = all
        .iter()
        .flat_map(|t| {
            t.tool_catalog.iter().map(|tool| {
                let tool = tool.value();
                (
                    tool["name"].as_str().unwrap_or_default().to_owned(),
                    format!("{} {}", tool["name"], tool["description"]).to_lowercase(),
                )
            })
        })
        .collect();
    let mut scan = vec![];
    for q in &query_texts {
        let start = Instant::now();
        let terms = words(q);
        let mut scored: Vec<(usize, &str)> = texts
            .iter()
            .map(|(name, text)| {
                (
                    terms.iter().filter(|t| text.contains(t.as_str())).count(),
                    name.as_str(),
                )
            })
            .filter(|(s, _)| *s > 0)
            .collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        scored.truncate(10);
        std::hint::black_box(&scored);
        scan.push(start.elapsed());
    }
    let (list_search_only, listed) = post(&http, &url, &modern("tools/list", json!({}))).await;
    let own = listed["result"]["tools"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let full_state = state_from(&all).await;
    let (flistener, fbase) = GatewayServer::bind().await;
    let _full = GatewayServer::serve(flistener, fbase.clone(), full_state);
    let furl = format!("{fbase}/mcp");
    post(&http, &furl, &modern("ping", json!({}))).await;
    let (list_full, full) = post(&http, &furl, &modern("tools/list", json!({}))).await;
    let full_count = full["result"]["tools"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);

    for v in [&mut search, &mut ping, &mut scan] {
        v.sort();
    }
    println!("## Tool search");
    println!();
    println!(
        "{n_targets} targets × {n_tools} tools ({} in all; generated names, 20-word descriptions, 4 parameters each), cached catalogs in the in-memory store, the proxy's Router on a local listener, {queries} queries of 2-4 words, limit 10 ({:.1} hits per query on average).",
        n_targets * n_tools,
        hits_total as f64 / queries as f64
    );
    println!();
    println!("| measure | p50 | p99 | baseline (same run) | ratio (p50) |");
    println!("|---|---|---|---|---|");
    println!(
        "| `gateway___search_tools` over HTTP, warm index | {:.2} ms | {:.2} ms | `ping` over HTTP: {:.2} ms | {:.1}× |",
        percentile(&search, 0.5),
        percentile(&search, 0.99),
        percentile(&ping, 0.5),
        percentile(&search, 0.5) / percentile(&ping, 0.5)
    );
    println!(
        "| search added to a request (p50 search − p50 ping) | {:.2} ms | | scan of every tool in process: {:.2} ms | {:.2}× |",
        percentile(&search, 0.5) - percentile(&ping, 0.5),
        percentile(&scan, 0.5),
        (percentile(&search, 0.5) - percentile(&ping, 0.5)) / percentile(&scan, 0.5)
    );
    println!(
        "| first search (builds the index) | {:.0} ms | | | |",
        build.as_secs_f64() * 1e3
    );
    println!(
        "| `tools/list`, `TOOLS_LISTING=search` ({own} tools) | {:.2} ms | | full listing of the cached catalogs ({full_count} tools): {:.0} ms | |",
        list_search_only.as_secs_f64() * 1e3,
        list_full.as_secs_f64() * 1e3
    );
    println!();
    println!("| resident memory | MB |");
    println!("|---|---|");
    println!(
        "| the catalogs as JSON text (for scale) | {:.0} |",
        raw_bytes as f64 / 1e6
    );
    println!(
        "| the catalogs as held (LZ4 blocks of {} tools) | {:.0} |",
        gateway_shared::domain::catalog::BLOCK_TOOLS,
        all.iter()
            .map(|t| t.tool_catalog.compressed_bytes())
            .sum::<usize>() as f64
            / 1e6
    );
    println!("| process at start | {rss_start:.0} |");
    println!("| with the catalogs cached (warm instance, search-only mode) | {rss_catalog:.0} |");
    println!("| with the search index too | {rss_index:.0} |");
    println!();

    let (hundred, allowed) = policy_times(100, 20_000);
    let (one, _) = policy_times(1, 20_000);
    println!("## Policy evaluation");
    println!();
    println!("One `tools/call` decision (principal with 2 groups, a tool in its target, arguments with 3 members), 20,000 calls, {allowed} allowed with 100 policies.");
    println!();
    println!("| policies | p50 | p99 | ratio to 1 policy (p50) |");
    println!("|---|---|---|---|");
    println!(
        "| 100 | {:.1} µs | {:.1} µs | {:.2}× |",
        percentile(&hundred, 0.5) * 1e3,
        percentile(&hundred, 0.99) * 1e3,
        percentile(&hundred, 0.5) / percentile(&one, 0.5)
    );
    println!(
        "| 1 | {:.1} µs | {:.1} µs | 1× |",
        percentile(&one, 0.5) * 1e3,
        percentile(&one, 0.99) * 1e3
    );
    println!();
}

/// Decides `calls` tool calls against `n` policies (permit per group and
/// target, one forbid, one condition on the arguments); per-call times.
fn policy_times(n: usize, calls: usize) -> (Vec<Duration>, usize) {
    use gateway_shared::policy::{Policies, Principal, Resource};
    let mut text = String::new();
    for i in 0..n.saturating_sub(2) {
        text.push_str(&format!(
            "permit(principal in Gateway::Group::\"g{i}\", action == Gateway::Action::\"tools/call\", resource in Gateway::Target::\"t{i}\");\n"
        ));
    }
    if n >= 2 {
        text.push_str("forbid(principal, action, resource == Gateway::Tool::\"t1___drop\");\n");
        text.push_str("permit(principal, action, resource in Gateway::Target::\"pay\") when { principal.client_id == \"agent\" && context.arguments.amount < 100 };\n");
    } else {
        text.push_str("permit(principal in Gateway::Group::\"g0\", action, resource in Gateway::Target::\"t0\");\n");
    }
    let set = Policies::parse(&text).unwrap();
    let groups: Vec<Vec<String>> = (0..16)
        .map(|i| vec![format!("g{}", i * 7 % 100), "staff".to_owned()])
        .collect();
    let mut rng = Lcg(7);
    let mut times = Vec::with_capacity(calls);
    let mut allowed = 0;
    let args = json!({"amount": 50, "memo": "rent", "tags": ["a", "b"]});
    for _ in 0..calls {
        let g = &groups[(rng.next() % 16) as usize];
        let target = format!("t{}", rng.next() % 100);
        let name = format!("{target}___tool{}", rng.next() % 1000);
        let who = Principal {
            sub: "user-1",
            groups: g,
            scopes: &[],
            client_id: Some("agent"),
        };
        let start = Instant::now();
        let v = set.decide(
            &who,
            "tools/call",
            &Resource::Tool {
                target: &target,
                name: &name,
            },
            Some(&args),
            1_780_000_000,
        );
        times.push(start.elapsed());
        allowed += usize::from(v.allowed);
    }
    times.sort();
    (times, allowed)
}

async fn state_from(all: &[Arc<Target>]) -> AppState {
    state(all.iter().map(|t| (**t).clone()), "all").await
}
