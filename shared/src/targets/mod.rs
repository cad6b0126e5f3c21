//! Registering targets: discovery, client registration, and consent links.
//! The admin tool's commands are thin wrappers around these functions.

use std::collections::BTreeMap;

use secrecy::SecretString;

use crate::adapters::discovery::{self, Discovered, FetchPolicy, Fetcher};
use crate::domain::{
    OAuthSettings, PendingAuthorization, Target, TargetAuth, TokenEndpointAuthMethod,
};
use crate::edge::callback::CALLBACK_PATH;
use crate::urls::{connect_url, public_url};
use crate::AppState;

mod presets;
pub use presets::Preset;

/// How the gateway identifies itself to a target's authorization server.
#[derive(Debug, Clone, Default)]
pub struct ClientChoice {
    /// A client id registered by the operator (wins over registration).
    pub client_id: Option<String>,
    /// Secrets Manager ARN of its secret.
    pub client_secret_arn: Option<String>,
    /// Its secret itself, to be stored in Secrets Manager under the
    /// target's secret name (instead of an ARN).
    pub client_secret: Option<SecretString>,
    /// How it authenticates at the token endpoint.
    pub auth_method: Option<TokenEndpointAuthMethod>,
}

/// Everything `add_target` needs.
#[derive(Debug, Clone, Default)]
pub struct NewTarget {
    /// Target name.
    pub name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Upstream MCP URL.
    pub mcp_url: String,
    /// No OAuth at all.
    pub no_auth: bool,
    /// Given endpoints (skip discovery): issuer, authorization, token, revocation.
    pub manual: Option<ManualEndpoints>,
    /// The client.
    pub client: ClientChoice,
    /// Scopes (default: discovered).
    pub scopes: Option<Vec<String>>,
    /// Extra authorization parameters.
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Send `resource` (RFC 8707).
    pub send_resource: bool,
    /// Tool-name prefix override.
    pub tool_prefix: Option<String>,
    /// Name prefix for secrets the registration creates.
    pub secret_name_prefix: String,
    /// A provider preset, applied to the settings registration produced.
    pub preset: Option<Preset>,
    /// An API key for every user instead of OAuth.
    pub api_key: Option<NewApiKey>,
    /// One machine token for the target (Client Credentials) instead of
    /// per-user consents; needs a given client id and secret.
    pub client_credentials: bool,
    /// One machine token for the target from a JWT bearer assertion
    /// (workload identity federation); the assertion is given as the
    /// client secret.
    pub jwt_bearer: bool,
    /// SigV4 with the function's role instead of OAuth.
    pub aws_iam: Option<crate::domain::AwsIamSettings>,
    /// Exchange each caller's token (token exchange, or enterprise-managed
    /// authorization with an identity provider); needs a given client.
    pub exchange: Option<NewExchange>,
}

/// How a token-exchange target exchanges callers' tokens.
#[derive(Debug, Clone)]
pub struct NewExchange {
    /// The callers' token type (`subject_token_type`, a URN).
    pub subject_token_type: String,
    /// The `audience` to ask for.
    pub audience: Option<String>,
    /// Enterprise-managed authorization: the identity provider.
    pub identity_provider: Option<NewIdentityProvider>,
}

/// The gateway's client at an enterprise identity provider.
#[derive(Debug, Clone)]
pub struct NewIdentityProvider {
    /// Its token endpoint.
    pub token_endpoint: String,
    /// The gateway's client id there.
    pub client_id: String,
    /// Its secret's ARN, if already stored.
    pub client_secret_arn: Option<String>,
    /// Its secret, to store (named `<prefix><target>/idp`).
    pub client_secret: Option<SecretString>,
}

/// An API key target's key and where it goes.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Header or query parameter.
    pub placement: crate::domain::ApiKeyPlacement,
    /// Its name.
    pub name: String,
    /// Text before the key in a header.
    pub prefix: String,
    /// The key (stored in Secrets Manager, never printed).
    pub key: SecretString,
}

/// Endpoints given by the operator.
#[derive(Debug, Clone, Default)]
pub struct ManualEndpoints {
    /// Issuer.
    pub issuer: Option<String>,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// Revocation endpoint.
    pub revocation_endpoint: Option<String>,
}

