//! The JSON-RPC request as sent upstream, serialized from borrowed parts:
//! the params as given (2025 eras), or for a stateless 2026-07-28 upstream
//! with the per-request protocol fields merged into `_meta`.

use serde_json::Value;

use crate::wire::envelope::Params;
use crate::wire::{meta, MODERN};

/// The `Mcp-Name` of a 2026-07-28 request: the tool, resource or prompt it names.
pub fn mcp_name<'p>(method: &str, params: Option<&'p Params>) -> Option<std::borrow::Cow<'p, str>> {
    match method {
        "tools/call" | "prompts/get" => params?.name(),
        "resources/read" => params?.uri().map(std::borrow::Cow::Owned),
        _ => None,
    }
}

/// A JSON-RPC request as sent upstream, serialized straight from borrowed
/// parts (the caller's params are not copied).
#[derive(serde::Serialize)]
pub(super) struct OutRequest<'a> {
    pub(super) jsonrpc: &'static str,
    pub(super) id: u64,
    pub(super) method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) params: Option<OutParams<'a>>,
}

/// Params as sent: as given (2025 eras), or for a stateless 2026 upstream
/// with the per-request protocol fields merged into `_meta`.
pub(super) enum OutParams<'a> {
    AsGiven(&'a Params),
    /// The params, the log level to add when their `_meta` has none, and
    /// the client capabilities to declare (none: an empty set).
    Modern(
        Option<&'a Params>,
        Option<&'a str>,
        Option<&'a serde_json::Map<String, Value>>,
    ),
}

/// The per-request `_meta` fields a 2026-07-28 server expects.
const MODERN_META_KEYS: [&str; 3] = [
    meta::PROTOCOL_VERSION,
    meta::CLIENT_CAPABILITIES,
    meta::CLIENT_INFO,
];

impl serde::Serialize for OutParams<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (given, log_level, capabilities) = match self {
            OutParams::AsGiven(p) => return p.serialize(s),
            OutParams::Modern(p, l, c) => (*p, *l, *c),
        };
        let mut map = s.serialize_map(None)?;
        for (k, v) in given.into_iter().flat_map(Params::iter) {
            if k != "_meta" {
                map.serialize_entry(k, v)?;
            }
        }
        let meta = given.and_then(Params::meta);
        map.serialize_entry("_meta", &ModernMeta(meta, log_level, capabilities))?;
        map.end()
    }
}

/// A request's `_meta` with the 2026 protocol fields set (and a log level
/// when it names none and one is given), declaring these capabilities.
struct ModernMeta<'a>(
    Option<&'a serde_json::Map<String, Value>>,
    Option<&'a str>,
    Option<&'a serde_json::Map<String, Value>>,
);

impl serde::Serialize for ModernMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The usual case (a client's call without `_meta`, declaring
        // none of the capabilities relayed): the same text every time,
        // written once.
        if self.0.is_none() && self.2.is_none_or(|c| c.is_empty()) {
            if let Some(plain) = plain_meta(self.1) {
                return plain.serialize(s);
            }
        }
        self.write(s)
    }
}

/// The log levels of MCP's `logging/setLevel` (syslog's).
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// The `_meta` of a call whose params have none and that declares no
/// capabilities, with `log_level` added when there is one (a level of
/// MCP's), as JSON text made once; `None` for another level.
fn plain_meta(log_level: Option<&str>) -> Option<&'static serde_json::value::RawValue> {
    use std::sync::OnceLock;
    static PLAIN: [OnceLock<Box<serde_json::value::RawValue>>; LOG_LEVELS.len() + 1] =
        [const { OnceLock::new() }; LOG_LEVELS.len() + 1];
    let (slot, level) = match log_level {
        None => (LOG_LEVELS.len(), None),
        Some(level) => {
            let i = LOG_LEVELS.iter().position(|l| *l == level)?;
            (i, Some(LOG_LEVELS[i]))
        }
    };
    // Written member by member: serializing `ModernMeta` itself would
    // come back here, into the cell being filled.
    struct Written(Option<&'static str>);
    impl serde::Serialize for Written {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            ModernMeta(None, self.0, None).write(s)
        }
    }
    let text = PLAIN[slot]
        .get_or_init(|| serde_json::value::to_raw_value(&Written(level)).unwrap_or_default());
    Some(text)
}

impl ModernMeta<'_> {
    /// Writes the `_meta` member by member.
    fn write<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.into_iter().flatten() {
            if !MODERN_META_KEYS.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(level) = self.1 {
            if !self.0.is_some_and(|m| m.contains_key(meta::LOG_LEVEL)) {
                map.serialize_entry(meta::LOG_LEVEL, level)?;
            }
        }
        map.serialize_entry(MODERN_META_KEYS[0], MODERN)?;
        match self.2 {
            Some(c) => map.serialize_entry(MODERN_META_KEYS[1], c)?,
            None => map.serialize_entry(MODERN_META_KEYS[1], &serde_json::Map::new())?,
        }
        map.serialize_entry(
            MODERN_META_KEYS[2],
            &ClientInfo {
                name: "mcp-oauth-gateway",
                version: env!("CARGO_PKG_VERSION"),
            },
        )?;
        map.end()
    }
}

