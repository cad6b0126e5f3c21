//! Lambda entry point of the consent flow (`/connect/{id}`, `/oauth/callback`).

use gateway_shared::edge::callback;

/// mimalloc: a request allocates many small buffers on several threads,
/// where it costs about half of what glibc's malloc does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = gateway_shared::cold_start().await?;
    lambda_http::run(callback::router(state)).await
}
