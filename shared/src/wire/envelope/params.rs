//! A request's params: each member as the JSON text the client sent,
//! read where the gateway looks and edited on the way to an upstream.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A request's `params` object: each member kept as the JSON text that was
/// sent, with typed readers for the members the gateway looks at. `_meta`,
/// which the edge, the gateway and the upstream client all read, is also
/// kept parsed (once per request).
#[derive(Debug, Clone, Default)]
pub struct Params {
    members: BTreeMap<String, Box<RawValue>>,
    /// `_meta` parsed, when it is an object.
    meta: Option<Map<String, Value>>,
}

impl PartialEq for Params {
    /// Members compare by their JSON text.
    fn eq(&self, other: &Self) -> bool {
        self.members.len() == other.members.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((k1, v1), (k2, v2))| k1 == k2 && v1.get() == v2.get())
    }
}

impl Params {
    /// No members.
    pub fn new() -> Self {
        Params::default()
    }

    pub(super) fn from_members(members: BTreeMap<String, Box<RawValue>>) -> Self {
        let meta = members
            .get("_meta")
            .and_then(|raw| serde_json::from_str(raw.get()).ok());
        Params { members, meta }
    }

    /// The member `key` as sent, if present.
    pub fn raw(&self, key: &str) -> Option<&RawValue> {
        self.members.get(key).map(|v| &**v)
    }

    /// True when the member `key` is present (whatever its value).
    pub fn has(&self, key: &str) -> bool {
        self.members.contains_key(key)
    }

    /// The member `key` read as a `T`; `None` when it is absent or of
    /// another type.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.raw(key)?.get()).ok()
    }

    /// A string member (`name`, `uri`, `cursor`, `requestState`, ...).
    pub fn str(&self, key: &str) -> Option<String> {
        self.get::<String>(key)
    }

    /// These params without the members named in `dropped` (the others
    /// copied as they were sent).
    pub fn without(&self, dropped: &[&str]) -> Params {
        let members = self
            .members
            .iter()
            .filter(|(k, _)| !dropped.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let meta = if dropped.contains(&"_meta") {
            None
        } else {
            self.meta.clone()
        };
        Params { members, meta }
    }

    /// `name`: the tool or prompt called (borrowed from the request when
    /// it has no escapes, as names have).
    pub fn name(&self) -> Option<std::borrow::Cow<'_, str>> {
        let raw = self.raw("name")?.get();
        // A member is JSON text already checked (see `wire::strict`): a
        // string without escapes is the text between its quotes. This is
        // read several times per call.
        if let Some(plain) = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|r| !r.contains(['\\', '"']))
        {
            return Some(std::borrow::Cow::Borrowed(plain));
        }
        serde_json::from_str::<String>(raw)
            .ok()
            .map(std::borrow::Cow::Owned)
    }

    /// `uri`: the resource read.
    pub fn uri(&self) -> Option<String> {
        self.str("uri")
    }

    /// `cursor`: where a listing continues.
    pub fn cursor(&self) -> Option<String> {
        self.str("cursor")
    }

    /// `_meta`, when it is an object.
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.meta.as_ref()
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: &str, value: &impl Serialize) -> &mut Self {
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.members.insert(key.to_owned(), raw);
            if key == "_meta" {
                *self = Params::from_members(std::mem::take(&mut self.members));
            }
        }
        self
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.members.remove(key);
        if key == "_meta" {
            self.meta = None;
        }
        self
    }

    /// The members, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.members.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// The params as a JSON tree (every member parsed: for digests and
    /// tests, not the forwarding path).
    pub fn to_value(&self) -> Map<String, Value> {
        self.members
            .iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(v.get()).unwrap_or(Value::Null);
                (k.clone(), value)
            })
            .collect()
    }

    /// Params holding the members of a JSON object (`None` for any other value).
    pub fn from_value(value: &Value) -> Option<Self> {
        let obj = value.as_object()?;
        let mut p = Params::new();
        for (k, v) in obj {
            p.set(k, v);
        }
        Some(p)
    }
}

impl Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.members.serialize(s)
    }
}
