//! A target's remembered tool catalog ([`Catalog`]), one tool at a time
//! ([`CatalogTool`]).
//!
//! A warm instance holds every target's catalog (listings for users who
//! have not connected, tool search), so catalogs are kept compressed: tools
//! are packed as compact JSON text in blocks of [`BLOCK_TOOLS`] and each
//! block is LZ4-compressed. Reading one tool decompresses one block (about
//! 30 kB); nothing else about a catalog changes for its users.

use std::sync::Arc;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize};

/// Tools per compressed block: large enough for LZ4 to find the repeats
/// between tools (keys, schema shapes), small enough that reading one tool
/// decompresses little.
pub const BLOCK_TOOLS: usize = 64;

/// A target's tool catalog: an immutable, cheaply cloned list of tools
/// held compressed (see the module's note).
#[derive(Clone, Default)]
pub struct Catalog {
    len: usize,
    /// For a catalog where some tool marks an argument as a header
    /// (`x-mcp-header`; most catalogs have none): every tool's name, and
    /// the headers each declares.
    param_index: Option<Arc<ParamIndex>>,
    /// LZ4 blocks (size-prepended) of up to [`BLOCK_TOOLS`] tools' JSON
    /// texts, each followed by a newline (compact JSON holds none).
    blocks: Arc<[Box<[u8]>]>,
}

impl Catalog {
    /// The catalog of these tools, in order.
    pub fn new(tools: impl IntoIterator<Item = CatalogTool>) -> Self {
        let mut blocks = vec![];
        let mut len = 0;
        let mut text = String::new();
        let mut in_block = 0;
        let mut has_param_headers = false;
        let mut names = vec![];
        let mut declared = vec![];
        for tool in tools {
            if tool.text().contains(crate::wire::params::ANNOTATION) {
                has_param_headers = true;
                let value = tool.value();
                let headers = value
                    .get("inputSchema")
                    .map(crate::wire::params::declared)
                    .unwrap_or_default();
                if let (Some(name), false) = (
                    value.get("name").and_then(|n| n.as_str()),
                    headers.is_empty(),
                ) {
                    declared.push((name.to_owned(), headers));
                }
            }
            names.push(tool.name());
            text.push_str(tool.text());
            text.push('\n');
            len += 1;
            in_block += 1;
            if in_block == BLOCK_TOOLS {
                blocks.push(lz4_flex::compress_prepend_size(text.as_bytes()).into_boxed_slice());
                text.clear();
                in_block = 0;
            }
        }
        if in_block > 0 {
            blocks.push(lz4_flex::compress_prepend_size(text.as_bytes()).into_boxed_slice());
        }
        let param_index = has_param_headers.then(|| {
            Arc::new(ParamIndex {
                names: names.into_iter().flatten().collect(),
                declared: declared.into_iter().collect(),
            })
        });
        Catalog {
            len,
            param_index,
            blocks: blocks.into(),
        }
    }

    /// The `Mcp-Param-*` headers the tool named `name` declares (each
    /// header's token and the path of its argument), when the catalog can
    /// tell: none when no tool of the catalog declares any (the client's
    /// headers then go upstream as sent) or the tool is not in it.
    pub fn param_headers(&self, name: &str) -> Option<Vec<(String, Vec<String>)>> {
        let index = self.param_index.as_ref()?;
        if !index.names.contains(name) {
            return None;
        }
        Some(index.declared.get(name).cloned().unwrap_or_default())
    }

    /// How many tools it has.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no tool is known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the compressed blocks (for measurements).
    pub fn compressed_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.len()).sum()
    }

    /// The tool at `position`.
    pub fn get(&self, position: usize) -> Option<CatalogTool> {
        if position >= self.len {
            return None;
        }
        let block = self.block(position / BLOCK_TOOLS)?;
        block
            .split_terminator('\n')
            .nth(position % BLOCK_TOOLS)
            .map(CatalogTool::from_text)
    }

    /// Every tool, in order (one block decompressed at a time).
    pub fn iter(&self) -> impl Iterator<Item = CatalogTool> + '_ {
        (0..self.blocks.len()).flat_map(move |b| {
            let text = self.block(b).unwrap_or_default();
            text.split_terminator('\n')
                .map(CatalogTool::from_text)
                .collect::<Vec<_>>()
        })
    }

    fn block(&self, index: usize) -> Option<String> {
        let bytes = lz4_flex::decompress_size_prepended(self.blocks.get(index)?).ok()?;
        String::from_utf8(bytes).ok()
    }
}

