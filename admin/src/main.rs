//! `gateway-admin`: the operator's command-line tool.
//!
//! It talks to the same table and secrets as the functions (the standard AWS
//! environment variables choose account, region and endpoint), and serves
//! the functions' Routers on a local listener for development.

use std::process::ExitCode;

mod policy;
mod smoke;
mod target;

use clap::{Parser, Subcommand};
use gateway_shared::adapters::discovery::FetchPolicy;
use gateway_shared::adapters::dynamodb::create_table;
use gateway_shared::{connections, targets};
use gateway_shared::{telemetry, AppState, Config};

#[derive(Parser)]
#[command(
    name = "gateway-admin",
    version,
    about = "Operate an mcp-oauth-gateway deployment"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Create the DynamoDB table and the key-set secret if they do not exist
    /// (for local endpoints; a deployed stack gets both from template.yaml).
    Init {
        /// Table name.
        #[arg(long, env = "TABLE_NAME")]
        table: String,
        /// Name of the key-set secret to create.
        #[arg(long, default_value = "mcp-oauth-gateway/keyset")]
        keyset_name: String,
    },
    /// Check a deployed gateway from outside: its Protected Resource
    /// Metadata, the 401 challenge, and (with a token) a tools/list.
    Smoke {
        /// The MCP URL (the stack's McpUrl output).
        #[arg(long)]
        url: String,
        /// Read a bearer token for the tools/list check from stdin.
        #[arg(long)]
        token_stdin: bool,
    },
    /// Serve the proxy and consent Routers on one local listener, the way
    /// API Gateway routes them (configuration from the environment).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Manage targets (upstream MCP servers).
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// The Cedar policy set: who may call which tools, prompts and
    /// resources (put, show, remove, test).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// A user's grants (connections): list, revoke.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Rotate the gateway key set: list, add, current, reseal, retire
    /// (see README, "Key rotation").
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run the scheduled refresh once, here: the token-refresh function's
    /// code path against the configured table; prints its summary.
    Refresh {
        /// Refresh grants whose access token expires within this many
        /// seconds (default: REFRESH_WINDOW_SECONDS, 600).
        #[arg(long)]
        window: Option<u64>,
    },
    /// Create a consent link for a user and a target (what an agent would be
    /// handed), for example to connect ahead of time or to try the flow.
    Connect {
        /// The user's subject (`sub`).
        #[arg(long)]
        user: String,
        /// The target.
        #[arg(long)]
        target: String,
        /// Public base URL of the gateway.
        #[arg(long, env = "PUBLIC_BASE_URL")]
        public_base_url: url::Url,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// The key ids, which is current, and how many stored items each seals.
    List,
    /// Add a new random key (not current yet); prints its id.
    Add,
    /// Show the current key, or make KEY_ID current.
    Current {
        /// The key to make current.
        key_id: Option<String>,
    },
    /// Rewrite every stored item not sealed with the current key (grants
    /// under their refresh lease, pending authorizations, targets).
    /// Resumable: run it again after an interruption.
    Reseal {
        /// Also seal targets that have no integrity seal (written by an
        /// older version): only after checking their configuration, since
        /// an unsealed target may have been altered in the table.
        #[arg(long)]
        adopt_unsealed_targets: bool,
    },
    /// Remove KEY_ID from the key set; refused while it is current or any
    /// stored item still uses it.
    Retire {
        /// The key to remove.
        key_id: String,
    },
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// List a user's grants: target, status, expiry, scopes (never tokens).
    List {
        /// The user's subject (`sub`).
        #[arg(long)]
        user: String,
    },
    /// Revoke a user's grant at the authorization server and delete it.
    Revoke {
        /// The user's subject (`sub`).
        #[arg(long)]
        user: String,
        /// The target.
        #[arg(long)]
        target: String,
    },
}

fn policy(allow_insecure_local: bool) -> FetchPolicy {
    if allow_insecure_local {
        FetchPolicy::local()
    } else {
        FetchPolicy::default()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init(telemetry::format_from_env());
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn state() -> Result<AppState, String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    AppState::from_config(config)
        .await
        .map_err(|e| e.to_string())
}

/// The audit event name and target of a command that changes the
/// deployment (none for the commands that only read).
fn admin_change(command: &Command) -> Option<(&'static str, Option<String>)> {
    use policy::PolicyCommand as P;
    use target::TargetCommand as T;
    Some(match command {
        Command::Init { .. } => ("admin.init", None),
        Command::Keys(KeysCommand::Add) => ("admin.keys.add", None),
        Command::Keys(KeysCommand::Current { key_id: Some(_) }) => ("admin.keys.current", None),
        Command::Keys(KeysCommand::Reseal { .. }) => ("admin.keys.reseal", None),
        Command::Keys(KeysCommand::Retire { .. }) => ("admin.keys.retire", None),
        Command::Target(T::Put { file }) => (
            "admin.target.put",
            std::fs::read_to_string(file)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("name")?.as_str().map(str::to_owned)),
        ),
        Command::Target(T::Remove { name }) => ("admin.target.remove", Some(name.clone())),
        Command::Target(T::Sync { name, .. }) => ("admin.target.sync", Some(name.clone())),
        Command::Policy(P::Put { .. }) => ("admin.policy.put", None),
        Command::Policy(P::Remove) => ("admin.policy.remove", None),
        Command::Grants(GrantsCommand::Revoke { target, .. }) => {
            ("admin.grants.revoke", Some(target.clone()))
        }
        _ => return None,
    })
}

