//! Tests of the upstream transport, against local upstreams over real
//! sockets (HTTP, and HTTPS with a test CA).

use super::*;
use std::sync::Arc;

/// A CA of these tests, and a certificate (with its key) for
/// `localhost` and 127.0.0.1 that it issued.
const TEST_CA: &[u8] = include_bytes!("test-ca.pem");
const TEST_LOCALHOST: &[u8] = include_bytes!("test-localhost.pem");

fn test_roots() -> Arc<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(TEST_CA) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(roots)
}

/// A TLS acceptor with the test certificate for `localhost`, offering
/// `alpn`.
fn tls_acceptor(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
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
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An HTTPS server on 127.0.0.1 that answers every request with the
/// HTTP version it came in (h2 or HTTP/1.1, as ALPN chose); its URL.
async fn https_upstream() -> (
    String,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let acceptor = tls_acceptor(&[b"h2", b"http/1.1"]);
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
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
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
        let proxied = Transport::from_lookup(|k| (k == name).then(|| "http://proxy:3128".into()));
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
    let acceptor = tls_acceptor(&[b"h2"]);
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
