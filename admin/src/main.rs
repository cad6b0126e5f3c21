//! `gateway-admin`: the operator's command-line tool.
//!
//! It talks to the same table and secrets as the functions (the standard AWS
//! environment variables choose account, region and endpoint), and serves
//! the functions' Routers on a local listener for development.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway_shared::adapters::dynamodb::create_table;
use gateway_shared::domain::Target;
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
    /// Serve the proxy and consent Routers on one local listener, the way
    /// API Gateway routes them (configuration from the environment).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Manage targets (upstream MCP servers).
    #[command(subcommand)]
    Target(TargetCommand),
}

#[derive(Subcommand)]
enum TargetCommand {
    /// Add or replace a target from a JSON file (see README, "Targets").
    Put {
        /// The target's JSON description.
        file: PathBuf,
    },
    /// List targets.
    List,
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

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Init { table, keyset_name } => init(&table, &keyset_name).await,
        Command::Serve { listen } => serve(&listen).await,
        Command::Target(cmd) => target(cmd).await,
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

async fn serve(listen: &str) -> Result<(), String> {
    let state = state().await?;
    let app = gateway_shared::http::gateway_router(state);
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

async fn target(cmd: TargetCommand) -> Result<(), String> {
    let state = state().await?;
    match cmd {
        TargetCommand::Put { file } => {
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
        TargetCommand::List => {
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
                };
                println!("{:<24} {:<48} {}", t.name, t.mcp_url, auth);
            }
        }
        TargetCommand::Show { name } => {
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
            state.targets.delete(&name).await.map_err(|e| match e {
                gateway_shared::Error::NotFound(_) => format!("no target named {name:?}"),
                other => other.to_string(),
            })?;
            println!("target {name}: removed");
        }
    }
    Ok(())
}
