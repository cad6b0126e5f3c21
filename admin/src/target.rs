//! `gateway-admin target ...`: adding targets of every kind (discovery,
//! client registration, presets, machine tokens, API keys, SigV4), and
//! listing, showing, putting and removing them.

use std::path::PathBuf;

use clap::Subcommand;
use gateway_shared::adapters::discovery::{self, Fetcher};
use gateway_shared::domain::{Target, TokenEndpointAuthMethod};
use gateway_shared::targets;

use crate::{policy, state};

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum TargetCommand {
    /// Register an upstream MCP server: discover its authorization server,
    /// obtain a client (given, Client ID Metadata Document, or Dynamic Client
    /// Registration), and store the target.
    Add(AddArgs),
    /// Run discovery for an MCP URL and print what was found.
    Discover {
        /// The upstream MCP URL.
        mcp_url: String,
        /// Allow http and loopback/private addresses (local development).
        #[arg(long)]
        allow_insecure_local: bool,
    },
    /// Add or replace a target from a JSON file (see README, "Targets").
    Put {
        /// The target's JSON description.
        file: PathBuf,
    },
    /// List targets.
    List,
    /// List a target's tools upstream now and store them as its catalog
    /// (what tool search and users not yet connected see; with
    /// TOOLS_LISTING=search, the catalogs are kept this way).
    Sync {
        /// Target name.
        name: String,
        /// The user whose connection lists the tools, for a target each
        /// user connects (the gateway's own credentials otherwise).
        #[arg(long)]
        user: Option<String>,
        /// Public base URL of the gateway.
        #[arg(long, env = "PUBLIC_BASE_URL")]
        public_base_url: url::Url,
    },
    /// Show one target as JSON.
    Show {
        /// Target name.
        name: String,
    },
    /// Remove a target.
    Remove {
        /// Target name.
        name: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct AddArgs {
    /// Target name: 1-32 of a-z, 0-9, '-'. Tool names are prefixed `<name>___`.
    name: String,
    /// The upstream MCP URL (Streamable HTTP).
    #[arg(long)]
    mcp_url: String,
    /// Name shown to people on consent pages.
    #[arg(long)]
    display_name: Option<String>,
    /// The upstream needs no authentication.
    #[arg(long, conflicts_with_all = ["client_id", "authorization_endpoint"])]
    no_auth: bool,
    /// How the gateway authenticates to the upstream: oauth (per-user
    /// consent, the default), client_credentials, jwt_bearer,
    /// token_exchange (the caller's token, RFC 8693), enterprise_managed
    /// (an ID-JAG from --idp-token-endpoint), api_key (with
    /// --api-key-header or --api-key-query), aws_iam (with --aws-service
    /// and --aws-region) or none.
    #[arg(long, value_parser = ["oauth", "client_credentials", "jwt_bearer", "token_exchange", "enterprise_managed", "api_key", "aws_iam", "none"])]
    auth: Option<String>,
    /// With --auth token_exchange or enterprise_managed: the type of the
    /// callers' bearer tokens: access_token (token_exchange's default),
    /// id_token (enterprise_managed's default), jwt, or a token type URN.
    #[arg(long)]
    subject_token_type: Option<String>,
    /// With --auth token_exchange: the `audience` to ask for.
    #[arg(long)]
    audience: Option<String>,
    /// With --auth enterprise_managed: the identity provider's token endpoint.
    #[arg(long)]
    idp_token_endpoint: Option<String>,
    /// With --auth enterprise_managed: the gateway's client id at the identity provider.
    #[arg(long)]
    idp_client_id: Option<String>,
    /// Secrets Manager ARN of that client's secret (sent with HTTP Basic).
    #[arg(long, requires = "idp_client_id")]
    idp_client_secret_arn: Option<String>,
    /// Read that client's secret from standard input (stored in Secrets
    /// Manager as <secret-name-prefix><name>/idp).
    #[arg(long, requires = "idp_client_id", conflicts_with_all = ["idp_client_secret_arn", "client_secret_stdin"])]
    idp_client_secret_stdin: bool,
    /// With --auth aws_iam: the service's SigV4 signing name
    /// (bedrock-agentcore, lambda, execute-api).
    #[arg(long)]
    aws_service: Option<String>,
    /// With --auth aws_iam: the region to sign for.
    #[arg(long)]
    aws_region: Option<String>,
    /// A client id registered at the authorization server (skips registration).
    #[arg(long)]
    client_id: Option<String>,
    /// Secrets Manager ARN of that client's secret.
    #[arg(long, requires = "client_id")]
    client_secret_arn: Option<String>,
    /// Read that client's secret from standard input and store it in Secrets
    /// Manager (named <secret-name-prefix><name>), instead of --client-secret-arn.
    #[arg(long, requires = "client_id", conflicts_with = "client_secret_arn")]
    client_secret_stdin: bool,
    /// Token endpoint authentication: client_secret_basic, client_secret_post,
    /// private_key_jwt (the secret is the PKCS#8 PEM P-256 key) or none.
    #[arg(long, value_parser = parse_method)]
    auth_method: Option<TokenEndpointAuthMethod>,
    /// Scopes to request (space separated; default: discovered).
    #[arg(long)]
    scopes: Option<String>,
    /// Extra authorization request parameter, e.g. --param access_type=offline (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Do not send `resource` (RFC 8707), for servers that reject it.
    #[arg(long)]
    no_resource: bool,
    /// Tool-name prefix ("" for none; default `<name>___`).
    #[arg(long)]
    tool_prefix: Option<String>,
    /// Authorization endpoint (with --token-endpoint: skip discovery).
    #[arg(long, requires_all = ["token_endpoint", "client_id"])]
    authorization_endpoint: Option<String>,
    /// Token endpoint (with --authorization-endpoint, or alone with
    /// --client-credentials).
    #[arg(long)]
    token_endpoint: Option<String>,
    /// One machine token for the target with the Client Credentials grant
    /// (no user consents; needs --client-id and its secret).
    #[arg(long, conflicts_with_all = ["no_auth", "api_key_header", "api_key_query"])]
    client_credentials: bool,
    /// One machine token for the target from a JWT bearer assertion
    /// (RFC 7523; workload identity federation), read with
    /// --client-secret-stdin; needs --client-id.
    #[arg(long, conflicts_with_all = ["no_auth", "api_key_header", "api_key_query", "client_credentials"])]
    jwt_bearer: bool,
    /// Issuer (with given endpoints; enables the RFC 9207 check).
    #[arg(long, requires = "token_endpoint")]
    issuer: Option<String>,
    /// Revocation endpoint (with given endpoints).
    #[arg(long, requires = "token_endpoint")]
    revocation_endpoint: Option<String>,
    /// Public base URL of the gateway (its redirect URI is <base>/oauth/callback).
    #[arg(long, env = "PUBLIC_BASE_URL")]
    public_base_url: url::Url,
    /// Name prefix of secrets created for registered clients.
    #[arg(long, env = "CLIENT_SECRET_NAME_PREFIX", default_value = gateway_shared::config::DEFAULT_CLIENT_SECRET_NAME_PREFIX)]
    secret_name_prefix: String,
    /// Allow http and loopback/private addresses (local development).
    #[arg(long)]
    allow_insecure_local: bool,
    /// A provider preset: github, google, microsoft, slack, atlassian,
    /// salesforce, okta, auth0 or cognito (see the README).
    #[arg(long, value_parser = targets::Preset::parse)]
    preset: Option<targets::Preset>,
    /// An API key for every user, sent in this header (read the key from
    /// standard input with --api-key-stdin).
    #[arg(long, conflicts_with_all = ["client_id", "authorization_endpoint", "no_auth", "preset", "api_key_query"], requires = "api_key_stdin")]
    api_key_header: Option<String>,
    /// An API key for every user, sent as this query parameter.
    #[arg(long, conflicts_with_all = ["client_id", "authorization_endpoint", "no_auth", "preset"], requires = "api_key_stdin")]
    api_key_query: Option<String>,
    /// Text before the key in the header, e.g. "Bearer " or "Token ".
    #[arg(long, requires = "api_key_header")]
    api_key_prefix: Option<String>,
    /// Read the API key from standard input (stored in Secrets Manager).
    #[arg(long)]
    api_key_stdin: bool,
}

fn parse_method(s: &str) -> Result<TokenEndpointAuthMethod, String> {
    match s {
        "client_secret_basic" => Ok(TokenEndpointAuthMethod::ClientSecretBasic),
        "client_secret_post" => Ok(TokenEndpointAuthMethod::ClientSecretPost),
        "private_key_jwt" => Ok(TokenEndpointAuthMethod::PrivateKeyJwt),
        "none" => Ok(TokenEndpointAuthMethod::None),
        other => Err(format!(
            "{other:?} is not client_secret_basic, client_secret_post, private_key_jwt or none"
        )),
    }
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub(crate) async fn target(cmd: TargetCommand) -> Result<(), String> {
    match cmd {
        TargetCommand::Add(mut args) => {
            let idp_client_secret = if args.idp_client_secret_stdin {
                let mut secret = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut secret).map_err(|e| {
                    format!("reading the identity provider's client secret from stdin: {e}")
                })?;
                let secret = secret.trim_end_matches(['\r', '\n']);
                if secret.is_empty() {
                    return Err("--idp-client-secret-stdin: standard input is empty".into());
                }
                Some(secrecy::SecretString::from(secret.to_owned()))
            } else {
                None
            };
            let client_secret = if args.client_secret_stdin {
                let mut secret = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut secret)
                    .map_err(|e| format!("reading the client secret from stdin: {e}"))?;
                let secret = secret.trim_end_matches(['\r', '\n']);
                if secret.is_empty() {
                    return Err("--client-secret-stdin: standard input is empty".into());
                }
                Some(secrecy::SecretString::from(secret.to_owned()))
            } else {
                None
            };
            // One kind, from --auth or the kind's own flags, never both ways.
            let by_flags: Vec<&str> = [
                (args.client_credentials, "client_credentials"),
                (args.jwt_bearer, "jwt_bearer"),
                (args.no_auth, "none"),
                (
                    args.idp_token_endpoint.is_some() || args.idp_client_id.is_some(),
                    "enterprise_managed",
                ),
                (
                    args.api_key_header.is_some() || args.api_key_query.is_some(),
                    "api_key",
                ),
                (
                    args.aws_service.is_some() || args.aws_region.is_some(),
                    "aws_iam",
                ),
            ]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, kind)| kind)
            .collect();
            if by_flags.len() > 1 {
                return Err(format!(
                    "choose one kind of authentication (flags for {})",
                    by_flags.join(" and ")
                ));
            }
            let kind = match (args.auth.as_deref(), by_flags.first().copied()) {
                (Some(a), Some(f)) if a != f => {
                    return Err(format!("--auth {a} does not go with the flags of {f}"))
                }
                (Some(a), _) => a,
                (None, Some(f)) => f,
                (None, None) => "oauth",
            };
            match kind {
                "client_credentials" => args.client_credentials = true,
                "jwt_bearer" => args.jwt_bearer = true,
                "none" => args.no_auth = true,
                "api_key" if args.api_key_header.is_none() && args.api_key_query.is_none() => {
                    return Err("--auth api_key needs --api-key-header or --api-key-query".into())
                }
                _ => {}
            }
            // Kinds without an OAuth client take none of its settings.
            let oauth_flags = args.client_id.is_some()
                || args.client_secret_arn.is_some()
                || args.client_secret_stdin
                || args.auth_method.is_some()
                || args.authorization_endpoint.is_some()
                || args.token_endpoint.is_some()
                || args.scopes.is_some()
                || args.preset.is_some()
                || !args.params.is_empty();
            if matches!(kind, "none" | "api_key" | "aws_iam") && oauth_flags {
                return Err(format!(
                    "--auth {kind} takes no OAuth client, endpoint, scope, parameter or preset"
                ));
            }
            if kind == "jwt_bearer" && args.auth_method.is_some() {
                return Err(
                    "--auth jwt_bearer: the assertion is the credential; no --auth-method".into(),
                );
            }
            let exchange = match kind {
                "token_exchange" | "enterprise_managed" => {
                    let enterprise = kind == "enterprise_managed";
                    let identity_provider = match (&args.idp_token_endpoint, &args.idp_client_id) {
                        (Some(endpoint), Some(id)) if enterprise => {
                            Some(targets::NewIdentityProvider {
                                token_endpoint: endpoint.clone(),
                                client_id: id.clone(),
                                client_secret_arn: args.idp_client_secret_arn.clone(),
                                client_secret: idp_client_secret,
                            })
                        }
                        _ if enterprise => {
                            return Err("--auth enterprise_managed needs --idp-token-endpoint and --idp-client-id".into())
                        }
                        _ => None,
                    };
                    if enterprise && args.audience.is_some() {
                        return Err("--auth enterprise_managed: the audience is the authorization server's issuer; no --audience".into());
                    }
                    let subject_token_type = match args.subject_token_type.as_deref() {
                        None if enterprise => gateway_shared::domain::ID_TOKEN_TYPE.to_owned(),
                        None | Some("access_token") => gateway_shared::domain::ACCESS_TOKEN_TYPE.to_owned(),
                        Some("id_token") => gateway_shared::domain::ID_TOKEN_TYPE.to_owned(),
                        Some("jwt") => "urn:ietf:params:oauth:token-type:jwt".to_owned(),
                        Some(urn) if urn.starts_with("urn:") => urn.to_owned(),
                        Some(other) => {
                            return Err(format!("--subject-token-type {other:?} is not access_token, id_token, jwt or a URN"))
                        }
                    };
                    Some(targets::NewExchange {
                        subject_token_type,
                        audience: args.audience.clone(),
                        identity_provider,
                    })
                }
                _ if args.subject_token_type.is_some() || args.audience.is_some() => {
                    return Err("--subject-token-type and --audience go with --auth token_exchange or enterprise_managed".into())
                }
                _ => None,
            };
            let aws_iam = match (kind, &args.aws_service, &args.aws_region) {
                ("aws_iam", Some(service), Some(region)) => {
                    Some(gateway_shared::domain::AwsIamSettings {
                        service: service.clone(),
                        region: region.clone(),
                    })
                }
                ("aws_iam", _, _) => {
                    return Err("--auth aws_iam needs --aws-service and --aws-region".into())
                }
                (_, None, None) => None,
                _ => return Err("--aws-service and --aws-region go with --auth aws_iam".into()),
            };
            let api_key = match (&args.api_key_header, &args.api_key_query) {
                (None, None) if args.api_key_stdin => {
                    return Err("--api-key-stdin needs --api-key-header or --api-key-query".into())
                }
                (None, None) => None,
                (header, query) => {
                    let mut key = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut key)
                        .map_err(|e| format!("reading the API key from stdin: {e}"))?;
                    let key = key.trim_end_matches(['\r', '\n']);
                    if key.is_empty() {
                        return Err("--api-key-stdin: standard input is empty".into());
                    }
                    Some(targets::NewApiKey {
                        placement: if header.is_some() {
                            gateway_shared::domain::ApiKeyPlacement::Header
                        } else {
                            gateway_shared::domain::ApiKeyPlacement::Query
                        },
                        name: header.clone().or(query.clone()).unwrap_or_default(),
                        prefix: args.api_key_prefix.clone().unwrap_or_default(),
                        key: secrecy::SecretString::from(key.to_owned()),
                    })
                }
            };
            let manual = match (args.authorization_endpoint, args.token_endpoint) {
                (Some(authorization_endpoint), token_endpoint) => Some(targets::ManualEndpoints {
                    issuer: args.issuer,
                    authorization_endpoint,
                    token_endpoint: token_endpoint.unwrap_or_default(),
                    revocation_endpoint: args.revocation_endpoint,
                }),
                (None, Some(token_endpoint)) if args.client_credentials || args.jwt_bearer => {
                    Some(targets::ManualEndpoints {
                        issuer: args.issuer,
                        authorization_endpoint: String::new(),
                        token_endpoint,
                        revocation_endpoint: args.revocation_endpoint,
                    })
                }
                (None, Some(_)) => {
                    return Err(
                        "--token-endpoint needs --authorization-endpoint (or --client-credentials)"
                            .into(),
                    )
                }
                (None, None) => None,
            };
            let state = state().await?;
            let new = targets::NewTarget {
                name: args.name,
                display_name: args.display_name,
                mcp_url: args.mcp_url,
                no_auth: args.no_auth,
                manual,
                client: targets::ClientChoice {
                    client_id: args.client_id,
                    client_secret_arn: args.client_secret_arn,
                    client_secret,
                    auth_method: args.auth_method,
                },
                scopes: args
                    .scopes
                    .map(|s| s.split_whitespace().map(str::to_owned).collect()),
                extra_authorize_params: args.params.into_iter().collect(),
                send_resource: !args.no_resource,
                tool_prefix: args.tool_prefix,
                secret_name_prefix: args.secret_name_prefix,
                preset: args.preset,
                api_key,
                client_credentials: args.client_credentials,
                jwt_bearer: args.jwt_bearer,
                aws_iam,
                exchange,
            };
            let added = targets::add_target(
                &state,
                &args.public_base_url,
                policy(args.allow_insecure_local),
                new,
            )
            .await?;
            let t = &added.target;
            println!("target {}: saved", t.name);
            println!("  mcp url:  {}", t.mcp_url);
            if let gateway_shared::domain::TargetAuth::OAuth(o) = &t.auth {
                println!("  issuer:   {}", o.issuer.as_deref().unwrap_or("-"));
                println!("  client:   {} ({})", o.client_id, added.client_source);
                println!(
                    "  scopes:   {}",
                    if o.scopes.is_empty() {
                        "-".to_string()
                    } else {
                        o.scopes.join(" ")
                    }
                );
            }
        }
        TargetCommand::Discover {
            mcp_url,
            allow_insecure_local,
        } => {
            // Discovery needs no table or keys.
            let http = gateway_shared::state::http_client();
            let found =
                discovery::discover(&Fetcher::new(&http, policy(allow_insecure_local)), &mcp_url)
                    .await
                    .map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&found).map_err(|e| e.to_string())?
            );
        }
        TargetCommand::Put { file } => {
            let state = state().await?;
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let target: Target = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a target description: {e}", file.display()))?;
            target.validate()?;
            state
                .targets
                .put(&target)
                .await
                .map_err(|e| e.to_string())?;
            println!("target {}: saved", target.name);
        }
        TargetCommand::Sync {
            name,
            user,
            public_base_url,
        } => {
            let state = state().await?;
            let sub = user.unwrap_or_else(|| "gateway:admin".into());
            let caller = gateway_shared::gateway::Caller::new(
                gateway_shared::gateway::Identity {
                    sub,
                    ..Default::default()
                },
                gateway_shared::wire::LATEST_2025,
            );
            let count = gateway_shared::gateway::Gateway::new(&state, public_base_url, caller)
                .sync_catalog(&name)
                .await?;
            println!("target {name}: {count} tools in its catalog");
        }
        TargetCommand::List => {
            let state = state().await?;
            let targets = state.targets.list().await.map_err(|e| e.to_string())?;
            if targets.is_empty() {
                println!("no targets");
            }
            for t in targets {
                let auth = match &t.auth {
                    gateway_shared::domain::TargetAuth::None => "none".to_string(),
                    gateway_shared::domain::TargetAuth::OAuth(o) => {
                        format!("oauth ({})", o.client_id)
                    }
                    gateway_shared::domain::TargetAuth::ApiKey(k) => {
                        format!("api key ({:?} {})", k.placement, k.name).to_lowercase()
                    }
                    gateway_shared::domain::TargetAuth::AwsIam(a) => {
                        format!("aws iam ({} {})", a.service, a.region)
                    }
                };
                println!("{:<24} {:<48} {}", t.name, t.mcp_url, auth);
            }
        }
        TargetCommand::Show { name } => {
            let state = state().await?;
            let t = state
                .targets
                .get(&name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no target named {name:?}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&t).map_err(|e| e.to_string())?
            );
        }
        TargetCommand::Remove { name } => {
            let state = state().await?;
            state.targets.delete(&name).await.map_err(|e| match e {
                gateway_shared::Error::NotFound(_) => format!("no target named {name:?}"),
                other => other.to_string(),
            })?;
            // A client-credentials target's machine token goes with it.
            match state
                .grants
                .delete(gateway_shared::tokens::MACHINE_SUB, &name)
                .await
            {
                Ok(()) | Err(gateway_shared::Error::NotFound(_)) => {}
                Err(e) => eprintln!("warning: the target's machine token was not deleted: {e}"),
            }
            println!("target {name}: removed");
        }
    }
    Ok(())
}
