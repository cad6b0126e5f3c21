//! Resource updates for clients: a 2025 client's subscriptions, which its
//! standalone event stream (`GET /mcp`) carries, and a 2026-07-28 client's
//! `subscriptions/listen` stream (the upstreams' own listen streams).
//!
//! A 2025 subscription lives in the user's 2025 session with the
//! resource's upstream (see `Gateway::subscription`), which sends its
//! updates on that session's own standalone stream. The client's stream
//! opens the upstream streams of the user's 2025 sessions, and looks again
//! for sessions opened since (a subscription may be made after the client
//! opened its stream, possibly on another instance; the pause starts at
//! [`LOOK_AGAIN`] and doubles while nothing new is found, up to 30
//! seconds), so nothing is kept but the sessions the store already holds.
//! An upstream stream that ends is reopened after a pause that doubles
//! each time (up to [`MOST_PAUSE`]); one the upstream refuses outright
//! (no such session, no GET) is not reopened on that session. Each update
//! passes the policies' read check, for the client reading it (the user's
//! sessions serve all the user's clients).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Gateway;
use crate::domain::Target;
use crate::upstream::UpstreamError;

/// How soon the user's upstream sessions are looked up again at first;
/// each look that finds no new one doubles the pause, up to
/// [`MOST_LOOK_PAUSE`] (each look reads the session store per target).
pub const LOOK_AGAIN: Duration = Duration::from_secs(2);
/// The longest pause between two looks for the user's upstream sessions.
const MOST_LOOK_PAUSE: Duration = Duration::from_secs(30);
/// The longest pause before an ended upstream stream is reopened.
const MOST_PAUSE: Duration = Duration::from_secs(60);

/// An upstream stream of the client's, and when it may be opened again.
struct Opened {
    session: String,
    /// When it was last opened.
    opened_at: Instant,
    /// Streams of this session that ended soon after opening, in a row.
    ended: u32,
    /// Not reopened before this (none: not while it is the session).
    again_at: Option<Instant>,
}

