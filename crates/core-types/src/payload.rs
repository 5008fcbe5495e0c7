//! JSON payloads (invocation input, function output) kept as validated JSON text.
//!
//! The control plane forwards payloads; it never looks inside them. Keeping the text
//! (behind an `Arc`, so retries, waiters and records share one copy) avoids building
//! and re-serialising a JSON tree on every hop.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON value, stored as its text.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

/// The text was not one JSON value.
#[derive(Debug, thiserror::Error)]
#[error("not a JSON value: {0}")]
pub struct InvalidPayload(#[from] serde_json::Error);

impl Payload {
    /// Parses `text` as exactly one JSON value.
    pub fn from_json_text(text: &str) -> Result<Self, InvalidPayload> {
        let raw: Box<RawValue> = serde_json::from_str(text)?;
        Ok(Self(Arc::from(raw)))
    }

    /// Serialises `value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        let raw =
            serde_json::value::to_raw_value(value).expect("a serde_json::Value always serialises");
        Self(Arc::from(raw))
    }

    /// A JSON string holding `text` (a `text/plain` function answer).
    pub fn string(text: &str) -> Self {
        Self::from_value(&serde_json::Value::String(text.to_owned()))
    }

    /// The JSON text.
    pub fn json_text(&self) -> &str {
        self.0.get()
    }

    /// Whether the value is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.0.get().trim() == "null"
    }

    /// Parses the text into a tree (for tests and inspection, not the hot path).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).expect("a Payload always holds valid JSON")
    }

    /// Feeds the JSON value, not its spelling, to `state`: whitespace and the order of
    /// object keys do not change the hash (idempotency keys compare requests this way).
    /// Text serde_json cannot read as a tree (a lone surrogate escape, which the raw
    /// value accepts) is hashed as written.
    pub fn hash_value<H: std::hash::Hasher>(&self, state: &mut H) {
        use std::hash::Hash;
        fn walk<H: std::hash::Hasher>(value: &serde_json::Value, state: &mut H) {
            use serde_json::Value;
            std::mem::discriminant(value).hash(state);
            match value {
                Value::Null => {}
                Value::Bool(b) => b.hash(state),
                Value::Number(n) => n.to_string().hash(state),
                Value::String(s) => s.hash(state),
                Value::Array(items) => {
                    items.len().hash(state);
                    items.iter().for_each(|item| walk(item, state));
                }
                Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_unstable_by_key(|(key, _)| *key);
                    entries.len().hash(state);
                    for (key, item) in entries {
                        key.hash(state);
                        walk(item, state);
                    }
                }
            }
        }
        match serde_json::from_str::<serde_json::Value>(self.0.get()) {
            Ok(value) => walk(&value, state),
            Err(_) => self.0.get().hash(state),
        }
    }

    /// Bytes of heap this payload holds.
    pub fn heap_size(&self) -> usize {
        self.0.get().len()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Self(Arc::from(raw)))
    }
}

/// A payload is whatever JSON the client or the function sent; the control plane never
/// constrains it, so its schema is "any value" (the raw text inside is not the wire form).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Payload {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some("Any JSON value, passed through unchanged."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Payload {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_their_text() {
        let p = Payload::from_json_text(r#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"a": [1, 2]}"#);
        assert_eq!(p.to_value(), serde_json::json!({"a": [1, 2]}));
    }

    fn hash_of(text: &str) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        Payload::from_json_text(text)
            .unwrap()
            .hash_value(&mut hasher);
        std::hash::Hasher::finish(&hasher)
    }

    #[test]
    fn the_hash_is_of_the_value_not_its_spelling() {
        assert_eq!(
            hash_of(r#"{"a":1,"b":[true,null]}"#),
            hash_of(r#"{ "b": [true, null], "a": 1 }"#)
        );
        assert_ne!(hash_of(r#"{"a":1}"#), hash_of(r#"{"a":2}"#));
        assert_ne!(hash_of(r#"["a"]"#), hash_of(r#""a""#));
        assert_ne!(hash_of(r#"[1,[2]]"#), hash_of(r#"[[1],2]"#));
        assert_eq!(
            hash_of(r#""\uD800""#),
            hash_of(r#""\uD800""#),
            "unreadable text still hashes"
        );
        assert!(Payload::from_json_text("null").unwrap().is_null());
        assert!(Payload::from_json_text("{").is_err());
        assert_eq!(Payload::string("hi").json_text(), "\"hi\"");
    }
}
