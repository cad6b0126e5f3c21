//! Typed configuration, read once at cold start from environment variables.
//!
//! Every variable is listed in the README's configuration table. A missing or
//! malformed variable fails start-up with an error that names it.

use std::time::Duration;

use url::Url;

/// Where the gateway keeps the secrets of clients it registers, by default.
pub const DEFAULT_CLIENT_SECRET_NAME_PREFIX: &str = "mcp-oauth-gateway/targets/";

/// A configuration variable is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A variable is set to a value that cannot be used.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
}

/// How the gateway learns who is calling `/mcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundAuth {
    /// API Gateway's JWT authorizer validated the token; the function reads
    /// the validated claims (`sub`, `scope`) from the request context.
    ApiGateway,
    /// The function validates the bearer JWT itself (keys from the issuer's
    /// JWKS): `INBOUND_AUDIENCES` / `INBOUND_CLIENT_IDS`, `INBOUND_REQUIRED_SCOPES`.
    Jwt {
        /// Accepted audiences.
        audiences: Vec<String>,
        /// Accepted `client_id` claims.
        client_ids: Vec<String>,
        /// Scopes every token must carry.
        required_scopes: Vec<String>,
        /// Require the RFC 9068 header `typ: at+jwt` (`INBOUND_REQUIRE_AT_JWT`).
        require_at_jwt: bool,
    },
    /// No identity provider: every caller is the user named by the
    /// `X-Gateway-Dev-User` header (default `dev-user`). Local use only; the
    /// SAM template cannot select it.
    Dev,
}

/// How `/connect` proves that the person in the browser is the user who
/// triggered the consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentBinding {
    /// The person signs in at the inbound identity provider (OpenID Connect,
    /// code flow with PKCE) and their `sub` must equal the consent's user.
    Oidc {
        /// Issuer of the identity provider (`CONSENT_LOGIN_ISSUER`, default `INBOUND_ISSUER`).
        issuer: Url,
        /// Client id of the gateway's browser login (`CONSENT_LOGIN_CLIENT_ID`).
        client_id: String,
        /// Secrets Manager ARN of that client's secret, for confidential clients
        /// (`CONSENT_LOGIN_CLIENT_SECRET_ARN`).
        client_secret_arn: Option<String>,
    },
    /// The single-use, short-lived, unguessable link is the only proof.
    Link,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (CloudWatch Logs Insights friendly).
    Json,
    /// Human-readable lines for local work.
    Text,
}

impl LogFormat {
    /// `LOG_FORMAT` as given through `lookup`: `json` or `text`; unset,
    /// `json` in Lambda and `text` elsewhere. The one reader of the
    /// variable, for [`Config`] and for the log set-up that precedes it.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value = lookup("LOG_FORMAT").map(|v| v.trim().to_owned());
        match value.as_deref() {
            Some("json") => Ok(LogFormat::Json),
            Some("text") => Ok(LogFormat::Text),
            None | Some("") if lookup("AWS_LAMBDA_FUNCTION_NAME").is_some() => Ok(LogFormat::Json),
            None | Some("") => Ok(LogFormat::Text),
            Some(other) => Err(ConfigError::Invalid {
                name: "LOG_FORMAT",
                reason: format!("{other:?} is not one of \"json\", \"text\""),
            }),
        }
    }
}

