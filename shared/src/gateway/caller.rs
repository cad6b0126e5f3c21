//! Who is calling: the identity the inbound token gives, and what the
//! caller's client declared.

use serde_json::Value;

use crate::wire::MODERN;

/// Who is calling, as the inbound token (or API Gateway's authorizer)
/// says: what policies see of the principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user's subject.
    pub sub: String,
    /// The user's groups (`groups`, `cognito:groups` or `roles` claims).
    pub groups: Vec<String>,
    /// The token's scopes (`scope` or `scp`).
    pub scopes: Vec<String>,
    /// The agent's OAuth client id (`client_id`, `azp` or `cid`), if named.
    pub client_id: Option<String>,
}

/// The validated caller and what its client can do.
#[derive(Debug, Clone)]
pub struct Caller {
    /// What the inbound token says about the caller.
    pub identity: Identity,
    /// The protocol version of the exchange (one of the versions the
    /// gateway speaks is not copied per request).
    pub version: std::borrow::Cow<'static, str>,
    /// The client declared URL-mode elicitation (2025-11-25 and later).
    pub url_elicitation: bool,
    /// What a 2026-07-28 client declared of the capabilities an upstream's
    /// `input_required` rounds can use (`elicitation`, `sampling`,
    /// `roots`), passed on to upstreams with the client's own calls.
    pub relayed_capabilities: Option<serde_json::Map<String, Value>>,
    /// What a 2025 client declared of `sampling`, `elicitation` and
    /// `roots`, when its answers stream: the requests a 2025 upstream
    /// sends during a call are put to it on the call's stream (see
    /// [`super::client_requests`]); none: they are refused.
    pub answers: Option<serde_json::Map<String, Value>>,
    /// The `Mcp-Param-*` headers a 2026-07-28 client sent (lowercase names
    /// without the prefix, and values as sent).
    pub param_headers: Vec<(String, String)>,
    /// The bearer token the caller presented, as presented: the subject
    /// token of token-exchange targets, sent nowhere else.
    pub inbound_token: Option<secrecy::SecretString>,
}

impl Caller {
    /// `identity` speaking `version`, with nothing else declared.
    pub fn new(identity: Identity, version: &str) -> Caller {
        Caller {
            identity,
            version: Caller::version_of(version),
            url_elicitation: false,
            relayed_capabilities: None,
            answers: None,
            param_headers: vec![],
            inbound_token: None,
        }
    }

    /// `version` as kept: borrowed when it is one the gateway speaks.
    pub fn version_of(version: &str) -> std::borrow::Cow<'static, str> {
        match crate::wire::SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == version)
        {
            Some(known) => std::borrow::Cow::Borrowed(*known),
            None => std::borrow::Cow::Owned(version.to_owned()),
        }
    }

    /// The user's subject.
    pub fn sub(&self) -> &str {
        &self.identity.sub
    }

    pub(super) fn modern(&self) -> bool {
        self.version == MODERN
    }
}
