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

/// hyper's pooled client, made on first use.
#[derive(Default)]
pub(crate) struct DirectClient {
    client: OnceLock<Direct>,
    /// The roots it trusts (none: the system's, see
    /// [`crate::state::trusted_roots`]).
    roots: Option<std::sync::Arc<rustls::RootCertStore>>,
}

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
            )
        });
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

/// hyper's pooled client, with [`crate::state::http_client`]'s settings,
/// trusting `roots`.
fn direct(roots: std::sync::Arc<rustls::RootCertStore>) -> Direct {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(crate::state::CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::state::tls_config(roots))
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(crate::state::POOL_IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
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
    async fn https_upstream() -> (String, tokio::task::JoinHandle<()>) {
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
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
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
        (url, server)
    }

    /// An HTTPS upstream is reached over HTTP/2 where it offers it (ALPN)
    /// by either client, and only with a certificate the trusted roots
    /// vouch for.
    #[tokio::test]
    async fn https_upstreams_are_verified_and_spoken_to_in_h2() {
        let (url, server) = https_upstream().await;
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
        for _ in 0..2 {
            let mut reply = trusting.send(request(), deadline()).await.unwrap();
            assert_eq!(reply.status(), 200);
            assert_eq!(
                reply.chunk().await.unwrap().as_deref(),
                Some(&b"HTTP/2.0"[..])
            );
        }
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
}