/// The gateway's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// DynamoDB table holding targets, grants, authorizations and sessions (`TABLE_NAME`).
    pub table_name: String,
    /// ARN or name of the Secrets Manager secret with the gateway key set (`KEYSET_SECRET_ARN`).
    pub keyset_secret_arn: String,
    /// Public base URL of the gateway, e.g. a custom domain (`PUBLIC_BASE_URL`).
    /// When unset, the URL API Gateway reports for the request is used.
    pub public_base_url: Option<Url>,
    /// Where the consent pages and the OAuth redirect are served, when not
    /// where `/mcp` is (`CONSENT_BASE_URL`): the streaming function URL
    /// hands out consent links to the API.
    pub consent_base_url: Option<Url>,
    /// How callers of `/mcp` are identified (`INBOUND_AUTH_MODE`).
    pub inbound_auth: InboundAuth,
    /// Issuer URL of the inbound identity provider (`INBOUND_ISSUER`), named in
    /// the Protected Resource Metadata. Required unless the mode is `dev`.
    pub inbound_issuer: Option<Url>,
    /// Scopes the gateway asks its clients for (`INBOUND_SCOPES`, space separated).
    pub inbound_scopes: Vec<String>,
    /// Session binding at `/connect` (`CONSENT_BINDING`: `oidc` or `link`;
    /// default `oidc`, or `link` in `dev` mode).
    pub consent_binding: ConsentBinding,
    /// Browser origins allowed to call `/mcp` (`ALLOWED_ORIGINS`, comma
    /// separated; empty: any origin, since every call needs a bearer token).
    pub allowed_origins: Vec<String>,
    /// Origins every target's consent may return to (`RETURN_URL_ALLOWLIST`,
    /// comma separated, e.g. `https://chat.example.com`), besides each
    /// target's own `return_to.allowed_origins`.
    pub return_url_allowlist: Vec<String>,
    /// Log format (`LOG_FORMAT`: `json` or `text`; default `json` in Lambda, else `text`).
    pub log_format: LogFormat,
    /// Number of shards of the refresh-due index (`REFRESH_SHARDS`, 1-256, default 16).
    pub refresh_shards: u16,
    /// How long fetched secrets stay cached in a warm instance (`SECRETS_CACHE_TTL_SECONDS`, default 300).
    pub secrets_cache_ttl: Duration,
    /// How long a warm instance keeps the list of targets
    /// (`TARGETS_CACHE_SECONDS`, 0-3600, default 30).
    pub targets_cache_ttl: Duration,
    /// Where the gateway serves its Client ID Metadata Document and whose
    /// URL is its `client_id` where such documents are used
    /// (`CLIENT_METADATA_PATH`, default `/oauth/client-metadata.json`; the
    /// document is served at the default path too).
    pub client_metadata_path: String,
    /// Name prefix of the Secrets Manager secrets the gateway creates for
    /// the clients it registers (`CLIENT_SECRET_NAME_PREFIX`, default
    /// `mcp-oauth-gateway/targets/`).
    pub client_secret_name_prefix: String,
    /// How long a warm instance keeps a grant it read (`GRANT_CACHE_SECONDS`,
    /// 0-300, default 30): the bound on how late another instance's change
    /// or revocation is seen.
    pub grant_cache_ttl: Duration,
    /// Grants whose access token expires within this window are refreshed by
    /// the scheduled function (`REFRESH_WINDOW_SECONDS`, default 600).
    pub refresh_window: Duration,
    /// The proxy refreshes an access token that expires within this margin
    /// (`REFRESH_MARGIN_SECONDS`, default 60).
    pub refresh_margin: Duration,
    /// Grants refreshed at once by the scheduled function (`REFRESH_CONCURRENCY`, 1-256, default 16).
    pub refresh_concurrency: usize,
    /// Lifetime of a consent link (`AUTHORIZATION_TTL_SECONDS`, 60-3600, default 600).
    pub authorization_ttl: Duration,
    /// How long the identity provider's keys are kept, and so how long a key
    /// withdrawn from its JWKS can still be honoured (`JWKS_CACHE_SECONDS`,
    /// 5-300, default 300).
    pub jwks_cache_ttl: Duration,
    /// What `tools/list` returns (`TOOLS_LISTING`): `all` the targets'
    /// tools (the default), or `search`: only the gateway's own tools, with
    /// `gateway___search_tools` to find the others (catalogs too large to
    /// list).
    pub tools_listing: ToolsListing,
    /// `RESPONSE_STREAMING=on`: the MCP proxy answers through Lambda's
    /// response streaming (for a function URL with `RESPONSE_STREAM`), so
    /// notifications reach clients while a call runs, and a 2025
    /// upstream's requests during a call (sampling, elicitation, roots)
    /// reach the 2025 clients that declared them. Off behind API Gateway,
    /// which cannot take a streamed answer. (`gateway-admin serve` always
    /// streams.)
    pub response_streaming: bool,
    /// How long a standalone or `subscriptions/listen` stream stays open
    /// (`STREAM_SECONDS`, 30-900, default 840), less 3 seconds: set it to
    /// the streaming function's timeout. Clients open another when it ends.
    pub stream_for: Duration,
    /// Which policy decisions are logged for audit (`POLICY_LOG`: `deny`,
    /// the default, `all` or `off`).
    pub policy_log: PolicyLog,
    /// Whether a policy set must be stored (`POLICY_REQUIRED`): with it, a
    /// missing set (removed from the table by someone without the keys)
    /// refuses calls instead of allowing them all.
    pub policy_required: bool,
    /// The REQUEST and RESPONSE interceptors (`REQUEST_INTERCEPTOR`,
    /// `RESPONSE_INTERCEPTOR`, `INTERCEPTOR_PASS_HEADERS`,
    /// `INTERCEPTOR_TIMEOUT_MS`).
    pub interceptors: crate::interceptors::InterceptorConfig,
    /// Metrics and the audit trail (`GATEWAY_NAME`, `METRICS`,
    /// `AUDIT_LOG_GROUP`, `AUDIT`).
    pub observe: ObserveConfig,
}

