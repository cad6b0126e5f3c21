//! Lambda entry point of the MCP proxy (`/mcp`, Protected Resource Metadata).
//!
//! Behind API Gateway the answer is returned whole; with
//! `RESPONSE_STREAMING=on` (a function URL whose invoke mode is
//! `RESPONSE_STREAM`) it is streamed, so an upstream's progress and log
//! messages reach the client while the call runs.
//!
//! On Lambda Managed Instances the platform sets `AWS_LAMBDA_MAX_CONCURRENCY`
//! and one process serves up to that many invocations side by side; on
//! classic Lambda (the variable unset, or 1) it serves one at a time.

use std::convert::Infallible;

use gateway_shared::edge::proxy;
use lambda_http::tower::ServiceExt;

/// mimalloc, because invocations can be served side by side on the
/// runtime's threads: the system allocator's arenas, shared between them,
/// make the threads wait on each other's locks (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = gateway_shared::cold_start().await?;
    let streaming = state.config.response_streaming;
    let app = proxy::router(state);
    if streaming {
        // Falls back to one invocation at a time by itself.
        lambda_http::run_with_streaming_response_concurrent(app).await
    } else if std::env::var_os("AWS_LAMBDA_MAX_CONCURRENCY").is_some() {
        // Set (by the platform): up to that many at once, one at a time
        // for 1 (`run` would warn that the variable is ignored).
        // The concurrent runtime wants an answer it can share between
        // threads; the router's body is not, so it is read out here.
        let app = lambda_http::service_fn(move |request: lambda_http::Request| {
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                Ok::<_, Infallible>(lambda_http::IntoResponse::into_response(response).await)
            }
        });
        lambda_http::run_concurrent(app).await
    } else {
        lambda_http::run(app).await
    }
}
