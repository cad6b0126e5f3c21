//! A local inbound identity provider (JWKS over HTTP) and signed test tokens.

use std::sync::Arc;

use crate::*;

/// The RSA key pairs of `tests/fixtures/jwt-test-keys.json`, by key id:
/// `{"<kid>": {"jwk": {...}, "private_pem": "..."}}`.
pub fn jwt_test_keys() -> serde_json::Value {
    let text = std::fs::read_to_string(workspace_root().join("tests/fixtures/jwt-test-keys.json"))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A local identity provider: discovery and a JWKS that tests can change.
pub struct Idp {
    /// Issuer URL (http://127.0.0.1:port).
    pub issuer: String,
    /// The JWKS served; tests may change it.
    pub jwks: Arc<std::sync::Mutex<serde_json::Value>>,
    /// How many times the JWKS was fetched.
    pub jwks_hits: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an [`Idp`] serving the public keys `kids` of [`jwt_test_keys`].
pub async fn idp(kids: &[&str]) -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let k = jwt_test_keys();
    let jwks = Arc::new(std::sync::Mutex::new(
        serde_json::json!({"keys": kids.iter().map(|kid| k[kid]["jwk"].clone()).collect::<Vec<_>>()}),
    ));
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (iss, j, h) = (issuer.clone(), jwks.clone(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let iss = iss.clone();
                async move {
                    axum::Json(serde_json::json!({"issuer": iss, "authorization_endpoint": format!("{iss}/auth"), "token_endpoint": format!("{iss}/token"), "jwks_uri": format!("{iss}/jwks")}))
                }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                let (j, h) = (j.clone(), h.clone());
                async move {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(j.lock().unwrap().clone())
                }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Idp {
        issuer,
        jwks,
        jwks_hits: hits,
        task,
    }
}

/// An RS256 JWT of `claims` signed with test key `kid`.
pub fn sign(kid: &str, claims: serde_json::Value) -> String {
    let k = jwt_test_keys();
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(k[kid]["private_pem"].as_str().unwrap().as_bytes())
            .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}
