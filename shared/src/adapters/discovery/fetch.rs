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
    /// A fetcher using the gateway's HTTP client (redirects off); under a
    /// policy without private addresses, a client of the same settings
    /// whose resolver only ever connects to public addresses.
    pub fn new(http: &'a reqwest::Client, policy: FetchPolicy) -> Self {
        let http = if policy.allow_private {
            http
        } else {
            public_only_client()
        };
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
            let Some(header) = bearer_challenge(res.headers()) else {
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

/// The gateway's HTTP client with [`PublicOnly`] as its resolver.
fn public_only_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        crate::state::http_client_builder()
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .build()
            .expect("a client with static settings builds")
    })
}

/// A resolver that drops loopback, private and link-local addresses. The
/// check before each fetch resolves the name too, but a name can resolve
/// differently a moment later (DNS rebinding): the connection itself must
/// only ever go to what this resolver returns.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                let refused = std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to no public address"),
                );
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the check (as after a DNS change), the connection itself still
    /// refuses a name that resolves to a private address.
    #[tokio::test]
    async fn the_public_only_client_never_connects_to_a_private_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = accepted.clone();
        tokio::spawn(async move {
            if listener.accept().await.is_ok() {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let err = public_only_client()
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(
            crate::error::chain(&err).contains("no public address"),
            "{}",
            crate::error::chain(&err)
        );
        assert!(!accepted.load(std::sync::atomic::Ordering::SeqCst));
        // The fetcher under the local policy keeps the given client.
        let http = crate::state::http_client();
        let local = Fetcher::new(&http, FetchPolicy::local());
        assert!(std::ptr::eq(local.http, &http));
    }
}
