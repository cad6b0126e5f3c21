//! Tool search: an in-process BM25 index over every target's tool catalog
//! (names, titles, descriptions and parameter names), so that agents can
//! find the tool they need in catalogs too large to list.
//!
//! Ranking is Okapi BM25 (k1 = 1.2, b = 0.75) with field weights: a word of
//! the tool's name counts 3 times, of its title 2 times, of a parameter's
//! name 1.5 times, of the description once. Words are split at anything
//! that is not a letter or digit and at camelCase boundaries, lowercased,
//! and a plural `s` is dropped, so `listIssues`, `list_issues` and
//! "list issues" all match. An index is built for the list of targets an
//! instance holds (rebuilt when the instance reloads that list, at most every
//! `TARGETS_CACHE_SECONDS`) and shared by its requests ([`SearchCache`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

const K1: f32 = 1.2;
const B: f32 = 0.75;
const NAME_WEIGHT: f32 = 3.0;
const TITLE_WEIGHT: f32 = 2.0;
const PARAMETER_WEIGHT: f32 = 1.5;
const DESCRIPTION_WEIGHT: f32 = 1.0;
/// Words that say nothing about a tool.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on",
    "or", "that", "the", "this", "to", "with",
];
/// The longest query read (characters); the rest is ignored.
pub const MAX_QUERY_CHARS: usize = 1024;

/// One searchable tool, as given to [`ToolIndex::new`]: where it is in a
/// shared target's catalog (the index holds no copy of the tools), and the
/// name to call it by.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The target it belongs to.
    pub target: Arc<crate::domain::Target>,
    /// Its position in the target's catalog.
    pub position: usize,
    /// The name to call it by (the exposed name).
    pub name: String,
    /// The tool itself (read from the catalog once, while indexing).
    pub tool: crate::domain::CatalogTool,
}

/// A ranked hit.
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    /// The target it belongs to.
    pub target: &'a Arc<crate::domain::Target>,
    /// Its position in the target's catalog.
    pub position: usize,
    /// The name to call it by (the exposed name).
    pub name: &'a str,
    /// Its name at the upstream.
    pub upstream_name: &'a str,
    /// Its BM25 score (higher is better).
    pub score: f32,
}

impl Hit<'_> {
    /// The tool as the upstream described it (under its upstream name).
    pub fn tool(&self) -> Value {
        self.target
            .tool_catalog
            .get(self.position)
            .map(|t| t.value())
            .unwrap_or_default()
    }
}

/// An indexed tool, packed: its target (an index into the index's
/// targets), its position, and where its names end in the name arena.
#[derive(Debug, Clone, Copy)]
struct Doc {
    target: u32,
    position: u32,
    /// The exposed name is `names[start..exposed_end]`, the upstream name
    /// `names[exposed_end..end]`, where `start` is the previous doc's `end`.
    exposed_end: u32,
    end: u32,
}

/// The documents holding one term: a count, and (document delta, weight
/// in halves) pairs as LEB128 varints (weights are sums of the field
/// weights, all multiples of one half).
#[derive(Debug, Default)]
struct Postings {
    count: u32,
    /// The last document added (the next delta's base).
    last: u32,
    bytes: Vec<u8>,
}

impl Postings {
    /// Adds `doc` (higher than any added before) with `weight`.
    fn push(&mut self, doc: u32, weight: f32) {
        push_varint(&mut self.bytes, doc - self.last);
        self.last = doc;
        push_varint(&mut self.bytes, (weight * 2.0).round() as u32);
        self.count += 1;
    }

    fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        let mut at = 0;
        let mut doc = 0u32;
        std::iter::from_fn(move || {
            let delta = read_varint(&self.bytes, &mut at)?;
            let halves = read_varint(&self.bytes, &mut at)?;
            doc = doc.wrapping_add(delta);
            Some((doc, halves as f32 / 2.0))
        })
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: u32) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut n = 0u32;
    let mut shift = 0;
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= u32::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(n);
        }
        shift += 7;
    }
}

