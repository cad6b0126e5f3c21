//! Presets for authorization servers that need more than the standards say
//! (`gateway-admin target add --preset NAME`). Each changes only the OAuth
//! settings a registration produced; the operator's own `--param` values
//! win over a preset's. Token responses that bend RFC 6749 (string
//! `expires_in`, no `token_type`, comma-separated scopes, Slack's nested
//! user token, errors sent with 200) are read for every target, preset or
//! not (`adapters::oauth::LenientTokenResponse`).

use crate::domain::OAuthSettings;

/// A provider preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// GitHub: no RFC 8707 `resource`.
    GitHub,
    /// Google: `access_type=offline` and `prompt=consent` (the only way to
    /// get a refresh token, every time), no `resource`.
    Google,
    /// Microsoft Entra ID (v2 endpoints): no `resource` (refused beside v2
    /// scopes), `offline_access` for a refresh token.
    Microsoft,
    /// Slack: user scopes go in `user_scope` (comma-separated), `scope`
    /// stays empty; no `resource`.
    Slack,
    /// Atlassian: `audience=api.atlassian.com`, `prompt=consent`,
    /// `offline_access`; no `resource`.
    Atlassian,
    /// Salesforce: the `refresh_token` scope (Salesforce's name for offline
    /// access), no `resource`.
    Salesforce,
    /// Okta: `offline_access`.
    Okta,
    /// Auth0: `offline_access` (give the API with `--param audience=...`).
    Auth0,
    /// Amazon Cognito: no `resource` (refresh tokens come without a scope).
    Cognito,
}

impl Preset {
    /// Every preset, for help texts and documentation.
    pub const ALL: [Preset; 9] = [
        Preset::GitHub,
        Preset::Google,
        Preset::Microsoft,
        Preset::Slack,
        Preset::Atlassian,
        Preset::Salesforce,
        Preset::Okta,
        Preset::Auth0,
        Preset::Cognito,
    ];

    /// The name given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::GitHub => "github",
            Preset::Google => "google",
            Preset::Microsoft => "microsoft",
            Preset::Slack => "slack",
            Preset::Atlassian => "atlassian",
            Preset::Salesforce => "salesforce",
            Preset::Okta => "okta",
            Preset::Auth0 => "auth0",
            Preset::Cognito => "cognito",
        }
    }

    /// The preset named `name`, or an error listing them.
    pub fn parse(name: &str) -> Result<Preset, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!("no preset {name:?}; presets: {}", names.join(", "))
            })
    }

    /// Applies the preset to settings a registration produced.
    pub fn apply(self, settings: &mut OAuthSettings) {
        let mut param = |k: &str, v: &str| {
            settings
                .extra_authorize_params
                .entry(k.to_owned())
                .or_insert_with(|| v.to_owned());
        };
        match self {
            Preset::Google => {
                param("access_type", "offline");
                param("prompt", "consent");
            }
            Preset::Atlassian => {
                param("audience", "api.atlassian.com");
                param("prompt", "consent");
            }
            _ => {}
        }
        let scope = match self {
            Preset::Microsoft | Preset::Atlassian | Preset::Okta | Preset::Auth0 => {
                Some("offline_access")
            }
            Preset::Salesforce => Some("refresh_token"),
            _ => None,
        };
        if let Some(s) = scope {
            if !settings.scopes.iter().any(|x| x == s) {
                settings.scopes.push(s.to_owned());
            }
        }
        if self == Preset::Slack && !settings.scopes.is_empty() {
            let user_scope = settings.scopes.join(",");
            settings
                .extra_authorize_params
                .entry("user_scope".into())
                .or_insert(user_scope);
            settings.scopes.clear();
        }
        if !matches!(self, Preset::Okta | Preset::Auth0) {
            settings.send_resource = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(scopes: &[&str]) -> OAuthSettings {
        OAuthSettings {
            issuer: None,
            authorization_endpoint: "https://as.example/authorize".into(),
            token_endpoint: "https://as.example/token".into(),
            revocation_endpoint: None,
            client_id: "c".into(),
            client_secret_arn: None,
            token_endpoint_auth_method: Default::default(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            extra_authorize_params: Default::default(),
            send_resource: true,
            resource: None,
            registered: false,
            flow: Default::default(),
            authorization_response_iss_parameter_supported: false,
            code_challenge_methods_supported: vec!["S256".into()],
            dpop_signing_alg_values_supported: vec![],
            exchange: None,
        }
    }

    fn applied(p: Preset, scopes: &[&str]) -> OAuthSettings {
        let mut s = settings(scopes);
        p.apply(&mut s);
        s
    }

    #[test]
    fn each_preset_changes_what_its_provider_needs() {
        let g = applied(Preset::Google, &["openid"]);
        assert_eq!(g.extra_authorize_params["access_type"], "offline");
        assert_eq!(g.extra_authorize_params["prompt"], "consent");
        assert!(!g.send_resource);
        assert_eq!(g.scopes, ["openid"]);

        let m = applied(Preset::Microsoft, &["User.Read"]);
        assert_eq!(m.scopes, ["User.Read", "offline_access"]);
        assert!(!m.send_resource);

        let s = applied(Preset::Slack, &["chat:write", "channels:read"]);
        assert!(s.scopes.is_empty(), "Slack user scopes are not `scope`");
        assert_eq!(
            s.extra_authorize_params["user_scope"],
            "chat:write,channels:read"
        );

        let a = applied(Preset::Atlassian, &["read:jira-work"]);
        assert_eq!(a.extra_authorize_params["audience"], "api.atlassian.com");
        assert_eq!(a.scopes, ["read:jira-work", "offline_access"]);

        assert_eq!(
            applied(Preset::Salesforce, &["api"]).scopes,
            ["api", "refresh_token"]
        );
        let o = applied(Preset::Okta, &["mcp"]);
        assert_eq!(o.scopes, ["mcp", "offline_access"]);
        assert!(o.send_resource, "Okta takes resource indicators");
        assert!(!applied(Preset::GitHub, &[]).send_resource);
        assert!(!applied(Preset::Cognito, &[]).send_resource);
        // Applying twice changes nothing more.
        let mut twice = applied(Preset::Microsoft, &["User.Read"]);
        Preset::Microsoft.apply(&mut twice);
        assert_eq!(twice.scopes, ["User.Read", "offline_access"]);
    }

    #[test]
    fn the_operators_parameters_win() {
        let mut s = settings(&[]);
        s.extra_authorize_params
            .insert("prompt".into(), "select_account".into());
        Preset::Google.apply(&mut s);
        assert_eq!(s.extra_authorize_params["prompt"], "select_account");
        assert_eq!(s.extra_authorize_params["access_type"], "offline");
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_listed() {
        for p in Preset::ALL {
            assert_eq!(Preset::parse(p.name()), Ok(p));
        }
        let err = Preset::parse("gitlab").unwrap_err();
        assert!(err.contains("github") && err.contains("cognito"), "{err}");
    }
}