/// Writes the audit event of a change made by this command (to the audit
/// trail's log group when `AUDIT_LOG_GROUP` is set, as for the functions):
/// who (`GATEWAY_ADMIN_ACTOR`, else the OS user) and what.
async fn audit_change(event: &'static str, target: Option<String>, outcome: &'static str) {
    let Ok(state) = state().await else {
        eprintln!("note: the audit event {event} could not be written (no configuration)");
        return;
    };
    let mut e =
        gateway_shared::observe::AuditEvent::new(event, outcome, gateway_shared::observe::now_ms());
    e.user = std::env::var("GATEWAY_ADMIN_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .ok();
    e.client = Some("gateway-admin".into());
    e.target = target;
    use gateway_shared::observe::AuditSink;
    match &state.observe.audit {
        AuditSink::CloudWatch(_) => state.observe.audit.write(&state.upstream, &[e]).await,
        // Without a log group, beside the command's output (not in it).
        AuditSink::Lines(_) => eprintln!("{}", serde_json::to_string(&e).unwrap_or_default()),
        AuditSink::Off => {}
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let change = admin_change(&cli.command);
    let result = run_command(cli).await;
    if let Some((event, target)) = change {
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        audit_change(event, target, outcome).await;
    }
    result
}

async fn run_command(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Init { table, keyset_name } => init(&table, &keyset_name).await,
        Command::Serve { listen } => serve(&listen).await,
        Command::Smoke { url, token_stdin } => {
            smoke::smoke(&url, token_stdin, std::env::var("SMOKE_TOKEN").ok()).await
        }
        Command::Keys(cmd) => keys(cmd).await,
        Command::Refresh { window } => refresh(window).await,
        Command::Target(cmd) => target::target(cmd).await,
        Command::Policy(cmd) => policy::policy(cmd).await,
        Command::Grants(GrantsCommand::List { user }) => {
            let state = state().await?;
            let list = connections::list(&state, &user)
                .await
                .map_err(|e| e.to_string())?;
            if list.is_empty() {
                println!("{user} has no grants");
            }
            for c in list {
                let expires = c
                    .expires_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:<14} expires_at={:<12} refreshable={:<5} scopes={}",
                    c.target,
                    c.status,
                    expires,
                    c.refreshable,
                    c.scopes.join(" ")
                );
            }
            Ok(())
        }
        Command::Grants(GrantsCommand::Revoke { user, target }) => {
            let state = state().await?;
            let outcome = connections::disconnect(&state, &user, &target)
                .await
                .map_err(|e| e.to_string())?;
            match outcome {
                connections::Disconnected::Revoked => {
                    println!("{user}/{target}: revoked and deleted")
                }
                connections::Disconnected::DeletedWithoutRevocation => {
                    println!("{user}/{target}: deleted (the server has no revocation endpoint)")
                }
                connections::Disconnected::DeletedRevocationFailed(why) => {
                    println!("{user}/{target}: deleted; revocation failed: {why}")
                }
                connections::Disconnected::NotConnected => {
                    return Err(format!("{user} has no grant for {target:?}"))
                }
            }
            Ok(())
        }
        Command::Connect {
            user,
            target,
            public_base_url,
        } => {
            let state = state().await?;
            let link = targets::consent_link(&state, &public_base_url, &user, &target).await?;
            println!("{link}");
            Ok(())
        }
    }
}

async fn init(table: &str, keyset_name: &str) -> Result<(), String> {
    let sdk = gateway_shared::adapters::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    create_table(&dynamo, table)
        .await
        .map_err(|e| e.to_string())?;
    println!("table {table}: ready");
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let existing = secrets
        .describe_secret()
        .secret_id(keyset_name)
        .send()
        .await;
    let arn = match existing {
        Ok(out) => out.arn.unwrap_or_default(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            let key = gateway_shared::crypto::random_token(48);
            let value = serde_json::json!({"current": "k1", "k1": key}).to_string();
            secrets
                .create_secret()
                .name(keyset_name)
                .secret_string(value)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "creating the key-set secret: {}",
                        gateway_shared::error::chain(&e)
                    )
                })?
                .arn
                .unwrap_or_default()
        }
        Err(e) => {
            return Err(format!(
                "reading the key-set secret: {}",
                gateway_shared::error::chain(&e)
            ))
        }
    };
    println!("key set {keyset_name}: ready");
    println!("KEYSET_SECRET_ARN={arn}");
    Ok(())
}

