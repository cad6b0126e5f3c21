//! Fetching metadata under a [`FetchPolicy`]: no redirects, size-limited,
//! public addresses only unless the policy allows otherwise.

use std::net::IpAddr;

use serde_json::Value;
use url::Url;

use super::*;

/// Fetches URLs under a [`FetchPolicy`].
pub struct Fetcher<'a> {
    pub(super) http: &'a reqwest::Client,
    policy: FetchPolicy,
}

impl<'a> Fetcher<'a> {
    /// A fetcher using the gateway's HTTP client (redirects off).
    pub fn new(http: &'a reqwest::Client, policy: FetchPolicy) -> Self {
        Fetcher { http, policy }
    }

    pub(super) async fn check(&self, url: &Url) -> Result<(), DiscoveryError> {
        let refused = |reason: &str| DiscoveryError::Refused {
            url: url.to_string(),
            reason: reason.to_owned(),
        };
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            _ => return Err(refused("only https URLs are fetched")),
        }
        if self.policy.allow_private {
            return Ok(());
        }
        let host = url.host_str().ok_or_else(|| refused("no host"))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs =
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| DiscoveryError::Fetch {
                    url: url.to_string(),
                    reason: format!("cannot resolve host: {e}"),
                })?;
        for addr in addrs {
            if !is_public(addr.ip()) {
                return Err(refused(&format!(
                    "{} is a loopback, private or link-local address",
                    addr.ip()
                )));
            }
        }
        Ok(())
    }

    /// GETs a JSON document; `Ok(None)` on 404 (and other 4xx).
    pub async fn json(&self, url: &Url) -> Result<Option<Value>, DiscoveryError> {
        self.check(url).await?;
        let fetch_err = |reason: String| DiscoveryError::Fetch {
            url: url.to_string(),
            reason,
        };
        let res = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fetch_err(crate::error::chain(&e)))?;
        let status = res.status();
        if status.is_client_error() || status.is_redirection() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(fetch_err(format!("HTTP {status}")));
        }
        let body = read_limited(res).await.map_err(fetch_err)?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| DiscoveryError::Invalid {
                what: "document",
                url: url.to_string(),
                reason: format!("not JSON: {e}"),
            })
    }

    /// The upstream's answer to an unauthenticated request: `None` when it
    /// did not answer 401 with a Bearer challenge, else that challenge's
    /// `resource_metadata` and `scope`. Probes with `initialize`, then, when that is not
    /// challenged (servers may let the handshake through and protect the
    /// rest), with `tools/list`.
    pub async fn challenge(
        &self,
        mcp_url: &Url,
    ) -> Result<Option<(Option<String>, Option<String>)>, DiscoveryError> {
        self.check(mcp_url).await?;
        let initialize = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "mcp-oauth-gateway", "version": env!("CARGO_PKG_VERSION")}}});
        let list =
            serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
        for body in [initialize, list] {
            let res = self
                .http
                .post(mcp_url.clone())
                .header("accept", "application/json, text/event-stream")
                .json(&body)
                .send()
                .await
                .map_err(|e| DiscoveryError::Fetch {
                    url: mcp_url.to_string(),
                    reason: crate::error::chain(&e),
                })?;
            if res.status() != reqwest::StatusCode::UNAUTHORIZED {
                continue;
            }
            // Only a Bearer challenge asks for an OAuth token.
            let Some(header) = res
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"))
                .map(str::to_owned)
            else {
                continue;
            };
            return Ok(Some((
                auth_param(&header, "resource_metadata"),
                auth_param(&header, "scope"),
            )));
        }
        Ok(None)
    }
}

pub(super) async fn read_limited(mut res: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| crate::error::chain(&e))? {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(format!("document larger than {MAX_DOCUMENT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // CGNAT
                || v4.octets()[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80) // link local
        }
    }
}
