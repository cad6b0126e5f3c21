//! Discovery of an upstream MCP server's authorization settings, and client
//! registration.
//!
//! Order, as the MCP authorization spec gives it:
//! 1. Protected Resource Metadata (RFC 9728): from the `resource_metadata`
//!    of the upstream's 401 challenge, else the well-known URLs (path form
//!    first, then root).
//! 2. Authorization server metadata for the first listed server: RFC 8414
//!    then OpenID discovery, path-aware.
//! 3. Client: given credentials win; else a Client ID Metadata Document when
//!    the server supports it; else Dynamic Client Registration (RFC 7591).
//!
//! Fetches follow no redirects, and by default refuse plain http and
//! loopback, private and link-local addresses (the [`FetchPolicy`]).

mod fetch;
mod registration;

use fetch::read_limited;
pub use fetch::{is_public, Fetcher};
pub use registration::{client_metadata_document, register_client, RegisteredClient};

use serde::Deserialize;
use url::Url;

use crate::domain::{OAuthSettings, TokenEndpointAuthMethod};

/// The scope that asks for a refresh token (OpenID Connect Core §11).
const OFFLINE_ACCESS: &str = "offline_access";

/// Largest metadata document accepted.
const MAX_DOCUMENT: usize = 256 * 1024;

/// What discovery may fetch.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchPolicy {
    /// Allow `http://` URLs (local development only).
    pub allow_http: bool,
    /// Allow loopback, private and link-local addresses (local development only).
    pub allow_private: bool,
}

impl FetchPolicy {
    /// Anything goes: local development and tests.
    pub fn local() -> Self {
        FetchPolicy {
            allow_http: true,
            allow_private: true,
        }
    }

    /// The policy a registered URL implies for fetches made on its behalf
    /// at run time: plain http only if the URL is http, and loopback,
    /// private or link-local addresses only if its host is one itself
    /// (which only `--allow-insecure-local` lets an operator register);
    /// an http URL at a public host still reaches public addresses only.
    pub fn for_url(url: &Url) -> Self {
        let local_host = match url.host() {
            Some(url::Host::Ipv4(ip)) => !is_public(ip.into()),
            Some(url::Host::Ipv6(ip)) => !is_public(ip.into()),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        FetchPolicy {
            allow_http: url.scheme() == "http",
            allow_private: local_host,
        }
    }
}

/// Why discovery or registration failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A URL the policy refuses.
    #[error("refusing to fetch {url}: {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The network request failed.
    #[error("fetching {url} failed: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// No metadata was found where the spec says to look.
    #[error("no {what} found (tried {tried})")]
    NotFound {
        /// Which document.
        what: &'static str,
        /// The URLs tried.
        tried: String,
    },
    /// A document is not what it should be.
    #[error("{what} at {url} is invalid: {reason}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// Its URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// RFC 9728 Protected Resource Metadata (the fields used).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ProtectedResourceMetadata {
    /// The resource identifier.
    pub resource: String,
    /// Authorization servers that issue tokens for it.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes it understands.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// RFC 8414 / OpenID authorization server metadata (the fields used).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AuthorizationServerMetadata {
    /// Issuer identifier.
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// Revocation endpoint (RFC 7009).
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// Registration endpoint (RFC 7591).
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    /// Scopes supported.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// PKCE methods.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// DPoP proof algorithms (RFC 9449 §5.1).
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// Token endpoint client authentication methods.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Client ID Metadata Documents.
    #[serde(default)]
    pub client_id_metadata_document_supported: bool,
}

/// What discovery found for an MCP URL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Discovered {
    /// Where the resource metadata came from (none for a 2025-03-26 server
    /// that publishes none).
    pub resource_metadata_url: Option<String>,
    /// The resource metadata.
    pub resource: Option<ProtectedResourceMetadata>,
    /// Where the authorization server metadata came from (none when the
    /// 2025-03-26 default endpoints are used).
    pub authorization_server_metadata_url: Option<String>,
    /// The authorization server metadata (built from the default endpoints
    /// when there is none).
    pub authorization_server: AuthorizationServerMetadata,
    /// Scopes to request: the challenge's `scope`, else `scopes_supported`.
    pub scopes: Vec<String>,
}

