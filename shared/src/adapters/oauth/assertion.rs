//! RFC 7523: `private_key_jwt` client assertions, and the JWT bearer grant
//! of workload identity federation.

use secrecy::{ExposeSecret, SecretString};

use super::{IssuedTokens, OAuthError, TokenEndpoint};
use crate::domain::{OAuthSettings, TokenEndpointAuthMethod};

/// RFC 7523's `client_assertion_type` for a JWT.
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A `private_key_jwt` client assertion (RFC 7523 §3): issuer and subject
/// the client id, a minute of life, a unique `jti`; signed ES256 with the
/// PKCS#8 PEM key. Its audience names both the authorization server's
/// issuer (what the MCP authorization extension asks for) and the endpoint
/// called (what OpenID Connect and servers such as Okta ask for); the
/// endpoint alone when no issuer is known.
pub fn client_assertion(
    settings: &OAuthSettings,
    endpoint: &str,
    key_pem: &SecretString,
    now: i64,
) -> Result<String, OAuthError> {
    let pem = key_pem.expose_secret();
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body)
        .map_err(|_| OAuthError::Misconfigured("the client's private key is not PEM".into()))?;
    let key = jsonwebtoken::EncodingKey::from_ec_der(&der);
    let claims = serde_json::json!({
        "iss": settings.client_id,
        "sub": settings.client_id,
        "aud": match settings.issuer.as_deref() {
            Some(issuer) if issuer != endpoint => serde_json::json!([issuer, endpoint]),
            _ => serde_json::json!(endpoint),
        },
        "jti": crate::crypto::random_token(16),
        "iat": now,
        "exp": now + 60,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .map_err(|_| {
        OAuthError::Misconfigured(
            "the client's private key cannot sign ES256 (a PKCS#8 P-256 key is needed)".into(),
        )
    })
}

/// The `private_key_jwt` parameters for a token request, when the target
/// authenticates that way.
pub(super) fn assertion_params(
    settings: &OAuthSettings,
    token_endpoint: &str,
    secret: Option<&SecretString>,
    now: i64,
) -> Result<Vec<(&'static str, String)>, OAuthError> {
    if settings.token_endpoint_auth_method != TokenEndpointAuthMethod::PrivateKeyJwt {
        return Ok(vec![]);
    }
    let key = secret.ok_or_else(|| {
        OAuthError::Misconfigured("a private_key_jwt client needs its private key".into())
    })?;
    Ok(vec![
        ("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()),
        (
            "client_assertion",
            client_assertion(settings, token_endpoint, key, now)?,
        ),
    ])
}

impl TokenEndpoint<'_> {
    /// A machine token for a JWT bearer assertion (RFC 7523 §2.1, the
    /// grant of workload identity federation): the client id in the body,
    /// no client secret (the assertion is the credential).
    pub async fn jwt_bearer(
        &self,
        assertion: &SecretString,
        resource: Option<&str>,
        now: i64,
    ) -> Result<IssuedTokens, OAuthError> {
        let mut form = vec![
            ("grant_type", super::exchange::JWT_BEARER.to_owned()),
            ("assertion", assertion.expose_secret().to_owned()),
            ("client_id", self.settings.client_id.clone()),
        ];
        if !self.settings.scopes.is_empty() {
            form.push(("scope", self.settings.scopes.join(" ")));
        }
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        let endpoint = &self.settings.token_endpoint;
        let doc = super::exchange::post_form(self.http, self.dpop, endpoint, &form, None).await?;
        self.issued_from(doc, now)
    }
}
