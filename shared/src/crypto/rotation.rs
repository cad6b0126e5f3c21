//! The gateway key set's secret, for rotation: add a key, make it current,
//! remove a retired one. Every change is checked by parsing the result as
//! the functions will ([`KeySet::from_secret_string`]) before it is written.
//!
//! Rotation, end to end (`gateway-admin keys ...`): `add` a key, make it
//! `current`, wait `SECRETS_CACHE_TTL_SECONDS` so that every warm instance
//! seals with it, `reseal` what the old key sealed (the table store's
//! [`crate::adapters::dynamodb::DynamoStore::reseal`]), then `retire` the old
//! key, which is refused while anything still uses it.

use serde_json::{Map, Value};

use crate::crypto::{random_token, KeySet};
use crate::error::{Error, Result};

/// The key-set secret in Secrets Manager.
pub struct KeySetSecret {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl KeySetSecret {
    /// The secret `arn` (or name).
    pub fn new(client: aws_sdk_secretsmanager::Client, arn: impl Into<String>) -> Self {
        KeySetSecret {
            client,
            arn: arn.into(),
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::Secret {
            arn: self.arn.clone(),
            reason: reason.into(),
        }
    }

    async fn read(&self) -> Result<Map<String, Value>> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(Error::secrets)?;
        let text = out
            .secret_string
            .ok_or_else(|| self.invalid("the key set is not a string secret"))?;
        KeySet::from_secret_string(&text).map_err(|e| self.invalid(e))?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(self.invalid("the key set is not a JSON object")),
        }
    }

    async fn write(&self, map: Map<String, Value>) -> Result<()> {
        let text = Value::Object(map).to_string();
        KeySet::from_secret_string(&text).map_err(|e| self.invalid(e))?;
        self.client
            .put_secret_value()
            .secret_id(&self.arn)
            .secret_string(text)
            .send()
            .await
            .map_err(Error::secrets)?;
        Ok(())
    }

    /// The current key id and every key id, sorted.
    pub async fn ids(&self) -> Result<(String, Vec<String>)> {
        let map = self.read().await?;
        let current = map
            .get("current")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut ids: Vec<String> = map.keys().filter(|k| *k != "current").cloned().collect();
        ids.sort();
        Ok((current, ids))
    }

    /// Adds a new random key (not current yet) and returns its id.
    pub async fn add(&self) -> Result<String> {
        let mut map = self.read().await?;
        let id = (1..)
            .map(|n| format!("k{n}"))
            .find(|id| !map.contains_key(id))
            .unwrap_or_else(|| format!("k-{}", random_token(6)));
        map.insert(id.clone(), Value::String(random_token(48)));
        self.write(map).await?;
        Ok(id)
    }

    /// Makes `id` the key new values are sealed with.
    pub async fn make_current(&self, id: &str) -> Result<()> {
        let mut map = self.read().await?;
        if id == "current" || !map.contains_key(id) {
            return Err(self.invalid(format!("the key set has no key {id:?}")));
        }
        map.insert("current".into(), Value::String(id.to_owned()));
        self.write(map).await
    }

    /// Removes key `id` (never the current one). The caller checks first
    /// that nothing stored still uses it.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let mut map = self.read().await?;
        if map.get("current").and_then(Value::as_str) == Some(id) {
            return Err(self.invalid(format!(
                "{id:?} is the current key; make another key current first"
            )));
        }
        if id == "current" || map.remove(id).is_none() {
            return Err(self.invalid(format!("the key set has no key {id:?}")));
        }
        self.write(map).await
    }
}

/// What a reseal run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResealSummary {
    /// Items holding sealed values.
    pub items: usize,
    /// Already sealed with the current key only.
    pub current: usize,
    /// Rewritten with the current key.
    pub resealed: usize,
    /// Gone meanwhile (used, deleted).
    pub gone: usize,
    /// Still busy after retries (a refresh held the lease): run again.
    pub busy: usize,
    /// Could not be opened (altered, sealed with a key no longer in the set,
    /// or grants of a form older than this version): left as they are; they
    /// ask their users to connect again when used.
    pub unreadable: usize,
    /// Targets without an integrity seal, left alone (see
    /// `adopt_unsealed`): their names.
    pub unsealed_targets: Vec<String>,
}

/// Rewrites every item not sealed with `current` alone, one at a time,
/// reporting `(done, total)` to `progress` after each. Resumable: items
/// already on the current key are skipped, so a run that stopped is simply
/// run again. Busy grants (a refresh holds the lease) are retried a few
/// times, then counted as busy.
///
/// Targets without an integrity seal (written by an older version, or
/// altered in the table) are sealed only with `adopt_unsealed`, after the
/// operator checked them; otherwise they are listed and left out.
pub async fn reseal_all(
    store: &crate::adapters::dynamodb::DynamoStore,
    current: &str,
    adopt_unsealed: bool,
    now: impl Fn() -> i64,
    mut progress: impl FnMut(usize, usize),
) -> Result<ResealSummary> {
    use crate::adapters::dynamodb::Resealed;
    let items = store.sealed_items().await?;
    let mut summary = ResealSummary {
        items: items.len(),
        ..ResealSummary::default()
    };
    let todo: Vec<_> = items.iter().filter(|i| !i.sealed_with(current)).collect();
    summary.current = items.len() - todo.len();
    let owner = format!("reseal-{}", random_token(6));
    for (n, item) in todo.iter().enumerate() {
        let mut outcome = Ok(Resealed::Busy);
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            outcome = store.reseal(item, &owner, now(), adopt_unsealed).await;
            if !matches!(outcome, Ok(Resealed::Busy)) {
                break;
            }
        }
        match outcome {
            Ok(Resealed::Done) => summary.resealed += 1,
            Ok(Resealed::Gone) => summary.gone += 1,
            Ok(Resealed::Busy) => summary.busy += 1,
            Ok(Resealed::Unsealed) => summary
                .unsealed_targets
                .push(item.sk.trim_start_matches("TARGET#").to_owned()),
            Err(e) if e.is_unreadable() => {
                // (Keys of pending authorizations are bearer links: not logged.)
                tracing::warn!(kind = ?item.kind, error = %e, "cannot be opened; left as it is");
                summary.unreadable += 1
            }
            Err(e) => return Err(e),
        }
        progress(n + 1, todo.len());
    }
    Ok(summary)
}

/// How many stored items each key id seals (targets written before they
/// were sealed are counted under `unsealed`).
pub async fn usage(
    store: &crate::adapters::dynamodb::DynamoStore,
) -> Result<std::collections::BTreeMap<String, usize>> {
    let mut by_key = std::collections::BTreeMap::new();
    for item in store.sealed_items().await? {
        if item.key_ids.is_empty() {
            *by_key.entry("unsealed".to_owned()).or_insert(0) += 1;
        }
        for k in item.key_ids {
            *by_key.entry(k).or_insert(0) += 1;
        }
    }
    Ok(by_key)
}
