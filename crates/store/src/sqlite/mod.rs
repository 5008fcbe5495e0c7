//! The embedded durable backend: one SQLite database in the data directory, behind all
//! four ports.
//!
//! Writes go to [the one writer](writer), a thread that owns the only write connection
//! and commits what is waiting in one transaction (group commit: N concurrent writes
//! cost one fsync). Reads go through a small pool of read-only connections: with the
//! database in WAL mode they never block the writer, nor it them. Idempotency claims
//! are answered from memory ([`MemoryIdempotencyStore`], restored from the database at
//! open); only their publication, forgetting and expiry are written.

mod ops;
mod ports;
mod rows;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;

use core_types::{DurationMs, Timestamp};
use rusqlite::Connection;
use tokio::sync::oneshot;

pub use schema::OpenError;
use writer::{Counters, Done, Failure, Message, Op, Outcome, Reply, Writer};

use crate::{Durability, MemoryIdempotencyStore, StoreUnavailable};

/// How a [`SqliteStore`] keeps what it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How long a finished execution's record is kept.
    pub execution_ttl: DurationMs,
    /// How long a published idempotency key is remembered.
    pub idempotency_ttl: DurationMs,
    /// The memory budget of the published keys kept in memory (see
    /// [`MemoryIdempotencyStore::with_budget`]); past it the oldest are forgotten early.
    pub idempotency_memory_budget: usize,
    /// The most bytes the database file may take (whole pages; `None`: no cap). Writes
    /// that would grow it further fail with [`StoreUnavailable`] and change nothing. The
    /// write-ahead log comes on top (up to a few MiB between checkpoints), and a file
    /// already larger is capped where it is.
    pub max_bytes: Option<u64>,
}

impl Default for SqliteOptions {
    /// Five-minute TTLs, no memory budget, no size cap.
    fn default() -> Self {
        Self {
            execution_ttl: DurationMs(5 * 60 * 1000),
            idempotency_ttl: DurationMs(5 * 60 * 1000),
            idempotency_memory_budget: usize::MAX,
            max_bytes: None,
        }
    }
}

/// Idle read connections kept for the next read; more are opened when reads overlap and
/// closed after.
const IDLE_READERS: usize = 4;

