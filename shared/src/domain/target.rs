//! Targets: the upstream MCP servers the gateway fronts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An upstream MCP server registered with the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Short name: `[a-z0-9-]`, used in tool-name prefixes and item keys.
    pub name: String,
    /// Human-readable name shown on consent pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The upstream's Streamable HTTP endpoint.
    pub mcp_url: String,
    /// How the gateway authenticates to the upstream.
    pub auth: TargetAuth,
    /// Prefix for the target's tool, prompt and resource names; `None` means
    /// the default `<name>___`, `Some("")` means no prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_prefix: Option<String>,
    /// Where a person goes after connecting this target (see [`ReturnTo`]).
    #[serde(default, skip_serializing_if = "ReturnTo::is_empty")]
    pub return_to: ReturnTo,
    /// The last known tool catalog (`tools/list` result items), shown to users
    /// who have not connected yet and searched by tool search.
    #[serde(default, skip_serializing_if = "super::Catalog::is_empty")]
    pub tool_catalog: super::Catalog,
}

/// Where the consent's success page sends the person back to: the agent's
/// app, when it has a web page to return to.
///
/// A call may name its own return URL (`_meta`), accepted only when its
/// origin is allowed: listed here, the origin of `default_url`, or in the
/// gateway-wide `RETURN_URL_ALLOWLIST`. Anything else would make the
/// gateway an open redirector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnTo {
    /// Where to send the person after a consent when the call names no URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_url: Option<String>,
    /// Origins (`https://app.example.com`) a call may name a return URL on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

impl ReturnTo {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.default_url.is_none() && self.allowed_origins.is_empty()
    }

    /// `url` if a person may be sent there after this target's consent:
    /// an absolute http(s) URL without credentials whose origin is allowed
    /// here or in `global` (origins). The error says why not.
    pub fn check(&self, url: &str, global: &[String]) -> Result<url::Url, String> {
        let parsed = return_url(url)?;
        let origin = parsed.origin().ascii_serialization();
        let default_origin = self
            .default_url
            .as_deref()
            .and_then(|d| url::Url::parse(d).ok())
            .map(|d| d.origin().ascii_serialization());
        let allowed = self
            .allowed_origins
            .iter()
            .chain(global)
            .any(|o| o.trim_end_matches('/') == origin)
            || default_origin.as_deref() == Some(origin.as_str());
        if allowed {
            Ok(parsed)
        } else {
            Err(format!(
                "the return URL's origin {origin} is not on the gateway's allow-list"
            ))
        }
    }
}

/// A URL a person may be sent to: absolute, http(s), no user or password.
fn return_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("the return URL is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("the return URL must be http(s)".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the return URL must not carry credentials".into());
    }
    Ok(parsed)
}

/// How the gateway authenticates to a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetAuth {
    /// No authentication.
    None,
    /// OAuth 2.x Authorization Code with PKCE, per user.
    #[serde(rename = "oauth")]
    OAuth(Box<OAuthSettings>),
    /// One API key for every user, kept in Secrets Manager.
    ApiKey(ApiKeySettings),
    /// AWS Signature Version 4 with the function's own role (MCP servers
    /// on AWS: AgentCore Runtime, Lambda function URLs, API Gateway with
    /// IAM authorization).
    AwsIam(AwsIamSettings),
}

/// How an AWS IAM target's requests are signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsIamSettings {
    /// The signing name of the service (`bedrock-agentcore`, `lambda`,
    /// `execute-api`).
    pub service: String,
    /// The region, e.g. `us-east-1`.
    pub region: String,
}

impl AwsIamSettings {
    /// Checks the service and region names.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !name_ok(&self.service) {
            return Err(format!(
                "{:?} is not an AWS service signing name",
                self.service
            ));
        }
        if !name_ok(&self.region) {
            return Err(format!("{:?} is not an AWS region", self.region));
        }
        Ok(())
    }
}

/// An API key target: where the key goes on each request. The key itself
/// is in Secrets Manager; it is never logged nor shown in an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeySettings {
    /// Secrets Manager ARN of the key.
    pub secret_arn: String,
    /// Where the key is sent.
    #[serde(rename = "in")]
    pub placement: ApiKeyPlacement,
    /// The header or query parameter name.
    pub name: String,
    /// Text before the key in a header (`Bearer `, `Token `); none for a
    /// query parameter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// How an OAuth target's tokens are obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthFlow {
    /// Authorization Code with PKCE: each user consents; per-user grants.
    #[default]
    AuthorizationCode,
    /// Client Credentials (RFC 6749 §4.4): one token for the target, the
    /// same for every user; no consent.
    ClientCredentials,
    /// JWT bearer grant (RFC 7523 §2.1) for workload identity federation:
    /// an assertion from the workload's identity provider, kept where a
    /// client secret would be, exchanged for one token for the target.
    JwtBearer,
    /// Token exchange (RFC 8693): the caller's inbound token exchanged at
    /// the target's authorization server for a token per user; no consent
    /// unless the server asks for the person's interaction.
    TokenExchange,
    /// MCP enterprise-managed authorization: the caller's identity
    /// assertion exchanged at the enterprise identity provider for an
    /// identity assertion authorization grant (ID-JAG), presented to the
    /// target's authorization server with the JWT bearer grant.
    EnterpriseManaged,
}

