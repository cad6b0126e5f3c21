//! What upstreams say during a call, on its way to the client: kept until
//! the answer (an answer written whole), or passed on as it comes (a
//! streamed answer).

use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::mpsc;

use super::sse::{MAX_RELAYED, MAX_RELAYED_BYTES};

/// The notifications of one request's calls, for its client (the default
/// keeps them until the answer, [`Relay::take`]).
#[derive(Debug, Default)]
pub struct Relay {
    kept: Mutex<Kept>,
    live: Option<mpsc::UnboundedSender<Value>>,
}

#[derive(Debug, Default)]
struct Kept {
    notes: Vec<Value>,
    count: usize,
    bytes: usize,
}

impl Relay {
    /// Notifications passed on as they come, to the receiver.
    pub fn live() -> (Self, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Relay {
                kept: Default::default(),
                live: Some(tx),
            },
            rx,
        )
    }

    /// Passes on (or keeps) `note`, whose event took `size` bytes: at most
    /// [`MAX_RELAYED`] notes and [`MAX_RELAYED_BYTES`] per request; the rest
    /// is dropped.
    pub fn push(&self, note: Value, size: usize) {
        let Ok(mut k) = self.kept.lock() else { return };
        if k.count >= MAX_RELAYED || k.bytes + size > MAX_RELAYED_BYTES {
            return;
        }
        k.count += 1;
        k.bytes += size;
        match &self.live {
            Some(tx) if tx.send(note.clone()).is_ok() => {}
            _ => k.notes.push(note),
        }
    }

    /// True when what is pushed goes to the client as it comes (the
    /// answer streams).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Passes `message` (a request for the client) on at once, within
    /// the same limits as notifications; false when this relay keeps
    /// notes for an answer written whole, or the limits are reached.
    pub fn pass_on(&self, message: Value) -> bool {
        let Some(tx) = &self.live else { return false };
        let size = message.to_string().len();
        let Ok(mut k) = self.kept.lock() else {
            return false;
        };
        if k.count >= MAX_RELAYED || k.bytes + size > MAX_RELAYED_BYTES {
            return false;
        }
        if tx.send(message).is_err() {
            return false;
        }
        k.count += 1;
        k.bytes += size;
        true
    }

    /// The notes kept so far (none of those passed on).
    pub fn take(&self) -> Vec<Value> {
        self.kept
            .lock()
            .map(|mut k| std::mem::take(&mut k.notes))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notes_are_kept_or_passed_on_within_the_limits() {
        let kept = Relay::default();
        for i in 0..MAX_RELAYED + 5 {
            kept.push(json!({"n": i}), 10);
        }
        let notes = kept.take();
        assert_eq!(notes.len(), MAX_RELAYED);
        assert_eq!(notes[0], json!({"n": 0}));
        assert!(kept.take().is_empty());

        let (live, mut rx) = Relay::live();
        live.push(json!({"n": 1}), MAX_RELAYED_BYTES - 1);
        live.push(json!({"n": 2}), 2);
        assert_eq!(rx.try_recv().unwrap(), json!({"n": 1}));
        assert!(rx.try_recv().is_err(), "over the byte limit: dropped");
        assert!(live.take().is_empty());
        // Requests go only to a live relay with room.
        assert!(!Relay::default().pass_on(json!({"id": 1})));
        let (live, mut rx) = Relay::live();
        assert!(live.pass_on(json!({"id": 1})));
        assert_eq!(rx.try_recv().unwrap(), json!({"id": 1}));
        drop(rx);
        assert!(!live.pass_on(json!({"id": 2})), "no client stream any more");
        // A receiver gone: notes are kept instead of lost.
        let (live, rx) = Relay::live();
        drop(rx);
        live.push(json!({"n": 3}), 1);
        assert_eq!(live.take(), vec![json!({"n": 3})]);
    }
}