/// The store in one data directory: `dir/control-plane.sqlite3`, in WAL mode with
/// `synchronous=FULL`, locked against a second control plane while open. Cheap to
/// clone: every clone is a handle on the same store, and the writer thread stops (after
/// committing what was handed over) at [`close`](Self::close) or when the last handle
/// drops.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    /// `None` once closed. Sending needs only the read lock (and never waits).
    sender: RwLock<Option<mpsc::Sender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    claims: MemoryIdempotencyStore,
    /// The directory's lock, released when the store closes.
    lock: Mutex<Option<File>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .field("closed", &self.inner.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

fn closed() -> StoreUnavailable {
    StoreUnavailable::new("the store is closed")
}

/// An answer no op of that kind gives (the writer's answers are typed by op only
/// loosely); reported as a fault rather than trusted.
fn unexpected(what: impl fmt::Debug) -> StoreUnavailable {
    StoreUnavailable::new(format!("the store's writer answered {what:?}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteStore {
    /// Opens the store in `dir` (creating the directory and the database if missing),
    /// checks the database, brings its schema up to date, restores the idempotency keys
    /// still valid at `now`, and starts the writer thread.
    pub fn open(dir: &Path, options: SqliteOptions, now: Timestamp) -> Result<Self, OpenError> {
        let opened = schema::open(dir, options.max_bytes)?;
        let path = opened.path;
        let read_failed = |error: rusqlite::Error| OpenError::Corrupt {
            path: path.clone(),
            detail: error.to_string(),
        };
        let records: i64 = opened
            .connection
            .query_row("SELECT count(*) FROM executions", [], |row| row.get(0))
            .map_err(read_failed)?;
        let claims = MemoryIdempotencyStore::with_budget(
            options.idempotency_ttl,
            options.idempotency_memory_budget,
        );
        restore_claims(&opened.connection, &claims, now).map_err(read_failed)?;

        let counters = Arc::new(Counters::default());
        counters
            .records
            .store(usize::try_from(records).unwrap_or(0), Ordering::Release);
        let (sender, messages) = mpsc::channel();
        let writer = Writer::new(opened.connection, messages, Arc::clone(&counters), &path)
            .map_err(|error| OpenError::Unwritable {
                path: path.clone(),
                detail: error.to_string(),
            })?;
        let handle = spawn_writer(writer).map_err(|error| OpenError::Unwritable {
            path: path.clone(),
            detail: format!("cannot start the store's writer thread: {error}"),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                options,
                sender: RwLock::new(Some(sender)),
                writer: Mutex::new(Some(handle)),
                readers: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                counters,
                claims,
                lock: Mutex::new(Some(opened.lock)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Transactions committed since open: with group commit, fewer than the writes.
    pub fn commits(&self) -> u64 {
        self.inner.counters.commits.load(Ordering::Acquire)
    }

    /// Commits everything handed over so far (also [`Durability::Behind`] writes), stops
    /// the writer thread, closes the database and releases the directory. Every later
    /// call on any handle answers [`StoreUnavailable`]. Closing twice is harmless.
    pub async fn close(&self) {
        // The readers go first, so that the writer's connection is the last one and
        // its close checkpoints the log into the database file.
        self.inner.close_readers();
        let flushed = {
            let mut sender = self
                .inner
                .sender
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            sender.take().and_then(|sender| {
                let (done, flushed) = oneshot::channel();
                sender.send(Message::Close(done)).ok().map(|()| flushed)
            })
        };
        if let Some(flushed) = flushed {
            // Err: the writer is gone already (it panicked); joining tells.
            let _ = flushed.await;
        }
        self.inner.shut_down();
    }

    /// Hands `op` to the writer; waits for its commit unless `durability` is
    /// [`Durability::Behind`].
    async fn write(&self, op: Op, durability: Durability) -> Outcome {
        let answer = {
            let sender = self
                .inner
                .sender
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let sender = sender
                .as_ref()
                .ok_or_else(|| Failure::Unavailable(closed()))?;
            let (reply, answer) = match durability {
                Durability::Committed => {
                    let (reply, answer) = oneshot::channel();
                    (Reply::Wait(reply), Some(answer))
                }
                Durability::Behind => (Reply::Behind, None),
            };
            sender
                .send(Message::Op(op, reply))
                .map_err(|_| Failure::Unavailable(closed()))?;
            answer
        };
        match answer {
            None => Ok(Done::Unit),
            Some(answer) => answer
                .await
                .unwrap_or_else(|_| Err(Failure::Unavailable(closed()))),
        }
    }

    /// Runs `read` on a read connection.
    ///
    /// Reads are short blocking calls made inline, not awaited: on a local WAL database
    /// a lookup by key takes microseconds and never waits for the writer. A networked
    /// backend would await its reads instead.
    fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreUnavailable> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let idle = lock(&inner.readers).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => schema::open_reader(&inner.path).map_err(StoreUnavailable::new)?,
        };
        // A connection that failed is dropped, not pooled: the next read opens afresh.
        let value = read(&connection).map_err(StoreUnavailable::new)?;
        let mut readers = lock(&inner.readers);
        if readers.len() < IDLE_READERS && !inner.closed.load(Ordering::Acquire) {
            readers.push(connection);
        }
        Ok(value)
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the store's one writer thread: owned by the SqliteStore, which joins it in close() and when the last handle drops"
)]
fn spawn_writer(writer: Writer) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer.run())
}

/// Puts every published key still valid at `now` back in memory, oldest expiry first
/// (the memory store's expiry order).
fn restore_claims(
    connection: &Connection,
    claims: &MemoryIdempotencyStore,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let sql = format!(
        "SELECT {} FROM idempotency WHERE expires_at > ?1 ORDER BY expires_at",
        rows::CLAIM_COLUMNS
    );
    let mut statement = connection.prepare(&sql)?;
    let mut found = statement.query([rows::millis(now)])?;
    while let Some(row) = found.next()? {
        match rows::claim(row) {
            Ok(claim) => claims.restore(
                claim.function,
                claim.key,
                claim.fingerprint,
                claim.execution,
                claim.expires_at,
                now,
            ),
            // One unreadable key is forgotten rather than keeping the store shut.
            Err(error) => tracing::warn!(%error, "an idempotency key did not read back"),
        }
    }
    Ok(())
}

impl Inner {
    /// Closes the readers, stops the writer (after it has committed what was handed
    /// over) and releases the directory.
    fn shut_down(&self) {
        self.close_readers();
        // Dropping the sender (if close() did not) lets the writer drain and stop.
        drop(
            self.sender
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
        lock(&self.lock).take();
    }

    /// Refuses every later read and closes the idle read connections (one in use is
    /// closed when its read is done).
    fn close_readers(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.readers).clear();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shut_down();
    }
}