/// A BM25 index over tools, packed for large catalogs (about 90 bytes per
/// tool: its names, its place, and its terms' postings as varints).
#[derive(Debug, Default)]
pub struct ToolIndex {
    targets: Vec<Arc<crate::domain::Target>>,
    docs: Vec<Doc>,
    names: String,
    /// Weighted term frequencies, per term.
    postings: HashMap<Box<str>, Postings>,
    /// Weighted length of each document.
    lengths: Vec<f32>,
    average_length: f32,
}

impl ToolIndex {
    /// Indexes `entries`.
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut index = ToolIndex::default();
        let mut terms: HashMap<String, f32> = HashMap::new();
        for e in entries {
            let tool = e.tool.value();
            let Ok(doc) = u32::try_from(index.docs.len()) else {
                break;
            };
            terms.clear();
            let text = |key: &str| tool.get(key).and_then(Value::as_str).unwrap_or_default();
            let mut add = |s: &str, weight: f32| {
                for w in words(s) {
                    *terms.entry(w).or_default() += weight;
                }
            };
            add(&e.name, NAME_WEIGHT);
            add(text("title"), TITLE_WEIGHT);
            if let Some(t) = tool
                .get("annotations")
                .and_then(|a| a.get("title"))
                .and_then(Value::as_str)
            {
                add(t, TITLE_WEIGHT);
            }
            add(text("description"), DESCRIPTION_WEIGHT);
            if let Some(props) = tool
                .get("inputSchema")
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
            {
                for name in props.keys() {
                    add(name, PARAMETER_WEIGHT);
                }
            }
            index.lengths.push(terms.values().sum());
            for (term, weight) in terms.drain() {
                index
                    .postings
                    .entry(term.into_boxed_str())
                    .or_default()
                    .push(doc, weight);
            }
            let target = match index
                .targets
                .iter()
                .rposition(|t| Arc::ptr_eq(t, &e.target))
            {
                Some(i) => i,
                None => {
                    index.targets.push(e.target.clone());
                    index.targets.len() - 1
                }
            };
            index.names.push_str(&e.name);
            let exposed_end = index.names.len() as u32;
            index.names.push_str(text("name"));
            index.docs.push(Doc {
                target: target as u32,
                position: e.position as u32,
                exposed_end,
                end: index.names.len() as u32,
            });
        }
        for p in index.postings.values_mut() {
            p.bytes.shrink_to_fit();
        }
        index.postings.shrink_to_fit();
        index.docs.shrink_to_fit();
        index.names.shrink_to_fit();
        index.lengths.shrink_to_fit();
        index.average_length = if index.lengths.is_empty() {
            1.0
        } else {
            (index.lengths.iter().sum::<f32>() / index.lengths.len() as f32).max(1.0)
        };
        index
    }

    /// How many tools are indexed.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True when no tool is indexed.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    fn name(&self, doc: u32) -> &str {
        let d = &self.docs[doc as usize];
        let start = if doc == 0 {
            0
        } else {
            self.docs[doc as usize - 1].end
        };
        &self.names[start as usize..d.exposed_end as usize]
    }

    fn hit(&self, doc: u32, score: f32) -> Hit<'_> {
        let d = &self.docs[doc as usize];
        Hit {
            target: &self.targets[d.target as usize],
            position: d.position as usize,
            name: self.name(doc),
            upstream_name: &self.names[d.exposed_end as usize..d.end as usize],
            score,
        }
    }

    /// The `limit` best tools for `query` that `allowed` lets through, best
    /// first (ties by name); none for a query without a searchable word.
    pub fn search<'a>(
        &'a self,
        query: &str,
        limit: usize,
        allowed: impl Fn(&Hit<'a>) -> bool,
    ) -> Vec<Hit<'a>> {
        let query: String = query.chars().take(MAX_QUERY_CHARS).collect();
        let mut terms = words(&query);
        terms.sort();
        terms.dedup();
        let n = self.docs.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for term in &terms {
            let Some(list) = self.postings.get(term.as_str()) else {
                continue;
            };
            let df = list.count as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for (doc, tf) in list.iter() {
                let Some(length) = self.lengths.get(doc as usize) else {
                    break;
                };
                let length = length / self.average_length;
                let score = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length));
                *scores.entry(doc).or_default() += score;
            }
        }
        let mut scored: Vec<(u32, f32)> = scores.into_iter().collect();
        let order = |a: &(u32, f32), b: &(u32, f32)| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.name(a.0).cmp(self.name(b.0)))
        };
        // The best first; `allowed` is asked only about candidates, a few
        // times the limit at a time, not about every match.
        let mut hits = vec![];
        let mut window = limit.saturating_mul(4).max(limit);
        loop {
            if scored.len() > window && window > 0 {
                scored.select_nth_unstable_by(window - 1, order);
                scored[..window].sort_by(order);
            } else {
                scored.sort_by(order);
            }
            hits.clear();
            for &(doc, score) in scored.iter().take(window) {
                if hits.len() == limit {
                    break;
                }
                let hit = self.hit(doc, score);
                if allowed(&hit) {
                    hits.push(hit);
                }
            }
            if hits.len() == limit || window >= scored.len() {
                return hits;
            }
            window = window.saturating_mul(4);
        }
    }
}

