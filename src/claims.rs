//! JSON objects that refuse duplicate names, and the typed claims read out of them.
//!
//! `serde_json::Map` keeps the last of two equal names, so `{"sub":"bob","sub":"admin"}`
//! would mean whatever the last parser in the chain decides. RFC 7519 §4 lets a
//! consumer reject such a token; we do, at every depth (roles and conditions read
//! nested claims such as `realm_access.roles`), for the header's extra fields and the
//! claims.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

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

    /// The value a JSON Pointer points at, if any.
    pub fn pointer(&self, pointer: &Pointer) -> Option<&Value> {
        let (first, rest) = pointer.tokens.split_first()?;
        let mut value = self.0.get(first)?;
        for token in rest {
            value = match value {
                Value::Object(map) => map.get(token)?,
                Value::Array(items) => items.get(array_index(token)?)?,
                _ => return None,
            };
        }
        Some(value)
    }

    /// The claims as one JSON object (for the payload header).
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// An array index in a pointer: digits without a leading zero (RFC 6901 §4).
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || (token.len() > 1 && token.starts_with('0'))
        || !token.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    token.parse().ok()
}

/// A JSON Pointer (RFC 6901) into the claims, such as `/realm_access/roles` or
/// `/https:~1~1example.com~1roles`; the empty pointer (the whole document) is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// As written, for messages.
    pub text: String,
    /// The reference tokens, unescaped.
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `/a/b~1c` (`~1` is `/`, `~0` is `~`); `Err` says why it is not a pointer.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON Pointer (RFC 6901): it must start with `/`"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, true) => match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => {
                            return Err(format!(
                                "`{text}` is not a JSON Pointer (RFC 6901): `~` must be followed by 0 or 1"
                            ))
                        }
                    },
                    (c, false) => token.push(c),
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The pointer to a top-level claim.
    pub fn claim(name: &str) -> Pointer {
        Pointer {
            text: format!("/{}", name.replace('~', "~0").replace('/', "~1")),
            tokens: vec![name.to_string()],
        }
    }

    /// The top-level claim the pointer starts in.
    pub fn first(&self) -> Option<&str> {
        self.tokens.first().map(String::as_str)
    }

    /// The top-level claim's name, when the pointer points at one.
    pub fn top_level(&self) -> Option<&str> {
        match self.tokens.as_slice() {
            [name] => Some(name),
            _ => None,
        }
    }
}

/// A JSON value whose objects, at every depth, have unique member names.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictValue)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value with unique member names")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(A::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(StrictValue)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
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
                    let value = map.next_value_seed(StrictValue)?;
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
    audiences_in(claims, "aud")
}

/// `aud` (or the claim a provider names instead, such as Cognito's `client_id`): one
/// string or an array of strings (RFC 7519 §4.1.3).
pub fn audiences_in<'c>(claims: &'c StrictObject, name: &str) -> Result<Vec<&'c str>, ClaimError> {
    match claims.get(name) {
        None => Err(ClaimError::Missing),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(ClaimError::WrongType))
            .collect(),
        Some(_) => Err(ClaimError::WrongType),
    }
}

/// The roles at one pointer: an array of strings, or one space-delimited string as
/// OAuth's `scope` is (RFC 6749 §3.3). Absent means no roles. Anything else is an
/// error, so a type confusion such as `{"admin": true}` or `[["admin"]]` can never
/// grant a role.
pub fn roles_at(claims: &StrictObject, pointer: &Pointer, into: &mut Vec<String>) -> Result<(), ClaimError> {
    let mut add = |role: &str| {
        if !role.is_empty() && !into.iter().any(|r| r == role) {
            into.push(role.to_string());
        }
    };
    match claims.pointer(pointer) {
        None => Ok(()),
        Some(Value::String(s)) => {
            s.split(' ').for_each(&mut add);
            Ok(())
        }
        Some(Value::Array(items)) => {
            for item in items {
                add(item.as_str().ok_or(ClaimError::WrongType)?);
            }
            Ok(())
        }
        Some(_) => Err(ClaimError::WrongType),
    }
}

/// The roles claim by name (see [`roles_at`]).
pub fn roles(claims: &StrictObject, name: &str) -> Result<Vec<String>, ClaimError> {
    let mut roles = Vec::new();
    roles_at(claims, &Pointer::claim(name), &mut roles)?;
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> StrictObject {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn duplicate_names_are_refused_at_every_depth() {
        for json in [
            r#"{"sub":"bob","sub":"admin"}"#,
            r#"{"roles":["user"],"x":1,"roles":["admin"]}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"realm_access":{"roles":["user"],"roles":["admin"]}}"#,
            r#"{"a":[{"b":1},{"c":1,"c":2}]}"#,
        ] {
            assert!(serde_json::from_str::<StrictObject>(json).is_err(), "{json}");
        }
        let nested: StrictObject =
            serde_json::from_str(r#"{"a":{"b":1},"b":2,"c":[1.5,-2,null,true,"x",{"d":[]}]}"#).unwrap();
        assert_eq!(
            nested.pointer(&Pointer::parse("/a/b").unwrap()),
            Some(&Value::from(1))
        );
        assert_eq!(
            nested.pointer(&Pointer::parse("/c/0").unwrap()),
            Some(&Value::from(1.5))
        );
        assert_eq!(
            nested.pointer(&Pointer::parse("/c/5/d").unwrap()),
            Some(&Value::Array(vec![]))
        );
        for missing in ["/a/c", "/c/6", "/c/01", "/c/-", "/b/x", "/z"] {
            assert_eq!(
                nested.pointer(&Pointer::parse(missing).unwrap()),
                None,
                "{missing}"
            );
        }
        let escaped = Pointer::parse("/https:~1~1example.com~1roles/a~0b").unwrap();
        assert_eq!(escaped.top_level(), None);
        assert_eq!(
            Pointer::claim("cognito:groups").top_level(),
            Some("cognito:groups")
        );
        assert_eq!(Pointer::claim("a/b~c").text, "/a~1b~0c");
        for bad in ["", "roles", "/a~2", "/a~"] {
            assert!(Pointer::parse(bad).is_err(), "{bad}");
        }
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
