//! A target's remembered tool catalog, one tool at a time.

use serde::{Deserialize, Serialize};

/// A tool of a target's catalog, kept as its compact JSON text: a warm
/// instance holds every target's catalog, and as text a tool takes about
/// a ninth of the memory its tree of values would.
#[derive(Clone, PartialEq, Eq)]
pub struct CatalogTool(std::sync::Arc<str>);

impl CatalogTool {
    /// The tool as the upstream described it.
    pub fn new(tool: &serde_json::Value) -> Self {
        CatalogTool(tool.to_string().into())
    }

    /// Its JSON text.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The tool as a JSON value (parsed each time).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// Its name, if it has one.
    pub fn name(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        serde_json::from_str::<Named>(&self.0).ok().map(|n| n.name)
    }
}

impl From<serde_json::Value> for CatalogTool {
    fn from(tool: serde_json::Value) -> Self {
        CatalogTool::new(&tool)
    }
}

impl std::fmt::Debug for CatalogTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for CatalogTool {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for CatalogTool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(|v| CatalogTool::new(&v))
    }
}
