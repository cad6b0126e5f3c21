//! Lambda entry point of the consent flow (`/connect/{id}`, `/oauth/callback`).

use gateway_shared::edge::callback;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = gateway_shared::cold_start().await?;
    lambda_http::run(callback::router(state)).await
}
