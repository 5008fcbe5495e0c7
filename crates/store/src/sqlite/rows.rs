//! Records, work, claims and functions to and from rows.
//!
//! Every integer is kept as SQLite's signed 64 bits. Instants, versions and durations
//! are `u64` in the records and never reach 2^63 in practice (milliseconds since the
//! epoch, decisions per execution); one past it (a far-future expiry saturated at
//! `u64::MAX`) is written as `i64::MAX`, still the far future.
//!
//! A value that does not read back (an unknown state, text that is not JSON, a name
//! that is no longer valid) is a conversion error naming its column, not a fault of
//! the medium: the operation that met it fails alone.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use core_types::{
    ErrorInfo, ExecutionId, ExecutionMode, ExecutionState, FunctionName, FunctionSpec,
    IdempotencyKey, Payload, Timestamp, TraceId,
};
use rusqlite::Row;
use rusqlite::types::Type;

use crate::{
    ExecutionRecord, ExecutionWork, Fingerprint, RegisteredFunction, ReplicaTarget, StoredConfig,
    StoredExecution,
};

/// The record's columns, in the order [`record`] reads them.
pub(super) const RECORD_COLUMNS: &str = "id, function, state, attempt, version, created_at, \
     enqueued_at, started_at, finished_at, output, error_code, error_message, cold_start, \
     init_duration_ms";

/// The work's columns, in the order [`work`] reads them (after the record's).
pub(super) const WORK_COLUMNS: &str = "input, metadata, trace_id, idempotency_key";

/// How many columns [`RECORD_COLUMNS`] names.
pub(super) const RECORD_WIDTH: usize = 14;

/// A function's columns, in the order [`function`] reads them.
pub(super) const FUNCTION_COLUMNS: &str = "spec, effective_mode, created_at, deployment";

/// A claim's columns, in the order [`claim`] reads them.
pub(super) const CLAIM_COLUMNS: &str = "function, key, fingerprint, execution, expires_at";

/// The state written as `text` by [`ExecutionState::as_str`] (core-types has no parse).
pub(super) fn parse_state(text: &str) -> Option<ExecutionState> {
    use ExecutionState::*;
    [Queued, Running, Success, Error, Timeout]
        .into_iter()
        .find(|state| state.as_str() == text)
}

/// `mode` as the registry's column keeps it (its wire name).
pub(super) const fn mode_text(mode: ExecutionMode) -> &'static str {
    match mode {
        ExecutionMode::Local => "LOCAL",
        ExecutionMode::Pool => "POOL",
        ExecutionMode::Deployment => "DEPLOYMENT",
    }
}

fn parse_mode(text: &str) -> Option<ExecutionMode> {
    use ExecutionMode::*;
    [Local, Pool, Deployment]
        .into_iter()
        .find(|mode| mode_text(*mode) == text)
}

/// `value` as a column: unsigned 64 bits clamped into the signed range.
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `at` as a column.
pub(super) fn millis(at: Timestamp) -> i64 {
    int(at.as_millis())
}

/// A value of column `column` that does not read back.
fn bad(column: usize, why: impl Into<String>) -> rusqlite::Error {
    let why: Box<dyn std::error::Error + Send + Sync> = why.into().into();
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, why)
}

fn unsigned(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(column, value))
}

fn optional_unsigned(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(column)?;
    value
        .map(|value| {
            u64::try_from(value)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(column, value))
        })
        .transpose()
}

fn timestamp(row: &Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    unsigned(row, column).map(Timestamp::from_millis)
}

fn optional_timestamp(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(optional_unsigned(row, column)?.map(Timestamp::from_millis))
}

fn function_name(row: &Row<'_>, column: usize) -> rusqlite::Result<FunctionName> {
    let text: String = row.get(column)?;
    FunctionName::parse(&text).map_err(|e| bad(column, e.to_string()))
}

fn payload(column: usize, text: &str) -> rusqlite::Result<Payload> {
    Payload::from_json_text(text).map_err(|e| bad(column, e.to_string()))
}

/// The record in columns `0..RECORD_WIDTH` of `row` ([`RECORD_COLUMNS`]).
pub(super) fn record(row: &Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let state: String = row.get(2)?;
    let state = parse_state(&state).ok_or_else(|| bad(2, format!("unknown state {state:?}")))?;
    let attempt = u32::try_from(unsigned(row, 3)?).map_err(|_| bad(3, "attempt out of range"))?;
    let output = row
        .get::<_, Option<String>>(9)?
        .map(|text| payload(9, &text))
        .transpose()?;
    let error = row
        .get::<_, Option<String>>(10)?
        .map(|code| -> rusqlite::Result<ErrorInfo> {
            Ok(ErrorInfo {
                code: Cow::Owned(code),
                message: row.get::<_, Option<String>>(11)?.unwrap_or_default(),
            })
        })
        .transpose()?;
    Ok(ExecutionRecord {
        id: ExecutionId::new(row.get::<_, String>(0)?),
        function: function_name(row, 1)?,
        state,
        attempt,
        version: unsigned(row, 4)?,
        created_at: timestamp(row, 5)?,
        enqueued_at: timestamp(row, 6)?,
        started_at: optional_timestamp(row, 7)?,
        finished_at: optional_timestamp(row, 8)?,
        output,
        error,
        cold_start: row.get(12)?,
        init_duration_ms: optional_unsigned(row, 13)?,
    })
}

