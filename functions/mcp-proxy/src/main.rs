//! Lambda entry point of the MCP proxy (`/mcp`, Protected Resource Metadata).

use gateway_shared::{edge::proxy, telemetry, AppState, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init(telemetry::format_from_env());
    let state = AppState::from_config(
        Config::from_env().inspect_err(|e| gateway_shared::startup_failed(e))?,
    )
    .await
    .inspect_err(|e| {
        gateway_shared::startup_failed(e);
    })?;
    lambda_http::run(proxy::router(state)).await
}
