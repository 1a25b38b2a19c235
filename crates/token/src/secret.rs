//! `SECRET_KEY`: the HS256 key, checked before the service starts.

use zeroize::Zeroizing;

/// Shortest secret, in bytes of entropy (64 hex digits).
pub const MIN_BYTES: usize = 32;

/// Values that appear in guides and templates; a service that trusts one of them
/// trusts anyone who read the same guide.
const PLACEHOLDERS: &[&str] = &[
    "your-secret-key-here",
    "changeme",
    "change-me",
    "changeit",
    "secret",
    "secret-key",
    "secretkey",
    "password",
    "test",
    "dev",
    "example",
    // The example key printed in FastAPI's own JWT tutorial.
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
];

/// The key bytes used for HMAC: the secret string itself, as PyJWT and the FastAPI
/// guide use it and as the filter does by default.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Why a secret is refused. The messages never contain the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("SECRET_KEY is not set; generate one with `openssl rand -hex 32`")]
    Missing,
    #[error("SECRET_KEY is a well-known placeholder; generate one with `openssl rand -hex 32`")]
    Placeholder,
    #[error("SECRET_KEY must be hex-encoded; generate one with `openssl rand -hex 32`")]
    NotHex,
    #[error("SECRET_KEY must hold at least {MIN_BYTES} bytes ({} hex digits)", 2 * MIN_BYTES)]
    TooShort,
    #[error("SECRET_KEY has too little variety to be random; generate one with `openssl rand -hex 32`")]
    LowEntropy,
}

/// Checks a `SECRET_KEY` value (surrounding whitespace ignored).
pub fn parse(value: Option<&str>) -> Result<SecretKey, SecretError> {
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(SecretError::Missing)?;
    if PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(value)) {
        return Err(SecretError::Placeholder);
    }
    let decoded = Zeroizing::new(hex::decode(value).map_err(|_| SecretError::NotHex)?);
    if decoded.len() < MIN_BYTES {
        return Err(SecretError::TooShort);
    }
    let mut seen = [false; 256];
    decoded.iter().for_each(|&b| seen[usize::from(b)] = true);
    if seen.iter().filter(|&&s| s).count() < 8 {
        return Err(SecretError::LowEntropy);
    }
    Ok(SecretKey(Zeroizing::new(value.as_bytes().to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_refused() {
        let good = "6b0a1f4c2e9d8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a19080";
        assert_eq!(parse(Some(good)).unwrap().as_bytes(), good.as_bytes());
        assert_eq!(
            parse(Some(&format!(" {good}\n"))).unwrap().as_bytes(),
            good.as_bytes()
        );
        let cases: &[(Option<&str>, SecretError)] = &[
            (None, SecretError::Missing),
            (Some(""), SecretError::Missing),
            (Some("  "), SecretError::Missing),
            (Some("YOUR-SECRET-KEY-HERE"), SecretError::Placeholder),
            (Some("changeme"), SecretError::Placeholder),
            (Some("Secret"), SecretError::Placeholder),
            (
                Some("09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7"),
                SecretError::Placeholder,
            ),
            (
                Some("not hex at all, but long enough to be 32 bytes for sure"),
                SecretError::NotHex,
            ),
            (Some(&good[..62]), SecretError::TooShort),
            (Some(&good[..63]), SecretError::NotHex),
            (Some(&"00".repeat(32)), SecretError::LowEntropy),
            (Some(&"0123".repeat(32)), SecretError::LowEntropy),
        ];
        for (value, want) in cases {
            let err = parse(*value).unwrap_err();
            assert_eq!(&err, want, "{value:?}");
            if let Some(v) = value.filter(|v| v.len() > 3) {
                assert!(!err.to_string().contains(v), "{err}");
            }
        }
    }
}
