//! Canonical forms of the request path and method, before any rule is matched.
//!
//! Envoy and the upstream may each read a path differently; a filter that guesses
//! wrong is a policy bypass. So one transformation is made, the one every router makes
//! before it routes: an escape of a character the filter also accepts raw is decoded
//! (`%75` is `u`, and `%3A`, `%24`, `%40` are `:`, `$`, `@`, as Starlette, Go's
//! net/http and Spring read them: `POST /jobs%3Apurge` is `POST /jobs:purge`).
//! Anything whose meaning depends on who reads it is refused: encoded slashes, dots,
//! backslashes, percent signs, `;`, `?` or `#`, NUL and other control bytes, `;`
//! parameters, dot segments, empty segments, and a path that does not start with `/`.
//! What stays escaped is a space and bytes beyond ASCII, in upper case.

/// Why a path or method could not be put in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    NotOriginForm,
    EncodedDelimiter,
    BadEscape,
    ForbiddenByte,
    Parameter,
    DotSegment,
    EmptySegment,
    /// A character that Unicode case folding turns into ASCII (`ſ` into `s`, the
    /// Kelvin sign into `k`, ...): a Unicode-aware upstream would read another path.
    FoldsToAscii,
}

/// Percent-encoded UTF-8 of the characters whose Unicode case mapping or folding is
/// ASCII: U+017F (ſ → s/S), U+212A (Kelvin sign → k), U+0130 (İ → i), U+0131 (ı → I).
const FOLDS_TO_ASCII: [&str; 4] = ["%C5%BF", "%E2%84%AA", "%C4%B0", "%C4%B1"];

/// The path of `:path` without its query, in canonical form: it starts with `/`,
/// escapes of visible ASCII are decoded, the others (space, non-ASCII) upper-case.
/// The case of letters and a trailing slash are kept; matching looks at both readings.
pub fn canonical_path(raw: &[u8]) -> Result<String, Ambiguity> {
    let end = raw.iter().position(|&b| b == b'?').unwrap_or(raw.len());
    let path = raw.get(..end).unwrap_or(raw);
    if path.first() != Some(&b'/') {
        return Err(Ambiguity::NotOriginForm);
    }
    let mut out = String::with_capacity(path.len());
    let mut bytes = path.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(hex_value);
                let lo = bytes.next().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Ambiguity::BadEscape);
                };
                let decoded = hi << 4 | lo;
                if matches!(decoded, b'/' | b'\\' | b'.' | b'%' | b';' | b'?' | b'#')
                    || decoded < 0x20
                    || decoded == 0x7f
                {
                    return Err(Ambiguity::EncodedDelimiter);
                } else if (0x21..=0x7e).contains(&decoded) {
                    // Accepted raw too: every reader decodes it to the same character.
                    out.push(char::from(decoded));
                } else {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(hi)]));
                    out.push(char::from(HEX_UPPER[usize::from(lo)]));
                }
            }
            b';' => return Err(Ambiguity::Parameter),
            b'\\' | b'#' => return Err(Ambiguity::ForbiddenByte),
            0x21..=0x7e => out.push(char::from(b)),
            _ => return Err(Ambiguity::ForbiddenByte),
        }
    }
    if FOLDS_TO_ASCII.iter().any(|c| out.contains(c)) {
        return Err(Ambiguity::FoldsToAscii);
    }
    // The first byte is '/', so the first split item is empty and skipped.
    let segments: Vec<&str> = out.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => return Err(Ambiguity::DotSegment),
            // A trailing slash leaves one empty last segment; anywhere else it is `//`.
            "" if i != last => return Err(Ambiguity::EmptySegment),
            _ => {}
        }
    }
    Ok(out)
}

/// The method in upper case (HTTP/2 lets a client send `delete`, and some upstreams
/// treat it as `DELETE`). `None` if it is not an RFC 9110 token.
pub fn canonical_method(raw: &[u8]) -> Option<String> {
    if raw.is_empty() || !raw.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    Some(raw.iter().map(|&b| char::from(b.to_ascii_uppercase())).collect())
}

