//! OAuth client toward upstream authorization servers (the `oauth2` crate).
//!
//! Two outcomes are kept apart all the way up: the server *rejected* the
//! grant (`invalid_grant` and the like: the user must consent again) and a
//! *transient* failure (5xx, timeout, refused connection: try again later,
//! keep the grant as it is).

use oauth2::basic::BasicErrorResponseType;
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse as _,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use crate::crypto::dpop::DpopKey;
use crate::domain::{OAuthSettings, TokenEndpointAuthMethod, TokenSet};

mod assertion;
mod authorize;
mod dpop;
mod exchange;
mod issuer;
pub(crate) use dpop::is_nonce as is_dpop_nonce;
mod response;
use assertion::assertion_params;
pub use assertion::client_assertion;
pub use authorize::{
    authorization_request, authorization_url, exchange_for_id_token, pkce_challenge,
};
pub use issuer::HttpTokenIssuer;
pub use response::LenientTokenResponse;

/// The client type, no endpoint set yet: token responses read leniently
/// ([`LenientTokenResponse`]).
type NewClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    LenientTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
>;

/// The configured client type: token endpoint set, authorization URL built by us.
type TokenClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    LenientTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Tokens a token endpoint returned.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// The tokens.
    pub tokens: TokenSet,
    /// Unix seconds when the access token expires, if the server said.
    pub expires_at: Option<i64>,
    /// Scopes the server reported, if it did.
    pub scopes: Option<Vec<String>>,
}

/// Why a token request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The server refused the grant (for a refresh: the user must consent again).
    #[error("the authorization server refused the request: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        /// The OAuth error code, e.g. `invalid_grant`.
        error: String,
        /// The server's description, if any (never contains our secrets).
        description: Option<String>,
    },
    /// The server could not be reached or failed; retrying later may work.
    #[error("the authorization server is unavailable: {0}")]
    Transient(String),
    /// The target's OAuth settings cannot be used.
    #[error("the target's OAuth settings are invalid: {0}")]
    Misconfigured(String),
    /// The server needs the person at this page first
    /// (`interaction_required`, during a token exchange).
    #[error("the authorization server asks for the user's interaction")]
    InteractionRequired {
        /// The page (an https URL).
        url: String,
    },
}

impl OAuthError {
    /// The refusal an OAuth error response body (`error`, `error_description`) describes.
    pub fn rejected_from(body: &serde_json::Value) -> Self {
        OAuthError::Rejected {
            error: clean_code(
                body.get("error")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown"),
            ),
            description: body
                .get("error_description")
                .and_then(|v| v.as_str())
                .map(clean_description),
        }
    }

    /// True when the grant itself is dead (consent needed), not a passing failure.
    pub fn is_rejection(&self) -> bool {
        matches!(self, OAuthError::Rejected { .. })
    }
}

fn client(
    settings: &OAuthSettings,
    token_endpoint: &str,
    secret: Option<&SecretString>,
    redirect_uri: Option<&str>,
) -> Result<TokenClient, OAuthError> {
    let token_url = TokenUrl::new(token_endpoint.to_owned())
        .map_err(|e| OAuthError::Misconfigured(format!("token endpoint: {e}")))?;
    let mut c = NewClient::new(ClientId::new(settings.client_id.clone())).set_token_uri(token_url);
    match settings.token_endpoint_auth_method {
        // The client id in the body; a private key's assertion is added per
        // request ([`with_assertion`]).
        TokenEndpointAuthMethod::None | TokenEndpointAuthMethod::PrivateKeyJwt => {
            c = c.set_auth_type(AuthType::RequestBody);
        }
        method => {
            let secret = secret.ok_or_else(|| {
                OAuthError::Misconfigured("a confidential client needs its client secret".into())
            })?;
            c = c
                .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
                .set_auth_type(if method == TokenEndpointAuthMethod::ClientSecretPost {
                    AuthType::RequestBody
                } else {
                    AuthType::BasicAuth
                });
        }
    }
    if let Some(uri) = redirect_uri {
        c = c.set_redirect_uri(
            RedirectUrl::new(uri.to_owned())
                .map_err(|e| OAuthError::Misconfigured(format!("redirect uri: {e}")))?,
        );
    }
    Ok(c)
}

