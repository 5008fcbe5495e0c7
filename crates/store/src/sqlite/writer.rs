//! The one writer: a thread that owns the only write connection and commits what
//! arrives in groups.
//!
//! Ops arrive on a channel in the order they were handed over. The writer takes every
//! op waiting (up to [`MAX_BATCH`]), runs them all in one transaction, each under its
//! commits once (with `synchronous=FULL`, the one fsync of the group), and only then
//! answers each op. An op its own logic refuses (a stale change, an unknown id, a
//! taken name) writes nothing (its one write statement is undone by SQLite, or never
//! made) and is answered with the refusal; the rest of the group goes on. A fault of the medium (disk full, I/O
//! error, read-only) rolls the whole group back and answers every op in it
//! [`StoreUnavailable`]: nothing of the group is applied, and the writer goes on with
//! the next group, so the store recovers once the fault is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use core_types::{ExecutionId, FunctionName, IdempotencyKey, InvalidTransition, Timestamp};
use dashmap::DashMap;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use super::ops::{OpError, execute};
use crate::{
    ExecutionIdHasher, ExecutionRecord, Fingerprint, RecordChange, RegisteredFunction,
    StoreUnavailable, StoredConfig, StoredExecution,
};

/// The most ops committed in one transaction: bounds how long one commit holds the
/// writer, and what one fault fails.
pub(super) const MAX_BATCH: usize = 1024;

/// One write.
#[derive(Debug)]
pub(super) enum Op {
    Insert(StoredExecution),
    Apply(ExecutionId, RecordChange),
    Remove(ExecutionId),
    /// Deletes finished records whose `finished_at` is at or before the cutoff.
    EvictExecutions(Timestamp),
    Publish {
        function: FunctionName,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
        execution: ExecutionId,
        expires_at: Timestamp,
    },
    Forget {
        function: FunctionName,
        key: IdempotencyKey,
        execution: ExecutionId,
    },
    EvictClaims(Timestamp),
    Register(RegisteredFunction),
    Replace(RegisteredFunction),
    Unregister(String),
    /// Saves the configuration if the revision kept is still the one given.
    SaveConfig(StoredConfig, u64),
}

/// What a written op answers.
#[derive(Debug)]
pub(super) enum Done {
    Unit,
    Removed(bool),
    Count(usize),
    Function(Option<RegisteredFunction>),
    /// Whether the configuration was saved.
    Saved(bool),
}

/// Why an op was refused by its own logic (it changed nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// An execution with that id exists.
    Duplicate,
    /// No execution with that id.
    Unknown,
    /// A newer change was applied already.
    Stale { change: u64, current: u64 },
    /// The transition table refuses the change.
    Invalid(InvalidTransition),
    /// A function with that name exists.
    NameTaken,
}

/// Why an op did not happen.
#[derive(Debug)]
pub(super) enum Failure {
    Refused(Refusal),
    Unavailable(StoreUnavailable),
}

/// What an op's caller gets.
pub(super) type Outcome = Result<Done, Failure>;

/// Who waits for an op.
#[derive(Debug)]
pub(super) enum Reply {
    /// The caller, until the op is committed.
    Wait(oneshot::Sender<Outcome>),
    /// Nobody ([`crate::Durability::Behind`]): a failure is only logged.
    Behind,
}

/// How long a group of writes nobody waits for waits for more before it is committed:
/// the most a write handed over behind is delayed beyond what its commit takes.
const BEHIND_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// What the writer receives.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is an op; boxing it would cost an allocation per write"
)]
pub(super) enum Message {
    Op(Op, Reply),
    /// Commit everything before this, answer, and stop.
    Close(oneshot::Sender<()>),
    /// Commit what is taken, then wait until the sender side is used or dropped: ops
    /// sent meanwhile form the next group (the tests use it to build a group).
    #[cfg(test)]
    Hold(mpsc::Receiver<()>),
}