impl OAuthFlow {
    fn is_authorization_code(&self) -> bool {
        *self == OAuthFlow::AuthorizationCode
    }

    /// Whether the flow yields one machine token for the target (no user).
    pub fn is_machine(self) -> bool {
        matches!(self, OAuthFlow::ClientCredentials | OAuthFlow::JwtBearer)
    }

    /// Whether the flow exchanges the caller's own token, per user.
    pub fn is_exchange(self) -> bool {
        matches!(
            self,
            OAuthFlow::TokenExchange | OAuthFlow::EnterpriseManaged
        )
    }
}

/// RFC 8693's token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693's token type of an OpenID Connect ID token.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The token type of an identity assertion authorization grant.
pub const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// How a token-exchange or enterprise-managed target exchanges the
/// caller's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeSettings {
    /// The token type of the caller's inbound token (`subject_token_type`):
    /// an access token for token exchange, an ID token for
    /// enterprise-managed authorization, by default.
    pub subject_token_type: String,
    /// The `audience` to ask the authorization server for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Enterprise-managed authorization: the identity provider that turns
    /// the caller's assertion into an ID-JAG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<IdentityProviderClient>,
}

/// The gateway's client at an enterprise identity provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProviderClient {
    /// The identity provider's token endpoint.
    pub token_endpoint: String,
    /// The gateway's client id there.
    pub client_id: String,
    /// Secrets Manager ARN of its client secret (HTTP Basic), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_arn: Option<String>,
}

impl TargetAuth {
    /// Whether each user connects this target with a consent of their own.
    pub fn is_per_user(&self) -> bool {
        matches!(self, TargetAuth::OAuth(o) if o.flow == OAuthFlow::AuthorizationCode)
    }

    /// Whether the target exchanges each caller's own token.
    pub fn is_exchange(&self) -> bool {
        matches!(self, TargetAuth::OAuth(o) if o.flow.is_exchange())
    }
}

/// Where an API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyPlacement {
    /// A request header.
    Header,
    /// A query parameter of the MCP URL.
    Query,
}

/// Headers an API key may not replace: the protocol's own and the hop's.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "accept",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

impl ApiKeySettings {
    /// Checks the name and prefix for where the key goes.
    pub fn validate(&self) -> Result<(), String> {
        if self.secret_arn.is_empty() {
            return Err("the API key's secret_arn is empty".into());
        }
        match self.placement {
            ApiKeyPlacement::Header => {
                let name = http::HeaderName::from_bytes(self.name.as_bytes())
                    .map_err(|_| format!("{:?} is not a header name", self.name))?;
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(format!(
                        "the header {:?} is set by the gateway itself",
                        self.name
                    ));
                }
                if self.prefix.chars().any(|c| c.is_control()) {
                    return Err("the API key prefix holds a control character".into());
                }
            }
            ApiKeyPlacement::Query => {
                let ok = !self.name.is_empty()
                    && self.name.len() <= 64
                    && self
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
                if !ok {
                    return Err(format!(
                        "{:?} is not a query parameter name (1-64 of A-Z, a-z, 0-9, -_.~)",
                        self.name
                    ));
                }
                if !self.prefix.is_empty() {
                    return Err("a query parameter takes no prefix".into());
                }
            }
        }
        Ok(())
    }
}

/// OAuth settings of a target, given by the operator or discovered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthSettings {
    /// The authorization server's issuer identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// Revocation endpoint (RFC 7009), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// Secrets Manager ARN of the client secret (confidential clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_arn: Option<String>,
    /// How the gateway authenticates at the token endpoint.
    #[serde(default)]
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    /// Scopes to request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (`audience`, `access_type`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Whether to send `resource` (RFC 8707); some providers reject it.
    #[serde(default = "default_true")]
    pub send_resource: bool,
    /// The resource identifier to send, exactly as the upstream's Protected
    /// Resource Metadata publishes it (none: the MCP URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The gateway obtained the client itself (Dynamic Client Registration
    /// or its Client ID Metadata Document), so it may obtain another one
    /// when the upstream moves to another authorization server; a client
    /// the operator gave is never replaced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub registered: bool,
    /// How tokens are obtained: per user with the Authorization Code flow
    /// (the default), or one machine token for the target with the Client
    /// Credentials grant.
    #[serde(default, skip_serializing_if = "OAuthFlow::is_authorization_code")]
    pub flow: OAuthFlow,
    /// Whether the server sends `iss` in authorization responses (RFC 9207).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// PKCE methods the server advertises.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// DPoP proof algorithms the server advertises (RFC 9449 §5.1); with
    /// ES256 among them, the target's tokens are bound to a key per grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// For the token-exchange flows: what is exchanged, and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeSettings>,
}