impl Discovered {
    /// OAuth settings from the discovered metadata, for `client_id`.
    pub fn settings(
        &self,
        client_id: String,
        client_secret_arn: Option<String>,
        method: TokenEndpointAuthMethod,
    ) -> OAuthSettings {
        let a = &self.authorization_server;
        OAuthSettings {
            // Default endpoints come with no issuer to check responses against.
            issuer: self
                .authorization_server_metadata_url
                .as_ref()
                .map(|_| a.issuer.clone()),
            authorization_endpoint: a.authorization_endpoint.clone(),
            token_endpoint: a.token_endpoint.clone(),
            revocation_endpoint: a.revocation_endpoint.clone(),
            client_id,
            client_secret_arn,
            token_endpoint_auth_method: method,
            scopes: self.scopes.clone(),
            extra_authorize_params: Default::default(),
            send_resource: true,
            resource: self.resource.as_ref().map(|r| r.resource.clone()),
            registered: false,
            flow: Default::default(),
            authorization_response_iss_parameter_supported: a
                .authorization_response_iss_parameter_supported,
            code_challenge_methods_supported: a.code_challenge_methods_supported.clone(),
            dpop_signing_alg_values_supported: a.dpop_signing_alg_values_supported.clone(),
            exchange: None,
        }
    }
}

/// The token challenge among a response's `WWW-Authenticate` headers: the
/// Bearer one, else a DPoP one (RFC 9449 §7.1; a server that takes only
/// DPoP-bound tokens challenges with that scheme alone).
pub fn bearer_challenge(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let challenges = || {
        headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
    };
    let of = |scheme: &'static str| {
        move |v: &&str| {
            v.trim_start()
                .get(..scheme.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
        }
    };
    challenges()
        .find(of("bearer"))
        .or_else(|| challenges().find(of("dpop ")))
        .map(str::to_owned)
}

/// Reads one parameter of a `WWW-Authenticate: Bearer k="v", ...` (or
/// `DPoP k="v", ...`) challenge.
pub fn auth_param(header: &str, name: &str) -> Option<String> {
    let h = header.trim_start();
    let scheme = if h.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("bearer")) {
        6
    } else if h.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("dpop")) {
        4
    } else {
        return None;
    };
    let mut s = h.get(scheme..)?;
    loop {
        s = s.trim_start_matches([' ', ',', '\t']);
        if s.is_empty() {
            return None;
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        s = &s[eq + 1..];
        let value = if let Some(quoted) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut escaped = false;
            let mut end = None;
            for (j, c) in quoted.char_indices() {
                match (escaped, c) {
                    (true, c) => {
                        out.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(j);
                        break;
                    }
                    (false, c) => out.push(c),
                }
            }
            s = &quoted[end? + 1..];
            out
        } else {
            let end = s.find(',').unwrap_or(s.len());
            let v = s[..end].trim().to_owned();
            s = &s[end..];
            v
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
    }
}

/// The well-known URLs of the resource metadata for `mcp_url`: path form, then root.
pub fn resource_metadata_urls(mcp_url: &Url) -> Vec<Url> {
    let mut urls = vec![];
    let path = mcp_url.path().trim_end_matches('/');
    let mut root = mcp_url.clone();
    root.set_query(None);
    root.set_fragment(None);
    if !path.is_empty() {
        let mut u = root.clone();
        u.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
        urls.push(u);
    }
    let mut u = root;
    u.set_path("/.well-known/oauth-protected-resource");
    urls.push(u);
    urls
}

