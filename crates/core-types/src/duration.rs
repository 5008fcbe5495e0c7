//! ISO-8601 durations as the contract writes them (`PT2S`, `PT0.5S`, `PT1M30S`): what the
//! runtime configuration's fields and the control plane's duration flags speak, on both
//! sides of the API.

use std::time::Duration;

/// Why a text is not an ISO-8601 duration the control plane accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not ISO-8601 (friendly forms like `2s` are refused too).
    #[error("not an ISO-8601 duration like PT2S or PT0.5S: {0}")]
    Syntax(String),
    /// Negative.
    #[error("must not be negative")]
    Negative,
}

/// Parses an ISO-8601 duration (`PT2S`, `PT0.5S`, `PT1M30S`) strictly: jiff's ISO
/// parser, not its friendly one, so `2s` or `2 seconds` are refused like any typo.
pub fn parse_iso_duration(text: &str) -> Result<Duration, DurationError> {
    let parsed = jiff::fmt::temporal::SpanParser::new()
        .parse_duration(text)
        .map_err(|e| DurationError::Syntax(e.to_string()))?;
    Duration::try_from(parsed).map_err(|_| DurationError::Negative)
}

/// The ISO-8601 text of `duration` (`PT2S`, `PT0.5S`).
pub fn format_iso_duration(duration: Duration) -> String {
    jiff::SignedDuration::try_from(duration)
        .unwrap_or(jiff::SignedDuration::MAX)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_strict_iso_8601() {
        assert_eq!(parse_iso_duration("PT2S"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_iso_duration("PT0.5S"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_iso_duration("PT1M30S"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_iso_duration("PT0S"), Ok(Duration::ZERO));
        for friendly in ["2s", "2 seconds", "", "P", "soon"] {
            assert!(
                matches!(parse_iso_duration(friendly), Err(DurationError::Syntax(_))),
                "{friendly:?} was accepted"
            );
        }
        assert_eq!(parse_iso_duration("-PT1S"), Err(DurationError::Negative));
        assert_eq!(format_iso_duration(Duration::from_secs(2)), "PT2S");
        assert_eq!(format_iso_duration(Duration::from_millis(500)), "PT0.5S");
    }
}
