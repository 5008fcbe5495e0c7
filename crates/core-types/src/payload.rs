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

    /// Writes the JSON value, not its spelling, to `sink` in a canonical encoding:
    /// whitespace and the order of object keys do not change it (idempotency keys
    /// compare requests this way). The encoding is explicit and fixed (a tag byte per
    /// value; lengths and counts as 8 little-endian bytes; strings as UTF-8; numbers as
    /// serde_json writes them; object entries sorted by key), so a digest of it is the
    /// same in every build and version: a durable claim may compare digests written
    /// by an older binary. Text serde_json cannot read as a tree (a lone surrogate
    /// escape, which the raw value accepts) is written as it was sent, under its own
    /// tag.
    pub fn write_canonical(&self, sink: &mut impl ByteSink) {
        use serde_json::Value;
        fn text(sink: &mut impl ByteSink, tag: u8, text: &str) {
            sink.put(&[tag]);
            put_len(sink, text.len());
            sink.put(text.as_bytes());
        }
        fn walk(value: &Value, sink: &mut impl ByteSink) {
            match value {
                Value::Null => sink.put(&[0]),
                Value::Bool(b) => sink.put(&[1, u8::from(*b)]),
                Value::Number(n) => text(sink, 2, &n.to_string()),
                Value::String(s) => text(sink, 3, s),
                Value::Array(items) => {
                    sink.put(&[4]);
                    put_len(sink, items.len());
                    items.iter().for_each(|item| walk(item, sink));
                }
                Value::Object(map) => {
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_unstable_by_key(|(key, _)| *key);
                    sink.put(&[5]);
                    put_len(sink, entries.len());
                    for (key, item) in entries {
                        put_str(sink, key);
                        walk(item, sink);
                    }
                }
            }
        }
        match serde_json::from_str::<Value>(self.0.get()) {
            Ok(value) => walk(&value, sink),
            Err(_) => text(sink, 6, self.0.get()),
        }
    }

    /// Bytes of heap this payload holds.
    pub fn heap_size(&self) -> usize {
        self.0.get().len()
    }
}

/// Where a canonical encoding is written (a digest, or a buffer).
pub trait ByteSink {
    /// Takes the next bytes.
    fn put(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A length or count, as 8 little-endian bytes whatever the platform's word size.
pub(crate) fn put_len(sink: &mut impl ByteSink, len: usize) {
    sink.put(&u64::try_from(len).unwrap_or(u64::MAX).to_le_bytes());
}

/// A string with its length in front, so that concatenations cannot collide.
pub(crate) fn put_str(sink: &mut impl ByteSink, text: &str) {
    put_len(sink, text.len());
    sink.put(text.as_bytes());
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

    fn canonical(text: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        Payload::from_json_text(text)
            .unwrap()
            .write_canonical(&mut bytes);
        bytes
    }

    #[test]
    fn the_canonical_encoding_is_fixed() {
        // A durable claim compares digests of this encoding across versions: a change
        // here breaks every stored claim, so this pins it byte for byte.
        assert_eq!(
            canonical(r#"{"b": [true, null], "a": 1.5}"#),
            [
                &[5][..],
                &2u64.to_le_bytes(),
                &1u64.to_le_bytes(),
                b"a",
                &[2],
                &3u64.to_le_bytes(),
                b"1.5",
                &1u64.to_le_bytes(),
                b"b",
                &[4],
                &2u64.to_le_bytes(),
                &[1, 1],
                &[0],
            ]
            .concat()
        );
        assert_eq!(
            canonical(r#""\uD800""#)[0],
            6,
            "unreadable text has its own tag"
        );
    }

    #[test]
    fn the_encoding_is_of_the_value_not_its_spelling() {
        assert_eq!(
            canonical(r#"{"a":1,"b":[true,null]}"#),
            canonical(r#"{ "b": [true, null], "a": 1 }"#)
        );
        assert_ne!(canonical(r#"{"a":1}"#), canonical(r#"{"a":2}"#));
        assert_ne!(canonical(r#"["a"]"#), canonical(r#""a""#));
        assert_ne!(canonical(r#"[1,[2]]"#), canonical(r#"[[1],2]"#));
        assert_eq!(
            canonical(r#""\uD800""#),
            canonical(r#""\uD800""#),
            "unreadable text is still encoded"
        );
        assert!(Payload::from_json_text("null").unwrap().is_null());
        assert!(Payload::from_json_text("{").is_err());
        assert_eq!(Payload::string("hi").json_text(), "\"hi\"");
    }
}