/// Where metrics and audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveConfig {
    /// The metrics' `Gateway` dimension (`GATEWAY_NAME`; default: the
    /// function's name, else `mcp-oauth-gateway`).
    pub gateway_name: String,
    /// `METRICS=off` writes no EMF lines.
    pub metrics: bool,
    /// `AUDIT=off` writes no audit events.
    pub audit: bool,
    /// The audit trail's own log group; none: standard output.
    pub audit_log_group: Option<String>,
    /// The CloudWatch Logs endpoint (`AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`,
    /// else `AWS_ENDPOINT_URL`; none: the region's).
    pub logs_endpoint: Option<String>,
    /// The region (`AWS_REGION`).
    pub region: String,
    /// The function's name, for the audit stream's name.
    pub function: String,
    /// Targets whose calls' arguments go into their audit events
    /// (`AUDIT_ARGUMENTS_TARGETS`, comma separated; by default none).
    pub audit_arguments_targets: Vec<String>,
}

/// Which policy decisions are logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PolicyLog {
    /// Refusals only.
    #[default]
    Deny,
    /// Every decision on a call.
    All,
    /// None.
    Off,
}

/// What `tools/list` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ToolsListing {
    /// Every target's tools and the gateway's own.
    #[default]
    All,
    /// The gateway's own tools only; agents search for the rest.
    SearchOnly,
}

impl Config {
    /// True when what upstreams send outside a call's answer can reach
    /// clients: answers stream (`RESPONSE_STREAMING`) and no RESPONSE
    /// interceptor sees answers (it must see everything a client gets).
    /// Then a 2025 upstream's requests during a call are put to clients,
    /// and resource subscriptions are offered.
    pub fn relays_to_clients(&self) -> bool {
        self.response_streaming && self.interceptors.response.is_none()
    }