impl OAuthSettings {
    /// Whether the target's tokens are requested and used with DPoP.
    pub fn uses_dpop(&self) -> bool {
        crate::crypto::dpop::supported(&self.dpop_signing_alg_values_supported)
    }
}

fn default_true() -> bool {
    true
}

/// Token endpoint client authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    /// HTTP Basic with client id and secret.
    #[default]
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
    /// Public client: client id only.
    None,
    /// A JWT signed with the client's private key (RFC 7523 §2.2; ES256,
    /// the PKCS#8 PEM key kept where a client secret would be).
    PrivateKeyJwt,
}

impl TokenEndpointAuthMethod {
    /// The RFC 7591 / RFC 8414 name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenEndpointAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenEndpointAuthMethod::ClientSecretPost => "client_secret_post",
            TokenEndpointAuthMethod::PrivateKeyJwt => "private_key_jwt",
            TokenEndpointAuthMethod::None => "none",
        }
    }
}

impl Target {
    /// Checks the fields an operator sets; the message says which is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(format!(
                "target name {:?} must be 1-32 characters of a-z, 0-9 and '-'",
                self.name
            ));
        }
        if self.name == "gateway" {
            return Err("target name \"gateway\" is reserved for the gateway's own tools".into());
        }
        let url = url::Url::parse(&self.mcp_url)
            .map_err(|e| format!("mcp_url {:?} is not a URL: {e}", self.mcp_url))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!("mcp_url {:?} must be http(s)", self.mcp_url));
        }
        if let Some(d) = &self.return_to.default_url {
            return_url(d).map_err(|e| format!("return_to.default_url: {e}"))?;
        }
        for o in &self.return_to.allowed_origins {
            let u = url::Url::parse(o)
                .map_err(|e| format!("return_to.allowed_origins: {o:?} is not an origin ({e})"))?;
            if u.origin().ascii_serialization() != o.trim_end_matches('/') {
                return Err(format!(
                    "return_to.allowed_origins: {o:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
        }
        if let TargetAuth::OAuth(o) = &self.auth {
            for (field, value) in [
                ("authorization_endpoint", &o.authorization_endpoint),
                ("token_endpoint", &o.token_endpoint),
            ] {
                // Only the Authorization Code flow uses an authorization endpoint.
                if field == "authorization_endpoint"
                    && o.flow != OAuthFlow::AuthorizationCode
                    && value.is_empty()
                {
                    continue;
                }
                url::Url::parse(value)
                    .map_err(|e| format!("{field} {value:?} is not a URL: {e}"))?;
            }
            if o.flow.is_machine() && o.client_secret_arn.is_none() {
                return Err("a machine-token target needs its client secret (or assertion)".into());
            }
            if o.client_id.is_empty() {
                return Err("client_id is empty".into());
            }
            match (&o.flow, &o.exchange) {
                (OAuthFlow::TokenExchange, Some(x)) if x.identity_provider.is_none() => {}
                (OAuthFlow::TokenExchange, _) => {
                    return Err("a token-exchange target needs its exchange settings (and no identity provider)".into())
                }
                (OAuthFlow::EnterpriseManaged, Some(ExchangeSettings { identity_provider: Some(idp), .. })) => {
                    url::Url::parse(&idp.token_endpoint).map_err(|e| {
                        format!("the identity provider's token endpoint {:?} is not a URL: {e}", idp.token_endpoint)
                    })?;
                    if idp.client_id.is_empty() {
                        return Err("the identity provider's client_id is empty".into());
                    }
                    if o.issuer.is_none() {
                        return Err("an enterprise-managed target needs its authorization server's issuer (the ID-JAG's audience)".into());
                    }
                }
                (OAuthFlow::EnterpriseManaged, _) => {
                    return Err("an enterprise-managed target needs its identity provider".into())
                }
                (_, Some(_)) => {
                    return Err("exchange settings belong to token-exchange targets only".into())
                }
                _ => {}
            }
            const RESERVED: &[&str] = &[
                "response_type",
                "client_id",
                "redirect_uri",
                "state",
                "code_challenge",
                "code_challenge_method",
                "scope",
                "resource",
            ];
            if let Some(k) = o
                .extra_authorize_params
                .keys()
                .find(|k| RESERVED.contains(&k.as_str()))
            {
                return Err(format!(
                    "extra authorization parameter {k:?} is set by the gateway itself"
                ));
            }
            if o.token_endpoint_auth_method != TokenEndpointAuthMethod::None
                && o.client_secret_arn.is_none()
            {
                return Err("a confidential client needs client_secret_arn".into());
            }
        }
        if let TargetAuth::ApiKey(k) = &self.auth {
            k.validate()?;
        }
        if let TargetAuth::AwsIam(a) = &self.auth {
            a.validate()?;
        }
        Ok(())
    }

    /// The name shown to people.
    pub fn title(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// A per-user OAuth target `name` for unit tests: its MCP server at
/// `https://mcp.test/mcp`, its authorization server at `https://as.test`
/// (public client `gateway`, PKCE S256, no scopes).
#[cfg(test)]
pub(crate) fn oauth_target_for_tests(name: &str) -> Target {
    Target {
        name: name.into(),
        display_name: None,
        mcp_url: "https://mcp.test/mcp".into(),
        auth: TargetAuth::OAuth(Box::new(OAuthSettings {
            issuer: Some("https://as.test".into()),
            authorization_endpoint: "https://as.test/authorize".into(),
            token_endpoint: "https://as.test/token".into(),
            revocation_endpoint: None,
            client_id: "gateway".into(),
            client_secret_arn: None,
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            scopes: vec![],
            extra_authorize_params: Default::default(),
            send_resource: true,
            resource: None,
            registered: false,
            flow: Default::default(),
            authorization_response_iss_parameter_supported: true,
            code_challenge_methods_supported: vec!["S256".into()],
            dpop_signing_alg_values_supported: vec![],
            exchange: None,
        })),
        tool_prefix: None,
        return_to: Default::default(),
        tool_catalog: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            name: "github".into(),
            display_name: None,
            mcp_url: "https://api.example.com/mcp".into(),
            auth: TargetAuth::OAuth(Box::new(OAuthSettings {
                issuer: Some("https://as.example.com".into()),
                authorization_endpoint: "https://as.example.com/authorize".into(),
                token_endpoint: "https://as.example.com/token".into(),
                revocation_endpoint: None,
                client_id: "cid".into(),
                client_secret_arn: Some("arn:aws:secretsmanager:x".into()),
                token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
                scopes: vec!["repo".into()],
                extra_authorize_params: BTreeMap::new(),
                send_resource: true,
                resource: None,
                registered: false,
                flow: Default::default(),
                authorization_response_iss_parameter_supported: true,
                code_challenge_methods_supported: vec!["S256".into()],
                dpop_signing_alg_values_supported: vec![],
                exchange: None,
            })),
            tool_prefix: None,
            return_to: Default::default(),
            tool_catalog: Default::default(),
        }
    }

    #[test]
    fn json_round_trip() {
        let t = target();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""kind":"oauth""#));
        assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), t);
    }

    #[test]
    fn validation_names_the_field() {
        assert!(target().validate().is_ok());
        let mut t = target();
        t.name = "Bad Name".into();
        assert!(t.validate().unwrap_err().contains("target name"));
        let mut t = target();
        t.mcp_url = "nope".into();
        assert!(t.validate().unwrap_err().contains("mcp_url"));
        let mut t = target();
        if let TargetAuth::OAuth(o) = &mut t.auth {
            o.client_secret_arn = None;
        }
        assert!(t.validate().unwrap_err().contains("client_secret_arn"));
        let mut t = target();
        t.name = "gateway".into();
        assert!(t.validate().unwrap_err().contains("reserved"));
        let mut t = target();
        if let TargetAuth::OAuth(o) = &mut t.auth {
            o.extra_authorize_params
                .insert("redirect_uri".into(), "https://evil".into());
        }
        assert!(t.validate().unwrap_err().contains("redirect_uri"));
        let mut t = target();
        t.return_to.allowed_origins = vec!["https://app.example/path".into()];
        assert!(t.validate().unwrap_err().contains("allowed_origins"));
        let mut t = target();
        t.return_to.default_url = Some("javascript:alert(1)".into());
        assert!(t.validate().unwrap_err().contains("default_url"));
    }

    #[test]
    fn return_urls_need_an_allowed_origin() {
        let r = ReturnTo {
            default_url: Some("https://app.example/done".into()),
            allowed_origins: vec!["https://chat.example".into()],
        };
        let global = vec!["http://localhost:3000".to_owned()];
        for ok in [
            "https://app.example/other?x=1",
            "https://chat.example/c/42",
            "http://localhost:3000/back",
        ] {
            assert!(r.check(ok, &global).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "https://app.example.evil.example/",
            "https://chat.example:8443/",
            "http://chat.example/",
            "javascript:alert(1)",
            "https://user:pw@chat.example/",
            "/relative",
        ] {
            assert!(r.check(bad, &global).is_err(), "{bad}");
        }
        assert!(ReturnTo::default()
            .check("https://app.example/", &[])
            .is_err());
    }
}