/// What the writer keeps for the store's handles to read.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Execution records in the database, as of the last commit.
    pub(super) records: AtomicUsize,
    /// Transactions committed.
    pub(super) commits: AtomicU64,
    /// Records inserted [`Durability::Behind`](crate::Durability::Behind) and not yet
    /// committed: reads find them here, so what was handed over is readable at once.
    /// The writer removes them once their group is done (committed, or lost to a fault,
    /// which it logs).
    pub(super) behind: DashMap<ExecutionId, ExecutionRecord, ExecutionIdHasher>,
}

/// Whether `error` is a fault of the medium (and fails the whole group) rather than a
/// problem of the one op that met it (a value that does not read back, a constraint).
fn is_fault(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(error, _) => !matches!(
            error.code,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig
        ),
        _ => false,
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    connection: Connection,
    messages: mpsc::Receiver<Message>,
    counters: Arc<Counters>,
    /// The database file's path, and the device and inode it had when opened.
    file: (std::path::PathBuf, (u64, u64)),
}

/// One op taken, with who waits for it.
type Taken = (Op, Reply);

impl Writer {
    pub(super) fn new(
        connection: Connection,
        messages: mpsc::Receiver<Message>,
        counters: Arc<Counters>,
        path: &std::path::Path,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let opened = std::fs::metadata(path)?;
        Ok(Self {
            connection,
            messages,
            counters,
            file: (path.to_path_buf(), (opened.dev(), opened.ino())),
        })
    }

    /// Serves until told to close or until every sender is gone (every op sent has
    /// then been committed and answered).
    pub(super) fn run(mut self) {
        while let Ok(first) = self.messages.recv() {
            let mut group = Vec::new();
            let mut linger_until = None;
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Message::Op(op, reply) => group.push((op, reply)),
                    Message::Close(done) => {
                        self.commit(group);
                        let _ = done.send(());
                        return;
                    }
                    #[cfg(test)]
                    Message::Hold(release) => {
                        self.commit(std::mem::take(&mut group));
                        let _ = release.recv();
                    }
                }
                next = if group.len() >= MAX_BATCH {
                    None
                } else if let Ok(message) = self.messages.try_recv() {
                    Some(message)
                } else if group
                    .iter()
                    .all(|(_, reply)| matches!(reply, Reply::Behind))
                {
                    // Nobody waits for any of these: gather what arrives for a moment
                    // more (at most BEHIND_LINGER after the group began to wait), so a
                    // steady stream of them costs far fewer commits, each an fsync. The
                    // first write someone waits for ends the wait.
                    let until = *linger_until.get_or_insert_with(|| Instant::now() + BEHIND_LINGER);
                    self.messages
                        .recv_timeout(until.saturating_duration_since(Instant::now()))
                        .ok()
                } else {
                    None
                };
            }
            self.commit(group);
        }
    }

    /// Runs `group` in one transaction and answers each op after the commit. If the
    /// group fails for a fault, each of its ops is tried again alone: a fault can be one
    /// write's (an insert that does not fit a full store), and the deletes beside it,
    /// which make room, must not fail with it, or a full store under load would never
    /// recover. What still fails is answered [`StoreUnavailable`].
    fn commit(&mut self, group: Vec<Taken>) {
        if group.is_empty() {
            return;
        }
        let behind: Vec<ExecutionId> = group
            .iter()
            .filter_map(|taken| match taken {
                (Op::Insert(execution), Reply::Behind) => Some(execution.record.id.clone()),
                _ => None,
            })
            .collect();
        let (ops, replies): (Vec<Op>, Vec<Reply>) = group.into_iter().unzip();
        match self.run_group(&ops) {
            Ok(done) => self.committed(done, replies),
            Err(error) if ops.len() > 1 => {
                tracing::debug!(%error, group = ops.len(), "a group of writes failed; each is tried alone");
                for (op, reply) in ops.iter().zip(replies) {
                    match self.run_group(std::slice::from_ref(op)) {
                        Ok(done) => self.committed(done, vec![reply]),
                        Err(error) => failed(&error, vec![reply]),
                    }
                }
            }
            Err(error) => failed(&error, replies),
        }
        for id in &behind {
            self.counters.behind.remove(id);
        }
    }

    /// Counts what a committed group did and answers its ops.
    fn committed(&self, (outcomes, records_delta): (Vec<Outcome>, isize), replies: Vec<Reply>) {
        let records = &self.counters.records;
        if records_delta >= 0 {
            records.fetch_add(records_delta.unsigned_abs(), Ordering::AcqRel);
        } else {
            records.fetch_sub(records_delta.unsigned_abs(), Ordering::AcqRel);
        }
        self.counters.commits.fetch_add(1, Ordering::AcqRel);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            answer(reply, outcome);
        }
    }

    /// The group's transaction: each op's outcome, and how the number of records
    /// changed, or the fault that rolled it all back. An op writes with one statement,
    /// after its checks, and SQLite undoes a statement that fails (a constraint) by
    /// itself, so a refused op leaves nothing behind without a savepoint of its own.
    fn run_group(&mut self, ops: &[Op]) -> rusqlite::Result<(Vec<Outcome>, isize)> {
        self.check_file()?;
        let result = self.run_transaction(ops);
        if result.is_err() && !self.connection.is_autocommit() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        result
    }

    fn run_transaction(&mut self, ops: &[Op]) -> rusqlite::Result<(Vec<Outcome>, isize)> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut records_delta = 0;
        for op in ops {
            match execute(&transaction, op) {
                Ok((done, delta)) => {
                    records_delta += delta;
                    outcomes.push(Ok(done));
                }
                Err(OpError::Sqlite(error)) if is_fault(&error) => return Err(error),
                Err(refused) => outcomes.push(Err(match refused {
                    OpError::Refused(refusal) => Failure::Refused(refusal),
                    OpError::Sqlite(error) => Failure::Unavailable(StoreUnavailable::new(error)),
                })),
            }
        }
        transaction.commit()?;
        Ok((outcomes, records_delta))
    }

    /// A fault if the database file is no longer the one opened (removed, or replaced
    /// by another): SQLite would go on writing to the file it has open, which no
    /// restart would ever read. Put back, the same file is written again.
    fn check_file(&self) -> rusqlite::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::metadata(&self.file.0).map(|m| (m.dev(), m.ino()));
        if now.as_ref().ok() == Some(&self.file.1) {
            return Ok(());
        }
        let how = match now {
            Err(_) => "was removed",
            Ok(_) => "was replaced by another file",
        };
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some(format!(
                "the database file {} {how} while the control plane served: put it back, or \
                 restart the control plane (which then starts from what the directory holds)",
                self.file.0.display()
            )),
        ))
    }
}