/// What `add_target` did.
#[derive(Debug)]
pub struct Added {
    /// The stored target.
    pub target: Target,
    /// What discovery found, when it ran.
    pub discovered: Option<Discovered>,
    /// How the client was obtained.
    pub client_source: &'static str,
}

/// The gateway's Client ID Metadata Document URL (its `client_id` where
/// used): `path` (`CLIENT_METADATA_PATH`) at `base`.
pub fn client_metadata_url(base: &url::Url, path: &str) -> String {
    public_url(base, path)
}

/// Discovers (unless endpoints are given), obtains a client (given, Client ID
/// Metadata Document, or Dynamic Client Registration, in that order), checks
/// and stores the target.
pub async fn add_target(
    state: &AppState,
    base: &url::Url,
    policy: FetchPolicy,
    new: NewTarget,
) -> Result<Added, String> {
    let mut added = Added {
        target: Target {
            name: new.name.clone(),
            display_name: new.display_name.clone(),
            mcp_url: new.mcp_url.clone(),
            auth: TargetAuth::None,
            tool_prefix: new.tool_prefix.clone(),
            return_to: Default::default(),
            tool_catalog: Default::default(),
        },
        discovered: None,
        client_source: "none",
    };
    if let Some(iam) = &new.aws_iam {
        iam.validate()?;
        // Signed requests carry the role's session token: https only.
        if !policy.allow_http && !new.mcp_url.starts_with("https://") {
            return Err(format!(
                "an AWS IAM target's MCP URL must be https (got {:?})",
                new.mcp_url
            ));
        }
        added.target.auth = TargetAuth::AwsIam(iam.clone());
        added.client_source = "AWS IAM (SigV4)";
    } else if let Some(k) = &new.api_key {
        let mut settings = crate::domain::ApiKeySettings {
            secret_arn: String::new(),
            placement: k.placement,
            name: k.name.clone(),
            prefix: k.prefix.clone(),
        };
        // Checked before anything is stored.
        settings.secret_arn = "pending".into();
        settings.validate()?;
        settings.secret_arn = store_secret(
            state,
            &format!("{}{}", new.secret_name_prefix, new.name),
            &k.key,
        )
        .await?;
        added.target.auth = TargetAuth::ApiKey(settings);
        added.client_source = "API key";
    } else if !new.no_auth {
        if new.exchange.is_some() && new.client.client_id.is_none() {
            return Err(
                "token exchange needs the gateway's client at the authorization server: --client-id (and its secret)"
                    .into(),
            );
        }
        if (new.client_credentials || new.jwt_bearer)
            && (new.client.client_id.is_none()
                || (new.client.client_secret.is_none() && new.client.client_secret_arn.is_none()))
        {
            return Err(
                "machine tokens need the client: --client-id and --client-secret-stdin (for --jwt-bearer: the assertion), or --client-secret-arn"
                    .into(),
            );
        }
        let mut settings = oauth_settings(state, base, policy, &new, &mut added).await?;
        if let Some(preset) = new.preset {
            preset.apply(&mut settings);
        }
        if new.client_credentials {
            settings.flow = crate::domain::OAuthFlow::ClientCredentials;
        }
        if new.jwt_bearer {
            settings.flow = crate::domain::OAuthFlow::JwtBearer;
            // The assertion is the credential; the client id goes in the body.
            settings.token_endpoint_auth_method = TokenEndpointAuthMethod::None;
        }
        if let Some(x) = &new.exchange {
            let identity_provider = match &x.identity_provider {
                None => None,
                Some(idp) => {
                    if !policy.allow_http && !idp.token_endpoint.starts_with("https://") {
                        return Err(format!(
                            "the identity provider's token endpoint must be https (got {:?})",
                            idp.token_endpoint
                        ));
                    }
                    let client_secret_arn = match (&idp.client_secret, &idp.client_secret_arn) {
                        (Some(secret), _) => Some(
                            store_secret(
                                state,
                                &format!("{}{}/idp", new.secret_name_prefix, new.name),
                                secret,
                            )
                            .await?,
                        ),
                        (None, arn) => arn.clone(),
                    };
                    Some(crate::domain::IdentityProviderClient {
                        token_endpoint: idp.token_endpoint.clone(),
                        client_id: idp.client_id.clone(),
                        client_secret_arn,
                    })
                }
            };
            settings.flow = match identity_provider {
                Some(_) => crate::domain::OAuthFlow::EnterpriseManaged,
                None => crate::domain::OAuthFlow::TokenExchange,
            };
            settings.exchange = Some(crate::domain::ExchangeSettings {
                subject_token_type: x.subject_token_type.clone(),
                audience: x.audience.clone(),
                identity_provider,
            });
        }
        added.target.auth = TargetAuth::OAuth(Box::new(settings));
    }
    added.target.validate()?;
    state
        .targets
        .put(&added.target)
        .await
        .map_err(|e| e.to_string())?;
    Ok(added)
}

