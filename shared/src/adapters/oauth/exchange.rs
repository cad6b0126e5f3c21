//! Token requests the `oauth2` crate does not build: token exchange
//! (RFC 8693), enterprise-managed authorization (an ID-JAG from the
//! identity provider, then the JWT bearer grant), with the target's client
//! authentication, a DPoP proof when the grant has a key, and
//! `interaction_required` answers turned into a page for the person.

use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::assertion::assertion_params;
use super::{
    basic_credentials, is_transient_code, issued, IssuedTokens, LenientTokenResponse, OAuthError,
    TokenEndpoint,
};
use crate::crypto::dpop::DpopKey;
use crate::domain::{
    ExchangeSettings, IdentityProviderClient, TokenEndpointAuthMethod, ACCESS_TOKEN_TYPE,
    ID_JAG_TYPE,
};

/// RFC 8693's grant type.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523's grant type.
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Members of an `interaction_required` answer that may hold the page the
/// person must open (the JWT grant interaction response draft names it
/// `interaction_uri`; deployments differ).
const INTERACTION_MEMBERS: &[&str] = &["interaction_uri", "interaction_url", "consent_url"];

impl TokenEndpoint<'_> {
    /// The target's client authentication for a hand-built request to
    /// `endpoint`: form members, and an `Authorization` header for
    /// `client_secret_basic`.
    pub(super) fn client_auth(
        &self,
        endpoint: &str,
        form: &mut Vec<(&'static str, String)>,
        now: i64,
    ) -> Result<Option<HeaderValue>, OAuthError> {
        let settings = self.settings;
        match (settings.token_endpoint_auth_method, self.secret) {
            (TokenEndpointAuthMethod::PrivateKeyJwt, _) => {
                form.push(("client_id", settings.client_id.clone()));
                form.extend(assertion_params(settings, endpoint, self.secret, now)?);
                Ok(None)
            }
            (TokenEndpointAuthMethod::ClientSecretBasic, Some(secret)) => {
                Ok(Some(basic_credentials(&settings.client_id, secret)))
            }
            (TokenEndpointAuthMethod::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", settings.client_id.clone()));
                form.push(("client_secret", secret.expose_secret().to_owned()));
                Ok(None)
            }
            (TokenEndpointAuthMethod::None, _) => {
                form.push(("client_id", settings.client_id.clone()));
                Ok(None)
            }
            _ => Err(OAuthError::Misconfigured(
                "a confidential client needs its client secret".into(),
            )),
        }
    }

    /// RFC 8693 token exchange at the target's token endpoint: the
    /// caller's token as `subject_token`, for the target's resource,
    /// scopes and configured audience.
    pub async fn token_exchange(
        &self,
        exchange: &ExchangeSettings,
        subject_token: &SecretString,
        resource: Option<&str>,
        now: i64,
    ) -> Result<IssuedTokens, OAuthError> {
        let endpoint = &self.settings.token_endpoint;
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE.to_owned()),
            ("subject_token", subject_token.expose_secret().to_owned()),
            ("subject_token_type", exchange.subject_token_type.clone()),
            ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
        ];
        if let Some(a) = &exchange.audience {
            form.push(("audience", a.clone()));
        }
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        if !self.settings.scopes.is_empty() {
            form.push(("scope", self.settings.scopes.join(" ")));
        }
        let auth = self.client_auth(endpoint, &mut form, now)?;
        let doc = post_form(self.http, self.dpop, endpoint, &form, auth).await?;
        self.issued_from(doc, now)
    }

    /// Enterprise-managed authorization: the caller's identity assertion
    /// exchanged at the identity provider for an ID-JAG whose audience is
    /// the target's authorization server and whose resource is the
    /// target's, then the ID-JAG presented there with the JWT bearer grant
    /// and the target's client authentication.
    pub async fn enterprise_managed(
        &self,
        exchange: &ExchangeSettings,
        idp: &IdentityProviderClient,
        idp_secret: Option<&SecretString>,
        subject_token: &SecretString,
        resource: Option<&str>,
        now: i64,
    ) -> Result<IssuedTokens, OAuthError> {
        let issuer = self.settings.issuer.as_deref().ok_or_else(|| {
            OAuthError::Misconfigured("the authorization server's issuer is unknown".into())
        })?;
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE.to_owned()),
            ("requested_token_type", ID_JAG_TYPE.to_owned()),
            ("subject_token", subject_token.expose_secret().to_owned()),
            ("subject_token_type", exchange.subject_token_type.clone()),
            ("audience", issuer.to_owned()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        if !self.settings.scopes.is_empty() {
            form.push(("scope", self.settings.scopes.join(" ")));
        }
        let auth = match idp_secret {
            Some(secret) => Some(basic_credentials(&idp.client_id, secret)),
            None => {
                form.push(("client_id", idp.client_id.clone()));
                None
            }
        };
        let doc = post_form(self.http, None, &idp.token_endpoint, &form, auth).await?;
        let jag = match (
            doc.get("access_token").and_then(Value::as_str),
            doc.get("issued_token_type").and_then(Value::as_str),
        ) {
            (Some(t), Some(ID_JAG_TYPE) | None) if !t.is_empty() => {
                SecretString::from(t.to_owned())
            }
            _ => {
                return Err(OAuthError::Transient(
                    "the identity provider did not issue an identity assertion grant".into(),
                ))
            }
        };
        let endpoint = &self.settings.token_endpoint;
        let mut form = vec![
            ("grant_type", JWT_BEARER.to_owned()),
            ("assertion", jag.expose_secret().to_owned()),
        ];
        if !self.settings.scopes.is_empty() {
            form.push(("scope", self.settings.scopes.join(" ")));
        }
        let auth = self.client_auth(endpoint, &mut form, now)?;
        let doc = post_form(self.http, self.dpop, endpoint, &form, auth).await?;
        self.issued_from(doc, now)
    }

    /// Tokens from a successful token response body.
    pub(super) fn issued_from(&self, doc: Value, now: i64) -> Result<IssuedTokens, OAuthError> {
        let resp: LenientTokenResponse = serde_json::from_value(doc).map_err(|e| {
            OAuthError::Transient(format!("unreadable token endpoint response: {e}"))
        })?;
        Ok(issued(resp, now, None, self.dpop))
    }
}

