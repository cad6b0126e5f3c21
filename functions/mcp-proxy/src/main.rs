//! Lambda entry point of the MCP proxy (`/mcp`, Protected Resource Metadata).

use gateway_shared::edge::proxy;

/// mimalloc: a request allocates many small buffers on several threads,
/// where it costs about half of what glibc's malloc does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = gateway_shared::cold_start().await?;
    lambda_http::run(proxy::router(state)).await
}
