//! Lambda entry point of the MCP proxy (`/mcp`, Protected Resource Metadata).

use gateway_shared::edge::proxy;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = gateway_shared::cold_start().await?;
    lambda_http::run(proxy::router(state)).await
}
