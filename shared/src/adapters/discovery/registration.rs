//! Client registration: Dynamic Client Registration (RFC 7591) and the
//! gateway's Client ID Metadata Document.

use serde_json::Value;
use url::Url;

use crate::domain::TokenEndpointAuthMethod;

use super::*;

/// A client registered with Dynamic Client Registration.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    /// The client id.
    pub client_id: String,
    /// The client secret, if the server issued one (store it, never print it).
    pub client_secret: Option<secrecy::SecretString>,
    /// The authentication method the server accepted.
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
}

/// Registers the gateway as a client (RFC 7591) with `redirect_uri`.
pub async fn register_client(
    fetcher: &Fetcher<'_>,
    registration_endpoint: &str,
    redirect_uri: &str,
    client_name: &str,
    scopes: &[String],
) -> Result<RegisteredClient, DiscoveryError> {
    let url = Url::parse(registration_endpoint).map_err(|e| DiscoveryError::Invalid {
        what: "registration endpoint",
        url: registration_endpoint.to_owned(),
        reason: e.to_string(),
    })?;
    fetcher.check(&url).await?;
    let mut body = serde_json::json!({
        "client_name": client_name,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    });
    if !scopes.is_empty() {
        body["scope"] = scopes.join(" ").into();
    }
    let res = fetcher
        .http
        .post(url.clone())
        .json(&body)
        .send()
        .await
        .map_err(|e| DiscoveryError::Fetch {
            url: url.to_string(),
            reason: crate::error::chain(&e),
        })?;
    let status = res.status();
    let text = read_limited(res)
        .await
        .map_err(|reason| DiscoveryError::Fetch {
            url: url.to_string(),
            reason,
        })?;
    let doc: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let error = doc
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        let desc = doc
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(DiscoveryError::Invalid {
            what: "client registration",
            url: url.to_string(),
            reason: format!("HTTP {status}: {error} {desc}").trim().to_owned(),
        });
    }
    let client_id = doc
        .get("client_id")
        .and_then(Value::as_str)
        .ok_or_else(|| DiscoveryError::Invalid {
            what: "client registration response",
            url: url.to_string(),
            reason: "no client_id".into(),
        })?
        .to_owned();
    let client_secret = doc
        .get("client_secret")
        .and_then(Value::as_str)
        .map(|s| secrecy::SecretString::from(s.to_owned()));
    let method = match doc
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
    {
        Some("client_secret_post") => TokenEndpointAuthMethod::ClientSecretPost,
        Some("none") => TokenEndpointAuthMethod::None,
        _ if client_secret.is_none() => TokenEndpointAuthMethod::None,
        _ => TokenEndpointAuthMethod::ClientSecretBasic,
    };
    Ok(RegisteredClient {
        client_id,
        client_secret,
        token_endpoint_auth_method: method,
    })
}

/// The gateway's Client ID Metadata Document, served at its `client_id` URL.
pub fn client_metadata_document(client_id: &str, redirect_uri: &str) -> Value {
    serde_json::json!({
        "client_id": client_id,
        "client_name": "MCP OAuth Gateway",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}
