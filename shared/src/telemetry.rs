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

/// A value an outsider controls (an authorization server's `error`, a
/// client's header), made safe for a log line: control characters (newlines
/// that would forge a line in text logs, terminal escapes) are written as
/// escapes, and the value is cut at `max` characters.
pub fn clean(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max));
    for (i, c) in value.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn outsider_values_cannot_forge_log_lines() {
        let forged = "access_denied\n2026-01-01T00:00:00Z  INFO grant stored\r\u{1b}[2J";
        let c = clean(forged, 200);
        assert!(!c.chars().any(char::is_control), "{c}");
        assert!(c.starts_with("access_denied\\n2026"));
        assert!(c.contains("\\u{1b}[2J"));
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("plain", 10), "plain");
    }
}
