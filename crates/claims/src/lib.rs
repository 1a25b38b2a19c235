//! The claims of a Gatehouse access token, in one type that both the token service
//! (which writes them) and the filter (whose default configuration reads them) use.
//!
//! `exp`, `iat` and `nbf` are not here: jwt-compact's `Claims<T>` carries them around
//! this custom part.

use serde::{Deserialize, Serialize};

/// Default name of the roles claim, in the token and in the filter's `roles_claim`.
pub const ROLES_CLAIM: &str = "roles";

/// The default audience tokens are issued for, and that the demo's filter requires.
pub const DEFAULT_AUDIENCE: &str = "api";

/// Custom claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// Issuer: the token service's configured issuer.
    pub iss: String,
    /// Audience: who the token is for.
    pub aud: String,
    /// Subject: the canonical username.
    pub sub: String,
    /// Roles, compared byte for byte by the filter.
    pub roles: Vec<String>,
    /// Unique token id, for revocation.
    pub jti: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_the_registered_names() {
        let c = AccessClaims {
            iss: "i".into(),
            aud: DEFAULT_AUDIENCE.into(),
            sub: "alice".into(),
            roles: vec!["admin".into()],
            jti: "j".into(),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"iss":"i","aud":"api","sub":"alice","roles":["admin"],"jti":"j"})
        );
        assert_eq!(v.get(ROLES_CLAIM), Some(&serde_json::json!(["admin"])));
    }
}
