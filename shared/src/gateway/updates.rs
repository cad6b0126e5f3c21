//! The updates of a 2025 client's resource subscriptions: what its
//! standalone event stream (`GET /mcp`) carries.
//!
//! A subscription lives in the user's 2025 session with the resource's
//! upstream (see [`Gateway::subscription`]), which sends its updates on
//! that session's own standalone stream. The client's stream opens the
//! upstream streams of the user's 2025 sessions, and looks again every
//! [`LOOK_AGAIN`] for sessions opened since (a subscription is usually made
//! after the client opened its stream, possibly on another instance), so
//! nothing is kept but the sessions the store already holds.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Gateway;

/// How often the user's upstream sessions are looked up again.
pub const LOOK_AGAIN: Duration = Duration::from_secs(2);

impl Gateway<'_> {
    /// Passes the resource updates of the caller's upstream sessions to
    /// `out` until `out` closes or `until` passes.
    pub async fn relay_updates(&self, out: &mpsc::Sender<Value>, until: tokio::time::Instant) {
        let mut open: HashSet<String> = HashSet::new();
        let mut streams = FuturesUnordered::new();
        let deadline = tokio::time::sleep_until(until);
        tokio::pin!(deadline);
        loop {
            if let Ok(targets) = self.exposed_targets().await {
                for e in targets {
                    let name = e.target.name.clone();
                    if open.contains(&name) {
                        continue;
                    }
                    let Some((session, version)) = self
                        .state
                        .upstream
                        .legacy_session(&self.caller.sub, &name)
                        .await
                    else {
                        continue;
                    };
                    open.insert(name.clone());
                    streams.push(async move {
                        if let Err(e) = self.stream_of(&e.target, &session, &version, out).await {
                            tracing::info!(target = %name, error = %e, "an upstream's standalone stream ended");
                        }
                        name
                    });
                }
            }
            let look_again = tokio::time::sleep(LOOK_AGAIN);
            tokio::pin!(look_again);
            loop {
                tokio::select! {
                    _ = out.closed() => return,
                    _ = &mut deadline => return,
                    _ = &mut look_again => break,
                    Some(ended) = streams.next() => {
                        // Looked up again (and reopened) at the next look.
                        open.remove(&ended);
                    }
                }
            }
        }
    }

    /// Relays one upstream session's standalone stream, with the caller's
    /// credentials for the target.
    async fn stream_of(
        &self,
        target: &crate::domain::Target,
        session: &str,
        version: &str,
        out: &mpsc::Sender<Value>,
    ) -> Result<(), String> {
        let why = |b: super::Blocked| match b {
            super::Blocked::Consent(_) | super::Blocked::Interaction(_) => {
                "the user's consent is needed".to_owned()
            }
            super::Blocked::Retry(w) | super::Blocked::Upstream(w) => w,
        };
        let credentials = self.credentials(target).await.map_err(why)?;
        let call = self.bare_call(target, &credentials);
        self.state
            .upstream
            .relay_standalone(&call, session, version, out)
            .await
            .map_err(|e| e.to_string())
    }
}
