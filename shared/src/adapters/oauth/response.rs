//! Token endpoint responses as real servers send them.
//!
//! RFC 6749 §5.1 asks for `access_token`, `token_type` and a numeric
//! `expires_in`. Servers in use differ, and a strict parser turns each
//! difference into a failed consent or refresh:
//!
//! - `expires_in` as a string (`"3600"`), or absent (Salesforce);
//! - no `token_type` (taken as Bearer);
//! - `scope` separated by commas (GitHub) instead of spaces;
//! - the user's token nested under `authed_user` (Slack's v2 flow, whose
//!   top level holds a bot token or nothing);
//! - no new `refresh_token` on refresh (the old one stays valid; handled by
//!   the caller).

use std::time::Duration;

use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A token response read leniently (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct LenientTokenResponse {
    access_token: AccessToken,
    token_type: BasicTokenType,
    expires_in: Option<u64>,
    refresh_token: Option<RefreshToken>,
    scopes: Option<Vec<Scope>>,
}

impl TryFrom<Value> for LenientTokenResponse {
    type Error = String;

    fn try_from(body: Value) -> Result<Self, String> {
        // Slack: the user's token is under `authed_user`.
        let user = body
            .get("authed_user")
            .filter(|u| u.get("access_token").is_some_and(Value::is_string));
        let top_is_bearer = body.get("access_token").is_some_and(Value::is_string)
            && body
                .get("token_type")
                .and_then(Value::as_str)
                .is_none_or(|t| t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("dpop"));
        // The user's token wherever Slack puts it (beside a bot token, or
        // alone); the top level otherwise.
        let (source, nested) = match user {
            Some(u) if !top_is_bearer => (u, true),
            _ if body.get("access_token").is_some_and(Value::is_string) => (&body, false),
            _ => return Err("no access_token".into()),
        };
        let text = |key: &str| source.get(key).and_then(Value::as_str).map(str::to_owned);
        let access_token = text("access_token").ok_or("no access_token")?;
        let token_type = match text("token_type") {
            // A token bound to the request's DPoP key (RFC 9449 §5).
            Some(t) if !nested && t.eq_ignore_ascii_case("dpop") => {
                BasicTokenType::Extension("DPoP".into())
            }
            // Slack calls its user tokens `user`; they are bearer tokens.
            Some(t) if !nested && !t.eq_ignore_ascii_case("bearer") => {
                return Err(format!("token_type {t:?} is not Bearer"))
            }
            _ => BasicTokenType::Bearer,
        };
        let expires_in = match source.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("expires_in {s:?} is not a number of seconds"))?,
            ),
            Some(other) => return Err(format!("expires_in {other} is not a number of seconds")),
        };
        // Space-delimited (RFC 6749); commas only where there is no space
        // (GitHub, Slack), since a scope token may itself hold a comma.
        let scopes = text("scope").map(|s| {
            let separator = if s.contains(' ') { ' ' } else { ',' };
            s.split(separator)
                .filter(|s| !s.is_empty())
                .map(|s| Scope::new(s.to_owned()))
                .collect()
        });
        Ok(LenientTokenResponse {
            access_token: AccessToken::new(access_token),
            token_type,
            expires_in,
            refresh_token: text("refresh_token").map(RefreshToken::new),
            scopes,
        })
    }
}

impl From<LenientTokenResponse> for Value {
    fn from(r: LenientTokenResponse) -> Value {
        // Only for the trait's `Serialize` bound; tokens are never written out.
        serde_json::json!({
            "token_type": "bearer",
            "expires_in": r.expires_in,
            "scope": r.scopes.map(|s| s.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ")),
        })
    }
}

impl oauth2::TokenResponse for LenientTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oauth2::TokenResponse as _;
    use serde_json::json;

    fn read(body: Value) -> Result<LenientTokenResponse, String> {
        serde_json::from_value(body).map_err(|e| e.to_string())
    }

    #[test]
    fn standard_and_quirky_responses_are_read() {
        let r = read(json!({"access_token": "a", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "r", "scope": "x y"})).unwrap();
        assert_eq!(r.access_token().secret(), "a");
        assert_eq!(r.expires_in(), Some(Duration::from_secs(3600)));
        assert_eq!(r.refresh_token().unwrap().secret(), "r");
        assert_eq!(r.scopes().unwrap().len(), 2);
        // expires_in as a string; token_type in another case.
        let r = read(json!({"access_token": "a", "token_type": "bearer", "expires_in": "7200"}))
            .unwrap();
        assert_eq!(r.expires_in(), Some(Duration::from_secs(7200)));
        // No token_type, no expires_in (Salesforce).
        let r = read(json!({"access_token": "a", "instance_url": "https://x.my.salesforce.com"}))
            .unwrap();
        assert_eq!(r.expires_in(), None);
        assert_eq!(r.token_type(), &BasicTokenType::Bearer);
        // GitHub: comma-separated scopes.
        let r = read(
            json!({"access_token": "gho_a", "token_type": "bearer", "scope": "repo,read:user"}),
        )
        .unwrap();
        let scopes: Vec<String> = r.scopes().unwrap().iter().map(|s| s.to_string()).collect();
        assert_eq!(scopes, ["repo", "read:user"]);
        // Spaces win: a comma inside a scope token stays.
        let r = read(json!({"access_token": "a", "scope": "a,b c"})).unwrap();
        assert_eq!(r.scopes().unwrap().len(), 2);
        // Slack: the user's token nested, a bot token (or none) at the top.
        let r = read(json!({"ok": true, "access_token": "xoxb-bot", "token_type": "bot", "authed_user": {"id": "U1", "access_token": "xoxp-1", "refresh_token": "xoxe-1", "expires_in": 43200, "scope": "chat:write", "token_type": "user"}})).unwrap();
        assert_eq!(r.access_token().secret(), "xoxp-1");
        assert_eq!(r.refresh_token().unwrap().secret(), "xoxe-1");
        assert_eq!(r.expires_in(), Some(Duration::from_secs(43200)));
    }

    #[test]
    fn unusable_responses_are_refused() {
        for body in [
            json!({}),
            json!({"error": "bad_verification_code"}),
            json!({"access_token": 5}),
            json!({"access_token": "a", "token_type": "mac"}),
            json!({"access_token": "a", "expires_in": "soon"}),
            json!({"access_token": "a", "expires_in": [1]}),
            json!("a"),
        ] {
            assert!(read(body.clone()).is_err(), "{body}");
        }
    }
}
