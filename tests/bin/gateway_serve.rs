//! The gateway's Routers on a local listener, configured from the
//! environment, as a process of its own: for tests where separate gateway
//! processes (standing in for separate Lambda instances) are the point.
//! Prints `listening on http://<addr>` once ready; stops on SIGTERM.
//!
//!     gateway-serve 127.0.0.1:0

use gateway_shared::{AppState, Config};

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    // A local server's answers stream as they are written.
    let config = match Config::from_env() {
        Ok(mut c) => {
            c.response_streaming = true;
            c
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    gateway_shared::telemetry::init(config.log_format);
    let state = match AppState::from_config(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}");
    }
    let app = gateway_shared::edge::gateway_router(state);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            term.recv().await;
        })
        .await;
}
