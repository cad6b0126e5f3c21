//! DPoP proofs on token requests (RFC 9449 §5), with the nonce retry of
//! §8: a server that answers `use_dpop_nonce` with a `DPoP-Nonce` header
//! gets the request once more, with a new proof carrying that nonce.

use std::future::Future;
use std::pin::Pin;

use oauth2::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};

use crate::crypto::dpop::DpopKey;

/// The HTTP client of the `oauth2` crate's token requests: the pooled
/// client, adding a proof when the grant has a key.
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) key: Option<DpopKey>,
}

impl<'c> AsyncHttpClient<'c> for Client {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send(&self.http, self.key.as_ref(), request))
    }
}

/// Sends a token request, with a proof of `key` when there is one.
pub(super) async fn send(
    http: &reqwest::Client,
    key: Option<&DpopKey>,
    request: HttpRequest,
) -> Result<HttpResponse, HttpClientError<reqwest::Error>> {
    let Some(key) = key else {
        return http.call(request).await;
    };
    let (parts, body) = request.into_parts();
    let url = parts.uri.to_string();
    let mut nonce: Option<String> = None;
    loop {
        let proof = key
            .proof(
                parts.method.as_str(),
                &url,
                None,
                nonce.as_deref(),
                crate::ports::Clock::now(&crate::ports::SystemClock),
            )
            .map_err(|e| HttpClientError::Other(e.to_string()))?;
        let mut builder = http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .version(parts.version);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .header("dpop", proof)
            .body(body.clone())
            .map_err(HttpClientError::Http)?;
        let response = http.call(request).await?;
        match (nonce.is_none(), asked_nonce(&response)) {
            (true, Some(n)) => nonce = Some(n),
            _ => return Ok(response),
        }
    }
}

/// The nonce a token endpoint asks for: a 400 `use_dpop_nonce` error with
/// a `DPoP-Nonce` header.
fn asked_nonce(response: &HttpResponse) -> Option<String> {
    if response.status() != http::StatusCode::BAD_REQUEST {
        return None;
    }
    let nonce = response.headers().get("dpop-nonce")?.to_str().ok()?;
    let body: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
    (body.get("error")?.as_str()? == "use_dpop_nonce" && is_nonce(nonce)).then(|| nonce.to_owned())
}

/// A nonce is a non-empty NQCHAR string (RFC 9449 §8.1); at most 512 bytes here.
pub(crate) fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= 512
        && nonce
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, nonce: Option<&str>, body: &str) -> HttpResponse {
        let mut b = http::Response::builder().status(status);
        if let Some(n) = nonce {
            b = b.header("dpop-nonce", n);
        }
        b.body(body.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn only_a_use_dpop_nonce_error_with_a_nonce_asks_for_a_retry() {
        let err = r#"{"error":"use_dpop_nonce"}"#;
        assert_eq!(
            asked_nonce(&response(400, Some("n-1"), err)).as_deref(),
            Some("n-1")
        );
        assert_eq!(asked_nonce(&response(400, None, err)), None);
        assert_eq!(asked_nonce(&response(401, Some("n-1"), err)), None);
        assert_eq!(
            asked_nonce(&response(400, Some("n-1"), r#"{"error":"invalid_grant"}"#)),
            None
        );
        // A nonce that is not NQCHAR is not echoed into a proof.
        assert_eq!(asked_nonce(&response(400, Some("a\"b"), err)), None);
        assert!(!is_nonce(""));
        assert!(!is_nonce(&"a".repeat(513)));
    }
}