/// The metadata URLs of an issuer, in the MCP spec's order.
pub fn authorization_server_metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let at = |p: String| {
        let mut u = issuer.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.set_path(&p);
        u
    };
    if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".into()),
            at("/.well-known/openid-configuration".into()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    }
}

/// Runs discovery for an upstream MCP URL.
pub async fn discover(fetcher: &Fetcher<'_>, mcp_url: &str) -> Result<Discovered, DiscoveryError> {
    let mcp = Url::parse(mcp_url).map_err(|e| DiscoveryError::Invalid {
        what: "MCP URL",
        url: mcp_url.to_owned(),
        reason: e.to_string(),
    })?;
    let challenge = fetcher.challenge(&mcp).await?;
    let challenged = challenge.is_some();
    let (from_challenge, challenge_scope) = challenge.unwrap_or_default();
    let (prm_url, prm) =
        match find_resource_metadata(fetcher, &mcp, from_challenge.as_deref()).await? {
            Ok(found) => found,
            // No Protected Resource Metadata from a server whose Bearer
            // challenge names none: one of the 2025-03-26 revision, whose
            // authorization server lives at its own origin.
            Err(_) if challenged && from_challenge.is_none() => {
                return legacy(fetcher, &mcp, challenge_scope).await
            }
            Err(not_found) => return Err(not_found),
        };
    let issuer_str = prm
        .authorization_servers
        .first()
        .ok_or_else(|| DiscoveryError::Invalid {
            what: "protected resource metadata",
            url: prm_url.to_string(),
            reason: "it lists no authorization_servers".into(),
        })?;
    let (as_url, asm) = authorization_server(fetcher, issuer_str).await?;
    let mut scopes: Vec<String> = match challenge_scope {
        Some(s) if !s.trim().is_empty() => s.split_whitespace().map(str::to_owned).collect(),
        _ => prm.scopes_supported.clone(),
    };
    // The gateway keeps users connected between sessions: ask for refresh
    // tokens where the server has a scope for them (and only there).
    if asm.scopes_supported.iter().any(|s| s == OFFLINE_ACCESS)
        && !scopes.iter().any(|s| s == OFFLINE_ACCESS)
    {
        scopes.push(OFFLINE_ACCESS.into());
    }
    Ok(Discovered {
        resource_metadata_url: Some(prm_url.to_string()),
        resource: Some(prm),
        authorization_server_metadata_url: Some(as_url.to_string()),
        authorization_server: asm,
        scopes,
    })
}

/// The Protected Resource Metadata of `mcp`: at `from_challenge` (a 401's
/// `resource_metadata`), else at the well-known URLs, checked to be about
/// `mcp` ([`resource_covers`]).
pub async fn resource_metadata(
    fetcher: &Fetcher<'_>,
    mcp: &Url,
    from_challenge: Option<&str>,
) -> Result<ProtectedResourceMetadata, DiscoveryError> {
    find_resource_metadata(fetcher, mcp, from_challenge)
        .await?
        .map(|(_, prm)| prm)
}

