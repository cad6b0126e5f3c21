//! Where audit events are written: lines (standard output, a buffer), or
//! a CloudWatch Logs log group of their own with PutLogEvents, falling
//! back to standard output when the group does not take them.

use std::sync::Arc;

use serde_json::Value;

use super::{line_of, AuditEvent};
use crate::observe::LineSink;

/// Where audit events go.
#[derive(Clone)]
pub enum AuditSink {
    /// One JSON line per event (standard output, or a buffer).
    Lines(LineSink),
    /// A CloudWatch Logs log group of their own.
    CloudWatch(Arc<CloudWatchLogs>),
    /// Nowhere (`AUDIT=off`).
    Off,
}

/// A log group written with PutLogEvents, in a stream of this instance.
pub struct CloudWatchLogs {
    /// The log group (created by the deployment).
    pub group: String,
    /// This instance's stream (created on first use).
    pub stream: String,
    /// The region.
    pub region: String,
    /// The CloudWatch Logs endpoint (none: not a URL; events go to
    /// standard output).
    pub endpoint: Option<url::Url>,
    created: tokio::sync::OnceCell<()>,
    /// After a failure, events go to standard output until then (no request
    /// waits on a log group that is not answering).
    cooling_until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long events skip the log group after it failed.
const COOLDOWN: std::time::Duration = std::time::Duration::from_secs(60);

impl CloudWatchLogs {
    /// Writes to `group` in `region` through `endpoint` (none: the
    /// region's), in a new stream named after `function`.
    pub fn new(group: String, region: String, endpoint: Option<String>, function: &str) -> Self {
        let endpoint = endpoint.unwrap_or_else(|| format!("https://logs.{region}.amazonaws.com"));
        let endpoint = match url::Url::parse(&endpoint) {
            Ok(url) => Some(url),
            Err(e) => {
                tracing::error!(error = %e, "the CloudWatch Logs endpoint is not a URL; audit events go to standard output");
                None
            }
        };
        CloudWatchLogs {
            stream: format!("{function}/{}", crate::crypto::random_token(12)),
            group,
            region,
            endpoint,
            created: tokio::sync::OnceCell::new(),
            cooling_until: Default::default(),
        }
    }

    async fn call(
        &self,
        signer: &crate::upstream::UpstreamClient,
        action: &str,
        body: &Value,
    ) -> Result<(u16, String), String> {
        let url = self
            .endpoint
            .as_ref()
            .ok_or_else(|| "the endpoint is not a URL".to_owned())?;
        let headers = [
            ("content-type", "application/x-amz-json-1.1".to_owned()),
            ("x-amz-target", format!("Logs_20140328.{action}")),
        ];
        let res = signer
            .signed_post(
                "logs",
                &self.region,
                url,
                &headers,
                body.to_string(),
                Some(std::time::Duration::from_secs(3)),
            )
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        Ok((status, text))
    }

    async fn put(
        &self,
        signer: &crate::upstream::UpstreamClient,
        events: &[AuditEvent],
    ) -> Result<(), String> {
        self.created
            .get_or_try_init(|| async {
                let (status, text) = self
                    .call(
                        signer,
                        "CreateLogStream",
                        &serde_json::json!({"logGroupName": self.group, "logStreamName": self.stream}),
                    )
                    .await?;
                if status == 200 || text.contains("ResourceAlreadyExistsException") {
                    Ok(())
                } else {
                    Err(format!(
                        "CreateLogStream answered HTTP {status}: {}",
                        crate::telemetry::clean(&text, 200)
                    ))
                }
            })
            .await?;
        let now = crate::observe::now_ms();
        for batch in batches(events) {
            let log_events: Vec<Value> = batch
                .into_iter()
                .map(|message| serde_json::json!({"timestamp": now, "message": message}))
                .collect();
            let (status, text) = self
                .call(
                    signer,
                    "PutLogEvents",
                    &serde_json::json!({
                        "logGroupName": self.group,
                        "logStreamName": self.stream,
                        "logEvents": log_events,
                    }),
                )
                .await?;
            if status != 200 {
                return Err(format!(
                    "PutLogEvents answered HTTP {status}: {}",
                    crate::telemetry::clean(&text, 200)
                ));
            }
        }
        Ok(())
    }

    fn cooling(&self) -> bool {
        self.cooling_until
            .lock()
            .ok()
            .and_then(|c| *c)
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn cool_down(&self) {
        if let Ok(mut c) = self.cooling_until.lock() {
            *c = Some(std::time::Instant::now() + COOLDOWN);
        }
    }
}

impl AuditSink {
    /// Writes `events`; an event the log group does not take goes to
    /// standard output (never lost silently).
    pub async fn write(&self, signer: &crate::upstream::UpstreamClient, events: &[AuditEvent]) {
        if events.is_empty() {
            return;
        }
        match self {
            AuditSink::Off => {}
            AuditSink::Lines(sink) => {
                for e in events {
                    sink.write(&line_of(e));
                }
            }
            AuditSink::CloudWatch(logs) => {
                let failed = if logs.cooling() {
                    Err("the log group failed recently".to_owned())
                } else {
                    logs.put(signer, events).await
                };
                if let Err(why) = failed {
                    if !logs.cooling() {
                        logs.cool_down();
                    }
                    tracing::error!(group = %logs.group, error = %why, "audit events could not be written to their log group; written here instead");
                    for e in events {
                        LineSink::Stdout.write(&line_of(e));
                    }
                }
            }
        }
    }
}

/// PutLogEvents limits: events and bytes per request (each event counts
/// its message and 26 bytes).
const MAX_BATCH_EVENTS: usize = 1000;
const MAX_BATCH_BYTES: usize = 900 * 1024;

/// `events` as batches within PutLogEvents' limits.
fn batches(events: &[AuditEvent]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![];
    let mut bytes = 0;
    for e in events {
        let message = line_of(e);
        let size = message.len() + 26;
        let full = out
            .last()
            .is_none_or(|b| b.len() >= MAX_BATCH_EVENTS || bytes + size > MAX_BATCH_BYTES);
        if full {
            out.push(vec![]);
            bytes = 0;
        }
        bytes += size;
        if let Some(b) = out.last_mut() {
            b.push(message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_within_put_log_events_limits() {
        let small: Vec<AuditEvent> = (0..2500).map(|_| AuditEvent::new("x", "ok", 0)).collect();
        let b = batches(&small);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        let mut big = AuditEvent::new("x", "ok", 0);
        big.item = Some("y".repeat(300 * 1024));
        let b = batches(&[big.clone(), big.clone(), big.clone(), big]);
        assert!(b.len() >= 2, "{}", b.len());
        for batch in &b {
            assert!(
                batch.iter().map(|m| m.len() + 26).sum::<usize>() <= MAX_BATCH_BYTES
                    || batch.len() == 1
            );
        }
        assert!(batches(&[]).is_empty());
    }
}
