//! `_method` in a form body: Rails, Laravel and Symfony (and FastAPI apps with such a
//! middleware) treat `POST /users/4` with the field `_method=DELETE` as `DELETE
//! /users/4`. Where that reading lands on a stricter rule, the filter reads the body
//! (up to a bound) and takes such a field as one more reading of the request.
//!
//! Only `application/x-www-form-urlencoded` and `multipart/form-data` bodies are read,
//! the two kinds those frameworks take the field from. A multipart body that cannot be
//! parsed is refused there: what the filter cannot read, an upstream might.

use crate::routes::{field_named, form_params, percent_decode};

/// The field frameworks read.
const FIELD: &str = "_method";

/// How the request says its body is encoded, when it is a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKind {
    UrlEncoded,
    Multipart { boundary: Vec<u8> },
}

/// A form body the filter cannot read with certainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// The form kind of the request from its `Content-Type` (every one, if repeated).
/// `Err` for a multipart type without a usable boundary.
pub fn form_kind(headers: &[(String, Vec<u8>)]) -> Result<Option<FormKind>, Unreadable> {
    let mut kind = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        let mut parts = value.split(|&b| b == b';');
        let media = trim(parts.next().unwrap_or(&[]));
        if media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            kind.get_or_insert(FormKind::UrlEncoded);
        } else if media.eq_ignore_ascii_case(b"multipart/form-data") {
            let boundary = parts
                .filter_map(|p| {
                    let (name, value) = split_once(trim(p), b'=')?;
                    name.eq_ignore_ascii_case(b"boundary")
                        .then(|| unquote(trim(value)))
                })
                .next()
                .filter(|b| !b.is_empty() && b.len() <= 70)
                .ok_or(Unreadable)?;
            kind = Some(FormKind::Multipart { boundary });
        }
    }
    Ok(kind)
}

/// The raw values of every `_method` field of the body (percent-decoded for a
/// url-encoded body, as they are for a multipart one).
pub fn body_methods(kind: &FormKind, body: &[u8]) -> Result<Vec<Vec<u8>>, Unreadable> {
    match kind {
        FormKind::UrlEncoded => form_params(body, FIELD)
            .map(|v| percent_decode(v).ok_or(Unreadable))
            .collect(),
        FormKind::Multipart { boundary } => multipart_fields(body, boundary),
    }
}

/// The values of the multipart parts named `_method` (RFC 7578). Parts are split at
/// `\r\n--boundary`; each needs its headers and a blank line, and the body must end
/// with the closing delimiter.
fn multipart_fields(body: &[u8], boundary: &[u8]) -> Result<Vec<Vec<u8>>, Unreadable> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    // The first delimiter may open the body; the others follow a CRLF.
    let mut rest = match find(body, &delimiter) {
        Some(0) => &body[delimiter.len()..],
        _ => {
            let mut first = b"\r\n".to_vec();
            first.extend_from_slice(&delimiter);
            let at = find(body, &first).ok_or(Unreadable)?;
            &body[at + first.len()..]
        }
    };
    let mut next = b"\r\n".to_vec();
    next.extend_from_slice(&delimiter);
    let mut values = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(values);
        }
        let part_start = rest.strip_prefix(b"\r\n").ok_or(Unreadable)?;
        let end = find(part_start, &next).ok_or(Unreadable)?;
        let part = &part_start[..end];
        let header_end = find(part, b"\r\n\r\n").ok_or(Unreadable)?;
        let (head, content) = (&part[..header_end], &part[header_end + 4..]);
        if head
            .split(|&b| b == b'\n')
            .filter_map(disposition_name)
            .any(|name| field_named(&name, FIELD))
        {
            values.push(content.to_vec());
        }
        rest = &part_start[end + next.len()..];
    }
}

