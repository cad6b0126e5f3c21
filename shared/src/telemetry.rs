//! Tracing set-up: JSON lines in Lambda, readable text locally.
//!
//! Secrets never reach a log line: token and verifier types redact
//! themselves in `Debug`, and handlers log ids and outcomes, not values.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once. The level comes from `RUST_LOG`
/// (default `info`). Calling it twice is harmless.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .without_time()
            .with_target(false)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// Reads `LOG_FORMAT` the way [`crate::Config`] does, for use before the
/// configuration is loaded (so that a configuration error is logged well).
pub fn format_from_env() -> LogFormat {
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        _ if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => LogFormat::Json,
        _ => LogFormat::Text,
    }
}