async fn oauth_settings(
    state: &AppState,
    base: &url::Url,
    policy: FetchPolicy,
    new: &NewTarget,
    added: &mut Added,
) -> Result<OAuthSettings, String> {
    let fetcher = Fetcher::new(&state.http, policy);
    let mut settings = match &new.manual {
        Some(m) => {
            let client_id = new
                .client
                .client_id
                .clone()
                .ok_or("with given endpoints, --client-id is required")?;
            OAuthSettings {
                issuer: m.issuer.clone(),
                authorization_endpoint: m.authorization_endpoint.clone(),
                token_endpoint: m.token_endpoint.clone(),
                revocation_endpoint: m.revocation_endpoint.clone(),
                client_id,
                client_secret_arn: None,
                token_endpoint_auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
                scopes: vec![],
                extra_authorize_params: BTreeMap::new(),
                send_resource: true,
                resource: None,
                registered: false,
                flow: Default::default(),
                authorization_response_iss_parameter_supported: false,
                // Given endpoints: the operator vouches for PKCE S256.
                code_challenge_methods_supported: vec!["S256".into()],
                dpop_signing_alg_values_supported: vec![],
                exchange: None,
            }
        }
        None => {
            let found = discovery::discover(&fetcher, &new.mcp_url)
                .await
                .map_err(|e| e.to_string())?;
            let settings = found.settings(
                String::new(),
                None,
                TokenEndpointAuthMethod::ClientSecretBasic,
            );
            added.discovered = Some(found);
            settings
        }
    };
    if let Some(scopes) = &new.scopes {
        settings.scopes = scopes.clone();
    }
    settings.extra_authorize_params = new.extra_authorize_params.clone();
    settings.send_resource = new.send_resource;
    if let Some(id) = &new.client.client_id {
        settings.client_id = id.clone();
        settings.client_secret_arn = match &new.client.client_secret {
            Some(secret) => Some(
                store_secret(
                    state,
                    &format!("{}{}", new.secret_name_prefix, new.name),
                    secret,
                )
                .await?,
            ),
            None => new.client.client_secret_arn.clone(),
        };
        settings.token_endpoint_auth_method =
            new.client
                .auth_method
                .unwrap_or(if settings.client_secret_arn.is_some() {
                    TokenEndpointAuthMethod::ClientSecretBasic
                } else {
                    TokenEndpointAuthMethod::None
                });
        if settings.token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt {
            match &new.client.client_secret {
                // The key is tried now, not at the first token request.
                Some(key) => {
                    crate::adapters::oauth::client_assertion(
                        &settings,
                        &settings.token_endpoint,
                        key,
                        0,
                    )
                    .map_err(|e| e.to_string())?;
                }
                None if settings.client_secret_arn.is_none() => {
                    return Err(
                        "private_key_jwt needs the client's private key (--client-secret-stdin)"
                            .into(),
                    )
                }
                None => {}
            }
        }
        added.client_source = "given";
        return Ok(settings);
    }
    let asm = added
        .discovered
        .as_ref()
        .map(|d| d.authorization_server.clone())
        .ok_or("no client id given and nothing discovered to register with")?;
    let secret_name = format!("{}{}", new.secret_name_prefix, new.name);
    added.client_source =
        obtain_client(state, base, &fetcher, &asm, &secret_name, &mut settings).await?;
    Ok(settings)
}

