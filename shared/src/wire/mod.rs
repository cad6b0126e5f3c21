//! The MCP side of the gateway: protocol constants, the aggregation and
//! routing of requests over targets, and the client toward upstreams.

pub mod envelope;
pub mod method;
pub mod params;
pub(crate) mod strict;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The stateless protocol revision.
pub const MODERN: &str = "2026-07-28";
/// The newest 2025 revision.
pub const LATEST_2025: &str = "2025-11-25";
/// Every revision the gateway speaks, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &[MODERN, "2025-11-25", "2025-06-18", "2025-03-26"];
/// The 2025 revisions (session-based), newest first.
pub const VERSIONS_2025: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// JSON-RPC and MCP error codes.
pub mod codes {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// 2025-11-25: the request needs the user to visit a URL first.
    pub const URL_ELICITATION_REQUIRED: i64 = -32042;
    /// 2026-07-28: a header does not match the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the request needs a client capability it did not declare.
    pub const MISSING_CAPABILITY: i64 = -32021;
    /// 2026-07-28: unsupported protocol version.
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// Gateway: a passing failure; retry later.
    pub const RETRY_LATER: i64 = -32000;
}

/// The `_meta` keys of 2026-07-28 requests.
pub mod meta {
    /// Protocol version.
    pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    /// The log level a 2026-07-28 request asks the server's log messages at.
    pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
    /// Client capabilities.
    pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    /// Client info.
    pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
    /// The `subscriptions/listen` request a notification belongs to.
    pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
    /// Gateway option: start a new consent for the called target.
    pub const FORCE_CONSENT: &str = "mcp-oauth-gateway/forceConsent";
    /// Gateway option: where the consent's success page sends the person
    /// (an allowed URL).
    pub const RETURN_URL: &str = "mcp-oauth-gateway/returnUrl";
    /// Amazon Bedrock AgentCore Gateway's per-call options, accepted as an
    /// alias of ours: `.oauthCredentialProvider.{returnUrl, forceAuthentication}`.
    pub const AGENTCORE_CREDENTIAL_PROVIDER: &str =
        "aws.bedrock-agentcore.gateway/credentialProviderConfiguration";
}

/// The MCP headers, as names made once (a lookup by `&str` parses and
/// lower-cases the name on every request).
pub mod headers {
    use http::HeaderName;

    /// `MCP-Protocol-Version`.
    pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
    /// `Mcp-Session-Id` (2025 eras).
    pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
    /// `Mcp-Method` (2026-07-28).
    pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
    /// `Mcp-Name` (2026-07-28).
    pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
    /// `X-Request-Id`, a caller's own request id.
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
}

/// A header value for `Mcp-Name`: as is when it is plain visible ASCII,
/// else `=?base64?<base64>?=`.
pub fn header_value(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.starts_with("=?");
    if plain {
        s.to_owned()
    } else {
        format!("=?base64?{}?=", B64.encode(s.as_bytes()))
    }
}

/// Decodes a header value made by [`header_value`].
pub fn decode_header_value(s: &str) -> Option<String> {
    match s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b) => B64.decode(b).ok().and_then(|v| String::from_utf8(v).ok()),
        None => Some(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip() {
        for s in [
            "plain_tool",
            "file:///a b",
            "naïve",
            " lead",
            "=?trick?=",
            "multi\nline",
        ] {
            let h = header_value(s);
            assert!(h.bytes().all(|b| (0x20..0x7f).contains(&b)), "{h}");
            assert_eq!(decode_header_value(&h).as_deref(), Some(s));
        }
        assert_eq!(header_value("get_weather"), "get_weather");
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }
}

/// `value` as JSON text with every object's members in key order, whatever
/// order they were read or built in (JSON objects keep insertion order in
/// this build): the same text for the same value, for digests.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(members) => {
                let mut keys: Vec<&String> = members.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&members[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod canonical_tests {
    #[test]
    fn canonical_json_ignores_member_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":null}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#).unwrap();
        assert_eq!(super::canonical_json(&a), super::canonical_json(&b));
        assert_eq!(
            super::canonical_json(&a),
            r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