/// POSTs a token request form to `endpoint` and returns the success body,
/// or the failure: a 5xx or a server-trouble code is transient, an
/// `interaction_required` with a page is [`OAuthError::InteractionRequired`],
/// any other error a refusal.
pub(super) async fn post_form(
    http: &reqwest::Client,
    dpop: Option<&DpopKey>,
    endpoint: &str,
    form: &[(&'static str, String)],
    auth: Option<HeaderValue>,
) -> Result<Value, OAuthError> {
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(endpoint)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    if let Some(a) = auth {
        request = request.header(http::header::AUTHORIZATION, a);
    }
    let request = request
        .body(encoded.into_bytes())
        .map_err(|e| OAuthError::Misconfigured(format!("token endpoint: {e}")))?;
    let res = super::dpop::send(http, dpop, request)
        .await
        .map_err(|e| OAuthError::Transient(crate::error::chain(&e)))?;
    let status = res.status();
    let body = res.into_body();
    let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
    if status.is_success() && doc.get("error").is_none() && doc.is_object() {
        return Ok(doc);
    }
    if status.is_server_error() {
        return Err(OAuthError::Transient(format!(
            "the token endpoint answered HTTP {status}"
        )));
    }
    if let Some(url) = interaction_page(&doc) {
        return Err(OAuthError::InteractionRequired { url });
    }
    Err(match OAuthError::rejected_from(&doc) {
        OAuthError::Rejected { error, .. } if is_transient_code(&error) => {
            OAuthError::Transient(error)
        }
        other => other,
    })
}

/// The page of an `interaction_required` (or `consent_required`) answer:
/// an absolute https URL (http only for a loopback host), at most 2,048
/// characters.
fn interaction_page(doc: &Value) -> Option<String> {
    let code = doc.get("error")?.as_str()?;
    if !matches!(code, "interaction_required" | "consent_required") {
        return None;
    }
    INTERACTION_MEMBERS
        .iter()
        .filter_map(|m| doc.get(*m).and_then(Value::as_str))
        .find_map(|candidate| {
            let url = url::Url::parse(candidate).ok()?;
            let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            let fine = url.scheme() == "https" || (url.scheme() == "http" && loopback);
            (fine && candidate.len() <= 2048 && url.username().is_empty()).then(|| url.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_interaction_answer_with_a_safe_page_becomes_a_link() {
        let page = |doc| interaction_page(&doc);
        assert_eq!(
            page(json!({"error": "interaction_required", "interaction_uri": "https://idp.example/consent?x=1"}))
                .as_deref(),
            Some("https://idp.example/consent?x=1")
        );
        assert_eq!(
            page(json!({"error": "consent_required", "consent_url": "http://127.0.0.1:9/c"}))
                .as_deref(),
            Some("http://127.0.0.1:9/c")
        );
        // Not a page the person can be sent to.
        for doc in [
            json!({"error": "interaction_required"}),
            json!({"error": "interaction_required", "interaction_uri": "javascript:alert(1)"}),
            json!({"error": "interaction_required", "interaction_uri": "http://evil.example/"}),
            json!({"error": "interaction_required", "interaction_uri": "https://u:p@idp.example/"}),
            json!({"error": "interaction_required", "interaction_uri": format!("https://idp.example/{}", "a".repeat(2100))}),
            json!({"error": "invalid_grant", "interaction_uri": "https://idp.example/"}),
        ] {
            assert_eq!(page(doc.clone()), None, "{doc}");
        }
    }
}
