//! Listing: the targets' tools, prompts and resources under their exposed
//! names, fanned out in parallel, with one cursor over every target's own.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures::future::join_all;
use serde_json::{json, Value};

use super::names::expose;
use crate::config::ToolsListing;
use crate::domain::Target;
use crate::policy::Resource;
use crate::wire::codes;

use super::*;

impl Gateway<'_> {
    pub(super) async fn list(&self, method: &str, key: &str, params: Option<&Params>) -> Reply {
        let exposed = match self.exposed_targets().await {
            Ok(t) => t,
            Err(r) => return r,
        };
        // Only what the caller may call is listed.
        let policies = match self.policies().await {
            Ok(p) => p,
            Err(r) => return r,
        };
        // Asked of each item as the upstream named it (policies know tools
        // and prompts by target and upstream name, not by exposed name).
        let allowed = |target: &str, item: &Value| -> bool {
            let Some(set) = &policies else { return true };
            let text = |k: &str| item.get(k).and_then(Value::as_str);
            match key {
                "tools" => text("name").is_some_and(|name| {
                    let name = &crate::policy::item_id(target, name);
                    self.may(set, "tools/call", &Resource::Tool { target, name })
                }),
                "prompts" => text("name").is_some_and(|name| {
                    let name = &crate::policy::item_id(target, name);
                    self.may(set, "prompts/get", &Resource::Prompt { target, name })
                }),
                "resources" => text("uri").is_some_and(|uri| {
                    self.may(set, "resources/read", &Resource::Resource { target, uri })
                }),
                // Templates name no single resource: listed as they are.
                _ => true,
            }
        };
        // Search-only listing: the gateway's own tools; agents search.
        if key == "tools" && self.state.config.tools_listing == ToolsListing::SearchOnly {
            return Reply::Result(json!({ "tools": gateway_tools() }));
        }
        let cursor = params.and_then(Params::cursor);
        // A cursor holds the upstreams' own cursors, or the gateway's
        // offset into a listing too long for one page.
        let (wanted, offset): (Option<BTreeMap<String, String>>, usize) = match cursor {
            None => (None, 0),
            Some(c) => match decode_cursor(&c) {
                Some(mut m) => match m.remove(OFFSET_KEY) {
                    Some(o) if m.is_empty() => match o.parse() {
                        Ok(o) => (None, o),
                        Err(_) => return Reply::error(codes::INVALID_PARAMS, "invalid cursor"),
                    },
                    Some(_) => return Reply::error(codes::INVALID_PARAMS, "invalid cursor"),
                    None => (Some(m), 0),
                },
                None => return Reply::error(codes::INVALID_PARAMS, "invalid cursor"),
            },
        };
        let jobs = exposed.iter().filter_map(|e| {
            let upstream_cursor = match &wanted {
                None => None,
                Some(m) => Some(m.get(&e.target.name)?.clone()),
            };
            Some(async move {
                let mut p = Params::new();
                if let Some(c) = &upstream_cursor {
                    p.set("cursor", c);
                }
                (e, self.forward(&e.target, method, Some(p)).await)
            })
        });
        let results = join_all(jobs).await;
        let mut items = vec![];
        let mut next = BTreeMap::new();
        for (e, result) in results {
            // A JSON-RPC error is a failed listing: the cached catalog stands in.
            let result = match result {
                Ok(message) if message.get("result").is_none() => Err(Blocked::Upstream(format!(
                    "listing answered with an error: {}",
                    message.get("error").cloned().unwrap_or_default()
                ))),
                other => other,
            };
            match result {
                Ok(message) => {
                    let Some(result) = message.get("result") else {
                        tracing::warn!(target = %e.target.name, method, "upstream listing failed: {}", message.get("error").cloned().unwrap_or_default());
                        continue;
                    };
                    if let Some(list) = result.get(key).and_then(Value::as_array) {
                        items.extend(
                            list.iter()
                                .filter(|i| allowed(&e.target.name, i))
                                .filter_map(|i| rename(i, &e.prefix, key)),
                        );
                        if key == "tools" && wanted.is_none() {
                            self.remember_catalog(&e.target, list).await;
                        }
                    }
                    if let Some(c) = result.get("nextCursor").and_then(Value::as_str) {
                        next.insert(e.target.name.clone(), c.to_owned());
                    }
                }
                Err(blocked) => {
                    if let Blocked::Retry(why) | Blocked::Upstream(why) = &blocked {
                        tracing::warn!(target = %e.target.name, method, reason = %why, "upstream listing unavailable; using the cached catalog");
                    }
                    // Not connected (or unavailable): the cached catalog for tools.
                    if key == "tools" && wanted.is_none() {
                        if e.target.tool_catalog.is_empty()
                            && matches!(blocked, Blocked::Consent(_) | Blocked::Interaction(_))
                        {
                            // Nothing known about its tools yet: a tool that
                            // starts the consent, so the agent can offer it.
                            // Known to policies as `<target>___connect`.
                            let connect = connect_tool(&e.target);
                            let may_connect = match &policies {
                                None => true,
                                Some(set) => self.may(
                                    set,
                                    "tools/call",
                                    &Resource::Tool {
                                        target: &e.target.name,
                                        name: &connect_tool_name(&e.target),
                                    },
                                ),
                            };
                            if may_connect {
                                items.push(connect);
                            }
                        }
                        items.extend(
                            e.target
                                .tool_catalog
                                .iter()
                                .map(|i| i.value())
                                .filter(|i| allowed(&e.target.name, i))
                                .filter_map(|i| rename(&i, &e.prefix, key)),
                        );
                    }
                }
            }
        }
        if key == "tools" && wanted.is_none() {
            items.extend(gateway_tools());
        }
        // Too many for one page (large cached catalogs; no upstream
        // paginates): a page of them, and the gateway's offset for the next.
        if offset > 0 || (next.is_empty() && items.len() > LIST_PAGE_SIZE) {
            // A paged listing stays paged by offset (an upstream that starts
            // paginating meanwhile is listed by its first page).
            next.clear();
            let total = items.len();
            items = items
                .into_iter()
                .skip(offset)
                .take(LIST_PAGE_SIZE)
                .collect();
            if offset.saturating_add(LIST_PAGE_SIZE) < total {
                next.insert(OFFSET_KEY.to_owned(), (offset + LIST_PAGE_SIZE).to_string());
            }
        }
        let mut result = json!({ key: items });
        if !next.is_empty() {
            result["nextCursor"] = json!(encode_cursor(&next));
        }
        Reply::Result(result)
    }

    /// Lists `target`'s tools upstream as this caller (every page, at most
    /// [`MAX_SYNC_PAGES`]) and stores them as its catalog, which tool search
    /// and users who have not connected see. The number of tools, or why not.
    pub async fn sync_catalog(&self, name: &str) -> Result<usize, String> {
        let target = match self.state.targets.get_fresh(name).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(format!("no target named {name:?}")),
            Err(e) => return Err(e.to_string()),
        };
        let mut tools = vec![];
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_SYNC_PAGES {
            let mut p = Params::new();
            if let Some(c) = &cursor {
                p.set("cursor", c);
            }
            let message = match self.forward(&target, "tools/list", Some(p)).await {
                Ok(m) => m,
                Err(Blocked::Consent(_) | Blocked::Interaction(_)) => {
                    return Err(format!(
                        "{} needs this user's consent first (connect, then sync again)",
                        target.title()
                    ))
                }
                Err(Blocked::Retry(why) | Blocked::Upstream(why)) => return Err(why),
            };
            let Some(result) = message.get("result") else {
                return Err(format!(
                    "the upstream answered tools/list with an error: {}",
                    message.get("error").cloned().unwrap_or_default()
                ));
            };
            if let Some(list) = result.get("tools").and_then(Value::as_array) {
                tools.extend(list.iter().cloned());
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        let count = tools.len();
        self.state
            .targets
            .put_catalog(&target, &tools)
            .await
            .map_err(|e| e.to_string())?;
        Ok(count)
    }

    /// Keeps the target's catalog current for users who have not connected.
    pub(super) async fn remember_catalog(&self, target: &Target, tools: &[Value]) {
        let unchanged = target.tool_catalog.len() == tools.len()
            && target
                .tool_catalog
                .iter()
                .zip(tools)
                .all(|(known, listed)| {
                    serde_json::to_string(listed).ok().as_deref() == Some(known.text())
                });
        if unchanged {
            return;
        }
        // Only the catalog, and only while the target is stored as it was
        // read: a removed target stays removed, an operator's change stays.
        match self.state.targets.put_catalog(target, tools).await {
            Ok(()) => {}
            Err(crate::Error::StaleVersion) => {
                tracing::debug!(target = %target.name, "target changed since it was read; catalog not stored")
            }
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "could not update the cached catalog")
            }
        }
    }
}

