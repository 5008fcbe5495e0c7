//! Opening the database: the data directory and its lock, the pragmas, the start-up
//! checks and the migrations.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

/// The database file inside the data directory.
pub(super) const DATABASE_FILE: &str = "control-plane.sqlite3";

/// The lock file inside the data directory, held while a store is open.
const LOCK_FILE: &str = "control-plane.lock";

/// `PRAGMA application_id` of a control-plane database ("NFCP"): tells our file from
/// another program's SQLite database.
pub(super) const APPLICATION_ID: i32 = 0x4E46_4350;

/// How long a connection waits for a lock before it reports the database busy.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL is truncated back to this size after a checkpoint, so a burst of writes does
/// not leave a large file behind.
const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// The migrations, in order: migration `n` (0-based) takes the schema from version `n`
/// to `n + 1`. Never edit one that has shipped; add the next.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the tables.
    //
    // `seq` (the rowid) orders executions that entered their queue in the same
    // millisecond. A new rowid is one past the largest, so it is later than every row
    // still there (AUTOINCREMENT would only add a write per insert to keep deleted
    // ones unused). The work columns are NULL once an execution is terminal.
    "CREATE TABLE executions (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        function TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        version INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        enqueued_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        output TEXT,
        error_code TEXT,
        error_message TEXT,
        cold_start INTEGER NOT NULL,
        init_duration_ms INTEGER,
        input TEXT,
        metadata TEXT,
        trace_id TEXT,
        idempotency_key TEXT
    );
    CREATE INDEX executions_unfinished ON executions (enqueued_at, seq)
        WHERE state IN ('queued', 'running');
    CREATE INDEX executions_finished ON executions (finished_at)
        WHERE finished_at IS NOT NULL;
    CREATE TABLE idempotency (
        function TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint BLOB NOT NULL CHECK (length(fingerprint) = 32),
        execution TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (function, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_expiry ON idempotency (expires_at);
    CREATE TABLE functions (
        name TEXT NOT NULL PRIMARY KEY,
        spec TEXT NOT NULL,
        effective_mode TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE runtime_config (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL,
        document TEXT NOT NULL
    );",
    // 2: what a function's deployment keeps besides its spec (`DeploymentColumn`:
    // its degradation reason and replica target), as one JSON document.
    "ALTER TABLE functions ADD COLUMN deployment TEXT",
];

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Why a data directory could not be opened as a store. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The database was written by a newer version of the control plane.
    #[error(
        "{} was written by a newer control plane (schema {found}, this one knows \
         {supported}): run the newer version, or point --data-dir elsewhere",
        .path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// The file is not a control-plane database, or it is damaged.
    #[error(
        "{} is not a readable control-plane database ({detail}): restore it from a backup \
         or move it away to start empty",
        .path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite or the checks found.
        detail: String,
    },
    /// The directory or the database cannot be created or written.
    #[error(
        "cannot write to {} ({detail}): check its permissions and free space, or choose \
         another --data-dir",
        .path.display()
    )]
    Unwritable {
        /// The directory or file.
        path: PathBuf,
        /// What the system or SQLite said.
        detail: String,
    },
    /// Another store (another control plane) has the directory open.
    #[error(
        "{} is in use by another control plane: stop it, or point --data-dir elsewhere",
        .path.display()
    )]
    InUse {
        /// The data directory.
        path: PathBuf,
    },
}

/// The open database: the write connection, and the lock that keeps other processes
/// out of the directory while it is held.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) connection: Connection,
    pub(super) lock: File,
    pub(super) path: PathBuf,
}

/// Opens (creating if missing) the database in `dir`, checks it, brings its schema up
/// to date and returns its write connection.
pub(super) fn open(dir: &Path, max_bytes: Option<u64>) -> Result<Opened, OpenError> {
    let unwritable = |path: &Path, detail: &dyn std::fmt::Display| OpenError::Unwritable {
        path: path.to_owned(),
        detail: detail.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        // Say what is in the way rather than the system's "File exists".
        let is_file = std::fs::metadata(dir).is_ok_and(|m| !m.is_dir());
        let not_a_dir = "it is a file, not a directory";
        if is_file {
            unwritable(dir, &not_a_dir)
        } else {
            unwritable(dir, &e)
        }
    })?;
    let lock = lock_dir(dir)?;
    let path = dir.join(DATABASE_FILE);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(&path, e))?;
    check(&connection, &path)?;
    configure(&connection, max_bytes).map_err(|e| classify(&path, e))?;
    migrate(&connection, &path)?;
    Ok(Opened {
        connection,
        lock,
        path,
    })
}