/// Obtains a client at the authorization server `asm` for `settings`: the
/// gateway's Client ID Metadata Document where the server supports it (over
/// https), else Dynamic Client Registration, its secret stored as
/// `secret_name`. Returns how.
async fn obtain_client(
    state: &AppState,
    base: &url::Url,
    fetcher: &Fetcher<'_>,
    asm: &discovery::AuthorizationServerMetadata,
    secret_name: &str,
    settings: &mut OAuthSettings,
) -> Result<&'static str, String> {
    let redirect_uri = public_url(base, CALLBACK_PATH);
    if asm.client_id_metadata_document_supported && base.scheme() == "https" {
        settings.client_id = client_metadata_url(base, &state.config.client_metadata_path);
        settings.client_secret_arn = None;
        settings.token_endpoint_auth_method = TokenEndpointAuthMethod::None;
        settings.registered = true;
        return Ok("client ID metadata document");
    }
    let Some(endpoint) = &asm.registration_endpoint else {
        return Err(format!(
            "no client id given, and {} supports neither Client ID Metadata Documents (over https) nor Dynamic Client Registration: register a client there with redirect URI {redirect_uri} and pass --client-id",
            asm.issuer
        ));
    };
    // Ask for the scopes at registration only when the server lists them all
    // (some servers refuse resource scopes they do not advertise there).
    let advertised = asm.scopes_supported.is_empty()
        || settings
            .scopes
            .iter()
            .all(|s| asm.scopes_supported.contains(s));
    let register_scopes: &[String] = if advertised { &settings.scopes } else { &[] };
    let registered = discovery::register_client(
        fetcher,
        endpoint,
        &redirect_uri,
        "MCP OAuth Gateway",
        register_scopes,
        &asm.token_endpoint_auth_methods_supported,
    )
    .await
    .map_err(|e| e.to_string())?;
    settings.client_id = registered.client_id;
    settings.token_endpoint_auth_method = registered.token_endpoint_auth_method;
    settings.client_secret_arn = match registered.client_secret {
        Some(secret) => Some(store_secret(state, secret_name, &secret).await?),
        None => None,
    };
    settings.registered = true;
    Ok("dynamic client registration")
}

/// What [`follow_authorization_server`] found.
#[derive(Debug)]
pub enum Migration {
    /// The upstream still names the authorization server the target uses.
    Unchanged,
    /// It names another one; the gateway registered there and saved the
    /// target with the new settings (its users consent there next).
    Moved {
        /// The issuer the target used.
        from: String,
        /// The issuer it uses now.
        to: String,
    },
}

/// How long an instance waits before looking at a target's metadata again
/// after a refusal: an upstream refusing every call must not turn each one
/// into metadata fetches and registrations.
const MOVE_CHECK_INTERVAL_SECONDS: i64 = 60;

