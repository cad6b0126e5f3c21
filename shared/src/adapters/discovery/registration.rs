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

/// The token endpoint authentication to ask for, from what the server
/// advertises (`token_endpoint_auth_methods_supported`; RFC 8414 makes
/// `client_secret_basic` the default when it lists none): a confidential
/// method first, Basic before the form body, `none` last.
pub fn choose_auth_method(supported: &[String]) -> TokenEndpointAuthMethod {
    if supported.is_empty() {
        return TokenEndpointAuthMethod::ClientSecretBasic;
    }
    let has = |m: &str| supported.iter().any(|s| s == m);
    if has("client_secret_basic") {
        TokenEndpointAuthMethod::ClientSecretBasic
    } else if has("client_secret_post") {
        TokenEndpointAuthMethod::ClientSecretPost
    } else if has("none") {
        TokenEndpointAuthMethod::None
    } else {
        // Only methods the gateway does not implement (private_key_jwt,
        // tls_client_auth, ...): ask for Basic and let the server decide.
        TokenEndpointAuthMethod::ClientSecretBasic
    }
}

/// The OpenID Connect `application_type` for a redirect URI: `native` for
/// a loopback http one (a local gateway; web clients may not use
/// localhost), `web` otherwise.
pub fn application_type(redirect_uri: &str) -> &'static str {
    let Ok(u) = Url::parse(redirect_uri) else {
        return "web";
    };
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if u.scheme() == "http" && loopback {
        "native"
    } else {
        "web"
    }
}

/// Registers the gateway as a client (RFC 7591) with `redirect_uri`,
/// asking for the token endpoint authentication [`choose_auth_method`]
/// picks from `auth_methods_supported`.
pub async fn register_client(
    fetcher: &Fetcher<'_>,
    registration_endpoint: &str,
    redirect_uri: &str,
    client_name: &str,
    scopes: &[String],
    auth_methods_supported: &[String],
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
        "token_endpoint_auth_method": choose_auth_method(auth_methods_supported).as_str(),
        // Required by the 2026-07-28 revision (and OpenID registration).
        "application_type": application_type(redirect_uri),
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
    // What the server registered wins over what was asked for.
    let method = match doc
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
    {
        _ if client_secret.is_none() => TokenEndpointAuthMethod::None,
        Some("none") => TokenEndpointAuthMethod::None,
        Some("client_secret_post") => TokenEndpointAuthMethod::ClientSecretPost,
        Some("client_secret_basic") => TokenEndpointAuthMethod::ClientSecretBasic,
        _ => match choose_auth_method(auth_methods_supported) {
            TokenEndpointAuthMethod::None => TokenEndpointAuthMethod::ClientSecretBasic,
            m => m,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_follows_the_advertised_list() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        use TokenEndpointAuthMethod::*;
        for (advertised, chosen) in [
            (list(&[]), ClientSecretBasic),
            (list(&["none"]), None),
            (list(&["client_secret_post"]), ClientSecretPost),
            (list(&["none", "client_secret_post"]), ClientSecretPost),
            (
                list(&["client_secret_post", "client_secret_basic"]),
                ClientSecretBasic,
            ),
            (list(&["private_key_jwt"]), ClientSecretBasic),
        ] {
            assert_eq!(choose_auth_method(&advertised), chosen, "{advertised:?}");
        }
    }

    #[test]
    fn application_type_by_redirect_uri() {
        for (uri, kind) in [
            ("https://gw.example.com/oauth/callback", "web"),
            ("https://localhost/oauth/callback", "web"),
            ("http://127.0.0.1:8080/oauth/callback", "native"),
            ("http://localhost:8080/oauth/callback", "native"),
            ("http://[::1]:8080/oauth/callback", "native"),
            ("http://10.0.0.5/oauth/callback", "web"),
            ("http://gw.internal/oauth/callback", "web"),
            ("not a url", "web"),
        ] {
            assert_eq!(application_type(uri), kind, "{uri}");
        }
    }
}
