//! Wall-clock instants and durations as the contract shows them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch. Eight bytes per instant keeps records small;
/// it is shown as RFC 3339 text on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant plus `duration`, saturating at the far future.
    pub const fn plus(self, duration: DurationMs) -> Self {
        Self(self.0.saturating_add(duration.0))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn since(self, earlier: Timestamp) -> DurationMs {
        DurationMs(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 text, e.g. `2026-11-27T10:00:00.250Z`.
    pub fn to_rfc3339(self) -> String {
        let millis = i64::try_from(self.0).unwrap_or(i64::MAX);
        match jiff::Timestamp::from_millisecond(millis) {
            Ok(ts) => ts.to_string(),
            Err(_) => jiff::Timestamp::MAX.to_string(),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}", self.to_rfc3339()))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// RFC 3339 text at or after the Unix epoch, as [`Serialize`] writes it (any
    /// offset; instants finer than a millisecond are truncated).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let instant: jiff::Timestamp = text.parse().map_err(serde::de::Error::custom)?;
        u64::try_from(instant.as_millisecond())
            .map(Self)
            .map_err(|_| serde::de::Error::custom(format!("{text} is before 1970")))
    }
}

/// On the wire a timestamp is RFC 3339 text, not the milliseconds it is kept as.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("An instant as RFC 3339 text in UTC."))
            .examples([serde_json::json!("2026-11-27T12:00:00.25Z")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

/// A span of time in whole milliseconds.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct DurationMs(pub u64);

impl DurationMs {
    /// As a std duration.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_rfc3339() {
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            serde_json::to_string(&Timestamp::from_millis(1_795_780_800_250)).unwrap(),
            "\"2026-11-27T12:00:00.25Z\""
        );
    }

    #[test]
    fn timestamps_read_back_as_written() {
        for millis in [0, 250, 1_795_780_800_250] {
            let text = serde_json::to_string(&Timestamp::from_millis(millis)).unwrap();
            let back: Timestamp = serde_json::from_str(&text).unwrap();
            assert_eq!(back.as_millis(), millis, "{text}");
        }
        let offset: Timestamp = serde_json::from_str("\"2026-11-27T13:00:00.25+01:00\"").unwrap();
        assert_eq!(offset.as_millis(), 1_795_780_800_250);
        for refused in ["\"1969-12-31T23:59:59Z\"", "\"yesterday\"", "12"] {
            assert!(
                serde_json::from_str::<Timestamp>(refused).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(10);
        assert_eq!(t.since(Timestamp::from_millis(20)), DurationMs(0));
        assert_eq!(
            Timestamp::from_millis(u64::MAX)
                .plus(DurationMs(5))
                .as_millis(),
            u64::MAX
        );
    }
}
