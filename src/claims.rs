//! JSON objects that refuse duplicate names, and the typed claims read out of them.
//!
//! `serde_json::Map` keeps the last of two equal names, so `{"sub":"bob","sub":"admin"}`
//! would mean whatever the last parser in the chain decides. RFC 7519 §4 lets a
//! consumer reject such a token; we do, for the header's extra fields and the claims.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::Value;

/// A JSON object with unique member names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrictObject(BTreeMap<String, Value>);

impl StrictObject {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with unique member names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut members = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if members.contains_key(&name) {
                        return Err(A::Error::custom("duplicate member name"));
                    }
                    let value: Value = map.next_value()?;
                    members.insert(name, value);
                }
                Ok(StrictObject(members))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Why a claim could not be read as the type it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    Missing,
    WrongType,
}

/// A claim that must be a string, such as `iss` or `sub`.
pub fn string_claim<'c>(claims: &'c StrictObject, name: &str) -> Result<&'c str, ClaimError> {
    match claims.get(name) {
        None => Err(ClaimError::Missing),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ClaimError::WrongType),
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
pub fn audiences(claims: &StrictObject) -> Result<Vec<&str>, ClaimError> {
    match claims.get("aud") {
        None => Err(ClaimError::Missing),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(ClaimError::WrongType))
            .collect(),
        Some(_) => Err(ClaimError::WrongType),
    }
}

/// The roles claim: an array of strings, or one space-delimited string as OAuth's
/// `scope` is (RFC 6749 §3.3). Absent means no roles. Anything else is an error, so a
/// type confusion such as `{"admin": true}` or `[["admin"]]` can never grant a role.
pub fn roles(claims: &StrictObject, name: &str) -> Result<Vec<String>, ClaimError> {
    match claims.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(' ')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(ClaimError::WrongType))
            .collect(),
        Some(_) => Err(ClaimError::WrongType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> StrictObject {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn duplicate_names_are_refused_at_the_top_level() {
        for json in [
            r#"{"sub":"bob","sub":"admin"}"#,
            r#"{"roles":["user"],"x":1,"roles":["admin"]}"#,
            r#"{"a":1,"a":1}"#,
        ] {
            assert!(serde_json::from_str::<StrictObject>(json).is_err(), "{json}");
        }
        assert!(serde_json::from_str::<StrictObject>(r#"{"a":{"b":1},"b":2}"#).is_ok());
        for not_object in ["[]", "1", "\"x\"", "null", "{", r#"{"a":}"#] {
            assert!(
                serde_json::from_str::<StrictObject>(not_object).is_err(),
                "{not_object}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        assert!(serde_json::from_str::<StrictObject>(&deep).is_err());
    }

    #[test]
    fn typed_claims() {
        let c = object(r#"{"iss":"i","sub":7,"aud":["a","b"],"roles":"admin  user","scope":["x",1]}"#);
        assert_eq!(string_claim(&c, "iss"), Ok("i"));
        assert_eq!(string_claim(&c, "sub"), Err(ClaimError::WrongType));
        assert_eq!(string_claim(&c, "jti"), Err(ClaimError::Missing));
        assert_eq!(audiences(&c), Ok(vec!["a", "b"]));
        assert_eq!(
            roles(&c, "roles"),
            Ok(vec!["admin".to_string(), "user".to_string()])
        );
        assert_eq!(roles(&c, "scope"), Err(ClaimError::WrongType));
        assert_eq!(roles(&c, "groups"), Ok(vec![]));

        let cases: &[(&str, Result<Vec<&str>, ClaimError>)] = &[
            (r#"{"roles":["admin","user"]}"#, Ok(vec!["admin", "user"])),
            (r#"{"roles":[]}"#, Ok(vec![])),
            (r#"{"roles":""}"#, Ok(vec![])),
            (r#"{"roles":true}"#, Err(ClaimError::WrongType)),
            (r#"{"roles":{"admin":true}}"#, Err(ClaimError::WrongType)),
            (r#"{"roles":[["admin"]]}"#, Err(ClaimError::WrongType)),
            (r#"{"roles":["admin",null]}"#, Err(ClaimError::WrongType)),
            (r#"{"roles":null}"#, Err(ClaimError::WrongType)),
            (r#"{"roles":1}"#, Err(ClaimError::WrongType)),
        ];
        for (json, want) in cases {
            let want = want
                .clone()
                .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(roles(&object(json), "roles"), want, "{json}");
        }
        assert_eq!(audiences(&object(r#"{"aud":"x"}"#)), Ok(vec!["x"]));
        assert_eq!(
            audiences(&object(r#"{"aud":["x",2]}"#)),
            Err(ClaimError::WrongType)
        );
        assert_eq!(audiences(&object(r#"{"aud":{}}"#)), Err(ClaimError::WrongType));
        assert_eq!(audiences(&object("{}")), Err(ClaimError::Missing));
    }
}
