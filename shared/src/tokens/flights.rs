//! Within one instance, callers that need the same grant refreshed queue
//! behind one another and share the outcome, so an instance sends at most
//! one caller to the table's lease at a time.

use std::collections::HashMap;
use std::sync::Arc;

use super::Outcome;
use crate::domain::GrantStatus;

/// One instance's refreshes in flight, by grant: callers that need the same
/// grant refreshed queue here, and each finds the grant the one before it
/// got.
#[derive(Default)]
pub struct Flights {
    gates: std::sync::Mutex<HashMap<(String, String), Gate>>,
}

/// Where the callers for one grant queue, holding the last attempt's
/// outcome and when it ended.
type Gate = Arc<tokio::sync::Mutex<Option<(std::time::Instant, Outcome)>>>;

impl Flights {
    fn gate(&self, sub: &str, target: &str) -> Gate {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry((sub.to_owned(), target.to_owned()))
            .or_default()
            .clone()
    }

    fn done(&self, sub: &str, target: &str, gate: Gate) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        // The map's copy and ours: nobody else is queued.
        if Arc::strong_count(&gate) <= 2 {
            gates.remove(&(sub.to_owned(), target.to_owned()));
        }
    }

    /// Runs `refresh` for (`sub`, `target`) after the callers queued before
    /// this one, unless the grant one of them got is newer than the version
    /// `seen` and still usable at `now()`.
    pub(super) async fn run<F, Fut>(
        &self,
        sub: &str,
        target: &str,
        seen: u64,
        now: impl Fn() -> i64,
        refresh: F,
    ) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        let arrived = std::time::Instant::now();
        let gate = self.gate(sub, target);
        let outcome = {
            let mut last = gate.lock().await;
            match last.as_ref() {
                // An attempt ended while this caller waited: its outcome,
                // whatever it was, is this caller's too (a failure is not
                // retried once per queued caller).
                Some((ended, outcome))
                    if *ended >= arrived
                        && match outcome {
                            Outcome::Refreshed(g) | Outcome::AlreadyFresh(g) => g.version > seen,
                            _ => true,
                        } =>
                {
                    match outcome {
                        Outcome::Refreshed(g) => Outcome::AlreadyFresh(g.clone()),
                        other => other.clone(),
                    }
                }
                // An earlier attempt's grant, still newer than what this
                // caller saw and not expired.
                Some((_, Outcome::Refreshed(g) | Outcome::AlreadyFresh(g)))
                    if g.version > seen
                        && g.status == GrantStatus::Active
                        && !g.needs_refresh(now(), 0) =>
                {
                    Outcome::AlreadyFresh(g.clone())
                }
                _ => {
                    let outcome = refresh().await;
                    *last = Some((std::time::Instant::now(), outcome.clone()));
                    outcome
                }
            }
        };
        self.done(sub, target, gate);
        outcome
    }
}
