//! Authorization requests: a target's (PKCE S256, RFC 8707 `resource`)
//! and the gateway's own OpenID Connect sign-in, with its code exchange.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use secrecy::{ExposeSecret, SecretString};

use super::{basic_credentials, OAuthError};
use crate::domain::OAuthSettings;

/// Builds a target's authorization request URL (RFC 6749 §4.1.1 with PKCE
/// S256 and, when given, RFC 8707 `resource`); the target's extra parameters
/// come last.
pub fn authorization_url(
    settings: &OAuthSettings,
    redirect_uri: &str,
    state: &str,
    verifier: &SecretString,
    scopes: &[String],
    resource: Option<&str>,
) -> Result<url::Url, OAuthError> {
    let mut extra: Vec<(&str, &str)> = resource.map(|r| ("resource", r)).into_iter().collect();
    extra.extend(
        settings
            .extra_authorize_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    authorization_request(
        &settings.authorization_endpoint,
        &settings.client_id,
        redirect_uri,
        state,
        verifier,
        scopes,
        &extra,
    )
}

/// An authorization request URL built with the `oauth2` crate's request
/// builder: `response_type=code`, the client, redirect URI, `state`, PKCE
/// S256, the scopes (none sent when empty), then `extra` in order. The
/// gateway's own OpenID sign-in uses it too (scope `openid`, a `nonce`).
pub fn authorization_request(
    endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    verifier: &SecretString,
    scopes: &[String],
    extra: &[(&str, &str)],
) -> Result<url::Url, OAuthError> {
    let auth_url = AuthUrl::new(endpoint.to_owned())
        .map_err(|e| OAuthError::Misconfigured(format!("authorization endpoint: {e}")))?;
    let redirect = RedirectUrl::new(redirect_uri.to_owned())
        .map_err(|e| OAuthError::Misconfigured(format!("redirect uri: {e}")))?;
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_auth_uri(auth_url)
        .set_redirect_uri(redirect);
    let state = state.to_owned();
    let mut req = client
        .authorize_url(move || CsrfToken::new(state))
        .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(
            &PkceCodeVerifier::new(verifier.expose_secret().to_owned()),
        ))
        .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())));
    for (k, v) in extra {
        req = req.add_extra_param(*k, *v);
    }
    Ok(req.url().0)
}

/// The S256 code challenge of a PKCE verifier.
pub fn pkce_challenge(verifier: &SecretString) -> String {
    PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
        verifier.expose_secret().to_owned(),
    ))
    .as_str()
    .to_owned()
}

/// Exchanges an OpenID Connect authorization code for the ID token (the
/// gateway's own browser sign-in; the other tokens are dropped).
pub async fn exchange_for_id_token(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    secret: Option<&SecretString>,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<String, OAuthError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let mut req = http
        .post(token_endpoint)
        .header("accept", "application/json");
    match secret {
        Some(s) => req = req.header(http::header::AUTHORIZATION, basic_credentials(client_id, s)),
        None => form.push(("client_id", client_id)),
    }
    let res = req
        .form(&form)
        .send()
        .await
        .map_err(|e| OAuthError::Transient(crate::error::chain(&e)))?;
    let status = res.status();
    let body: serde_json::Value = res
        .json()
        .await
        .map_err(|_| OAuthError::Transient(format!("unreadable token response (HTTP {status})")))?;
    if !status.is_success() {
        return Err(OAuthError::rejected_from(&body));
    }
    body.get("id_token")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| OAuthError::Transient("the token response has no id_token".into()))
}