/// The work in the [`WORK_COLUMNS`] that follow the record's in `row`.
pub(super) fn work(row: &Row<'_>) -> rusqlite::Result<ExecutionWork> {
    let at = RECORD_WIDTH;
    let input: Option<String> = row.get(at)?;
    let input = input.ok_or_else(|| bad(at, "an unfinished execution without its input"))?;
    let metadata: Option<String> = row.get(at + 1)?;
    let metadata: BTreeMap<String, String> = match metadata {
        Some(text) => serde_json::from_str(&text).map_err(|e| bad(at + 1, e.to_string()))?,
        None => BTreeMap::new(),
    };
    let trace_id: Option<String> = row.get(at + 2)?;
    Ok(ExecutionWork {
        input: payload(at, &input)?,
        metadata: Arc::new(metadata),
        trace_id: TraceId::new(trace_id.unwrap_or_default()),
        idempotency_key: row
            .get::<_, Option<String>>(at + 3)?
            .map(IdempotencyKey::new),
    })
}

/// A stored execution from a row of [`RECORD_COLUMNS`] then [`WORK_COLUMNS`].
pub(super) fn stored(row: &Row<'_>) -> rusqlite::Result<StoredExecution> {
    Ok(StoredExecution {
        record: record(row)?,
        work: work(row)?,
    })
}

/// The JSON text of `metadata` (an object of strings).
pub(super) fn metadata_text(metadata: &BTreeMap<String, String>) -> String {
    serde_json::to_string(metadata).expect("a map of strings always serialises")
}

/// The JSON text of `spec`, as [`FunctionSpec::from_json`] reads it back.
pub(super) fn spec_text(spec: &FunctionSpec) -> String {
    serde_json::to_string(spec).expect("a function spec always serialises")
}

/// A function from a row of [`FUNCTION_COLUMNS`].
pub(super) fn function(row: &Row<'_>) -> rusqlite::Result<RegisteredFunction> {
    let text: String = row.get(0)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(0, e.to_string()))?;
    let spec = FunctionSpec::from_json(&value).map_err(|e| bad(0, e.to_string()))?;
    let mode: String = row.get(1)?;
    let effective_mode =
        parse_mode(&mode).ok_or_else(|| bad(1, format!("unknown execution mode {mode:?}")))?;
    let deployment: Option<String> = row.get(3)?;
    let deployment: DeploymentColumn = match deployment {
        Some(text) => serde_json::from_str(&text).map_err(|e| bad(3, e.to_string()))?,
        None => DeploymentColumn::default(),
    };
    Ok(RegisteredFunction {
        spec: Arc::new(spec),
        effective_mode,
        created_at: timestamp(row, 2)?,
        degradation_reason: deployment.degradation_reason,
        replicas: deployment.replicas,
    })
}

/// The `deployment` column of a function: what it keeps besides its spec.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentColumn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    degradation_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<ReplicaTarget>,
}

/// The `deployment` column of `function` (`NULL` when there is nothing to keep).
pub(super) fn deployment_text(function: &RegisteredFunction) -> Option<String> {
    if function.degradation_reason.is_none() && function.replicas.is_none() {
        return None;
    }
    let column = DeploymentColumn {
        degradation_reason: function.degradation_reason.clone(),
        replicas: function.replicas,
    };
    Some(serde_json::to_string(&column).expect("the deployment column always serialises"))
}

/// Reads the one runtime configuration row, with [`config`].
pub(super) const CONFIG_SELECT: &str = "SELECT revision, document FROM runtime_config WHERE id = 1";

/// The runtime configuration from a row of [`CONFIG_SELECT`].
pub(super) fn config(row: &Row<'_>) -> rusqlite::Result<StoredConfig> {
    Ok(StoredConfig {
        revision: unsigned(row, 0)?,
        document: row.get(1)?,
    })
}

/// A published claim as read back at start-up.
#[derive(Debug)]
pub(super) struct ClaimRow {
    pub(super) function: FunctionName,
    pub(super) key: IdempotencyKey,
    pub(super) fingerprint: Fingerprint,
    pub(super) execution: ExecutionId,
    pub(super) expires_at: Timestamp,
}

/// A claim from a row of [`CLAIM_COLUMNS`].
pub(super) fn claim(row: &Row<'_>) -> rusqlite::Result<ClaimRow> {
    let digest: Vec<u8> = row.get(2)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| bad(2, "a fingerprint is 32 bytes"))?;
    Ok(ClaimRow {
        function: function_name(row, 0)?,
        key: IdempotencyKey::new(row.get::<_, String>(1)?),
        fingerprint: Fingerprint(digest),
        execution: ExecutionId::new(row.get::<_, String>(3)?),
        expires_at: timestamp(row, 4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_mode_reads_back_from_its_text() {
        use ExecutionState::*;
        for state in [Queued, Running, Success, Error, Timeout] {
            assert_eq!(parse_state(state.as_str()), Some(state));
        }
        assert_eq!(parse_state("QUEUED"), None);
        for mode in [
            ExecutionMode::Local,
            ExecutionMode::Pool,
            ExecutionMode::Deployment,
        ] {
            assert_eq!(parse_mode(mode_text(mode)), Some(mode));
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                mode_text(mode),
                "the column keeps the wire name"
            );
        }
    }

    #[test]
    fn integers_past_the_signed_range_are_clamped() {
        assert_eq!(int(5), 5);
        assert_eq!(int(u64::MAX), i64::MAX);
    }
}
