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
    let digest = &sha256_hex(full.as_bytes())[..DIGEST_HEX];
    let mut keep = MAX_NAME - digest.len() - 1;
    while !full.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{digest}", &full[..keep])
}

/// Whether `exposed` has the form of a shortened name (`..._` and 12
/// lowercase hex digits, 61 to 64 bytes: [`expose`] keeps 51 bytes, fewer
/// by at most 3 to end on a character boundary): only such a name needs
/// looking up among the upstream's names; any other that fits is
/// `prefix + name` as it stands.
pub fn may_be_shortened(exposed: &str) -> bool {
    let b = exposed.as_bytes();
    b.len() <= MAX_NAME
        && b.len() >= MAX_NAME - 3
        && b[b.len() - DIGEST_HEX - 1] == b'_'
        && b[b.len() - DIGEST_HEX..]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Hex digits of the digest that ends a shortened name.
const DIGEST_HEX: usize = 12;

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
        assert!(may_be_shortened(&expose("t___", &wide)));
    }

    #[test]
    fn shortened_names_are_recognised_by_form() {
        for long in ["a".repeat(70), "é".repeat(40), "x".repeat(300)] {
            assert!(may_be_shortened(&expose("t___", &long)), "{long}");
        }
        // The form alone: 61 to 64 bytes, ending in `_` and lowercase hex.
        let looks = |head: usize, tail: &str| format!("{}{tail}", "f".repeat(head));
        assert!(may_be_shortened(&looks(48, "_0123456789ab")));
        assert!(may_be_shortened(&looks(51, "_0123456789ab")));
        for plain in [
            looks(47, "_0123456789ab"),
            looks(52, "_0123456789ab"),
            looks(51, "_0123456789AB"),
            looks(51, "-0123456789ab"),
            looks(52, "_0123456789a"),
            "t___fetch_0123456789ab".into(),
            "t___create_issue".into(),
            String::new(),
        ] {
            assert!(!may_be_shortened(&plain), "{plain}");
        }
    }
}