fn issued(
    resp: LenientTokenResponse,
    now: i64,
    previous_refresh: Option<&SecretString>,
    dpop: Option<&DpopKey>,
) -> IssuedTokens {
    let refresh_token = resp
        .refresh_token()
        .map(|r| SecretString::from(r.secret().to_owned()))
        // A server that did not rotate the refresh token keeps the old one valid.
        .or_else(|| previous_refresh.cloned());
    IssuedTokens {
        tokens: TokenSet {
            access_token: SecretString::from(resp.access_token().secret().to_owned()),
            refresh_token,
            token_type: match resp.token_type() {
                oauth2::basic::BasicTokenType::Extension(t) if t.eq_ignore_ascii_case("dpop") => {
                    "DPoP".into()
                }
                _ => "Bearer".into(),
            },
            dpop_key: dpop.map(|k| k.secret().clone()),
        },
        // A remote value: no overflow, however large.
        expires_at: resp
            .expires_in()
            .map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        scopes: resp
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect()),
    }
}

/// The server's error code, safe to log and show (control characters
/// escaped, at most 64 characters).
fn clean_code(code: &str) -> String {
    crate::telemetry::clean(code, 64)
}

/// The server's error description, safe to log (control characters
/// escaped, at most 200 characters).
fn clean_description(description: &str) -> String {
    crate::telemetry::clean(description, 200)
}

/// OAuth error codes that report the server's trouble, not the grant's
/// (`ratelimited` is Slack's).
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "temporarily_unavailable" | "server_error" | "ratelimited"
    )
}

fn classify<RE: std::error::Error + 'static>(
    err: RequestTokenError<RE, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
) -> OAuthError {
    match err {
        RequestTokenError::ServerResponse(resp) => {
            let code = clean_code(resp.error().as_ref());
            let description = resp.error_description().map(|d| clean_description(d));
            match resp.error() {
                // Server-side trouble reported in OAuth form is still transient.
                BasicErrorResponseType::Extension(e) if is_transient_code(e) => {
                    OAuthError::Transient(code)
                }
                _ => OAuthError::Rejected {
                    error: code,
                    description,
                },
            }
        }
        RequestTokenError::Request(e) => OAuthError::Transient(crate::error::chain(&e)),
        RequestTokenError::Parse(_, body) => {
            // Some servers (GitHub) answer errors with 200 and an `error`.
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(doc) if doc.get("error").is_some_and(|e| e.is_string()) => {
                    match OAuthError::rejected_from(&doc) {
                        // As for an error status: server trouble is transient.
                        OAuthError::Rejected { error, .. } if is_transient_code(&error) => {
                            OAuthError::Transient(error)
                        }
                        other => other,
                    }
                }
                _ => OAuthError::Transient(format!(
                    "unreadable token endpoint response ({} bytes)",
                    body.len()
                )),
            }
        }
        RequestTokenError::Other(msg) => OAuthError::Transient(msg),
    }
}

/// A token endpoint client for one target: the shared HTTP client, the
/// target's OAuth settings and its client secret (if confidential).
#[derive(Clone, Copy)]
pub struct TokenEndpoint<'a> {
    /// Pooled HTTP client (redirects off).
    pub http: &'a reqwest::Client,
    /// The target's OAuth settings.
    pub settings: &'a OAuthSettings,
    /// The client secret, for confidential clients.
    pub secret: Option<&'a SecretString>,
    /// The grant's DPoP key, when the server binds tokens to one: every
    /// token request then carries a proof (RFC 9449 §5).
    pub dpop: Option<&'a DpopKey>,
}

impl<'a> TokenEndpoint<'a> {
    fn http_client(&self) -> dpop::Client {
        dpop::Client {
            http: self.http.clone(),
            key: self.dpop.cloned(),
        }
    }

    /// The parameters every token request adds: RFC 8707 `resource`, and a
    /// `private_key_jwt` client's assertion for `token_endpoint`.
    fn extra_params(
        &self,
        token_endpoint: &str,
        resource: Option<&str>,
        now: i64,
    ) -> Result<Vec<(&'static str, String)>, OAuthError> {
        let mut params = assertion_params(self.settings, token_endpoint, self.secret, now)?;
        if let Some(r) = resource {
            params.push(("resource", r.to_owned()));
        }
        Ok(params)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        redirect_uri: &str,
        code: &str,
        verifier: &SecretString,
        resource: Option<&str>,
        now: i64,
    ) -> Result<IssuedTokens, OAuthError> {
        let c = client(
            self.settings,
            &self.settings.token_endpoint,
            self.secret,
            Some(redirect_uri),
        )?;
        let mut req = c
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()));
        for (k, v) in self.extra_params(&self.settings.token_endpoint, resource, now)? {
            req = req.add_extra_param(k, v);
        }
        req.request_async(&self.http_client())
            .await
            .map(|r| issued(r, now, None, self.dpop))
            .map_err(classify)
    }

    /// Refreshes tokens at `token_endpoint` (the one the grant was issued
    /// by), asking for the original `scopes` and `resource`.
    pub async fn refresh(
        &self,
        token_endpoint: &str,
        refresh_token: &SecretString,
        scopes: &[String],
        resource: Option<&str>,
        now: i64,
    ) -> Result<IssuedTokens, OAuthError> {
        let c = client(self.settings, token_endpoint, self.secret, None)?;
        let rt = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut req = c
            .exchange_refresh_token(&rt)
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())));
        for (k, v) in self.extra_params(token_endpoint, resource, now)? {
            req = req.add_extra_param(k, v);
        }
        req.request_async(&self.http_client())
            .await
            .map(|r| issued(r, now, Some(refresh_token), self.dpop))
            .map_err(classify)
    }
}