async fn refresh(window: Option<u64>) -> Result<(), String> {
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    if let Some(w) = window {
        config.refresh_window = std::time::Duration::from_secs(w);
    }
    let concurrency = config.refresh_concurrency;
    let state = AppState::from_config(config)
        .await
        .map_err(|e| e.to_string())?;
    let run = gateway_shared::tokens::ScheduledRun {
        limit: 10_000,
        concurrency,
        stop_at: tokio::time::Instant::now() + std::time::Duration::from_secs(900),
        policy: gateway_shared::tokens::LeasePolicy::default(),
    };
    let owner = format!("admin-{}", gateway_shared::crypto::random_token(6));
    let summary = state
        .tokens
        .run_scheduled(&owner, run)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "due {}  refreshed {}  already fresh {}  lease held elsewhere {}  needs consent {}  transient failures {}  skipped (deadline) {}",
        summary.due,
        summary.refreshed,
        summary.already_fresh,
        summary.lease_lost,
        summary.needs_consent,
        summary.transient_failure,
        summary.skipped_deadline
    );
    println!(
        "{}",
        serde_json::to_string(&summary).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn keys(cmd: KeysCommand) -> Result<(), String> {
    use gateway_shared::crypto::rotation::{self as keys, KeySetSecret};
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let sdk = gateway_shared::adapters::aws_config().await;
    let secret = KeySetSecret::new(
        aws_sdk_secretsmanager::Client::new(&sdk),
        config.keyset_secret_arn.clone(),
    );
    let err = |e: gateway_shared::Error| e.to_string();
    match cmd {
        KeysCommand::List => {
            let (current, ids) = secret.ids().await.map_err(err)?;
            let store = gateway_shared::state::table_store(&config, &sdk)
                .await
                .map_err(err)?;
            let usage = keys::usage(&store).await.map_err(err)?;
            for id in &ids {
                let mark = if *id == current { "current" } else { "" };
                println!(
                    "{id:<16} {mark:<8} seals {} items",
                    usage.get(id).copied().unwrap_or(0)
                );
            }
            for (id, n) in usage.iter().filter(|(id, _)| !ids.contains(id)) {
                println!(
                    "{id:<16} missing  seals {n} items (not in the key set: they cannot be opened)"
                );
            }
            Ok(())
        }
        KeysCommand::Add => {
            let id = secret.add().await.map_err(err)?;
            println!("added key {id} (not current yet: gateway-admin keys current {id})");
            Ok(())
        }
        KeysCommand::Current { key_id: None } => {
            println!("{}", secret.ids().await.map_err(err)?.0);
            Ok(())
        }
        KeysCommand::Current { key_id: Some(id) } => {
            secret.make_current(&id).await.map_err(err)?;
            println!(
                "{id} is current; warm instances seal with it within SECRETS_CACHE_TTL_SECONDS ({} s). Then: gateway-admin keys reseal",
                config.secrets_cache_ttl.as_secs()
            );
            Ok(())
        }
        KeysCommand::Reseal {
            adopt_unsealed_targets,
        } => {
            let (current, _) = secret.ids().await.map_err(err)?;
            let store = gateway_shared::state::table_store(&config, &sdk)
                .await
                .map_err(err)?;
            let summary = keys::reseal_all(
                &store,
                &current,
                adopt_unsealed_targets,
                || gateway_shared::ports::Clock::now(&gateway_shared::ports::SystemClock),
                |done, total| {
                    let width = 30;
                    let filled = (done * width).checked_div(total).unwrap_or(width);
                    eprint!(
                        "\rresealing with {current}: [{}{}] {done}/{total}",
                        "#".repeat(filled),
                        " ".repeat(width - filled)
                    );
                },
            )
            .await
            .map_err(err)?;
            eprintln!();
            println!(
                "{} items: {} already on {current}, {} resealed, {} gone meanwhile, {} busy (run again), {} unreadable (left as they are)",
                summary.items, summary.current, summary.resealed, summary.gone, summary.busy, summary.unreadable
            );
            if !summary.unsealed_targets.is_empty() {
                println!(
                    "targets without an integrity seal, left out until adopted: {}\ncheck each (gateway-admin target show NAME does not show them; read the item's config in the table), then: gateway-admin keys reseal --adopt-unsealed-targets",
                    summary.unsealed_targets.join(", ")
                );
            }
            if summary.busy > 0 {
                return Err("some grants were being refreshed throughout; run gateway-admin keys reseal again".into());
            }
            Ok(())
        }
        KeysCommand::Retire { key_id } => {
            let store = gateway_shared::state::table_store(&config, &sdk)
                .await
                .map_err(err)?;
            let usage = keys::usage(&store).await.map_err(err)?;
            if let Some(n) = usage.get(&key_id).filter(|n| **n > 0) {
                return Err(format!(
                    "{n} stored items still use {key_id}: run gateway-admin keys reseal first"
                ));
            }
            secret.remove(&key_id).await.map_err(err)?;
            println!("{key_id} removed from the key set");
            Ok(())
        }
    }
}

async fn serve(listen: &str) -> Result<(), String> {
    // A local server's answers stream as they are written.
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    config.response_streaming = true;
    let state = AppState::from_config(config)
        .await
        .map_err(|e| e.to_string())?;
    let app = gateway_shared::edge::gateway_router(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
