//! The scheduled function's run: refresh every grant that comes due within
//! the window, a bounded number at a time, and report counts as metrics.

use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use super::{LeasePolicy, Outcome, RefreshRequest, Refresher};
use crate::error::Error;

/// Counts of one scheduled run.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Grants found due.
    pub due: usize,
    /// Refreshed by this run.
    pub refreshed: usize,
    /// Already refreshed by someone else.
    pub already_fresh: usize,
    /// Skipped: another instance held the lease.
    pub lease_lost: usize,
    /// Refresh rejected: consent needed.
    pub needs_consent: usize,
    /// Passing failures, left for a later run.
    pub transient_failure: usize,
    /// Due grants not started because the deadline came near.
    pub skipped_deadline: usize,
}

impl Summary {
    /// The summary as a CloudWatch Embedded Metric Format document.
    pub fn to_emf(&self, now_ms: i64) -> serde_json::Value {
        serde_json::json!({
            "_aws": {
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "McpOAuthGateway",
                    "Dimensions": [["Function"]],
                    "Metrics": [
                        {"Name": "Due", "Unit": "Count"},
                        {"Name": "Refreshed", "Unit": "Count"},
                        {"Name": "AlreadyFresh", "Unit": "Count"},
                        {"Name": "LeaseLost", "Unit": "Count"},
                        {"Name": "NeedsConsent", "Unit": "Count"},
                        {"Name": "TransientFailure", "Unit": "Count"},
                        {"Name": "SkippedDeadline", "Unit": "Count"}
                    ]
                }]
            },
            "Function": "token-refresh",
            "Due": self.due,
            "Refreshed": self.refreshed,
            "AlreadyFresh": self.already_fresh,
            "LeaseLost": self.lease_lost,
            "NeedsConsent": self.needs_consent,
            "TransientFailure": self.transient_failure,
            "SkippedDeadline": self.skipped_deadline,
        })
    }
}

/// Settings of one scheduled run.
#[derive(Debug, Clone, Copy)]
pub struct ScheduledRun {
    /// Most grants taken in one run.
    pub limit: usize,
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// No new refresh starts after this instant.
    pub stop_at: tokio::time::Instant,
    /// Lease timing.
    pub policy: LeasePolicy,
}

impl Refresher {
    /// One scheduled run: refreshes the grants whose access token expires within
    /// the window.
    pub async fn run_scheduled(&self, owner: &str, run: ScheduledRun) -> Result<Summary, Error> {
        let now = self.clock.now();
        let window = self.window.as_secs() as i64;
        let due = self.grants.due_for_refresh(now + window, run.limit).await?;
        let mut summary = Summary {
            due: due.len(),
            ..Summary::default()
        };
        let outcomes: Vec<Option<Outcome>> = futures::stream::iter(due)
            .map(|key| async move {
                if tokio::time::Instant::now() >= run.stop_at {
                    return None;
                }
                let req = RefreshRequest {
                    sub: &key.sub,
                    target: &key.target,
                    owner,
                    margin: window,
                    force_from_version: None,
                    seen_version: None,
                    wait_for_winner: false,
                    policy: run.policy,
                };
                Some(self.refresh_grant(req).await)
            })
            .buffer_unordered(run.concurrency.max(1))
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                None => summary.skipped_deadline += 1,
                Some(Outcome::Refreshed(_)) => summary.refreshed += 1,
                Some(Outcome::AlreadyFresh(_)) | Some(Outcome::NotFound) => {
                    summary.already_fresh += 1
                }
                Some(Outcome::LeaseLost) => summary.lease_lost += 1,
                Some(Outcome::NeedsConsent) => summary.needs_consent += 1,
                Some(Outcome::Transient(why)) => {
                    tracing::warn!(reason = %why, "refresh failed; will retry on a later run");
                    summary.transient_failure += 1
                }
            }
        }
        Ok(summary)
    }

    /// Handles one EventBridge scheduled event: a scheduled run that stops
    /// taking new work `safety` before the invocation's `remaining` time runs
    /// out. Returns the summary, which is also logged as EMF metrics.
    pub async fn handle_scheduled_event(
        &self,
        event: &serde_json::Value,
        remaining: Duration,
        concurrency: usize,
    ) -> Result<Summary, Error> {
        let safety = Duration::from_secs(5).min(remaining / 4);
        let run = ScheduledRun {
            limit: 10_000,
            concurrency,
            stop_at: tokio::time::Instant::now() + remaining.saturating_sub(safety),
            policy: LeasePolicy::default(),
        };
        let owner = format!("scheduler-{}", crate::crypto::random_token(8));
        tracing::info!(
            event_id = event.get("id").and_then(|v| v.as_str()).unwrap_or("-"),
            source = event.get("source").and_then(|v| v.as_str()).unwrap_or("-"),
            "scheduled refresh starting"
        );
        let summary = self.run_scheduled(&owner, run).await?;
        let now_ms = self.clock.now() * 1000;
        // EMF: CloudWatch turns this log line into metrics.
        println!("{}", summary.to_emf(now_ms));
        tracing::info!(?summary, "scheduled refresh finished");
        Ok(summary)
    }
}