    /// How a consent id appears in logs: in `link` mode the id is a bearer
    /// capability until it is used, so only a digest is logged.
    pub fn authorization_log_ref(&self, id: &str) -> String {
        match self.consent_binding {
            ConsentBinding::Link => {
                format!("sha256:{}", &crate::crypto::sha256_hex(id.as_bytes())[..16])
            }
            ConsentBinding::Oidc { .. } => id.to_owned(),
        }
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));

        let list = |name: &'static str| -> Vec<String> {
            get(name).map(|v| split_list(&v)).unwrap_or_default()
        };
        let inbound_auth = match get("INBOUND_AUTH_MODE").as_deref() {
            None | Some("apigw") => InboundAuth::ApiGateway,
            Some("jwt") => {
                let (audiences, client_ids) =
                    (list("INBOUND_AUDIENCES"), list("INBOUND_CLIENT_IDS"));
                if audiences.is_empty() && client_ids.is_empty() {
                    return Err(ConfigError::Missing("INBOUND_AUDIENCES"));
                }
                InboundAuth::Jwt {
                    audiences,
                    client_ids,
                    required_scopes: list("INBOUND_REQUIRED_SCOPES"),
                    require_at_jwt: flag(get("INBOUND_REQUIRE_AT_JWT"), "INBOUND_REQUIRE_AT_JWT")?,
                }
            }
            Some("dev") => InboundAuth::Dev,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "INBOUND_AUTH_MODE",
                    reason: format!("{other:?} is not one of \"apigw\", \"jwt\", \"dev\""),
                })
            }
        };
        let inbound_issuer = match get("INBOUND_ISSUER") {
            Some(v) => Some(parse_url("INBOUND_ISSUER", &v)?),
            None if inbound_auth == InboundAuth::Dev => None,
            None => return Err(ConfigError::Missing("INBOUND_ISSUER")),
        };
        let public_base_url = get("PUBLIC_BASE_URL")
            .map(|v| parse_url("PUBLIC_BASE_URL", &v))
            .transpose()?;
        let consent_base_url = get("CONSENT_BASE_URL")
            .map(|v| parse_url("CONSENT_BASE_URL", &v))
            .transpose()?;
        let log_format = LogFormat::from_lookup(&lookup)?;

        let consent_binding = match get("CONSENT_BINDING").as_deref() {
            Some("link") => ConsentBinding::Link,
            None if inbound_auth == InboundAuth::Dev => ConsentBinding::Link,
            None | Some("oidc") => {
                let issuer = match get("CONSENT_LOGIN_ISSUER") {
                    Some(v) => parse_url("CONSENT_LOGIN_ISSUER", &v)?,
                    None => inbound_issuer
                        .clone()
                        .ok_or(ConfigError::Missing("INBOUND_ISSUER"))?,
                };
                ConsentBinding::Oidc {
                    issuer,
                    client_id: required("CONSENT_LOGIN_CLIENT_ID")?,
                    client_secret_arn: get("CONSENT_LOGIN_CLIENT_SECRET_ARN"),
                }
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CONSENT_BINDING",
                    reason: format!("{other:?} is not one of \"oidc\", \"link\""),
                })
            }
        };

        let return_url_allowlist = list("RETURN_URL_ALLOWLIST");
        if let Some(bad) = return_url_allowlist.iter().find(|o| {
            Url::parse(o)
                .map(|u| u.origin().ascii_serialization() != o.trim_end_matches('/'))
                .unwrap_or(true)
        }) {
            return Err(ConfigError::Invalid {
                name: "RETURN_URL_ALLOWLIST",
                reason: format!("{bad:?} is not an origin (scheme://host[:port], no path)"),
            });
        }
        let tools_listing = match get("TOOLS_LISTING").as_deref() {
            None | Some("all") => ToolsListing::All,
            Some("search") => ToolsListing::SearchOnly,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TOOLS_LISTING",
                    reason: format!("{other:?} is not all or search"),
                })
            }
        };
        let policy_log = match get("POLICY_LOG").as_deref() {
            None | Some("deny") => PolicyLog::Deny,
            Some("all") => PolicyLog::All,
            Some("off") => PolicyLog::Off,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "POLICY_LOG",
                    reason: format!("{other:?} is not deny, all or off"),
                })
            }
        };
        let interceptor = |name: &'static str| -> Result<_, ConfigError> {
            get(name)
                .map(|v| {
                    crate::interceptors::Endpoint::parse(&v)
                        .map(|endpoint| crate::interceptors::Interceptor { endpoint })
                        .map_err(|reason| ConfigError::Invalid { name, reason })
                })
                .transpose()
        };
        let interceptors = crate::interceptors::InterceptorConfig {
            request: interceptor("REQUEST_INTERCEPTOR")?,
            response: interceptor("RESPONSE_INTERCEPTOR")?,
            pass_headers: flag(get("INTERCEPTOR_PASS_HEADERS"), "INTERCEPTOR_PASS_HEADERS")?,
            timeout: Duration::from_millis(number(
                get("INTERCEPTOR_TIMEOUT_MS"),
                "INTERCEPTOR_TIMEOUT_MS",
                3_000,
                10,
                30_000,
            )?),
            lambda_endpoint: get("AWS_ENDPOINT_URL_LAMBDA").or_else(|| get("AWS_ENDPOINT_URL")),
        };
        let on_off = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            match get(name).as_deref() {
                None => Ok(default),
                Some("on") => Ok(true),
                Some("off") => Ok(false),
                Some(other) => Err(ConfigError::Invalid {
                    name,
                    reason: format!("{other:?} is not on or off"),
                }),
            }
        };
        let function = get("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "local".into());
        let observe = ObserveConfig {
            gateway_name: get("GATEWAY_NAME")
                .or_else(|| get("AWS_LAMBDA_FUNCTION_NAME"))
                .unwrap_or_else(|| "mcp-oauth-gateway".into()),
            metrics: on_off("METRICS", true)?,
            audit: on_off("AUDIT", true)?,
            audit_log_group: get("AUDIT_LOG_GROUP"),
            logs_endpoint: get("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS")
                .or_else(|| get("AWS_ENDPOINT_URL")),
            region: get("AWS_REGION")
                .or_else(|| get("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            function,
            audit_arguments_targets: list("AUDIT_ARGUMENTS_TARGETS"),
        };
        Ok(Config {
            response_streaming: on_off("RESPONSE_STREAMING", false)?,
            stream_for: Duration::from_secs(
                number(get("STREAM_SECONDS"), "STREAM_SECONDS", 840, 30, 900)? - 3,
            ),
            observe,
            policy_required: flag(get("POLICY_REQUIRED"), "POLICY_REQUIRED")?,
            interceptors,
            policy_log,
            tools_listing,
            allowed_origins: list("ALLOWED_ORIGINS"),
            return_url_allowlist,
            consent_binding,
            table_name: required("TABLE_NAME")?,
            keyset_secret_arn: required("KEYSET_SECRET_ARN")?,
            public_base_url,
            consent_base_url,
            inbound_auth,
            inbound_issuer,
            inbound_scopes: get("INBOUND_SCOPES")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            log_format,
            refresh_shards: number(get("REFRESH_SHARDS"), "REFRESH_SHARDS", 16, 1, 256)? as u16,
            secrets_cache_ttl: Duration::from_secs(number(
                get("SECRETS_CACHE_TTL_SECONDS"),
                "SECRETS_CACHE_TTL_SECONDS",
                300,
                0,
                86_400,
            )?),
            targets_cache_ttl: Duration::from_secs(number(
                get("TARGETS_CACHE_SECONDS"),
                "TARGETS_CACHE_SECONDS",
                30,
                0,
                3_600,
            )?),
            client_metadata_path: client_metadata_path(get("CLIENT_METADATA_PATH"))?,
            client_secret_name_prefix: get("CLIENT_SECRET_NAME_PREFIX")
                .unwrap_or_else(|| DEFAULT_CLIENT_SECRET_NAME_PREFIX.to_owned()),
            grant_cache_ttl: Duration::from_secs(number(
                get("GRANT_CACHE_SECONDS"),
                "GRANT_CACHE_SECONDS",
                30,
                0,
                300,
            )?),
            refresh_window: Duration::from_secs(number(
                get("REFRESH_WINDOW_SECONDS"),
                "REFRESH_WINDOW_SECONDS",
                600,
                0,
                86_400,
            )?),
            refresh_margin: Duration::from_secs(number(
                get("REFRESH_MARGIN_SECONDS"),
                "REFRESH_MARGIN_SECONDS",
                60,
                0,
                3_600,
            )?),
            refresh_concurrency: number(
                get("REFRESH_CONCURRENCY"),
                "REFRESH_CONCURRENCY",
                16,
                1,
                256,
            )? as usize,
            authorization_ttl: Duration::from_secs(number(
                get("AUTHORIZATION_TTL_SECONDS"),
                "AUTHORIZATION_TTL_SECONDS",
                600,
                60,
                3_600,
            )?),
            jwks_cache_ttl: Duration::from_secs(number(
                get("JWKS_CACHE_SECONDS"),
                "JWKS_CACHE_SECONDS",
                300,
                5,
                300,
            )?),
        })
    }
}

fn parse_url(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid {
        name,
        reason: format!("not an absolute URL ({e})"),
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::Invalid {
            name,
            reason: "the scheme must be https (or http for local use)".into(),
        });
    }
    Ok(url)
}