impl TokenEndpoint<'_> {
    /// A machine token (Client Credentials, RFC 6749 §4.4) for the target's
    /// scopes and resource indicator.
    pub async fn client_credentials(
        &self,
        resource: Option<&str>,
        now: i64,
    ) -> Result<IssuedTokens, OAuthError> {
        let c = client(
            self.settings,
            &self.settings.token_endpoint,
            self.secret,
            None,
        )?;
        let mut req = c
            .exchange_client_credentials()
            .add_scopes(self.settings.scopes.iter().map(|s| Scope::new(s.clone())));
        for (k, v) in self.extra_params(&self.settings.token_endpoint, resource, now)? {
            req = req.add_extra_param(k, v);
        }
        req.request_async(&self.http_client())
            .await
            .map(|r| issued(r, now, None, self.dpop))
            .map_err(classify)
    }

    /// Revokes `token` at the RFC 7009 `revocation_endpoint`, with the
    /// target's client authentication. Servers answer 200 for unknown tokens.
    ///
    /// Written on the HTTP client rather than with the `oauth2` crate's
    /// revocation request, which (5.0) takes only a 200 as success and reads
    /// a 5xx carrying an OAuth error body as a refusal: here any 2xx is a
    /// revocation (some servers answer 204) and a 5xx is a passing failure.
    pub async fn revoke(
        &self,
        revocation_endpoint: &str,
        token: &SecretString,
        hint: &str,
    ) -> Result<(), OAuthError> {
        let mut form = vec![("token", token.expose_secret()), ("token_type_hint", hint)];
        let mut req = self.http.post(revocation_endpoint);
        let now = crate::ports::Clock::now(&crate::ports::SystemClock);
        let assertion = assertion_params(self.settings, revocation_endpoint, self.secret, now)?;
        match (self.settings.token_endpoint_auth_method, self.secret) {
            (TokenEndpointAuthMethod::PrivateKeyJwt, _) => {
                form.push(("client_id", &self.settings.client_id));
                for (k, v) in &assertion {
                    form.push((k, v));
                }
            }
            (TokenEndpointAuthMethod::ClientSecretBasic, Some(secret)) => {
                req = req.header(
                    http::header::AUTHORIZATION,
                    basic_credentials(&self.settings.client_id, secret),
                );
            }
            (TokenEndpointAuthMethod::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.settings.client_id));
                form.push(("client_secret", secret.expose_secret()));
            }
            _ => form.push(("client_id", &self.settings.client_id)),
        }
        let res = req
            .form(&form)
            .send()
            .await
            .map_err(|e| OAuthError::Transient(crate::error::chain(&e)))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_server_error() {
            return Err(OAuthError::Transient(format!(
                "revocation endpoint answered HTTP {status}"
            )));
        }
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        Err(OAuthError::rejected_from(&body))
    }
}