/// After an upstream refused a token: whether its Protected Resource
/// Metadata (at the challenge's `resource_metadata`, else the well-known
/// URLs) now names another authorization server, and if so, the move: the
/// new server's metadata is discovered, a client obtained there (never the
/// old server's credentials; its secret stored under a name of its own, so
/// no cache anywhere pairs it with the old client) and the target saved
/// with the new settings, keeping the operator's scopes and parameters.
///
/// Only targets whose client the gateway obtained itself move
/// ([`OAuthSettings::registered`]); a client the operator gave, or
/// endpoints without an issuer, stay. Each instance looks at most once a
/// minute per target. Fetches follow the target's own address class
/// ([`FetchPolicy::for_url`]).
pub async fn follow_authorization_server(
    state: &AppState,
    base: &url::Url,
    target: &Target,
    resource_metadata: Option<&str>,
) -> Result<Migration, String> {
    let TargetAuth::OAuth(current) = &target.auth else {
        return Ok(Migration::Unchanged);
    };
    let Some(issuer) = current.issuer.as_deref() else {
        return Ok(Migration::Unchanged);
    };
    if !current.registered || !due_for_move_check(&target.name, state.clock.now()) {
        return Ok(Migration::Unchanged);
    }
    let mcp = url::Url::parse(&target.mcp_url).map_err(|e| e.to_string())?;
    let fetcher = Fetcher::new(&state.http, FetchPolicy::for_url(&mcp));
    let prm = discovery::resource_metadata(&fetcher, &mcp, resource_metadata)
        .await
        .map_err(|e| e.to_string())?;
    let Some(named) = prm.authorization_servers.first() else {
        return Err("the upstream's resource metadata lists no authorization server".into());
    };
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    if same(named, issuer) {
        return Ok(Migration::Unchanged);
    }
    // The stored target, past this instance's cache: another instance may
    // have followed the move already, or an operator changed the target.
    let Some(stored) = state
        .targets
        .get_fresh(&target.name)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Migration::Unchanged);
    };
    let TargetAuth::OAuth(stored_settings) = &stored.auth else {
        return Ok(Migration::Unchanged);
    };
    match stored_settings.issuer.as_deref() {
        Some(now_at) if same(now_at, named) => {
            return Ok(Migration::Moved {
                from: issuer.to_owned(),
                to: now_at.to_owned(),
            })
        }
        Some(now_at) if same(now_at, issuer) && stored_settings.registered => {}
        _ => return Ok(Migration::Unchanged),
    }
    let (_, asm) = discovery::authorization_server(&fetcher, named)
        .await
        .map_err(|e| e.to_string())?;
    let mut settings = OAuthSettings {
        issuer: Some(asm.issuer.clone()),
        authorization_endpoint: asm.authorization_endpoint.clone(),
        token_endpoint: asm.token_endpoint.clone(),
        revocation_endpoint: asm.revocation_endpoint.clone(),
        client_id: String::new(),
        client_secret_arn: None,
        token_endpoint_auth_method: TokenEndpointAuthMethod::None,
        scopes: stored_settings.scopes.clone(),
        extra_authorize_params: stored_settings.extra_authorize_params.clone(),
        send_resource: stored_settings.send_resource,
        resource: Some(prm.resource.clone()),
        registered: true,
        flow: Default::default(),
        authorization_response_iss_parameter_supported: asm
            .authorization_response_iss_parameter_supported,
        code_challenge_methods_supported: asm.code_challenge_methods_supported.clone(),
        dpop_signing_alg_values_supported: asm.dpop_signing_alg_values_supported.clone(),
        exchange: None,
    };
    let secret_name = format!(
        "{}{}/{}",
        state.config.client_secret_name_prefix,
        target.name,
        crate::crypto::random_token(12)
    );
    obtain_client(state, base, &fetcher, &asm, &secret_name, &mut settings).await?;
    let mut moved = stored.clone();
    moved.auth = TargetAuth::OAuth(Box::new(settings));
    moved.validate()?;
    state.targets.put(&moved).await.map_err(|e| e.to_string())?;
    Ok(Migration::Moved {
        from: issuer.to_owned(),
        to: asm.issuer,
    })
}

/// Whether this instance may look at `target`'s metadata now (at most
/// once per [`MOVE_CHECK_INTERVAL_SECONDS`]); records the look.
fn due_for_move_check(target: &str, now: i64) -> bool {
    static LAST: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, i64>>> =
        std::sync::OnceLock::new();
    let Ok(mut last) = LAST.get_or_init(Default::default).lock() else {
        return true;
    };
    match last.get(target) {
        Some(at) if now - at < MOVE_CHECK_INTERVAL_SECONDS && now >= *at => false,
        _ => {
            last.insert(target.to_owned(), now);
            true
        }
    }
}

async fn store_secret(
    state: &AppState,
    name: &str,
    value: &SecretString,
) -> Result<String, String> {
    state
        .secrets
        .store(name, value)
        .await
        .map_err(|e| e.to_string())
}

/// Creates a consent link for `sub` and `target`, as the proxy would hand out.
pub async fn consent_link(
    state: &AppState,
    base: &url::Url,
    sub: &str,
    target: &str,
) -> Result<String, String> {
    let t = state
        .targets
        .get(target)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no target named {target:?}"))?;
    let TargetAuth::OAuth(settings) = &t.auth else {
        return Err(format!("target {target:?} does not use OAuth"));
    };
    if !t.auth.is_per_user() {
        return Err(format!(
            "target {target:?} uses client credentials: its users need no consent"
        ));
    }
    let now = state.clock.now();
    let pending = PendingAuthorization::for_target(
        sub,
        &t,
        settings,
        &[],
        now,
        state.config.authorization_ttl.as_secs() as i64,
    );
    state
        .authorizations
        .create(&pending)
        .await
        .map_err(|e| e.to_string())?;
    Ok(connect_url(base, &pending.id))
}
