//! The HTTP client of MCP requests to upstreams.
//!
//! Every `/mcp` call makes one of these requests, so they go through
//! hyper's pooled client over rustls directly, with the settings of
//! [`crate::state::http_client`] (timeouts, idle pool, no redirects, the
//! gateway's User-Agent). reqwest, which the gateway uses elsewhere, wraps
//! the same client in layers this path has no use for: its redirect layer
//! and its response each parse the request's URL again (about a sixth of
//! what the gateway added to a call; reqwest's handling in all, about a
//! third), its retry layer copies the headers.
//!
//! Where the environment names an HTTP proxy (`HTTPS_PROXY` and the like,
//! which reqwest honours), these requests go through reqwest instead, so
//! that they take the proxy as every other request of the gateway does.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::UpstreamError;

type Direct = Client<Bounded<hyper_rustls::HttpsConnector<HttpConnector>>, Full<Bytes>>;

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

impl Transport {
    /// Sends one request (through `reqwest` where a proxy is configured),
    /// with the gateway's User-Agent, its answer due within `limit`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send(
        &self,
        reqwest: &reqwest::Client,
        verb: http::Method,
        url: url::Url,
        uri: http::Uri,
        mut headers: HeaderMap,
        body: Bytes,
        limit: Duration,
    ) -> Result<Reply, UpstreamError> {
        headers
            .entry(http::header::USER_AGENT)
            .or_insert(http::HeaderValue::from_static(crate::state::USER_AGENT));
        if let Transport::Direct(client) = self {
            let mut request = http::Request::new(Full::new(body));
            *request.method_mut() = verb;
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            return client
                .send(request, tokio::time::Instant::now() + limit)
                .await;
        }
        let mut request = reqwest::Request::new(verb, url);
        *request.headers_mut() = headers;
        *request.body_mut() = Some(body.into());
        *request.timeout_mut() = Some(limit);
        let res = reqwest.execute(request).await.map_err(|e| {
            if e.is_builder() {
                UpstreamError::Protocol(format!(
                    "the request could not be built: {}",
                    crate::error::chain(&e.without_url())
                ))
            } else {
                super::post::transport(e)
            }
        })?;
        Ok(res.into())
    }
}

/// hyper's pooled client, made on first use.
pub(crate) struct DirectClient {
    client: OnceLock<Direct>,
    /// The roots it trusts (none: the system's, see
    /// [`crate::state::trusted_roots`]).
    roots: Option<std::sync::Arc<rustls::RootCertStore>>,
    /// How long opening a connection may take, TLS handshake included.
    connect_timeout: Duration,
}

impl Default for DirectClient {
    fn default() -> Self {
        DirectClient {
            client: OnceLock::new(),
            roots: None,
            connect_timeout: crate::state::CONNECT_TIMEOUT,
        }
    }
}

/// How many times a request an HTTP/2 upstream refused unprocessed is sent
/// again (as reqwest does), on top of the first.
const RESENDS: usize = 2;

impl DirectClient {
    /// Sends `request`, its answer (body included) due by `deadline`.
    pub(crate) async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, UpstreamError> {
        let client = self.client.get_or_init(|| {
            direct(
                self.roots
                    .clone()
                    .unwrap_or_else(crate::state::trusted_roots),
                self.connect_timeout,
            )
        });
        // Only HTTPS can reach an HTTP/2 upstream (ALPN), whose refusals
        // are resent: only then is a copy kept (the body is shared, not
        // copied).
        let again =
            (request.uri().scheme() == Some(&http::uri::Scheme::HTTPS)).then(|| copy_of(&request));
        let mut sent = tokio::time::timeout_at(deadline, client.request(request)).await;
        if let Some(copy) = again {
            for _ in 0..RESENDS {
                match &sent {
                    Ok(Err(e)) if refused_unprocessed(e) => {}
                    _ => break,
                }
                sent = tokio::time::timeout_at(deadline, client.request(copy_of(&copy))).await;
            }
        }
        match sent {
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

/// A copy of `request` to send again.
fn copy_of(request: &http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// An HTTP/2 upstream's refusal of a request it did not process, which is
/// safe to send again (RFC 9113 §8.7): the connection shut down gracefully
/// (GOAWAY with NO_ERROR), or the stream refused (REFUSED_STREAM).
fn refused_unprocessed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && ((h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                    || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)));
        }
        source = err.source();
    }
    false
}

fn timed_out() -> UpstreamError {
    UpstreamError::Transport("the request timed out".into())
}

/// hyper's pooled client, with [`crate::state::http_client`]'s settings
/// (reqwest's TCP defaults among them), trusting `roots`.
fn direct(roots: std::sync::Arc<rustls::RootCertStore>, connect_timeout: Duration) -> Direct {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    // Dead connections (a peer gone, an instance thawed) are noticed.
    http.set_keepalive(Some(Duration::from_secs(15)));
    http.set_keepalive_interval(Some(Duration::from_secs(15)));
    http.set_keepalive_retries(Some(3));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::state::tls_config(roots))
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(crate::state::POOL_IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(Bounded {
            inner: connector,
            limit: connect_timeout,
        })
}

/// A connector whose connections open within `limit`, name resolution and
/// TLS handshake included (as reqwest's connect timeout).
#[derive(Clone)]
struct Bounded<C> {
    inner: C,
    limit: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<http::Uri> for Bounded<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (connecting, limit) = (self.inner.call(uri), self.limit);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err("connecting timed out".into()),
            }
        })
    }
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
mod tests;
