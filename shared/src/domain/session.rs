//! Upstream MCP sessions, for upstreams that hand out `Mcp-Session-Id`.

/// A session the gateway holds with an upstream MCP server for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSession {
    /// The user's validated subject.
    pub sub: String,
    /// The target's name.
    pub target: String,
    /// The upstream's `Mcp-Session-Id`.
    pub session_id: String,
    /// The protocol version negotiated with the upstream.
    pub protocol_version: String,
    /// Unix seconds after which the gateway stops using the session.
    pub expires_at: i64,
}