/// The searchable words of `text`: each run of letters and digits, and
/// its camelCase parts when it has several (`GitHub` gives `git`, `hub`
/// and `github`).
pub fn words(text: &str) -> Vec<String> {
    fn keep(out: &mut Vec<String>, mut w: String) {
        if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
            w.pop();
        }
        if !w.is_empty() && !STOP_WORDS.contains(&w.as_str()) {
            out.push(w);
        }
    }
    let mut out = vec![];
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        if run.is_empty() {
            continue;
        }
        let mut parts = 0;
        let mut part = String::new();
        let mut previous: Option<char> = None;
        for c in run.chars() {
            // camelCase: a capital after a lowercase letter starts a part.
            if c.is_uppercase() && previous.is_some_and(char::is_lowercase) {
                keep(&mut out, std::mem::take(&mut part));
                parts += 1;
            }
            part.extend(c.to_lowercase());
            previous = Some(c);
        }
        if parts > 0 {
            keep(&mut out, part);
            keep(&mut out, run.to_lowercase());
        } else {
            keep(&mut out, part);
        }
    }
    out
}

/// The index of a warm instance, rebuilt when the catalog it was built from
/// changes (another list of targets, or another catalog in one of them).
#[derive(Default)]
pub struct SearchCache {
    built: std::sync::RwLock<Option<(u64, Arc<ToolIndex>)>>,
}

