//! One POST to an upstream with the target's credentials: the bearer or
//! DPoP-bound token (with a proof, and the upstream's nonce), an API key in
//! a header or the query, or a SigV4 signature; and the reading of its
//! status (challenges, JSON-RPC errors on 4xx).

use std::borrow::Cow;

use secrecy::ExposeSecret;
use serde_json::Value;

use super::{sign, Call, Reply, UpstreamClient, UpstreamError};
use crate::adapters::discovery::{auth_param, bearer_challenge};
use crate::domain::ApiKeyPlacement;
use crate::wire::header_value;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use crate::wire::headers::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
const DPOP: HeaderName = HeaderName::from_static("dpop");
/// Room in an upstream request's header map beyond its parameter headers:
/// the fixed and MCP headers, a credential, and the client's User-Agent
/// and Host added on the way out (a SigV4 signature may grow it once).
const HEADER_ROOM: usize = 12;

/// Appends a header whose value was made per request.
fn add(headers: &mut HeaderMap, name: HeaderName, value: String) -> Result<(), UpstreamError> {
    let value = HeaderValue::try_from(value)
        .map_err(|_| UpstreamError::Protocol(format!("the {name} header is not a header value")))?;
    headers.append(name, value);
    Ok(())
}

/// A header value that carries a secret (a token, a key, a signature):
/// never shown in debug output. `what` names it in the error. The value's
/// bytes become the header's (no copy).
fn sensitive(value: String, what: &str) -> Result<HeaderValue, UpstreamError> {
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| UpstreamError::Protocol(format!("{what} is not a header value")))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The `name` header's value: one of `known` (static: no copy per
/// request), else `value` copied.
fn known_or_copied(
    name: &HeaderName,
    value: &str,
    known: &[&'static str],
) -> Result<HeaderValue, UpstreamError> {
    match known.iter().find(|k| **k == value) {
        Some(k) => Ok(HeaderValue::from_static(k)),
        None => HeaderValue::from_str(value).map_err(|_| {
            UpstreamError::Protocol(format!("the {name} header is not a header value"))
        }),
    }
}

impl UpstreamClient {
    /// POSTs `body`; for a DPoP token, once more with the nonce the
    /// upstream asks for (RFC 9449 §9).
    pub(super) async fn post(
        &self,
        call: &Call<'_>,
        session: Option<&str>,
        version: Option<&str>,
        modern: Option<(&str, Option<Cow<'_, str>>)>,
        body: String,
    ) -> Result<Reply, UpstreamError> {
        self.exchange(http::Method::POST, call, session, version, modern, body)
            .await
    }

    /// Opens the standalone event stream (a GET) of the upstream's 2025
    /// `session`, with the call's credentials.
    pub(super) async fn open_stream(
        &self,
        call: &Call<'_>,
        session: &str,
        version: &str,
    ) -> Result<Reply, UpstreamError> {
        self.exchange(
            http::Method::GET,
            call,
            Some(session),
            Some(version),
            None,
            String::new(),
        )
        .await
    }

    /// [`Self::post`], or a GET (of no body).
    async fn exchange(
        &self,
        verb: http::Method,
        call: &Call<'_>,
        session: Option<&str>,
        version: Option<&str>,
        modern: Option<(&str, Option<Cow<'_, str>>)>,
        body: String,
    ) -> Result<Reply, UpstreamError> {
        let send = |body: bytes::Bytes, dpop| {
            self.post_once(verb.clone(), call, session, version, &modern, body, dpop)
        };
        let body = bytes::Bytes::from(body);
        let Some(key) = call.dpop else {
            return send(body, None).await;
        };
        let nonce = self.dpop_nonce(call.url);
        let res = send(body.clone(), Some((key, nonce.as_deref()))).await;
        let asked = match &res {
            Err(UpstreamError::DpopNonce(n)) => Some(n.clone()),
            _ => None,
        };
        let res = match asked {
            Some(n) if nonce.as_deref() != Some(&n) => {
                self.set_dpop_nonce(call.url, &n);
                send(body, Some((key, Some(&n)))).await
            }
            _ => res,
        };
        match res {
            // Asked again for a nonce just sent: the token is refused.
            Err(UpstreamError::DpopNonce(_)) => Err(UpstreamError::Unauthorized {
                resource_metadata: None,
                scope: None,
            }),
            other => other,
        }
    }

    /// `text` parsed as a URL, and as the URI a request is sent to, once
    /// per instance: the parse (host validation and IDNA mapping) costs
    /// more than the rest of building the request, and a target's URL is
    /// the same on every call.
    fn parsed_url(&self, text: &str) -> Result<(url::Url, http::Uri), String> {
        if let Some(parsed) = self
            .parsed_urls
            .read()
            .ok()
            .and_then(|urls| urls.get(text).cloned())
        {
            return Ok(parsed);
        }
        let url = url::Url::parse(text).map_err(|e| format!("the MCP URL: {e}"))?;
        let uri = uri_of(&url)?;
        if let Ok(mut urls) = self.parsed_urls.write() {
            // Bounded: one entry per target URL in practice.
            if urls.len() >= 1024 {
                urls.clear();
            }
            urls.insert(text.to_owned(), (url.clone(), uri.clone()));
        }
        Ok((url, uri))
    }

    fn dpop_nonce(&self, url: &str) -> Option<String> {
        self.dpop_nonces.lock().ok()?.get(url).cloned()
    }

    fn set_dpop_nonce(&self, url: &str, nonce: &str) {
        if let Ok(mut nonces) = self.dpop_nonces.lock() {
            // Bounded: one entry per DPoP upstream in practice.
            if nonces.len() >= 1024 {
                nonces.clear();
            }
            nonces.insert(url.to_owned(), nonce.to_owned());
        }
    }

    /// One request (a POST of `body`, or the GET of [`Self::open_stream`]).
    #[allow(clippy::too_many_arguments)]
    async fn post_once(
        &self,
        verb: http::Method,
        call: &Call<'_>,
        session: Option<&str>,
        version: Option<&str>,
        modern: &Option<(&str, Option<Cow<'_, str>>)>,
        body: bytes::Bytes,
        dpop: Option<(&crate::crypto::dpop::DpopKey, Option<&str>)>,
    ) -> Result<Reply, UpstreamError> {
        // The request is built here whole rather than through reqwest's
        // builder: its header map is sized once for every header the
        // request may carry (the client's defaults and Host are added on
        // the way out), where a map grown header by header is copied on
        // growing, twice per request, each copy over a kilobyte.
        let (mut url, mut uri) = self.parsed_url(call.url).map_err(UpstreamError::Protocol)?;
        if let Some((k, key)) = call
            .api_key
            .filter(|(k, _)| k.placement == ApiKeyPlacement::Query)
        {
            url.query_pairs_mut()
                .append_pair(&k.name, key.expose_secret());
            uri = uri_of(&url).map_err(UpstreamError::Protocol)?;
        }
        let mut headers = HeaderMap::with_capacity(HEADER_ROOM + call.param_headers.len());
        // Names and fixed values are static: no copy of either per request.
        if verb == http::Method::GET {
            headers.append(ACCEPT, HeaderValue::from_static("text/event-stream"));
        } else {
            headers.append(
                ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            );
            headers.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(v) = version {
            headers.append(
                MCP_PROTOCOL_VERSION,
                known_or_copied(&MCP_PROTOCOL_VERSION, v, crate::wire::SUPPORTED_VERSIONS)?,
            );
        }
        if let Some(s) = session {
            add(&mut headers, MCP_SESSION_ID, s.to_owned())?;
        }
        if let Some((method, name)) = modern {
            headers.append(
                MCP_METHOD,
                known_or_copied(&MCP_METHOD, method, crate::wire::envelope::Method::NAMES)?,
            );
            if let Some(n) = name {
                add(&mut headers, MCP_NAME, header_value(n))?;
            }
            for (k, v) in call.param_headers {
                let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                    UpstreamError::Protocol("a parameter header has an invalid name".into())
                })?;
                add(&mut headers, name, v.clone())?;
            }
        }
        // Update streams, and calls whose answer streams to the client,
        // may last longer than the client's ordinary timeout (20 s, within
        // API Gateway's 29).
        let streams = verb == http::Method::GET
            || modern
                .as_ref()
                .is_some_and(|(m, _)| *m == "subscriptions/listen")
            || call.relay.is_some_and(super::Relay::is_live);
        if let Some(iam) = call.aws_iam {
            let credentials = self.aws_credentials.as_ref();
            // Signed exactly as sent: a value that is not text cannot be.
            let signed = headers
                .iter()
                .map(|(k, v)| {
                    v.to_str().map(|v| (k.as_str(), v.to_owned())).map_err(|_| {
                        UpstreamError::Protocol(format!("the {k} header cannot be signed"))
                    })
                })
                .collect::<Result<Vec<(&str, String)>, _>>()?;
            let signature =
                sign::sigv4(verb.as_str(), credentials, iam, &url, &signed, &body).await?;
            for (k, v) in signature {
                let name = HeaderName::try_from(k).map_err(|_| {
                    UpstreamError::Protocol("a SigV4 header has an invalid name".into())
                })?;
                headers.append(name, sensitive(v, "a SigV4 header")?);
            }
        }
        if let Some((k, key)) = call
            .api_key
            .filter(|(k, _)| k.placement == ApiKeyPlacement::Header)
        {
            let name = HeaderName::try_from(k.name.as_str()).map_err(|_| {
                UpstreamError::Protocol("the API key's header name is not a header name".into())
            })?;
            let value = sensitive(
                format!("{}{}", k.prefix, key.expose_secret()),
                "the API key",
            )?;
            headers.append(name, value);
        }
        match (call.token, dpop) {
            (Some(token), Some((key, nonce))) => {
                let now = self.clock.now();
                let proof = key
                    .proof(verb.as_str(), call.url, Some(token), nonce, now)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                let value = sensitive(
                    format!("DPoP {}", token.expose_secret()),
                    "the access token",
                )?;
                headers.append(AUTHORIZATION, value);
                add(&mut headers, DPOP, proof)?;
            }
            (Some(token), None) => {
                let value = sensitive(
                    format!("Bearer {}", token.expose_secret()),
                    "the access token",
                )?;
                headers.append(AUTHORIZATION, value);
            }
            (None, _) => {}
        }
        let limit = if streams {
            self.stream_timeout
        } else {
            crate::state::REQUEST_TIMEOUT
        };
        let res = self
            .transport
            .send(&self.http, verb, url, uri, headers, body, limit)
            .await?;
        let status = res.status().as_u16();
        if dpop.is_some() {
            if let Some(n) = res
                .headers()
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
                .filter(|n| crate::adapters::oauth::is_dpop_nonce(n))
            {
                if status == 401 && dpop_nonce_challenge(res.headers()) {
                    return Err(UpstreamError::DpopNonce(n.to_owned()));
                }
                // A nonce handed out on the way: the next proof carries it.
                self.set_dpop_nonce(call.url, n);
            }
        }
        match status {
            200..=299 => Ok(res),
            401 => {
                let challenge = bearer_challenge(res.headers());
                Err(UpstreamError::Unauthorized {
                    resource_metadata: challenge
                        .as_deref()
                        .and_then(|c| auth_param(c, "resource_metadata")),
                    scope: challenge.as_deref().and_then(|c| auth_param(c, "scope")),
                })
            }
            403 => {
                let challenge = bearer_challenge(res.headers())
                    .filter(|v| v.to_ascii_lowercase().contains("insufficient_scope"));
                match challenge {
                    Some(c) => Err(UpstreamError::InsufficientScope {
                        scope: auth_param(&c, "scope"),
                    }),
                    None => Err(UpstreamError::Status(403)),
                }
            }
            // A client error that is a JSON-RPC error answers the call; a
            // server error stays an outage (retryable) whatever its body.
            other @ 400..=499 => Err(match rpc_error(res).await {
                Some(error) => UpstreamError::Rpc {
                    status: other,
                    error,
                },
                None => UpstreamError::Status(other),
            }),
            other => Err(UpstreamError::Status(other)),
        }
    }
}

/// The URI a request to `url` is sent to. Only HTTP reaches an upstream:
/// another scheme is refused here, as a target that cannot be called
/// (not an outage).
fn uri_of(url: &url::Url) -> Result<http::Uri, String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the request could not be built: the MCP URL's scheme is {}, not http or https",
            url.scheme()
        ));
    }
    http::Uri::try_from(url.as_str())
        .map_err(|e| format!("the request could not be built: the MCP URL: {e}"))
}

/// Largest error body read for a JSON-RPC error.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The JSON-RPC `error` object of an error response, if its body is a
/// JSON-RPC error message (an object with an integer `code` and a string
/// `message`); anything else (HTML pages, other JSON) is not.
async fn rpc_error(mut res: Reply) -> Option<Value> {
    let json = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return None;
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    let mut message: Value = serde_json::from_slice(&body).ok()?;
    let error = message.get_mut("error")?.take();
    let well_formed = error.get("code").is_some_and(Value::is_i64)
        && error.get("message").is_some_and(Value::is_string);
    well_formed.then_some(error)
}

/// A transport failure, without the request's URL (which may carry an API
/// key as a query parameter).
pub(crate) fn transport(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Transport(crate::error::chain(&e.without_url()))
}

/// True when a 401's challenge is DPoP's `use_dpop_nonce` (RFC 9449 §9).
fn dpop_nonce_challenge(headers: &HeaderMap) -> bool {
    headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.trim_start()
                .get(..4)
                .is_some_and(|s| s.eq_ignore_ascii_case("dpop"))
                && auth_param(v, "error").as_deref() == Some("use_dpop_nonce")
        })
}

#[cfg(test)]
mod tests;
