//! Resource updates for clients: a 2025 client's subscriptions, which its
//! standalone event stream (`GET /mcp`) carries, and a 2026-07-28 client's
//! `subscriptions/listen` stream (the upstreams' own listen streams).
//!
//! A subscription lives in the user's 2025 session with the resource's
//! upstream (see [`Gateway::subscription`]), which sends its updates on
//! that session's own standalone stream. The client's stream opens the
//! upstream streams of the user's 2025 sessions, and looks again every
//! [`LOOK_AGAIN`] for sessions opened since (a subscription is usually made
//! after the client opened its stream, possibly on another instance), so
//! nothing is kept but the sessions the store already holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Gateway;
use crate::domain::Target;

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

    /// A 2026-07-28 client's `subscriptions/listen` for updates of `uris`:
    /// the URIs honored, by target (each a resource of a target that
    /// speaks 2026-07-28, which the caller may read; the rest are left out
    /// of the acknowledgement).
    pub async fn listen_targets(&self, uris: &[String]) -> Vec<(Arc<Target>, Vec<String>)> {
        let Ok(exposed) = self.exposed_targets().await else {
            return vec![];
        };
        let mut groups: Vec<(Arc<Target>, Vec<String>)> = vec![];
        for uri in uris {
            let Some(e) = self.owner_of_uri(&exposed, uri).await else {
                continue;
            };
            let item = crate::policy::Resource::Resource {
                target: &e.target.name,
                uri,
            };
            if self.permit("resources/read", &item, None).await.is_err() {
                continue;
            }
            match groups.iter_mut().find(|(t, _)| t.name == e.target.name) {
                Some((_, u)) => u.push(uri.clone()),
                None => groups.push((e.target.clone(), vec![uri.clone()])),
            }
        }
        let mut honored = vec![];
        for (target, uris) in groups {
            let Ok(credentials) = self.credentials(&target).await else {
                continue;
            };
            let call = self.bare_call(&target, &credentials);
            if let Ok(true) = self.state.upstream.speaks_modern(&call).await {
                honored.push((target, uris));
            }
        }
        honored
    }

    /// Passes the updates of `groups` (from [`Self::listen_targets`]) to
    /// `out` until `out` closes or `until` passes; true when `until` passed
    /// (the client is told the stream ended).
    pub async fn relay_listen(
        &self,
        groups: &[(Arc<Target>, Vec<String>)],
        out: &mpsc::Sender<Value>,
        until: tokio::time::Instant,
    ) -> bool {
        let mut streams: FuturesUnordered<_> = groups
            .iter()
            .map(|(target, uris)| async move {
                let credentials = self.credentials(target).await.ok()?;
                let call = self.bare_call(target, &credentials);
                if let Err(e) = self.state.upstream.listen(&call, uris, out).await {
                    tracing::info!(target = %target.name, error = %e, "an upstream's listen stream ended");
                }
                Some(())
            })
            .collect();
        let deadline = tokio::time::sleep_until(until);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = out.closed() => return false,
                _ = &mut deadline => return true,
                // An upstream's stream that ends is not reopened: the
                // client listens again (no replay, as the spec says).
                next = streams.next(), if !streams.is_empty() => { let _ = next; }
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
