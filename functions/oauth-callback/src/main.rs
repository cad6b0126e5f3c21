//! Lambda entry point of the consent flow (`/connect/{id}`, `/oauth/callback`).

use gateway_shared::{edge::callback, telemetry, AppState, Config};

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
    lambda_http::run(callback::router(state)).await
}