/// Answers every op of a group that could not be committed.
fn failed(error: &rusqlite::Error, replies: Vec<Reply>) {
    let behind = replies
        .iter()
        .filter(|reply| matches!(reply, Reply::Behind))
        .count();
    if behind > 0 {
        tracing::error!(
            %error,
            lost = behind,
            group = replies.len(),
            "the store could not commit writes nobody waited for; they are lost"
        );
    }
    let fault = StoreUnavailable::new(error);
    for reply in replies {
        // Those nobody waits for were counted in the log line above.
        if let Reply::Wait(sender) = reply {
            let _ = sender.send(Err(Failure::Unavailable(fault.clone())));
        }
    }
}

fn answer(reply: Reply, outcome: Outcome) {
    match reply {
        // The caller may have gone away; the op stands either way.
        Reply::Wait(sender) => {
            let _ = sender.send(outcome);
        }
        Reply::Behind => match outcome {
            Ok(_) | Err(Failure::Refused(Refusal::Stale { .. })) => {}
            Err(Failure::Refused(refusal)) => {
                tracing::warn!(?refusal, "the store refused a write nobody waited for");
            }
            // The op's own fault (a value that did not read back); a fault of the
            // whole group is logged once, with the group.
            Err(Failure::Unavailable(error)) => {
                tracing::error!(%error, "the store could not take a write nobody waited for");
            }
        },
    }
}
