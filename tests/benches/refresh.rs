//! Benchmark: one scheduled invocation refreshing N due grants (default
//! 1,000; `BENCH_GRANTS`) under the lease protocol, against moto_server and a
//! fast local token endpoint, beside a baseline of the same number of token
//! requests made directly at the same concurrency. Prints a table.
//!
//!     cargo bench -p gateway-tests --bench refresh

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gateway_shared::tokens::{LeasePolicy, ScheduledRun};
use gateway_tests::{stack_target_for_fake, Gateway};

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);

    // A fast token endpoint: every refresh gets new tokens.
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/token", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        let c = counter.clone();
        async move {
            let i = c.fetch_add(1, Ordering::Relaxed);
            axum::Json(serde_json::json!({
                "access_token": format!("access-{i}"), "refresh_token": format!("refresh-{i}"),
                "token_type": "Bearer", "expires_in": 3600
            }))
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let gw = Gateway::start(&[("REFRESH_SHARDS", "16")]).await;
    gw.state
        .targets
        .put(&stack_target_for_fake(&token_url))
        .await
        .unwrap();
    let now = gw.state.clock.now();
    let seed = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let g = gw.state.grants.clone();
            async move {
                let grant = gateway_tests::refreshable_grant(
                    &format!("user-{i}"),
                    "fake",
                    "old",
                    &format!("rt-{i}"),
                    // Hour-long tokens with a minute left.
                    now + 60,
                    now - 3_540,
                );
                g.create(&grant).await.unwrap();
            }
        })
        .await;
    let seeded = seed.elapsed();

    // Baseline: the same number of token requests, directly, same concurrency.
    let http = gateway_shared::state::http_client();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |_| {
            let http = http.clone();
            let url = token_url.clone();
            async move {
                http.post(&url)
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
                    .send()
                    .await
                    .unwrap();
            }
        })
        .await;
    let baseline = started.elapsed();
    let before = hits.load(Ordering::Relaxed);

    let run = ScheduledRun {
        limit: 10_000,
        concurrency,
        stop_at: tokio::time::Instant::now() + Duration::from_secs(900),
        policy: LeasePolicy::default(),
    };
    let started = Instant::now();
    let summary = gw.state.tokens.run_scheduled("bench", run).await.unwrap();
    let scheduled = started.elapsed();
    let requests = hits.load(Ordering::Relaxed) - before;

    // Storage alone: take and release the lease of every grant (as many
    // conditional writes as a refresh makes: lease, then tokens with the
    // release), same concurrency.
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let g = gw.state.grants.clone();
            async move {
                let sub = format!("user-{i}");
                g.acquire_lease(&sub, "fake", "bench-2", now, now + 15)
                    .await
                    .unwrap();
                g.release_lease(&sub, "fake", "bench-2").await.unwrap();
            }
        })
        .await;
    let storage = started.elapsed();

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("## Scheduled refresh: {n} due grants in one invocation (concurrency {concurrency}, moto_server, a fast local token endpoint)\n");
    println!("| measure | time | per second | ratio to baseline |");
    println!("|---|---|---|---|");
    println!(
        "| baseline: {n} token requests, direct | {:.2} s | {:.0} | 1.00 |",
        baseline.as_secs_f64(),
        rate(baseline)
    );
    println!(
        "| scheduled run: query, lease, refresh, write tokens and release | {:.2} s | {:.0} | {:.2} |",
        scheduled.as_secs_f64(),
        rate(scheduled),
        scheduled.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "| storage alone: lease and release each grant | {:.2} s | {:.0} | {:.2} |",
        storage.as_secs_f64(),
        rate(storage),
        storage.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "| (seeding {n} grants) | {:.2} s | {:.0} | |",
        seeded.as_secs_f64(),
        rate(seeded)
    );
    println!("\nsummary: {summary:?}; token requests: {requests}");
    assert_eq!(summary.refreshed, n, "every due grant refreshed");
    assert_eq!(requests, n, "one token request per grant");
}
