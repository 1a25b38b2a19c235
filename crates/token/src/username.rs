//! Canonical usernames: one spelling per account.
//!
//! Unicode NFKC folds compatibility forms (`ａｌｉｃｅ` is `alice`), then lower case.
//! What is left must be ASCII `[a-z0-9]` followed by up to 63 of `[a-z0-9._@+-]`:
//! stricter than NFKC alone, so a Cyrillic `а` can never stand in for a Latin `a`, and
//! the name is always safe to forward in an HTTP header.

use unicode_normalization::UnicodeNormalization;

/// Longest canonical username, in bytes.
pub const MAX_LEN: usize = 64;

/// The canonical form of `raw`, or `None` if it cannot be a username.
pub fn canonical(raw: &str) -> Option<String> {
    if raw.len() > 4 * MAX_LEN {
        return None;
    }
    let name: String = raw.nfkc().collect::<String>().to_lowercase();
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@+-".contains(&b));
    (first_ok && rest_ok && name.len() <= MAX_LEN).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn look_alikes_fold_or_are_refused() {
        let cases: &[(&str, Option<&str>)] = &[
            ("alice", Some("alice")),
            ("Alice", Some("alice")),
            ("ALICE", Some("alice")),
            ("ａｌｉｃｅ", Some("alice")), // fullwidth
            ("ⅰnfo", Some("info")),        // roman numeral one
            ("bob.smith@example.com", Some("bob.smith@example.com")),
            ("x_y", Some("x_y")),
            ("аlice", None), // Cyrillic a
            ("alicé", None),
            ("al ice", None),
            (" alice", None),
            ("alice\0", None),
            ("", None),
            (".alice", None),
            ("-alice", None),
            ("a;drop table users", None),
            ("' or 1=1 --", None),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical(raw).as_deref(), *want, "{raw:?}");
        }
        assert_eq!(canonical(&"a".repeat(64)).map(|s| s.len()), Some(64));
        assert_eq!(canonical(&"a".repeat(65)), None);
    }
}
