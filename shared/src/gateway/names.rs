//! Exposed names of upstream tools and prompts: `<prefix><name>`, kept
//! within 64 characters by a stable, collision-free shortening.
//!
//! A name that fits is exposed as is. A longer one keeps its first
//! characters and ends in `_` and 12 hex digits of a SHA-256 of the full name,
//! so the same upstream name always maps to the same exposed name and two
//! different long names collide only if their hashes do (48 bits; each
//! target's names are few).

use crate::crypto::sha256_hex;

/// Longest exposed name (MCP clients and model APIs commonly cap tool names at 64).
pub const MAX_NAME: usize = 64;
/// Separator between a target's name and its tools' names.
pub const SEPARATOR: &str = "___";

/// The exposed name of `name` under `prefix`.
pub fn expose(prefix: &str, name: &str) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let digest = &sha256_hex(full.as_bytes())[..12];
    let mut keep = MAX_NAME - digest.len() - 1;
    while !full.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{digest}", &full[..keep])
}

/// The default prefix of a target: `<target>___`.
pub fn default_prefix(target: &str) -> String {
    format!("{target}{SEPARATOR}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(expose("github___", "create_issue"), "github___create_issue");
        assert_eq!(expose("", "x"), "x");
    }

    #[test]
    fn long_names_are_shortened_stably_and_distinctly() {
        let a = "a".repeat(70);
        let b = format!("{}b", "a".repeat(69));
        let ea = expose("t___", &a);
        let eb = expose("t___", &b);
        assert_eq!(ea.len(), MAX_NAME);
        assert_eq!(eb.len(), MAX_NAME);
        assert_ne!(ea, eb);
        assert_eq!(ea, expose("t___", &a), "stable");
        assert!(ea.starts_with("t___aaaa"));
        // Exactly 64 fits as is.
        let sixty = "x".repeat(60);
        assert_eq!(expose("t___", &sixty).len(), 64);
        assert_eq!(expose("t___", &sixty), format!("t___{sixty}"));
        // Multi-byte characters are not split.
        let wide = "é".repeat(40);
        assert!(expose("t___", &wide).len() <= MAX_NAME);
    }
}