/// The most items one listing page holds when the gateway pages a listing
/// itself (the upstreams' own pages are passed on as they come).
pub const LIST_PAGE_SIZE: usize = 1000;

/// The cursor member holding the gateway's offset (no target has this name).
const OFFSET_KEY: &str = "@offset";

/// The most `tools/list` pages a catalog sync follows.
pub const MAX_SYNC_PAGES: usize = 100;

/// A listed item under its exposed name (URIs stay as they are).
pub(super) fn rename(item: &Value, prefix: &str, key: &str) -> Option<Value> {
    let mut item = item.clone();
    if key == "tools" || key == "prompts" {
        let name = item.get("name")?.as_str()?.to_owned();
        item["name"] = json!(expose(prefix, &name));
    }
    Some(item)
}

pub(super) fn encode_cursor(next: &BTreeMap<String, String>) -> String {
    B64.encode(serde_json::to_vec(next).unwrap_or_default())
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<BTreeMap<String, String>> {
    let bytes = B64.decode(cursor).ok()?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).ok()?;
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let mut m = BTreeMap::new();
        m.insert("github".to_string(), "abc".to_string());
        assert_eq!(decode_cursor(&encode_cursor(&m)), Some(m));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&B64.encode(b"{}")), None);
        assert_eq!(decode_cursor(&B64.encode(b"[1]")), None);
    }
}
