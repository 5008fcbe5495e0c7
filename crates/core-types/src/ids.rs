//! Id newtypes: a function name, an execution id, an idempotency key and a trace id are
//! all strings on the wire, but never interchangeable in code.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid [`FunctionName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("function name must match ^[a-zA-Z][a-zA-Z0-9._-]{{0,62}}$, got {0:?}")]
pub struct InvalidName(pub String);

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A registered function's name, always valid (`^[a-zA-Z][a-zA-Z0-9._-]{0,62}$`).
    FunctionName
);
string_id!(
    /// The id of one execution; stays the same across retries.
    ExecutionId
);
string_id!(
    /// A client's `Idempotency-Key`, scoped per function.
    IdempotencyKey
);
string_id!(
    /// The `X-Trace-Id` carried from the client to the function.
    TraceId
);

impl IdempotencyKey {
    /// The longest key accepted, in bytes: enough for a UUID or a hash with a prefix,
    /// and it keeps what every remembered claim costs small and bounded.
    pub const MAX_BYTES: usize = 256;
}

impl TraceId {
    /// The longest trace id accepted, in bytes (a W3C `traceparent` is 55).
    pub const MAX_BYTES: usize = 256;
}

impl FunctionName {
    /// Checks the name rule of the contract.
    pub fn parse(name: &str) -> Result<Self, InvalidName> {
        let mut chars = name.chars();
        let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && name.len() <= 63
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(Self(Arc::from(name)))
        } else {
            Err(InvalidName(name.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for FunctionName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

macro_rules! free_form_id {
    ($name:ident) => {
        impl $name {
            /// Wraps any text; these ids come from clients or generators as they are.
            pub fn new(text: impl Into<Arc<str>>) -> Self {
                Self(text.into())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

free_form_id!(ExecutionId);
free_form_id!(IdempotencyKey);
free_form_id!(TraceId);

/// What each id is on the wire, for the API's OpenAPI document: a plain string (the
/// derive would describe the `Arc<str>` inside as an object).
#[cfg(feature = "openapi")]
mod schema {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    macro_rules! string_schema {
        ($name:ident, $description:literal $(, pattern = $pattern:literal)?) => {
            impl utoipa::PartialSchema for super::$name {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some($description))
                        $(.pattern(Some($pattern)))?
                        .into()
                }
            }

            impl utoipa::ToSchema for super::$name {}
        };
    }

    string_schema!(
        FunctionName,
        "A function's name.",
        pattern = "^[a-zA-Z][a-zA-Z0-9._-]{0,62}$"
    );
    string_schema!(
        ExecutionId,
        "The id of one execution; it stays the same across retries."
    );
    string_schema!(
        IdempotencyKey,
        "A client's idempotency key, scoped per function."
    );
    string_schema!(
        TraceId,
        "A trace id carried from the client to the function."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_follow_the_contract() {
        for good in ["a", "echo", "my-fn.v2_x", &format!("a{}", "b".repeat(62))] {
            assert!(FunctionName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "-a",
            "a b",
            "a/b",
            "é",
            &format!("a{}", "b".repeat(63)),
        ] {
            assert!(FunctionName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<FunctionName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<FunctionName>("\"../etc\"").is_err());
    }
}
