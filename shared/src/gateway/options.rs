//! Per-call consent options a client sets in a request's `_meta`: the
//! gateway's own keys, and Amazon Bedrock AgentCore Gateway's
//! `credentialProviderConfiguration` as an alias, so that agents written for
//! AgentCore Gateway work unchanged.

use serde_json::{Map, Value};

use super::meta;

/// What the call asks of a consent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConsentOptions<'a> {
    /// Start a new consent even if the user is connected.
    pub force: bool,
    /// Where the success page should send the person (still to be checked
    /// against the allow-list).
    pub return_url: Option<&'a str>,
}

/// Reads the options of a request's `_meta` (ours win over AgentCore's). A
/// value of the wrong type is an error that names the key.
pub fn consent_options(meta: Option<&Map<String, Value>>) -> Result<ConsentOptions<'_>, String> {
    let Some(m) = meta else {
        return Ok(ConsentOptions::default());
    };
    let agentcore = m
        .get(meta::AGENTCORE_CREDENTIAL_PROVIDER)
        .and_then(|c| c.get("oauthCredentialProvider"));
    let pick = |ours: Option<&'static str>, theirs: &'static str| -> Option<(String, &Value)> {
        ours.and_then(|k| m.get(k).map(|v| (k.to_owned(), v)))
            .or_else(|| {
                agentcore.and_then(|a| a.get(theirs)).map(|v| {
                    (
                        format!(
                            "{}.oauthCredentialProvider.{theirs}",
                            meta::AGENTCORE_CREDENTIAL_PROVIDER
                        ),
                        v,
                    )
                })
            })
            .filter(|(_, v)| !v.is_null())
    };
    let force = match pick(Some(meta::FORCE_CONSENT), "forceAuthentication") {
        None => false,
        Some((_, Value::Bool(b))) => *b,
        Some((key, _)) => return Err(format!("_meta {key} must be true or false")),
    };
    let return_url = match pick(Some(meta::RETURN_URL), "returnUrl") {
        None => None,
        Some((_, Value::String(s))) => Some(s.as_str()),
        Some((key, _)) => return Err(format!("_meta {key} must be a URL string")),
    };
    Ok(ConsentOptions { force, return_url })
}

/// Removes the options from a `_meta` object (upstreams never see them).
pub fn strip(meta_object: &mut Map<String, Value>) {
    meta_object.remove(meta::FORCE_CONSENT);
    meta_object.remove(meta::RETURN_URL);
    meta_object.remove(meta::AGENTCORE_CREDENTIAL_PROVIDER);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `_meta` of request params.
    fn params(v: Value) -> Option<Map<String, Value>> {
        v.get("_meta").and_then(Value::as_object).cloned()
    }

    #[test]
    fn ours_and_agentcores_keys() {
        let none = params(json!({"name": "t"}));
        assert_eq!(
            consent_options(none.as_ref()).unwrap(),
            ConsentOptions::default()
        );
        let ours = params(
            json!({"_meta": {"mcp-oauth-gateway/forceConsent": true, "mcp-oauth-gateway/returnUrl": "https://app.example/x"}}),
        );
        assert_eq!(
            consent_options(ours.as_ref()).unwrap(),
            ConsentOptions {
                force: true,
                return_url: Some("https://app.example/x")
            }
        );
        let agentcore = params(
            json!({"_meta": {"aws.bedrock-agentcore.gateway/credentialProviderConfiguration": {
                "oauthCredentialProvider": {"returnUrl": "https://chat.example/back", "forceAuthentication": true}
            }}}),
        );
        assert_eq!(
            consent_options(agentcore.as_ref()).unwrap(),
            ConsentOptions {
                force: true,
                return_url: Some("https://chat.example/back")
            }
        );
        // Ours win where both are given.
        let both = params(json!({"_meta": {
            "mcp-oauth-gateway/returnUrl": "https://app.example/ours",
            "aws.bedrock-agentcore.gateway/credentialProviderConfiguration": {"oauthCredentialProvider": {"returnUrl": "https://chat.example/theirs"}}
        }}));
        assert_eq!(
            consent_options(both.as_ref()).unwrap().return_url,
            Some("https://app.example/ours")
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let bad = params(json!({"_meta": {"mcp-oauth-gateway/forceConsent": "yes"}}));
        assert!(consent_options(bad.as_ref())
            .unwrap_err()
            .contains("forceConsent"));
        let bad = params(
            json!({"_meta": {"aws.bedrock-agentcore.gateway/credentialProviderConfiguration": {
            "oauthCredentialProvider": {"returnUrl": 42}}}}),
        );
        assert!(consent_options(bad.as_ref())
            .unwrap_err()
            .contains("oauthCredentialProvider.returnUrl"));
    }

    #[test]
    fn stripped_before_forwarding() {
        let mut m = json!({
            "mcp-oauth-gateway/forceConsent": true,
            "mcp-oauth-gateway/returnUrl": "https://a.example",
            "aws.bedrock-agentcore.gateway/credentialProviderConfiguration": {},
            "progressToken": 1
        })
        .as_object()
        .unwrap()
        .clone();
        strip(&mut m);
        assert_eq!(Value::Object(m), json!({"progressToken": 1}));
    }
}
