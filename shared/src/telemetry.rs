//! Tracing set-up: JSON lines in Lambda, readable text locally.
//!
//! Secrets never reach a log line: token and verifier types redact
//! themselves in `Debug`, and handlers log ids and outcomes, not values.

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::FormatFields;
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
            .fmt_fields(text_fields())
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// `LOG_FORMAT` from the environment, read as [`crate::Config`] reads it,
/// for the log set-up that precedes the configuration (so that a
/// configuration error is logged well). A value the configuration will
/// refuse logs in the default format until it does.
pub fn format_from_env() -> LogFormat {
    let lookup = |name: &str| std::env::var(name).ok();
    LogFormat::from_lookup(&lookup).unwrap_or_else(|_| {
        // The default for this environment, as if LOG_FORMAT were unset.
        let unset = |name: &str| (name != "LOG_FORMAT").then(|| lookup(name)).flatten();
        LogFormat::from_lookup(&unset).unwrap_or(LogFormat::Text)
    })
}

/// Field formatting of the text log format: like the default, but control
/// characters in every value are escaped, so that no value (an upstream's
/// error text, a header) can end a line and forge the next one. (The JSON
/// format escapes them by itself.)
pub fn text_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = clean(&format!("{value:?}"), usize::MAX);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ")
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

/// The civil date (year, month, day) of `days` since 1970-01-01 (Howard
/// Hinnant's algorithm), for the timestamps the gateway writes itself.
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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

    #[test]
    fn text_logs_escape_every_value() {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(super::text_fields())
            .with_ansi(false)
            .without_time()
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let upstream = "boom\nINFO grant stored";
            tracing::warn!(reason = %upstream, other = 7, "upstream failure\r\nforged");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r"reason=boom\nINFO grant stored"), "{text}");
        assert!(text.contains(r"upstream failure\r\nforged"), "{text}");
        assert!(text.contains("other=7"), "{text}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