impl Gateway<'_> {
    /// Passes the resource updates of the caller's upstream sessions to
    /// `out` until `out` closes or `until` passes.
    pub async fn relay_updates(&self, out: &mpsc::Sender<Value>, until: Instant) {
        let mut known: HashMap<String, Opened> = HashMap::new();
        let mut streams = FuturesUnordered::new();
        let deadline = tokio::time::sleep_until(until);
        tokio::pin!(deadline);
        let mut pause = LOOK_AGAIN;
        loop {
            let mut opened_any = false;
            if let Ok(targets) = self.exposed_targets().await {
                for e in targets.iter() {
                    let target = e.target.clone();
                    let name = target.name.clone();
                    let Some(found) = self
                        .state
                        .upstream
                        .legacy_session(self.caller.sub(), &name)
                        .await
                    else {
                        continue;
                    };
                    let wait = known.get(&name).filter(|o| o.session == found.session);
                    match wait.map(|o| o.again_at) {
                        // Open now, or refused for good on this session.
                        Some(Some(at)) if at > Instant::now() => continue,
                        Some(None) => continue,
                        _ => {}
                    }
                    let ended = wait.map_or(0, |o| o.ended);
                    known.insert(
                        name.clone(),
                        Opened {
                            session: found.session.clone(),
                            opened_at: Instant::now(),
                            ended,
                            // Not reopened while open.
                            again_at: None,
                        },
                    );
                    opened_any = true;
                    streams.push(async move {
                        let outcome = self.stream_of(&target, &found, out).await;
                        (name, found.session, outcome)
                    });
                }
            }
            pause = if opened_any {
                LOOK_AGAIN
            } else {
                (pause * 2).min(MOST_LOOK_PAUSE)
            };
            // Look no later than a stream may be reopened.
            let now = Instant::now();
            let reopen = known
                .values()
                .filter_map(|o| o.again_at)
                .filter(|at| *at > now)
                .min();
            let next = reopen.map_or(now + pause, |at| at.min(now + pause));
            let look_again = tokio::time::sleep_until(next);
            tokio::pin!(look_again);
            loop {
                tokio::select! {
                    _ = out.closed() => return,
                    _ = &mut deadline => return,
                    _ = &mut look_again => break,
                    Some((name, session, outcome)) = streams.next() => {
                        let Some(o) = known.get_mut(&name).filter(|o| o.session == session) else {
                            continue;
                        };
                        // A stream that lasted is not a failure in a row
                        // (an upstream or a proxy may end long streams).
                        if o.opened_at.elapsed() >= MOST_PAUSE {
                            o.ended = 0;
                        }
                        o.ended += 1;
                        o.again_at = match outcome {
                            Err(e) if gone(&e) => {
                                tracing::info!(target = %name, error = %e, "an upstream refused its standalone stream; not reopened");
                                None
                            }
                            outcome => {
                                if let Err(e) = outcome {
                                    tracing::info!(target = %name, error = %e, "an upstream's standalone stream failed");
                                }
                                let pause = LOOK_AGAIN.saturating_mul(1 << o.ended.min(6));
                                Some(Instant::now() + pause.min(MOST_PAUSE))
                            }
                        };
                    }
                }
            }
        }
    }

    /// Relays one upstream session's standalone stream, with the caller's
    /// credentials for the target, each update read-checked.
    async fn stream_of(
        &self,
        target: &Target,
        found: &crate::upstream::FoundSession,
        out: &mpsc::Sender<Value>,
    ) -> Result<(), UpstreamError> {
        let credentials = self
            .credentials(target)
            .await
            .map_err(|b| UpstreamError::Protocol(b.reason()))?;
        let call = self.bare_call(target, &credentials);
        let (tx, mut rx) = mpsc::channel::<Value>(16);
        let relay = async {
            let outcome = self
                .state
                .upstream
                .relay_standalone(&call, found, &tx)
                .await;
            drop(tx);
            outcome
        };
        let pass = async {
            while let Some(update) = rx.recv().await {
                let Some(uri) = update
                    .get("params")
                    .and_then(|p| p.get("uri"))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                if !self.may_read(target, uri).await {
                    continue;
                }
                if out.send(update).await.is_err() {
                    return;
                }
            }
        };
        let (outcome, ()) = tokio::join!(relay, pass);
        outcome
    }

    /// True when the policies let the caller read `uri` of `target`.
    async fn may_read(&self, target: &Target, uri: &str) -> bool {
        let item = crate::policy::Resource::Resource {
            target: &target.name,
            uri,
        };
        self.permit("resources/read", &item, None).await.is_ok()
    }

    /// A 2026-07-28 client's `subscriptions/listen` for updates of `uris`:
    /// the URIs honored, by target (each a resource of a target that
    /// speaks 2026-07-28, which the caller may read; the rest are left out
    /// of the acknowledgement).
    pub async fn listen_targets(&self, uris: &[String]) -> Vec<(Arc<Target>, Vec<String>)> {
        let Ok(exposed) = self.exposed_targets().await else {
            return vec![];
        };
        let owners = self.owners_of_uris(&exposed, uris).await;
        let mut groups: Vec<(Arc<Target>, Vec<String>)> = vec![];
        for (uri, owner) in uris.iter().zip(owners) {
            let Some(e) = owner else { continue };
            if !self.may_read(&e.target, uri).await {
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
    /// `out` until `out` closes, every upstream stream has ended, or
    /// `until` passes; true when the stream ends on the gateway's side (the
    /// client is then told it ended).
    pub async fn relay_listen(
        &self,
        groups: &[(Arc<Target>, Vec<String>)],
        out: &mpsc::Sender<Value>,
        until: Instant,
    ) -> bool {
        let mut streams: FuturesUnordered<_> = groups
            .iter()
            .map(|(target, uris)| async move {
                let Ok(credentials) = self.credentials(target).await else {
                    return;
                };
                let call = self.bare_call(target, &credentials);
                if let Err(e) = self.state.upstream.listen(&call, uris, out).await {
                    tracing::info!(target = %target.name, error = %e, "an upstream's listen stream ended");
                }
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
                next = streams.next() => if next.is_none() { return true },
            }
        }
    }
}

/// True for an upstream's refusal of a session's stream that retrying
/// the same session will not change (the session is gone, or the upstream
/// serves no standalone stream).
fn gone(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Status(404 | 405)
            | UpstreamError::Rpc {
                status: 404 | 405,
                ..
            }
    )
}
