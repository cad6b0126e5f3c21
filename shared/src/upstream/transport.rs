//! The HTTP client of MCP requests to upstreams.
//!
//! Every `/mcp` call makes one of these requests, so they go through
//! hyper's pooled client over rustls directly, with the settings of
//! [`crate::state::http_client`] (timeouts, idle pool, no redirects, the
//! gateway's User-Agent). reqwest, which the gateway uses elsewhere, wraps
//! the same client in layers this path has no use for: its redirect layer
//! and its response each parse the request's URL again (about a fifth of
//! what the gateway adds to a call), its retry layer copies the headers.
//!
//! Where the environment names an HTTP proxy (`HTTPS_PROXY` and the like,
//! which reqwest honours), these requests go through reqwest instead, so
//! that they take the proxy as every other request of the gateway does.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::UpstreamError;

type Direct = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How MCP requests reach upstreams.
pub(crate) enum Transport {
    /// hyper's client.
    Direct(Box<DirectClient>),
    /// reqwest, because a proxy is configured.
    Reqwest,
}

/// The environment variables through which reqwest takes a proxy.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl Transport {
    /// Direct, unless `var` names a proxy (see [`PROXY_VARIABLES`]).
    pub(crate) fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let proxied = PROXY_VARIABLES
            .iter()
            .any(|name| var(name).is_some_and(|v| !v.trim().is_empty()));
        if proxied {
            Transport::Reqwest
        } else {
            Transport::Direct(Box::default())
        }
    }
}

/// hyper's pooled client, made on first use: the trusted roots are loaded
/// then, not while the function starts.
#[derive(Default)]
pub(crate) struct DirectClient(OnceLock<Result<Direct, String>>);

impl DirectClient {
    /// Sends `request`, its answer (body included) due by `deadline`.
    pub(crate) async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, UpstreamError> {
        let client = self
            .0
            .get_or_init(direct)
            .as_ref()
            .map_err(|why| UpstreamError::Transport(why.clone()))?;
        match tokio::time::timeout_at(deadline, client.request(request)).await {
            Ok(Ok(res)) => {
                let (head, body) = res.into_parts();
                Ok(Reply(Inner::Direct {
                    head,
                    body,
                    deadline,
                }))
            }
            Ok(Err(e)) => Err(UpstreamError::Transport(crate::error::chain(&e))),
            Err(_) => Err(timed_out()),
        }
    }
}

fn timed_out() -> UpstreamError {
    UpstreamError::Transport("the request timed out".into())
}

/// hyper's pooled client, with [`crate::state::http_client`]'s settings.
fn direct() -> Result<Direct, String> {
    use hyper_rustls::ConfigBuilderExt;
    crate::state::install_crypto_provider();
    let tls = rustls::ClientConfig::builder()
        .with_native_roots()
        .map_err(|e| format!("no trusted root certificates: {e}"))?
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(crate::state::CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(crate::state::POOL_IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector))
}

/// An upstream's answer: its status and headers, and its body to read,
/// by the request's deadline.
pub(crate) struct Reply(Inner);

enum Inner {
    Direct {
        head: http::response::Parts,
        body: hyper::body::Incoming,
        deadline: tokio::time::Instant,
    },
    Reqwest(reqwest::Response),
}

impl std::fmt::Debug for Reply {
    /// The status alone: headers may carry what an upstream set for the
    /// user.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl From<reqwest::Response> for Reply {
    fn from(res: reqwest::Response) -> Self {
        Reply(Inner::Reqwest(res))
    }
}

impl Reply {
    /// The status.
    pub(crate) fn status(&self) -> StatusCode {
        match &self.0 {
            Inner::Direct { head, .. } => head.status,
            Inner::Reqwest(res) => res.status(),
        }
    }

    /// The headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        match &self.0 {
            Inner::Direct { head, .. } => &head.headers,
            Inner::Reqwest(res) => res.headers(),
        }
    }

    /// The body's next chunk (`None` at its end). Cancel-safe: nothing is
    /// lost when the future is dropped before it is ready.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match &mut self.0 {
            Inner::Direct { body, deadline, .. } => loop {
                let frame = tokio::time::timeout_at(*deadline, body.frame())
                    .await
                    .map_err(|_| timed_out())?;
                match frame {
                    None => return Ok(None),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                        // Trailers: not part of the answer.
                    }
                    Some(Err(e)) => return Err(UpstreamError::Transport(crate::error::chain(&e))),
                }
            },
            Inner::Reqwest(res) => res.chunk().await.map_err(super::post::transport),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_in_the_environment_sends_requests_through_reqwest() {
        let none = Transport::from_lookup(|_| None);
        assert!(matches!(none, Transport::Direct(_)));
        for name in PROXY_VARIABLES {
            let proxied =
                Transport::from_lookup(|k| (k == name).then(|| "http://proxy:3128".into()));
            assert!(matches!(proxied, Transport::Reqwest), "{name}");
        }
        let blank = Transport::from_lookup(|k| (k == "HTTPS_PROXY").then(|| " ".into()));
        assert!(matches!(blank, Transport::Direct(_)));
    }
}
