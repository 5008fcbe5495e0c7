//! What each op does to the database, inside the writer's transaction.

use core_types::{ALLOWED_TRANSITIONS, ExecutionId, ExecutionState};
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, RECORD_COLUMNS};
use super::writer::{Done, Op, Refusal};
use crate::{
    ApplyError, ChangeKind, ExecutionRecord, RecordChange, RegisteredFunction, StoredExecution,
};

/// Why one op could not run.
pub(super) enum OpError {
    Refused(Refusal),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for OpError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_extended_error_code(),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

/// Runs one op: what it answers and how it changes the number of records.
pub(super) fn execute(connection: &Connection, op: &Op) -> Result<(Done, isize), OpError> {
    match op {
        Op::Insert(execution) => insert(connection, execution).map(|()| (Done::Unit, 1)),
        Op::Apply(id, change) => apply(connection, id, change).map(|()| (Done::Unit, 0)),
        Op::Remove(id) => {
            let removed = connection
                .prepare_cached("DELETE FROM executions WHERE id = ?1")?
                .execute([id.as_str()])?;
            Ok((Done::Removed(removed > 0), -signed(removed)))
        }
        Op::EvictExecutions(cutoff) => {
            let evicted = connection
                .prepare_cached("DELETE FROM executions WHERE finished_at <= ?1")?
                .execute([rows::millis(*cutoff)])?;
            Ok((Done::Count(evicted), -signed(evicted)))
        }
        Op::Publish {
            function,
            key,
            fingerprint,
            execution,
            expires_at,
        } => {
            connection
                .prepare_cached(
                    "INSERT OR REPLACE INTO idempotency
                         (function, key, fingerprint, execution, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    function.as_str(),
                    key.as_str(),
                    &fingerprint.0[..],
                    execution.as_str(),
                    rows::millis(*expires_at),
                ])?;
            Ok((Done::Unit, 0))
        }
        Op::Forget {
            function,
            key,
            execution,
        } => {
            connection
                .prepare_cached(
                    "DELETE FROM idempotency WHERE function = ?1 AND key = ?2 AND execution = ?3",
                )?
                .execute([function.as_str(), key.as_str(), execution.as_str()])?;
            Ok((Done::Unit, 0))
        }
        Op::EvictClaims(now) => {
            let evicted = connection
                .prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?1")?
                .execute([rows::millis(*now)])?;
            Ok((Done::Count(evicted), 0))
        }
        Op::Register(function) => match put_function(connection, "INSERT", function) {
            Err(error) if is_unique_violation(&error) => Err(OpError::Refused(Refusal::NameTaken)),
            other => other.map(|()| (Done::Unit, 0)).map_err(OpError::from),
        },
        Op::Replace(function) => {
            put_function(connection, "INSERT OR REPLACE", function)?;
            Ok((Done::Unit, 0))
        }
        Op::Unregister(name) => {
            let sql = format!(
                "DELETE FROM functions WHERE name = ?1 RETURNING {}",
                rows::FUNCTION_COLUMNS
            );
            let removed = connection
                .prepare_cached(&sql)?
                .query_row([name], rows::function)
                .optional()?;
            Ok((Done::Function(removed), 0))
        }
        Op::SaveConfig(config, replaces) => {
            // A compare-and-swap: the writer is the only one writing, so the revision
            // read here is still the one kept when the row is written.
            let kept = connection
                .prepare_cached(rows::CONFIG_SELECT)?
                .query_row([], rows::config)
                .optional()?;
            if crate::kept_revision(kept.as_ref()) != *replaces {
                return Ok((Done::Saved(false), 0));
            }
            connection
                .prepare_cached(
                    "INSERT OR REPLACE INTO runtime_config (id, revision, document)
                     VALUES (1, ?1, ?2)",
                )?
                .execute(params![rows::int(config.revision), config.document])?;
            Ok((Done::Saved(true), 0))
        }
    }
}

fn signed(count: usize) -> isize {
    isize::try_from(count).unwrap_or(isize::MAX)
}

fn insert(connection: &Connection, execution: &StoredExecution) -> Result<(), OpError> {
    let StoredExecution { record, work } = execution;
    // A record inserted already terminal keeps no work, like one that ends later.
    let keep_work = !record.state.is_terminal();
    let metadata = keep_work.then(|| rows::metadata_text(&work.metadata));
    let result = connection
        .prepare_cached(
            "INSERT INTO executions (id, function, state, attempt, version, created_at,
                 enqueued_at, started_at, finished_at, output, error_code, error_message,
                 cold_start, init_duration_ms, input, metadata, trace_id, idempotency_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18)",
        )?
        .execute(params![
            record.id.as_str(),
            record.function.as_str(),
            record.state.as_str(),
            record.attempt,
            rows::int(record.version),
            rows::millis(record.created_at),
            rows::millis(record.enqueued_at),
            record.started_at.map(rows::millis),
            record.finished_at.map(rows::millis),
            record.output.as_ref().map(|output| output.json_text()),
            record.error.as_ref().map(|error| &*error.code),
            record.error.as_ref().map(|error| error.message.as_str()),
            record.cold_start,
            record.init_duration_ms.map(rows::int),
            keep_work.then(|| work.input.json_text()),
            metadata,
            keep_work.then(|| work.trace_id.as_str()),
            work.idempotency_key
                .as_ref()
                .filter(|_| keep_work)
                .map(|key| key.as_str()),
        ]);
    match result {
        Ok(_) => Ok(()),
        Err(error) if is_unique_violation(&error) => Err(OpError::Refused(Refusal::Duplicate)),
        Err(error) => Err(error.into()),
    }
}

