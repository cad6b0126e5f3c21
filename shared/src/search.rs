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

/// One searchable tool: where it is in a shared target's catalog (the
/// index holds no copy of the tools), and the name to call it by.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The target it belongs to.
    pub target: Arc<crate::domain::Target>,
    /// Its position in the target's catalog.
    pub position: usize,
    /// The name to call it by (the exposed name).
    pub name: String,
}

impl Entry {
    /// The tool as the upstream described it (under its upstream name).
    pub fn tool(&self) -> Value {
        self.target
            .tool_catalog
            .get(self.position)
            .map(crate::domain::CatalogTool::value)
            .unwrap_or_default()
    }
}

/// A ranked hit.
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    /// The tool.
    pub entry: &'a Entry,
    /// Its BM25 score (higher is better).
    pub score: f32,
}

/// A BM25 index over tools.
#[derive(Debug, Default)]
pub struct ToolIndex {
    entries: Vec<Entry>,
    /// Weighted term frequencies, per term: (entry, weight).
    postings: HashMap<Box<str>, Vec<(u32, f32)>>,
    /// Weighted length of each entry.
    lengths: Vec<f32>,
    average_length: f32,
}

impl ToolIndex {
    /// Indexes `entries`.
    pub fn new(entries: Vec<Entry>) -> Self {
        let mut postings: HashMap<Box<str>, Vec<(u32, f32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(entries.len());
        let mut terms: HashMap<String, f32> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            terms.clear();
            let tool = &e.tool();
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
            lengths.push(terms.values().sum());
            for (term, weight) in terms.drain() {
                postings
                    .entry(term.into_boxed_str())
                    .or_default()
                    .push((i as u32, weight));
            }
        }
        let average_length = if lengths.is_empty() {
            1.0
        } else {
            (lengths.iter().sum::<f32>() / lengths.len() as f32).max(1.0)
        };
        ToolIndex {
            entries,
            postings,
            lengths,
            average_length,
        }
    }

    /// How many tools are indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no tool is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `limit` best tools for `query` that `allowed` lets through, best
    /// first (ties by name); none for a query without a searchable word.
    pub fn search<'a>(
        &'a self,
        query: &str,
        limit: usize,
        allowed: impl Fn(&Entry) -> bool,
    ) -> Vec<Hit<'a>> {
        let query: String = query.chars().take(MAX_QUERY_CHARS).collect();
        let mut terms = words(&query);
        terms.sort();
        terms.dedup();
        let n = self.entries.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for term in &terms {
            let Some(list) = self.postings.get(term.as_str()) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(doc, tf) in list {
                let length = self.lengths[doc as usize] / self.average_length;
                let score = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length));
                *scores.entry(doc).or_default() += score;
            }
        }
        let mut scored: Vec<(u32, f32)> = scores.into_iter().collect();
        let order = |a: &(u32, f32), b: &(u32, f32)| {
            b.1.total_cmp(&a.1).then_with(|| {
                self.entries[a.0 as usize]
                    .name
                    .cmp(&self.entries[b.0 as usize].name)
            })
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
                let entry = &self.entries[doc as usize];
                if allowed(entry) {
                    hits.push(Hit { entry, score });
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
            target: Arc::new(crate::domain::Target {
                name: target.into(),
                display_name: None,
                mcp_url: "https://mcp.test/mcp".into(),
                auth: crate::domain::TargetAuth::None,
                tool_prefix: None,
                return_to: Default::default(),
                tool_catalog: vec![tool.into()],
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
        hits.iter().map(|h| h.entry.name.clone()).collect()
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
        let hits = idx.search("issues", 10, |e| e.target.name != "github");
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
