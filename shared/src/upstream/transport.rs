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
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A CA of these tests, and a certificate (with its key) for
    /// `localhost` and 127.0.0.1 that it issued.
    const TEST_CA: &[u8] = include_bytes!("transport/test-ca.pem");
    const TEST_LOCALHOST: &[u8] = include_bytes!("transport/test-localhost.pem");

    fn test_roots() -> Arc<rustls::RootCertStore> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(TEST_CA) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(roots)
    }

    /// An HTTPS server on 127.0.0.1 that answers every request with the
    /// HTTP version it came in (h2 or HTTP/1.1, as ALPN chose); its URL.
    async fn https_upstream() -> (
        String,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        crate::state::install_crypto_provider();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(TEST_LOCALHOST)
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(TEST_LOCALHOST).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}/mcp",
            listener.local_addr().unwrap().port()
        );
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let version = format!("{:?}", req.version());
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(version),
                            )))
                        },
                    );
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, service)
                        .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    };
                });
            }
        });
        (url, accepted, server)
    }

    /// An HTTPS upstream is reached over HTTP/2 where it offers it (ALPN)
    /// by either client, and only with a certificate the trusted roots
    /// vouch for.
    #[tokio::test]
    async fn https_upstreams_are_verified_and_spoken_to_in_h2() {
        let (url, accepted, server) = https_upstream().await;
        let request = || {
            let mut r = http::Request::new(Full::new(Bytes::from_static(b"{}")));
            *r.method_mut() = http::Method::POST;
            *r.uri_mut() = url.parse().unwrap();
            r
        };
        let deadline = || tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        // hyper's client, trusting the test CA.
        let trusting = DirectClient {
            roots: Some(test_roots()),
            ..Default::default()
        };
        for _ in 0..3 {
            let mut reply = trusting.send(request(), deadline()).await.unwrap();
            assert_eq!(reply.status(), 200);
            assert_eq!(
                reply.chunk().await.unwrap().as_deref(),
                Some(&b"HTTP/2.0"[..])
            );
        }
        // On one connection, kept.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // reqwest's, with the gateway's settings, trusting the test CA.
        let reqwest = crate::state::http_client_builder_trusting(test_roots())
            .build()
            .unwrap();
        let res = reqwest.post(&url).body("{}").send().await.unwrap();
        assert_eq!(res.text().await.unwrap(), "HTTP/2.0");
        // Trusting the system's roots, neither takes the certificate.
        let err = DirectClient::default()
            .send(request(), deadline())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, UpstreamError::Transport(why) if why.contains("certificate")),
            "{err:?}"
        );
        let err = crate::state::http_client()
            .post(&url)
            .send()
            .await
            .unwrap_err();
        assert!(crate::error::chain(&err).contains("certificate"), "{err:?}");
        server.abort();
    }

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

    /// Opening a connection is bounded as a whole: an upstream that takes
    /// the TCP connection and never completes the TLS handshake fails the
    /// request within the connect timeout, not at its deadline.
    #[tokio::test]
    async fn a_stalled_tls_handshake_times_out_as_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}/mcp",
            listener.local_addr().unwrap().port()
        );
        let server = tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let client = DirectClient {
            connect_timeout: std::time::Duration::from_millis(300),
            ..Default::default()
        };
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = url.parse().unwrap();
        let started = tokio::time::Instant::now();
        let err = client
            .send(request, started + std::time::Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, UpstreamError::Transport(why) if why.contains("connecting timed out")),
            "{err:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        server.abort();
    }

    /// A request an HTTP/2 upstream refused before processing it
    /// (REFUSED_STREAM) is sent again, at most twice more; other resets
    /// are the upstream's answer.
    #[tokio::test]
    async fn a_request_refused_unprocessed_over_h2_is_sent_again() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        crate::state::install_crypto_provider();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(TEST_LOCALHOST)
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(TEST_LOCALHOST).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Each request's path says how it is answered: `/refused-N` is
        // refused (REFUSED_STREAM) its first N times, `/cancel` is reset
        // with CANCEL, anything else answered.
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut conn) = h2::server::handshake(tls).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let path = req.uri().path().to_owned();
                        let times = {
                            let mut log = log.lock().unwrap();
                            log.push(path.clone());
                            log.iter().filter(|p| **p == path).count()
                        };
                        let refused = path
                            .strip_prefix("/refused-")
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| times <= n);
                        if refused {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                        } else if path == "/cancel" {
                            respond.send_reset(h2::Reason::CANCEL);
                        } else if let Ok(mut body) =
                            respond.send_response(http::Response::new(()), false)
                        {
                            let _ = body.send_data(Bytes::from_static(b"done"), true);
                        }
                    }
                });
            }
        });
        let client = DirectClient {
            roots: Some(test_roots()),
            ..Default::default()
        };
        let send = |path: &str| {
            let mut request = http::Request::new(Full::new(Bytes::from_static(b"{}")));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = format!("https://localhost:{port}{path}").parse().unwrap();
            client.send(
                request,
                tokio::time::Instant::now() + std::time::Duration::from_secs(10),
            )
        };
        // Refused twice: answered on the third sending.
        let mut reply = send("/refused-2").await.unwrap();
        assert_eq!(reply.chunk().await.unwrap().as_deref(), Some(&b"done"[..]));
        // Refused three times: the third refusal is the answer.
        let err = send("/refused-3").await.unwrap_err();
        assert!(matches!(err, UpstreamError::Transport(_)), "{err:?}");
        // Cancelled: not sent again.
        let err = send("/cancel").await.unwrap_err();
        assert!(matches!(err, UpstreamError::Transport(_)), "{err:?}");
        let seen = seen.lock().unwrap().clone();
        let count = |p: &str| seen.iter().filter(|s| *s == p).count();
        assert_eq!(count("/refused-2"), 3, "{seen:?}");
        assert_eq!(count("/refused-3"), 3, "{seen:?}");
        assert_eq!(count("/cancel"), 1, "{seen:?}");
        server.abort();
    }
}
