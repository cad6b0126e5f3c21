//! `gateway-admin policy ...`: the Cedar policy set that decides who may
//! call what (see README, "Policies").

use std::path::PathBuf;

use clap::Subcommand;
use gateway_shared::policy::{Policies, Principal, Resource};

use crate::state;

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Store the policy set from a Cedar file, after checking that it
    /// parses (a set that does not parse is refused, and nothing changes).
    Put {
        /// The Cedar policies.
        file: PathBuf,
    },
    /// Print the stored policy set.
    Show,
    /// Remove the policy set: every call is allowed again.
    Remove,
    /// Decide a sample request against the stored set, or against --file
    /// (offline: no table needed); prints allow or deny and the policies
    /// that decided.
    Test {
        /// A Cedar file to test instead of the stored set.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The user's subject.
        #[arg(long)]
        user: String,
        /// The user's groups (comma separated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The token's scopes (space separated).
        #[arg(long)]
        scopes: Option<String>,
        /// The agent's client id.
        #[arg(long)]
        client_id: Option<String>,
        /// The MCP method: tools/call, prompts/get or resources/read.
        #[arg(long, default_value = "tools/call", value_parser = ["tools/call", "prompts/get", "resources/read"])]
        action: String,
        /// The target.
        #[arg(long)]
        target: String,
        /// The tool's or prompt's exposed name (`<target>___<name>`), or
        /// the resource's URI.
        #[arg(long)]
        name: String,
        /// The call's arguments, as a JSON object.
        #[arg(long)]
        arguments: Option<String>,
        /// Fail unless the decision is this one (for scripts and CI).
        #[arg(long, value_parser = ["allow", "deny"])]
        expect: Option<String>,
    },
}

fn read(file: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))
}

pub(crate) async fn policy(cmd: PolicyCommand) -> Result<(), String> {
    match cmd {
        PolicyCommand::Put { file } => {
            let text = read(&file)?;
            let count = Policies::parse(&text)?.len();
            state().await?.policies.store(Some(&text)).await?;
            println!("policy set stored ({count} policies)");
        }
        PolicyCommand::Show => match state().await?.policies.stored().await? {
            Some(text) => print!("{text}"),
            None => println!("no policy set: every call is allowed"),
        },
        PolicyCommand::Remove => {
            state().await?.policies.store(None).await?;
            println!("policy set removed: every call is allowed");
        }
        PolicyCommand::Test {
            file,
            user,
            groups,
            scopes,
            client_id,
            action,
            target,
            name,
            arguments,
            expect,
        } => {
            let text = match &file {
                Some(f) => Some(read(f)?),
                None => state().await?.policies.stored().await?,
            };
            let arguments = arguments
                .map(|a| {
                    serde_json::from_str::<serde_json::Value>(&a)
                        .ok()
                        .filter(serde_json::Value::is_object)
                        .ok_or_else(|| "--arguments must be a JSON object".to_owned())
                })
                .transpose()?;
            let scopes: Vec<String> = scopes
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            let decision = match text {
                None => "allow (no policy set: every call is allowed)".to_owned(),
                Some(text) => {
                    let set = Policies::parse(&text)?;
                    let principal = Principal {
                        sub: &user,
                        groups: &groups,
                        scopes: &scopes,
                        client_id: client_id.as_deref(),
                    };
                    let resource = match action.as_str() {
                        "prompts/get" => Resource::Prompt {
                            target: &target,
                            name: &name,
                        },
                        "resources/read" => Resource::Resource {
                            target: &target,
                            uri: &name,
                        },
                        _ => Resource::Tool {
                            target: &target,
                            name: &name,
                        },
                    };
                    let now =
                        gateway_shared::ports::Clock::now(&gateway_shared::ports::SystemClock);
                    let v = set.decide(&principal, &action, &resource, arguments.as_ref(), now);
                    let mut out = format!(
                        "{} (policies: {})",
                        if v.allowed { "allow" } else { "deny" },
                        if v.policies.is_empty() {
                            "none matched".to_owned()
                        } else {
                            v.policies.join(", ")
                        }
                    );
                    for e in v.errors {
                        out.push_str(&format!("\n  error: {e}"));
                    }
                    out
                }
            };
            println!("{decision}");
            if let Some(want) = expect {
                if !decision.starts_with(&want) {
                    return Err(format!("expected {want}"));
                }
            }
        }
    }
    Ok(())
}