/// Opens a read-only connection to the database at `path` (written by the store's
/// writer, in WAL mode: it never blocks the writer, nor the writer it).
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    Ok(connection)
}

/// Takes the directory's lock: two control planes writing one database would each
/// believe they own its executions.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::Unwritable {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: dir.to_owned(),
        }),
        Err(TryLockError::Error(e)) => Err(OpenError::Unwritable {
            path,
            detail: e.to_string(),
        }),
    }
}

/// What a SQLite error at start-up means for the user.
fn classify(path: &Path, error: rusqlite::Error) -> OpenError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path: path.to_owned(),
            detail: error.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => OpenError::InUse {
            path: path.parent().unwrap_or(path).to_owned(),
        },
        _ => OpenError::Unwritable {
            path: path.to_owned(),
            detail: error.to_string(),
        },
    }
}

/// The checks that change nothing: the file is a database, ours, not newer than this
/// build, and its pages are sound (`quick_check`: every page and index entry is
/// well-formed, without the full cross-check of `integrity_check`).
fn check(connection: &Connection, path: &Path) -> Result<(), OpenError> {
    let corrupt = |detail: String| OpenError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| classify(path, e))?;
    let application: i64 = connection
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(|e| classify(path, e))?;
    if application != 0 && application != i64::from(APPLICATION_ID) {
        return Err(corrupt(format!(
            "it belongs to another program (application id {application:#x})"
        )));
    }
    let found =
        u32::try_from(version).map_err(|_| corrupt(format!("unknown schema version {version}")))?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        let tables: i64 = connection
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(|e| classify(path, e))?;
        if tables > 0 {
            return Err(corrupt(
                "it holds tables but no control-plane schema version".to_owned(),
            ));
        }
    }
    let mut problems = Vec::new();
    connection
        .pragma_query(None, "quick_check", |row| {
            problems.push(row.get::<_, String>(0)?);
            Ok(())
        })
        .map_err(|e| classify(path, e))?;
    if problems != ["ok"] {
        problems.truncate(5);
        return Err(corrupt(format!("quick_check: {}", problems.join("; "))));
    }
    Ok(())
}

/// The write connection's pragmas: WAL (readers never block the writer), FULL sync (a
/// commit is on disk when it returns), and the size cap.
fn configure(connection: &Connection, max_bytes: Option<u64>) -> rusqlite::Result<()> {
    let mode: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "the database cannot use a write-ahead log (journal mode {mode})"
            )),
        ));
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    connection.pragma_update(None, "foreign_keys", false)?;
    // Every statement the writer runs stays prepared (there are about a dozen; the
    // default cache of 16 would leave little room).
    connection.set_prepared_statement_cache_capacity(64);
    if let Some(max_bytes) = max_bytes {
        // The cap counts whole pages; SQLite keeps it no lower than the file already
        // is. Writes that would grow the file past it fail with SQLITE_FULL.
        let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let pages = i64::try_from(max_bytes).unwrap_or(i64::MAX) / page_size.max(1);
        connection.pragma_update_and_check(None, "max_page_count", pages.max(1), |_| Ok(()))?;
    }
    Ok(())
}

/// Applies the migrations this database has not had, all in one transaction.
fn migrate(connection: &Connection, path: &Path) -> Result<(), OpenError> {
    let run = || -> rusqlite::Result<()> {
        let transaction =
            rusqlite::Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
        let version: i64 =
            transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let from = usize::try_from(version).unwrap_or(0);
        if from >= MIGRATIONS.len() {
            return Ok(());
        }
        for migration in &MIGRATIONS[from..] {
            transaction.execute_batch(migration)?;
        }
        transaction.pragma_update(None, "application_id", APPLICATION_ID)?;
        transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        transaction.commit()
    };
    run().map_err(|e| classify(path, e))
}