/// RFC 9110 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        let ok: &[(&str, &str)] = &[
            ("/", "/"),
            ("/users/me", "/users/me"),
            ("/users/me?x=1&y=/../", "/users/me"),
            ("/users/me/", "/users/me/"),
            ("/Users/ME", "/Users/ME"),
            ("/%75sers/%4D%65", "/users/Me"),
            ("/a%20b", "/a%20b"),
            ("/a%2cb", "/a,b"),
            ("/jobs%3Apurge", "/jobs:purge"),
            ("/odata/%24batch", "/odata/$batch"),
            ("/%40admin/x", "/@admin/x"),
            ("/%21%24%26%27%28%29%2A%2B%2C%3D%3A%40", "/!$&'()*+,=:@"),
            ("/%22%3C%3E%5B%5D%5E%60%7B%7C%7D", "/\"<>[]^`{|}"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/files/a.txt", "/files/a.txt"),
            ("/files/..a", "/files/..a"),
            ("/x?", "/x"),
            ("/~u/-_", "/~u/-_"),
        ];
        for (raw, want) in ok {
            assert_eq!(canonical_path(raw.as_bytes()).as_deref(), Ok(*want), "{raw}");
        }
    }

    #[test]
    fn ambiguous_paths() {
        use Ambiguity::*;
        let bad: &[(&[u8], Ambiguity)] = &[
            (b"", NotOriginForm),
            (b"users/4", NotOriginForm),
            (b"*", NotOriginForm),
            (b"http://host/users/4", NotOriginForm),
            (b"?/users", NotOriginForm),
            (b"/users%2f4", EncodedDelimiter),
            (b"/users%2F4", EncodedDelimiter),
            (b"/users%5c4", EncodedDelimiter),
            (b"/users/%2e%2e/4", EncodedDelimiter),
            (b"/users/%2E/4", EncodedDelimiter),
            (b"/users%252f4", EncodedDelimiter),
            (b"/users%00", EncodedDelimiter),
            (b"/users%0a", EncodedDelimiter),
            (b"/users%3b4", EncodedDelimiter),
            (b"/users%3F4", EncodedDelimiter),
            (b"/users%234", EncodedDelimiter),
            (b"/users%", BadEscape),
            (b"/users%4", BadEscape),
            (b"/users%zz", BadEscape),
            (b"/users/4;admin", Parameter),
            (b"/users;x=1/4", Parameter),
            (b"/users\\4", ForbiddenByte),
            (b"/users/4#frag", ForbiddenByte),
            (b"/users/\x004", ForbiddenByte),
            (b"/users/ 4", ForbiddenByte),
            (b"/users/\t4", ForbiddenByte),
            (b"/users/\xc3\xa9", ForbiddenByte),
            (b"/users/./4", DotSegment),
            (b"/users/../admin", DotSegment),
            (b"/users/..", DotSegment),
            (b"/.", DotSegment),
            (b"//users/4", EmptySegment),
            (b"/users//4", EmptySegment),
            (b"/users/4//", EmptySegment),
            (b"/u%C5%BFers/4", FoldsToAscii),
            (b"/u%c5%bfers/4", FoldsToAscii),
            (b"/%E2%84%AAeys", FoldsToAscii),
            (b"/adm%C4%B1n", FoldsToAscii),
            (b"/%C4%B0tems", FoldsToAscii),
        ];
        for (raw, want) in bad {
            assert_eq!(
                canonical_path(raw),
                Err(*want),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn methods() {
        assert_eq!(canonical_method(b"GET").as_deref(), Some("GET"));
        assert_eq!(canonical_method(b"delete").as_deref(), Some("DELETE"));
        assert_eq!(canonical_method(b"PoSt").as_deref(), Some("POST"));
        assert_eq!(canonical_method(b"M-SEARCH").as_deref(), Some("M-SEARCH"));
        for bad in [&b""[..], b"GE T", b"GET\0", b"G\xc3\xa9T", b"GET\r\n"] {
            assert_eq!(canonical_method(bad), None, "{bad:?}");
        }
    }
}
