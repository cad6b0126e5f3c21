//! Lambda entry point of the MCP proxy (`/mcp`, Protected Resource Metadata).
//!
//! Behind API Gateway the answer is returned whole; with
//! `RESPONSE_STREAMING=on` (a function URL whose invoke mode is
//! `RESPONSE_STREAM`) it is streamed, so an upstream's progress and log
//! messages reach the client while the call runs.

use gateway_shared::edge::proxy;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = gateway_shared::cold_start().await?;
    if state.config.response_streaming {
        lambda_http::run_with_streaming_response(proxy::router(state)).await
    } else {
        lambda_http::run(proxy::router(state)).await
    }
}