impl SearchCache {
    /// The index for catalog version `version`, built with `build` if the
    /// one kept is for another version.
    pub fn get_or_build(&self, version: u64, build: impl FnOnce() -> ToolIndex) -> Arc<ToolIndex> {
        if let Ok(guard) = self.built.read() {
            if let Some((v, index)) = &*guard {
                if *v == version {
                    return index.clone();
                }
            }
        }
        let index = Arc::new(build());
        if let Ok(mut guard) = self.built.write() {
            *guard = Some((version, index.clone()));
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(target: &str, name: &str, description: &str, params: &[&str]) -> Entry {
        let props: serde_json::Map<String, Value> = params
            .iter()
            .map(|p| (p.to_string(), json!({"type": "string"})))
            .collect();
        let tool = json!({"name": name, "description": description, "inputSchema": {"type": "object", "properties": props}});
        Entry {
            tool: tool.clone().into(),
            target: Arc::new(crate::domain::Target {
                name: target.into(),
                display_name: None,
                mcp_url: "https://mcp.test/mcp".into(),
                auth: crate::domain::TargetAuth::None,
                tool_prefix: None,
                return_to: Default::default(),
                tool_catalog: vec![tool].into(),
            }),
            position: 0,
            name: name.into(),
        }
    }

    fn index() -> ToolIndex {
        ToolIndex::new(vec![
            entry(
                "github",
                "github___listIssues",
                "List issues in a repository.",
                &["repo", "state"],
            ),
            entry(
                "github",
                "github___create_pull_request",
                "Open a pull request.",
                &["repo", "head", "base"],
            ),
            entry(
                "jira",
                "jira___search_issues",
                "Search Jira issues with JQL.",
                &["jql"],
            ),
            entry(
                "slack",
                "slack___post_message",
                "Post a message to a channel.",
                &["channel", "text"],
            ),
            entry(
                "drive",
                "drive___find_files",
                "Find files in the user's drive by name.",
                &["query"],
            ),
        ])
    }

    fn names(hits: &[Hit]) -> Vec<String> {
        hits.iter().map(|h| h.name.to_owned()).collect()
    }

    #[test]
    fn words_split_names_the_way_people_write_them() {
        assert_eq!(words("listIssues"), ["list", "issue", "listissue"]);
        assert_eq!(words("list_issues"), ["list", "issue"]);
        assert_eq!(
            words("The GitHub API, v3."),
            ["git", "hub", "github", "api", "v3"]
        );
        assert_eq!(words("class access"), ["class", "access"]);
        assert!(words("  ... !!! ").is_empty());
    }

    #[test]
    fn the_best_matches_come_first() {
        let idx = index();
        let mut found = names(&idx.search("issues", 10, |_| true));
        found.sort();
        assert_eq!(found, ["github___listIssues", "jira___search_issues"]);
        // A word of two matches ranks its tool first.
        let hits = idx.search("github issues", 10, |_| true);
        assert_eq!(names(&hits)[0], "github___listIssues");
        let hits = idx.search("search issues", 10, |_| true);
        assert_eq!(names(&hits)[0], "jira___search_issues");
        // A name match outweighs a description match.
        let hits = idx.search("post a message in slack", 3, |_| true);
        assert_eq!(names(&hits)[0], "slack___post_message");
        // Parameter names count.
        let hits = idx.search("jql", 3, |_| true);
        assert_eq!(names(&hits), ["jira___search_issues"]);
        // The limit holds, and scores descend.
        let hits = idx.search("repo issues files pull message", 2, |_| true);
        assert_eq!(hits.len(), 2);
        assert!(hits[0].score >= hits[1].score);
    }

    #[test]
    fn filtered_and_empty_queries_find_nothing_they_should_not() {
        let idx = index();
        let hits = idx.search("issues", 10, |h| h.target.name != "github");
        assert_eq!(names(&hits), ["jira___search_issues"]);
        assert!(idx.search("", 10, |_| true).is_empty());
        assert!(idx.search("the a of", 10, |_| true).is_empty());
        assert!(idx.search("zzzz", 10, |_| true).is_empty());
        assert!(idx.search("issues", 0, |_| true).is_empty());
        // A very long query is cut, not refused.
        let long = "issue ".repeat(10_000);
        assert_eq!(idx.search(&long, 1, |_| true).len(), 1);
        assert!(ToolIndex::new(vec![]).search("x", 5, |_| true).is_empty());
    }

    #[test]
    fn postings_keep_large_document_numbers_and_weights() {
        let mut p = Postings::default();
        let docs = [
            (0u32, 1.0f32),
            (1, 4.5),
            (200, 3.0),
            (70_000, 0.5),
            (u32::MAX, 300.0),
        ];
        for (doc, weight) in docs {
            p.push(doc, weight);
        }
        assert_eq!(p.count, 5);
        assert_eq!(p.iter().collect::<Vec<_>>(), docs);
        // A cut list ends instead of reading past its end.
        p.bytes.pop();
        assert_eq!(p.iter().count(), 4);
    }

    #[test]
    fn hits_carry_both_names_and_the_tool() {
        let idx = index();
        let hit = &idx.search("jql", 1, |_| true)[0];
        assert_eq!(hit.name, "jira___search_issues");
        assert_eq!(hit.upstream_name, "jira___search_issues");
        assert_eq!(hit.target.name, "jira");
        assert_eq!(hit.tool()["description"], "Search Jira issues with JQL.");
    }

    #[test]
    fn the_cache_rebuilds_only_for_another_version() {
        let cache = SearchCache::default();
        let mut builds = 0;
        let a = cache.get_or_build(1, || {
            builds += 1;
            index()
        });
        let b = cache.get_or_build(1, || {
            builds += 1;
            index()
        });
        assert!(Arc::ptr_eq(&a, &b));
        cache.get_or_build(2, || {
            builds += 1;
            ToolIndex::new(vec![])
        });
        assert_eq!(builds, 2);
    }
}