/// The `name` of a `Content-Disposition: form-data; name="..."` header line.
fn disposition_name(line: &[u8]) -> Option<Vec<u8>> {
    let (header, value) = split_once(line, b':')?;
    if !trim(header).eq_ignore_ascii_case(b"content-disposition") {
        return None;
    }
    value.split(|&b| b == b';').skip(1).find_map(|param| {
        let (name, value) = split_once(trim(param), b'=')?;
        name.eq_ignore_ascii_case(b"name").then(|| unquote(trim(value)))
    })
}

fn unquote(value: &[u8]) -> Vec<u8> {
    match value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")) {
        Some(inner) => {
            let mut out = Vec::with_capacity(inner.len());
            let mut bytes = inner.iter().copied();
            while let Some(b) = bytes.next() {
                out.push(if b == b'\\' { bytes.next().unwrap_or(b) } else { b });
            }
            out
        }
        None => value.to_vec(),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or(&[])
}

fn split_once(v: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = v.iter().position(|&b| b == sep)?;
    Some((&v[..at], &v[at + 1..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(value: &str) -> Vec<(String, Vec<u8>)> {
        vec![("content-type".to_string(), value.as_bytes().to_vec())]
    }

    #[test]
    fn form_kinds_come_from_the_content_type() {
        assert_eq!(
            form_kind(&ct("application/x-www-form-urlencoded")),
            Ok(Some(FormKind::UrlEncoded))
        );
        assert_eq!(
            form_kind(&ct("Application/X-WWW-Form-Urlencoded ; charset=utf-8")),
            Ok(Some(FormKind::UrlEncoded))
        );
        assert_eq!(
            form_kind(&ct(r#"multipart/form-data; boundary="a b""#)),
            Ok(Some(FormKind::Multipart {
                boundary: b"a b".to_vec()
            }))
        );
        assert_eq!(form_kind(&ct("multipart/form-data")), Err(Unreadable));
        assert_eq!(form_kind(&ct("multipart/form-data; boundary=")), Err(Unreadable));
        assert_eq!(form_kind(&ct("application/json")), Ok(None));
        assert_eq!(form_kind(&[]), Ok(None));
        // A second Content-Type that is a form counts.
        let mut two = ct("application/json");
        two.extend(ct("application/x-www-form-urlencoded"));
        assert_eq!(form_kind(&two), Ok(Some(FormKind::UrlEncoded)));
    }

    #[test]
    fn url_encoded_bodies() {
        let m = |body: &str| body_methods(&FormKind::UrlEncoded, body.as_bytes());
        assert_eq!(m("_method=DELETE"), Ok(vec![b"DELETE".to_vec()]));
        assert_eq!(m("a=1&_method=DEL%45TE&b=2"), Ok(vec![b"DELETE".to_vec()]));
        assert_eq!(m("+_method=DELETE"), Ok(vec![b"DELETE".to_vec()]));
        assert_eq!(
            m("_method%00x=PUT;_METHOD=patch"),
            Ok(vec![b"PUT".to_vec(), b"patch".to_vec()])
        );
        assert_eq!(m("name=_method"), Ok(vec![]));
        assert_eq!(m("_method=DEL%4"), Err(Unreadable));
    }

    #[test]
    fn multipart_bodies() {
        let kind = FormKind::Multipart {
            boundary: b"XyZ".to_vec(),
        };
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
                    --XyZ\r\ncontent-disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=_METHOD\r\nContent-Type: text/plain\r\n\r\nPUT\r\n\
                    --XyZ--\r\n";
        assert_eq!(
            body_methods(&kind, body.as_bytes()),
            Ok(vec![b"DELETE".to_vec(), b"PUT".to_vec()])
        );
        // A preamble before the first delimiter is allowed.
        let preamble = format!("ignored\r\n{body}");
        assert_eq!(body_methods(&kind, preamble.as_bytes()).map(|v| v.len()), Ok(2));
        for broken in [
            "",
            "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE",
            "--XyZ\r\nno blank line\r\n--XyZ--",
            "--Other\r\n\r\n\r\n--Other--",
        ] {
            assert_eq!(
                body_methods(&kind, broken.as_bytes()),
                Err(Unreadable),
                "{broken:?}"
            );
        }
    }
}