/// The first Protected Resource Metadata found for `mcp`, with its URL;
/// the inner error when none was found anywhere (naming where it looked).
async fn find_resource_metadata(
    fetcher: &Fetcher<'_>,
    mcp: &Url,
    from_challenge: Option<&str>,
) -> Result<Result<(Url, ProtectedResourceMetadata), DiscoveryError>, DiscoveryError> {
    let mut candidates = vec![];
    if let Some(u) = from_challenge.and_then(|u| Url::parse(u).ok()) {
        candidates.push(u);
    }
    candidates.extend(resource_metadata_urls(mcp));
    for url in &candidates {
        let Some(doc) = fetcher.json(url).await? else {
            continue;
        };
        let prm: ProtectedResourceMetadata =
            serde_json::from_value(doc).map_err(|e| DiscoveryError::Invalid {
                what: "protected resource metadata",
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        // RFC 9728 §3.3: the metadata must be about this resource, or anyone
        // able to answer at a metadata URL could send tokens for another
        // resource through this one's consent.
        if !resource_covers(&prm.resource, mcp) {
            return Err(DiscoveryError::Invalid {
                what: "protected resource metadata",
                url: url.to_string(),
                reason: format!(
                    "it describes the resource {:?}, which is neither the MCP URL {mcp} nor a parent of it",
                    prm.resource
                ),
            });
        }
        return Ok(Ok((url.clone(), prm)));
    }
    Ok(Err(DiscoveryError::NotFound {
        what: "protected resource metadata",
        tried: candidates
            .iter()
            .map(Url::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }))
}

/// Whether the resource identifier `resource` names `mcp`: the same origin,
/// and a path equal to the MCP URL's or a parent of it at a segment
/// boundary (`https://api.example.com` covers `https://api.example.com/mcp`),
/// without a fragment.
pub fn resource_covers(resource: &str, mcp: &Url) -> bool {
    let Ok(r) = Url::parse(resource) else {
        return false;
    };
    if r.fragment().is_some() || r.origin() != mcp.origin() {
        return false;
    }
    let parent = r.path().trim_end_matches('/');
    let path = mcp.path().trim_end_matches('/');
    path == parent || path.starts_with(&format!("{parent}/"))
}

/// Discovery for a 2025-03-26 server (no Protected Resource Metadata): the
/// authorization server's metadata at the MCP server's origin, else that
/// revision's default endpoints there (`/authorize`, `/token`, `/register`).
async fn legacy(
    fetcher: &Fetcher<'_>,
    mcp: &Url,
    challenge_scope: Option<String>,
) -> Result<Discovered, DiscoveryError> {
    let origin = mcp.origin().ascii_serialization();
    let scopes = challenge_scope
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    match authorization_server(fetcher, &origin).await {
        Ok((url, asm)) => Ok(Discovered {
            resource_metadata_url: None,
            resource: None,
            authorization_server_metadata_url: Some(url.to_string()),
            authorization_server: asm,
            scopes,
        }),
        Err(DiscoveryError::NotFound { .. }) => Ok(Discovered {
            resource_metadata_url: None,
            resource: None,
            authorization_server_metadata_url: None,
            authorization_server: AuthorizationServerMetadata {
                issuer: origin.clone(),
                authorization_endpoint: format!("{origin}/authorize"),
                token_endpoint: format!("{origin}/token"),
                revocation_endpoint: None,
                registration_endpoint: Some(format!("{origin}/register")),
                scopes_supported: vec![],
                // That revision requires PKCE of every client.
                code_challenge_methods_supported: vec!["S256".into()],
                dpop_signing_alg_values_supported: vec![],
                token_endpoint_auth_methods_supported: vec![],
                authorization_response_iss_parameter_supported: false,
                client_id_metadata_document_supported: false,
            },
            scopes,
        }),
        Err(e) => Err(e),
    }
}

/// Fetches and checks the metadata of the authorization server `issuer`.
pub async fn authorization_server(
    fetcher: &Fetcher<'_>,
    issuer: &str,
) -> Result<(Url, AuthorizationServerMetadata), DiscoveryError> {
    let issuer_url = Url::parse(issuer).map_err(|e| DiscoveryError::Invalid {
        what: "issuer",
        url: issuer.to_owned(),
        reason: e.to_string(),
    })?;
    let urls = authorization_server_metadata_urls(&issuer_url);
    for url in &urls {
        let Some(doc) = fetcher.json(url).await? else {
            continue;
        };
        let invalid = |reason: String| DiscoveryError::Invalid {
            what: "authorization server metadata",
            url: url.to_string(),
            reason,
        };
        let meta: AuthorizationServerMetadata =
            serde_json::from_value(doc).map_err(|e| invalid(e.to_string()))?;
        if meta.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(invalid(format!(
                "its issuer {:?} is not {:?}",
                meta.issuer, issuer
            )));
        }
        if !meta
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
        {
            return Err(invalid(
                "it does not advertise PKCE S256 (code_challenge_methods_supported)".into(),
            ));
        }
        return Ok((url.clone(), meta));
    }
    Err(DiscoveryError::NotFound {
        what: "authorization server metadata",
        tried: urls.iter().map(Url::as_str).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters() {
        let h = r#"Bearer error="invalid_token", error_description="Authentication required", resource_metadata="https://x/.well-known/oauth-protected-resource/mcp", scope="a b""#;
        assert_eq!(
            auth_param(h, "resource_metadata").unwrap(),
            "https://x/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(auth_param(h, "scope").unwrap(), "a b");
        assert_eq!(auth_param(h, "error").unwrap(), "invalid_token");
        assert_eq!(
            auth_param(r#"Bearer realm=x, scope="q\"r""#, "scope").unwrap(),
            "q\"r"
        );
        assert_eq!(auth_param("Bearer realm=x", "realm").unwrap(), "x");
        assert!(auth_param("Bearer", "scope").is_none());
        assert!(auth_param("", "scope").is_none());
        assert!(auth_param("Bearer ,,,=", "scope").is_none());
        assert!(auth_param("Bearer a=\"unterminated", "scope").is_none());
        assert!(auth_param("Basic realm=x", "realm").is_none());
        assert!(auth_param("Béarer x=1", "x").is_none());
    }

    #[test]
    fn well_known_orders() {
        let u = Url::parse("https://api.example.com/v1/mcp?x=1").unwrap();
        let prm: Vec<_> = resource_metadata_urls(&u)
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            prm,
            [
                "https://api.example.com/.well-known/oauth-protected-resource/v1/mcp",
                "https://api.example.com/.well-known/oauth-protected-resource"
            ]
        );
        let i = Url::parse("https://auth.example.com/tenant1").unwrap();
        let asm: Vec<_> = authorization_server_metadata_urls(&i)
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            asm,
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
        let i = Url::parse("https://auth.example.com").unwrap();
        assert_eq!(authorization_server_metadata_urls(&i).len(), 2);
    }

    #[test]
    fn resource_identifiers_cover_their_own_url_and_children_only() {
        let mcp = Url::parse("https://api.example.com/v1/mcp").unwrap();
        for ok in [
            "https://api.example.com/v1/mcp",
            "https://api.example.com/v1/mcp/",
            "https://api.example.com/v1",
            "https://api.example.com",
            "https://api.example.com/",
            "https://API.example.com:443/v1/mcp",
        ] {
            assert!(resource_covers(ok, &mcp), "{ok}");
        }
        for bad in [
            "https://evil.example.com/v1/mcp",
            "http://api.example.com/v1/mcp",
            "https://api.example.com:8443/v1/mcp",
            "https://api.example.com/v1/mc",
            "https://api.example.com/v1/mcp/tools",
            "https://api.example.com/v2",
            "https://api.example.com/v1/mcp#x",
            "/v1/mcp",
            "",
        ] {
            assert!(!resource_covers(bad, &mcp), "{bad}");
        }
    }

    #[test]
    fn run_time_fetches_follow_the_targets_own_address_class() {
        let policy = |u: &str| FetchPolicy::for_url(&Url::parse(u).unwrap());
        let p = policy("https://mcp.example.com/mcp");
        assert!(!p.allow_http && !p.allow_private);
        let p = policy("http://mcp.example.com/mcp");
        assert!(p.allow_http && !p.allow_private, "http, but public only");
        for local in [
            "http://127.0.0.1:8200/mcp",
            "http://localhost:8200/mcp",
            "https://10.0.0.7/mcp",
            "http://[::1]:8200/mcp",
        ] {
            assert!(policy(local).allow_private, "{local}");
        }
    }

    #[test]
    fn address_classes() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "52.94.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