/// An HTTP Basic `Authorization` value for client authentication: the
/// client id and secret are form-urlencoded before they are joined and
/// base64-encoded (RFC 6749 §2.3.1), as the token requests of the `oauth2`
/// crate do, so that ids and secrets with `:`, `%` or `+` reach the server
/// intact. The value is marked sensitive, so it is redacted wherever the
/// request is debug-printed.
pub fn basic_credentials(client_id: &str, secret: &SecretString) -> http::HeaderValue {
    use base64::Engine;
    let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret.expose_secret()));
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    );
    let mut value =
        http::HeaderValue::from_str(&value).expect("\"Basic \" and base64 are visible ASCII");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {

    #[test]
    fn private_key_jwt_assertions_verify_with_the_public_key() {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let b64 =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pkcs8.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        let settings = OAuthSettings {
            issuer: Some("https://as.example".into()),
            authorization_endpoint: String::new(),
            token_endpoint: "https://as.example/token".into(),
            revocation_endpoint: None,
            client_id: "machine-client".into(),
            client_secret_arn: Some("arn:key".into()),
            token_endpoint_auth_method: TokenEndpointAuthMethod::PrivateKeyJwt,
            scopes: vec![],
            extra_authorize_params: Default::default(),
            send_resource: false,
            resource: None,
            registered: false,
            flow: crate::domain::OAuthFlow::ClientCredentials,
            authorization_response_iss_parameter_supported: false,
            code_challenge_methods_supported: vec![],
            dpop_signing_alg_values_supported: vec![],
            exchange: None,
        };
        let jwt = client_assertion(
            &settings,
            "https://as.example/token",
            &SecretString::from(pem),
            1_700_000_000,
        )
        .unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_der(pair.public_key().as_ref());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["https://as.example"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["iss"], "machine-client");
        assert_eq!(claims["sub"], "machine-client");
        assert_eq!(claims["exp"], 1_700_000_060);
        assert_eq!(
            claims["aud"],
            serde_json::json!(["https://as.example", "https://as.example/token"]),
            "the issuer and the endpoint called"
        );
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
        // Not a key: a clear refusal, not a panic.
        assert!(client_assertion(
            &settings,
            "https://as.example/token",
            &SecretString::from("not a key".to_owned()),
            0
        )
        .is_err());
    }

    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        use base64::Engine;
        let value = basic_credentials("my client:1", &SecretString::from("a+b%c/d".to_owned()));
        assert!(value.is_sensitive());
        let value = value.to_str().unwrap();
        let encoded = value.strip_prefix("Basic ").unwrap();
        let pair = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            String::from_utf8(pair).unwrap(),
            "my+client%3A1:a%2Bb%25c%2Fd"
        );
    }

    #[test]
    fn authorization_urls_carry_pkce_state_scopes_resource_and_extras() {
        let mut settings = OAuthSettings {
            issuer: None,
            authorization_endpoint: "https://as.example/authorize?tenant=t1".into(),
            token_endpoint: "https://as.example/token".into(),
            revocation_endpoint: None,
            client_id: "client 1".into(),
            client_secret_arn: None,
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            scopes: vec![],
            extra_authorize_params: [("prompt".to_owned(), "consent".to_owned())].into(),
            send_resource: true,
            resource: None,
            registered: false,
            flow: Default::default(),
            authorization_response_iss_parameter_supported: false,
            code_challenge_methods_supported: vec![],
            dpop_signing_alg_values_supported: vec![],
            exchange: None,
        };
        let verifier = SecretString::from("v".repeat(43));
        let url = authorization_url(
            &settings,
            "https://gw.example/oauth/callback",
            "st&ate",
            &verifier,
            &["read".into(), "write".into()],
            Some("https://mcp.example/mcp"),
        )
        .unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(url.path(), "/authorize");
        assert_eq!(get("tenant"), Some("t1"));
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("client_id"), Some("client 1"));
        assert_eq!(get("state"), Some("st&ate"));
        assert_eq!(
            get("redirect_uri"),
            Some("https://gw.example/oauth/callback")
        );
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(
            get("code_challenge"),
            Some(pkce_challenge(&verifier).as_str())
        );
        assert_eq!(get("scope"), Some("read write"));
        assert_eq!(get("resource"), Some("https://mcp.example/mcp"));
        assert_eq!(q.last().map(|(k, _)| k.as_str()), Some("prompt"));

        let url = authorization_url(
            &settings,
            "https://gw.example/cb",
            "s",
            &verifier,
            &[],
            None,
        )
        .unwrap();
        assert!(!url
            .query_pairs()
            .any(|(k, _)| k == "scope" || k == "resource"));

        settings.authorization_endpoint = "not a url".into();
        assert!(matches!(
            authorization_url(
                &settings,
                "https://gw.example/cb",
                "s",
                &verifier,
                &[],
                None
            ),
            Err(OAuthError::Misconfigured(_))
        ));
    }

    #[test]
    fn the_sign_in_request_carries_openid_and_its_nonce() {
        let verifier = SecretString::from("w".repeat(43));
        let url = authorization_request(
            "https://login.example/auth",
            "gateway",
            "https://gw.example/connect/verify",
            "sealed-state",
            &verifier,
            &["openid".into()],
            &[("nonce", "n-1")],
        )
        .unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["scope"], "openid");
        assert_eq!(q["nonce"], "n-1");
        assert_eq!(q["state"], "sealed-state");
        assert_eq!(q["code_challenge"], pkce_challenge(&verifier));
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://gw.example/connect/verify");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "gateway");
    }
}