/// The members of a list setting: separated by commas or spaces.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn flag(value: Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match value.as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name,
            reason: format!("{other:?} is not one of \"true\", \"false\""),
        }),
    }
}

fn number(
    value: Option<String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let n: u64 = value.parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("{value:?} is not a whole number"),
    })?;
    if !(min..=max).contains(&n) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{n} is outside {min}..={max}"),
        });
    }
    Ok(n)
}

/// `CLIENT_METADATA_PATH`: an absolute path of URL-safe characters, not one
/// of the gateway's other routes.
fn client_metadata_path(value: Option<String>) -> Result<String, ConfigError> {
    let default = crate::edge::callback::CLIENT_METADATA_PATH;
    let Some(path) = value else {
        return Ok(default.to_owned());
    };
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "CLIENT_METADATA_PATH",
        reason: reason.to_owned(),
    };
    let safe = path.len() <= 200
        && path.starts_with('/')
        && path.len() > 1
        && !path.contains("//")
        && !path.split('/').any(|seg| seg == "." || seg == "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~/-".contains(c));
    if !safe {
        return Err(invalid(
            "an absolute path of letters, digits and ._~/- (at most 200 characters)",
        ));
    }
    let taken = ["/mcp", "/oauth/callback", "/connections", "/.well-known"];
    if taken
        .iter()
        .any(|t| path == *t || path.starts_with(&format!("{t}/")))
        || path.starts_with("/connect/")
    {
        return Err(invalid("the path of another gateway route"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("TABLE_NAME", "gw"),
        (
            "KEYSET_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:1:secret:k",
        ),
        ("INBOUND_ISSUER", "https://idp.example.com"),
        ("CONSENT_LOGIN_CLIENT_ID", "login-client"),
    ];

    #[test]
    fn client_metadata_path_is_checked() {
        let with = |v: &str| {
            let mut pairs = BASE.to_vec();
            pairs.push(("CLIENT_METADATA_PATH", v));
            load(&pairs).map(|c| c.client_metadata_path)
        };
        assert_eq!(
            load(BASE).unwrap().client_metadata_path,
            "/oauth/client-metadata.json"
        );
        assert_eq!(with("/oauth/client.json").unwrap(), "/oauth/client.json");
        for bad in [
            "oauth/client.json",
            "/",
            "/a//b",
            "/a/../mcp",
            "/a b",
            "/a?x=1",
            "/mcp",
            "/oauth/callback",
            "/connect/x",
            "/connections",
            "/.well-known/oauth-protected-resource",
        ] {
            match with(bad) {
                Err(ConfigError::Invalid { name, .. }) => {
                    assert_eq!(name, "CLIENT_METADATA_PATH", "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults() {
        let c = load(BASE).unwrap();
        assert_eq!(c.table_name, "gw");
        assert_eq!(c.inbound_auth, InboundAuth::ApiGateway);
        assert_eq!(c.refresh_shards, 16);
        assert_eq!(c.authorization_ttl, Duration::from_secs(600));
        assert_eq!(c.refresh_window, Duration::from_secs(600));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.public_base_url.is_none());
        assert_eq!(c.jwks_cache_ttl, Duration::from_secs(300));
        assert!(c.return_url_allowlist.is_empty());
        // The deployed default proves who is in the browser.
        assert_eq!(
            c.consent_binding,
            ConsentBinding::Oidc {
                issuer: Url::parse("https://idp.example.com").unwrap(),
                client_id: "login-client".into(),
                client_secret_arn: None,
            }
        );
    }

    #[test]
    fn inbound_options() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("INBOUND_AUTH_MODE", "jwt"),
            ("INBOUND_AUDIENCES", "gw"),
            ("INBOUND_REQUIRE_AT_JWT", "true"),
            ("JWKS_CACHE_SECONDS", "60"),
            (
                "RETURN_URL_ALLOWLIST",
                "https://chat.example, http://localhost:3000",
            ),
        ]);
        let c = load(&pairs).unwrap();
        assert!(matches!(
            c.inbound_auth,
            InboundAuth::Jwt {
                require_at_jwt: true,
                ..
            }
        ));
        assert_eq!(c.jwks_cache_ttl, Duration::from_secs(60));
        assert_eq!(
            c.return_url_allowlist,
            vec!["https://chat.example", "http://localhost:3000"]
        );
        pairs.push(("INBOUND_REQUIRE_AT_JWT", "maybe"));
        assert!(matches!(
            load(&pairs),
            Err(ConfigError::Invalid {
                name: "INBOUND_REQUIRE_AT_JWT",
                ..
            })
        ));
    }

    #[test]
    fn link_binding_needs_no_login_client() {
        let mut pairs: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CONSENT_LOGIN_CLIENT_ID")
            .collect();
        assert_eq!(
            load(&pairs).unwrap_err(),
            ConfigError::Missing("CONSENT_LOGIN_CLIENT_ID")
        );
        pairs.push(("CONSENT_BINDING", "link"));
        assert_eq!(load(&pairs).unwrap().consent_binding, ConsentBinding::Link);
        pairs.push(("CONSENT_BINDING", "magic"));
        assert!(matches!(
            load(&pairs),
            Err(ConfigError::Invalid {
                name: "CONSENT_BINDING",
                ..
            })
        ));
    }

    #[test]
    fn lambda_logs_json_by_default() {
        let mut pairs = BASE.to_vec();
        pairs.push(("AWS_LAMBDA_FUNCTION_NAME", "f"));
        assert_eq!(load(&pairs).unwrap().log_format, LogFormat::Json);
    }

    #[test]
    fn missing_variables_are_named() {
        for name in ["TABLE_NAME", "KEYSET_SECRET_ARN", "INBOUND_ISSUER"] {
            let pairs: Vec<_> = BASE.iter().copied().filter(|(k, _)| *k != name).collect();
            let err = load(&pairs).unwrap_err();
            assert_eq!(err, ConfigError::Missing(name));
            assert!(err.to_string().contains(name));
        }
        // An empty value counts as missing.
        let mut pairs = BASE.to_vec();
        pairs.push(("TABLE_NAME", ""));
        let map: HashMap<_, _> = pairs.into_iter().collect();
        let err = Config::from_lookup(|k| map.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err, ConfigError::Missing("TABLE_NAME"));
    }

    #[test]
    fn malformed_variables_are_named() {
        for (name, value) in [
            ("REFRESH_SHARDS", "0"),
            ("REFRESH_SHARDS", "many"),
            ("AUTHORIZATION_TTL_SECONDS", "5"),
            ("PUBLIC_BASE_URL", "not a url"),
            ("PUBLIC_BASE_URL", "ftp://x"),
            ("INBOUND_AUTH_MODE", "none"),
            ("INBOUND_AUTH_MODE", "jwt"),
            ("LOG_FORMAT", "xml"),
            ("JWKS_CACHE_SECONDS", "3600"),
            ("RETURN_URL_ALLOWLIST", "https://app.example/path"),
            ("RETURN_URL_ALLOWLIST", "app.example"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((name, value));
            match load(&pairs) {
                Err(ConfigError::Invalid { name: n, .. }) => assert_eq!(n, name),
                // jwt without audiences names the missing list.
                Err(ConfigError::Missing("INBOUND_AUDIENCES")) => assert_eq!(value, "jwt"),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn dev_mode_needs_no_issuer() {
        let pairs = [
            ("TABLE_NAME", "gw"),
            ("KEYSET_SECRET_ARN", "k"),
            ("INBOUND_AUTH_MODE", "dev"),
        ];
        let c = load(&pairs).unwrap();
        assert_eq!(c.inbound_auth, InboundAuth::Dev);
        assert!(c.inbound_issuer.is_none());
        assert_eq!(c.consent_binding, ConsentBinding::Link);
    }
}