/// Applies a change with one conditional `UPDATE`: only if the change is newer than the
/// record (`version < ?`) and the transition table allows it from the record's state
/// (the `state IN (...)` lists are made from `ALLOWED_TRANSITIONS`), dropping the work
/// once the execution is terminal. Only when no row matched is the record read, to say
/// why ([`ExecutionRecord::apply_change`], the one definition of what a change does:
/// stale, or an invalid transition) or that it does not exist. One statement per change
/// in the common case; the conditional form is what a shared backend needs too.
fn apply(connection: &Connection, id: &ExecutionId, change: &RecordChange) -> Result<(), OpError> {
    let version = rows::int(change.version);
    let target = change.kind.target_state();
    let updated = match &change.kind {
        ChangeKind::Started { attempt, at } | ChangeKind::Requeued { attempt, at } => connection
            .prepare_cached(&CHANGE_SQL[target as usize])?
            .execute(params![id.as_str(), version, attempt, rows::millis(*at)])?,
        ChangeKind::Finished {
            state,
            at,
            output,
            error,
            cold_start,
            init_duration_ms,
        } => connection
            .prepare_cached(&CHANGE_SQL[target as usize])?
            .execute(params![
                id.as_str(),
                version,
                state.as_str(),
                rows::millis(*at),
                output.as_ref().map(|output| output.json_text()),
                error.as_ref().map(|error| &*error.code),
                error.as_ref().map(|error| error.message.as_str()),
                cold_start,
                init_duration_ms.map(rows::int),
            ])?,
    };
    if updated > 0 {
        return Ok(());
    }
    static SELECT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {RECORD_COLUMNS} FROM executions WHERE id = ?1")
    });
    let mut record: ExecutionRecord = connection
        .prepare_cached(&SELECT)?
        .query_row([id.as_str()], rows::record)
        .optional()?
        .ok_or(OpError::Refused(Refusal::Unknown))?;
    match record.apply_change(change.clone()) {
        Err(ApplyError::Stale { change, current }) => {
            Err(OpError::Refused(Refusal::Stale { change, current }))
        }
        Err(ApplyError::InvalidTransition(invalid)) => {
            Err(OpError::Refused(Refusal::Invalid(invalid)))
        }
        // apply_change refuses only the two above; a change it accepts would have
        // matched the UPDATE.
        Err(ApplyError::Unknown(_) | ApplyError::Unavailable(_)) | Ok(()) => {
            Err(OpError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
                Some(format!(
                    "the record of {id} neither took nor refused a change"
                )),
            )))
        }
    }
}

/// The conditional `UPDATE` of a change to each target state, indexed by
/// `ExecutionState as usize`: the `?1` id, the `?2` version, then the change's fields.
static CHANGE_SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    use ExecutionState::*;
    let states = [Queued, Running, Success, Error, Timeout];
    let mut sql = vec![String::new(); states.len()];
    for target in states {
        let from: Vec<String> = ALLOWED_TRANSITIONS
            .iter()
            .filter(|(_, to)| *to == target)
            .map(|(from, _)| format!("'{}'", from.as_str()))
            .collect();
        let set = match target {
            Running => "state = 'running', attempt = ?3, started_at = ?4".to_owned(),
            Queued => {
                "state = 'queued', attempt = ?3, enqueued_at = ?4, started_at = NULL".to_owned()
            }
            Success | Error | Timeout => {
                "state = ?3, finished_at = ?4, output = ?5, error_code = ?6, \
                 error_message = ?7, cold_start = ?8, init_duration_ms = ?9, input = NULL, \
                 metadata = NULL, trace_id = NULL, idempotency_key = NULL"
                    .to_owned()
            }
        };
        let condition = if from.is_empty() {
            // Nothing may move a record there: the UPDATE never matches.
            "0".to_owned()
        } else {
            format!("state IN ({})", from.join(", "))
        };
        sql[target as usize] = format!(
            "UPDATE executions SET {set}, version = ?2 WHERE id = ?1 AND version < ?2 AND {condition}"
        );
    }
    sql
});

fn put_function(
    connection: &Connection,
    verb: &str,
    function: &RegisteredFunction,
) -> rusqlite::Result<()> {
    let sql = format!(
        "{verb} INTO functions (name, spec, effective_mode, created_at, deployment) \
         VALUES (?1, ?2, ?3, ?4, ?5)"
    );
    connection.prepare_cached(&sql)?.execute(params![
        function.spec.name.as_str(),
        rows::spec_text(&function.spec),
        rows::mode_text(function.effective_mode),
        rows::millis(function.created_at),
        rows::deployment_text(function),
    ])?;
    Ok(())
}
