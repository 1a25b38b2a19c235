//! How a verified claim becomes a header value, without ever refusing a valid token
//! and without anything a header could misread.
//!
//! One rule, so an upstream can always tell what it got:
//! - a **plain string** (visible ASCII and inner spaces, none of `, ; " \`, not
//!   starting with `[` or `{`) is sent as it is: `alice`, `Orders.Read`;
//! - a **list of plain strings without spaces** (roles, groups, `scp` as an array) is
//!   sent comma-separated, as HTTP lists are: `admin,user`;
//! - **everything else** (numbers, booleans, objects, lists with other items, strings
//!   with commas, quotes or non-ASCII) is sent as **JSON** (RFC 8259) with every
//!   character beyond ASCII escaped as `\uXXXX`: `42`, `true`, `{"a":[1,2]}`,
//!   `"Zoë, CEO"` (as `"Zo\u00eb, CEO"`), `["a,b","c"]`.
//!
//! So a value starting with `"`, `[` or `{` is JSON and any other is the text itself
//! (numbers and booleans read the same either way). Control characters never reach a
//! header: JSON escapes them. An empty string and an empty list send no header, as
//! an absent claim does.

use std::fmt::Write as _;

use serde_json::Value;

/// The header value for `value`, `None` when nothing is to be sent.
pub fn encode(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => encode_text(s),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items)
            if items
                .iter()
                .all(|i| i.as_str().is_some_and(|s| is_plain(s, false))) =>
        {
            Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }
        other => Some(ascii_json(other)),
    }
}

/// A string, as [`encode`] would send it (without making a JSON value of it first).
pub fn encode_text(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else if is_plain(s, true) {
        Some(s.to_string())
    } else {
        Some(ascii_json(&Value::String(s.to_string())))
    }
}

/// A list of strings (the merged roles), as [`encode`] would send it.
pub fn encode_list(items: &[String]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    if items.iter().all(|s| is_plain(s, false)) {
        return Some(items.join(","));
    }
    Some(ascii_json(&Value::Array(
        items.iter().map(|s| Value::String(s.clone())).collect(),
    )))
}

/// Visible ASCII without list or parameter delimiters, quotes or backslashes, not
/// starting like JSON; inner spaces only where allowed.
fn is_plain(value: &str, spaces: bool) -> bool {
    !value.is_empty()
        && !value.starts_with([' ', '[', '{'])
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (b == b' ' && spaces) || ((0x21..0x7f).contains(&b) && !b",;\"\\".contains(&b)))
}

/// JSON whose every character is visible ASCII: serde_json escapes quotes,
/// backslashes and control characters; this escapes DEL and everything beyond ASCII
/// (those only occur inside strings, so the result is the same JSON value).
pub fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_what_the_upstream_reads() {
        let cases: &[(Value, Option<&str>)] = &[
            (json!("alice"), Some("alice")),
            (json!("Alice Smith"), Some("Alice Smith")),
            (json!(""), None),
            (json!([]), None),
            (json!(["admin", "user"]), Some("admin,user")),
            (json!(["a,b", "c"]), Some(r#"["a,b","c"]"#)),
            (json!(["two words"]), Some(r#"["two words"]"#)),
            (json!([1, "x"]), Some(r#"[1,"x"]"#)),
            (json!(42), Some("42")),
            (json!(-1.5), Some("-1.5")),
            (json!(true), Some("true")),
            (json!(null), Some("null")),
            (json!({"roles": ["a"]}), Some(r#"{"roles":["a"]}"#)),
            (json!("a,b"), Some(r#""a,b""#)),
            (json!("say \"hi\""), Some(r#""say \"hi\"""#)),
            (json!("back\\slash"), Some(r#""back\\slash""#)),
            (json!("Zoë"), Some(r#""Zo\u00eb""#)),
            (json!("😀"), Some(r#""\ud83d\ude00""#)),
            (json!("line\r\nX-Admin: 1"), Some(r#""line\r\nX-Admin: 1""#)),
            (json!("nul\u{0}"), Some(r#""nul\u0000""#)),
            (json!("del\u{7f}"), Some(r#""del\u007f""#)),
            (json!("[not json"), Some(r#""[not json""#)),
            (json!(" padded"), Some(r#"" padded""#)),
            (json!("a;b"), Some(r#""a;b""#)),
        ];
        for (value, want) in cases {
            let got = encode(value);
            assert_eq!(got.as_deref(), *want, "{value}");
            if let Some(header) = got {
                assert!(header.bytes().all(|b| (0x20..0x7f).contains(&b)), "{header:?}");
                // What it decodes to: JSON when it starts like JSON, else the text.
                if header.starts_with(['"', '[', '{']) {
                    let back: Value = serde_json::from_str(&header).unwrap();
                    assert_eq!(&back, value, "{header}");
                }
            }
        }
        assert_eq!(
            encode_list(&["admin".into(), "user".into()]).as_deref(),
            Some("admin,user")
        );
        assert_eq!(encode_list(&["a b".into()]).as_deref(), Some(r#"["a b"]"#));
        assert_eq!(encode_list(&[]), None);
    }
}
