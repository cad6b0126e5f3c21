//! Test harness: real servers on 127.0.0.1, started and stopped by each test.
//!
//! - [`Moto`]: moto's server (DynamoDB and Secrets Manager) from the
//!   project's venv (`scripts/tools.sh python`), one request at a time
//!   (`tests/python/moto_serial.py`).
//! - [`Gateway`]: a table and key set on a `Moto`, and an [`AppState`] wired to them.

mod support;

pub use support::*;
