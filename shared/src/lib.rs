//! The common library of the MCP OAuth gateway's Lambda functions, laid
//! out along the path of a request (see `docs/ARCHITECTURE.md`):
//!
//! - [`edge`]: inbound HTTP, the axum Routers of the two HTTP functions
//!   (inbound auth, the MCP endpoint, consent web, pages).
//! - [`wire`]: the MCP protocol and the typed JSON-RPC envelope.
//! - [`gateway`]: what a request does (dispatch, catalog, routing, consent,
//!   the gateway's own tools).
//! - [`upstream`]: the client toward upstream MCP servers.
//! - [`tokens`]: the token lifecycle (the refresh lease protocol, the
//!   scheduled run).
//! - [`adapters`]: the ports implemented with AWS services, HTTP, and in memory.
//! - [`crypto`]: the key set, sealed values and tokens, key rotation.
//! - [`domain`], [`ports`]: the model and the traits the flows depend on.
//! - [`config`], [`telemetry`], [`cold_start`]: cold-start set-up.

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
pub mod interceptors;
pub mod observe;

pub mod policy;
pub mod ports;
pub mod search;
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
