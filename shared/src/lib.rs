//! The common library of the MCP OAuth gateway's Lambda functions.
//!
//! - [`domain`]: targets, grants, pending authorizations, sessions (no AWS, no Lambda).
//! - [`ports`]: the traits the flows depend on.
//! - [`adapters`]: DynamoDB and Secrets Manager implementations.
//! - [`http`]: the axum Routers of the two HTTP functions.
//! - [`crypto`]: application-level encryption of stored secrets.
//! - [`config`], [`telemetry`]: cold-start set-up.

pub mod adapters;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod domain;
pub mod edge;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod gateway;

pub mod ports;
pub mod state;
pub mod targets;
pub mod telemetry;
pub mod tokens;
pub mod upstream;
pub mod urls;
pub mod wire;

pub use config::Config;
pub use error::{Error, Result};
pub use state::AppState;

/// Logs a cold-start failure (configuration, key set) before the process exits.
pub fn startup_failed(err: &dyn std::fmt::Display) {
    tracing::error!(error = %err, "start-up failed");
}

/// A function's cold start: logging as `LOG_FORMAT` says, the configuration
/// from the environment, and the state built from it (clients, stores, the
/// key set loaded once). A failure is logged before it is returned, so the
/// function's log says why the instance did not start.
pub async fn cold_start() -> std::result::Result<AppState, Error> {
    telemetry::init(telemetry::format_from_env());
    let config = Config::from_env().inspect_err(|e| startup_failed(e))?;
    AppState::from_config(config)
        .await
        .inspect_err(|e| startup_failed(e))
}