#[derive(serde::Serialize)]
struct ClientInfo {
    name: &'static str,
    version: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Params {
        Params::from_value(&v).unwrap()
    }

    fn sent(method: &str, params: Option<&Value>, modern: bool) -> Value {
        let params = params.map(|v| p(v.clone()));
        let params = params.as_ref();
        let out = OutRequest {
            jsonrpc: "2.0",
            id: 7,
            method,
            params: if modern {
                Some(OutParams::Modern(params, None, None))
            } else {
                params.map(OutParams::AsGiven)
            },
        };
        serde_json::from_str(&serde_json::to_string(&out).unwrap()).unwrap()
    }

    #[test]
    fn a_default_log_level_is_added_only_where_the_request_names_none() {
        let out = |params: Option<Value>| -> Value {
            let params = params.map(p);
            let o = OutRequest {
                jsonrpc: "2.0",
                id: 1,
                method: "tools/call",
                params: Some(OutParams::Modern(params.as_ref(), Some("info"), None)),
            };
            serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap()
        };
        let plain = out(Some(json!({"name": "t"})));
        assert_eq!(plain["params"]["_meta"][meta::LOG_LEVEL], "info");
        let own = out(Some(
            json!({"name": "t", "_meta": {(meta::LOG_LEVEL): "debug", "progressToken": 3}}),
        ));
        assert_eq!(own["params"]["_meta"][meta::LOG_LEVEL], "debug");
        assert_eq!(own["params"]["_meta"]["progressToken"], 3);
        assert!(
            sent("tools/call", Some(&json!({"name": "t"})), true)["params"]["_meta"]
                .get(meta::LOG_LEVEL)
                .is_none()
        );
    }

    #[test]
    fn requests_carry_the_2026_meta_fields_only_for_stateless_upstreams() {
        let info = json!({"name": "mcp-oauth-gateway", "version": env!("CARGO_PKG_VERSION")});
        let params = json!({"name": "t", "arguments": {"a": 1},
            "_meta": {"progressToken": 5, "io.modelcontextprotocol/protocolVersion": "old"}});
        assert_eq!(
            sent("tools/call", Some(&params), true),
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "t", "arguments": {"a": 1},
                "_meta": {"progressToken": 5,
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": info}}})
        );
        assert_eq!(
            sent("ping", None, true)["params"],
            json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": info}})
        );
        // Params without `_meta` get the same fields (written once, kept).
        for _ in 0..2 {
            assert_eq!(
                sent("tools/call", Some(&json!({"name": "t"})), true)["params"],
                json!({"name": "t", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": info}})
            );
        }
        assert_eq!(sent("tools/call", Some(&params), false)["params"], params);
        assert_eq!(
            sent("ping", None, false),
            json!({"jsonrpc": "2.0", "id": 7, "method": "ping"})
        );
    }

    #[test]
    fn meta_written_once_is_the_meta_written_member_by_member() {
        let levels = LOG_LEVELS.iter().copied().map(Some);
        for level in levels.chain([None, Some("verbose")]) {
            let once = serde_json::to_string(&ModernMeta(None, level, None)).unwrap();
            let mut each = Vec::new();
            ModernMeta(None, level, None)
                .write(&mut serde_json::Serializer::new(&mut each))
                .unwrap();
            assert_eq!(once, String::from_utf8(each).unwrap(), "{level:?}");
            // Made once for MCP's levels and for none; another is written
            // member by member.
            assert_eq!(plain_meta(level).is_some(), level != Some("verbose"));
            if let Some(level) = level {
                assert!(once.contains(&format!(r#""{}":"{level}""#, meta::LOG_LEVEL)));
            }
        }
    }

    #[test]
    fn the_capabilities_relayed_are_declared_and_none_is_an_empty_set() {
        let with = |c: Option<&serde_json::Map<String, Value>>| -> Value {
            let o = OutRequest {
                jsonrpc: "2.0",
                id: 1,
                method: "tools/call",
                params: Some(OutParams::Modern(None, None, c)),
            };
            serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap()
        };
        let key = "io.modelcontextprotocol/clientCapabilities";
        let empty = serde_json::Map::new();
        assert_eq!(with(None), with(Some(&empty)));
        assert_eq!(with(Some(&empty))["params"]["_meta"][key], json!({}));
        let declared = json!({"elicitation": {"url": {}}});
        let declared = declared.as_object().unwrap();
        assert_eq!(
            with(Some(declared))["params"]["_meta"][key],
            json!({"elicitation": {"url": {}}})
        );
    }

    #[test]
    fn names_for_headers() {
        assert_eq!(
            mcp_name("tools/call", Some(&p(json!({"name": "t"})))).as_deref(),
            Some("t")
        );
        assert_eq!(
            mcp_name("resources/read", Some(&p(json!({"uri": "file:///x"})))).as_deref(),
            Some("file:///x")
        );
        assert_eq!(mcp_name("tools/list", None), None);
        assert_eq!(mcp_name("tools/call", Some(&p(json!({"name": 5})))), None);
    }
}