/// The header declarations of a catalog whose tools declare some.
#[derive(Debug, Default)]
struct ParamIndex {
    names: std::collections::HashSet<String>,
    declared: std::collections::HashMap<String, Vec<(String, Vec<String>)>>,
}

impl FromIterator<CatalogTool> for Catalog {
    fn from_iter<I: IntoIterator<Item = CatalogTool>>(tools: I) -> Self {
        Catalog::new(tools)
    }
}

impl From<Vec<CatalogTool>> for Catalog {
    fn from(tools: Vec<CatalogTool>) -> Self {
        Catalog::new(tools)
    }
}

impl From<Vec<serde_json::Value>> for Catalog {
    fn from(tools: Vec<serde_json::Value>) -> Self {
        Catalog::new(tools.into_iter().map(CatalogTool::from))
    }
}

impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && (Arc::ptr_eq(&self.blocks, &other.blocks) || self.iter().eq(other.iter()))
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Catalog {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len))?;
        for tool in self.iter() {
            seq.serialize_element(&tool)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Catalog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<CatalogTool>::deserialize(d).map(Catalog::new)
    }
}

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

    /// A tool from its compact JSON text, as a catalog keeps it.
    fn from_text(text: &str) -> Self {
        CatalogTool(text.into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools(n: usize) -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| {
                json!({"name": format!("tool_{i}"), "description": format!("Line one of {i}.\nLine two."),
                       "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}})
            })
            .collect()
    }

    #[test]
    fn every_tool_reads_back_as_it_was_given_across_blocks() {
        let given = tools(BLOCK_TOOLS * 2 + 5);
        let catalog = Catalog::from(given.clone());
        assert_eq!(catalog.len(), given.len());
        for i in [0, 1, BLOCK_TOOLS - 1, BLOCK_TOOLS, BLOCK_TOOLS * 2 + 4] {
            assert_eq!(catalog.get(i).map(|t| t.value()), Some(given[i].clone()));
        }
        assert!(catalog.get(given.len()).is_none());
        let read: Vec<serde_json::Value> = catalog.iter().map(|t| t.value()).collect();
        assert_eq!(read, given);
        // A newline inside a string stays one tool.
        assert_eq!(
            catalog.get(7).unwrap().value()["description"],
            "Line one of 7.\nLine two."
        );
        assert!(catalog.compressed_bytes() < serde_json::to_string(&given).unwrap().len());
    }

    #[test]
    fn header_declarations_are_known_per_tool() {
        let with = Catalog::from(vec![
            json!({"name": "geo", "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"}}}}),
            json!({"name": "plain", "inputSchema": {"type": "object"}}),
        ]);
        assert_eq!(
            with.param_headers("geo"),
            Some(vec![("Region".to_owned(), vec!["region".to_owned()])])
        );
        assert_eq!(with.param_headers("plain"), Some(vec![]));
        assert_eq!(with.param_headers("unknown"), None);
        // A catalog where no tool declares headers cannot tell.
        let without = Catalog::from(tools(3));
        assert_eq!(without.param_headers("tool_1"), None);
    }

    #[test]
    fn it_is_stored_as_the_plain_list_of_tools() {
        let given = tools(70);
        let catalog = Catalog::from(given.clone());
        let text = serde_json::to_string(&catalog).unwrap();
        assert_eq!(text, serde_json::to_string(&given).unwrap());
        let back: Catalog = serde_json::from_str(&text).unwrap();
        assert_eq!(back, catalog);
        assert_ne!(back, Catalog::from(tools(69)));
        let empty = Catalog::default();
        assert!(empty.is_empty() && empty.iter().next().is_none() && empty.get(0).is_none());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
    }
}
