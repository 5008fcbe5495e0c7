//! Where the control plane keeps what it must remember: the embedded SQLite store in
//! `--data-dir` (the default: durable), or memory (`--store memory`: nothing survives
//! a restart; for tests and benchmarks). Opened before anything is served, so a store
//! that cannot be used stops the start with a message that says what to do.

use std::path::PathBuf;
use std::sync::Arc;

use clap::ValueEnum;
use core_types::{Clock, Dispatch, SystemClock};
use http_api::{RuntimeConfig, RuntimeConfigStore};
use scheduler::{MemoryLimits, SchedulerParts};
use store::{ConfigStore, SqliteOptions, SqliteStore, StoredConfig};

/// Which store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// Durable, embedded, in `--data-dir`.
    Sqlite,
    /// In memory: nothing survives a restart (tests, benchmarks).
    Memory,
}

/// The store's flags.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreFlags {
    /// Where executions, idempotency keys, functions and the runtime configuration are
    /// kept: `sqlite` (durable, embedded, in --data-dir) or `memory` (nothing survives
    /// a restart).
    #[arg(
        long = "store",
        env = "CONTROL_PLANE_STORE",
        value_enum,
        default_value = "sqlite"
    )]
    pub(crate) kind: StoreKind,
    /// The directory of the embedded store (and of anything else that must survive a
    /// restart); created if missing.
    #[arg(long, env = "CONTROL_PLANE_DATA_DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,
    /// The most the embedded store's database may grow to (e.g. `2GiB`); past it,
    /// writes are refused with 503 STORE_UNAVAILABLE until eviction frees room.
    /// Default: no cap but the disk's.
    #[arg(long, env = "CONTROL_PLANE_STORE_MAX_BYTES")]
    pub(crate) store_max_bytes: Option<bytesize::ByteSize>,
}

/// The stores, open.
pub(crate) struct Opened {
    /// The scheduler's parts over them.
    pub(crate) parts: SchedulerParts,
    /// Where runtime-configuration changes go.
    pub(crate) runtime_store: RuntimeConfigStore,
    /// The runtime configuration a previous run kept, with its revision.
    pub(crate) kept_runtime: Option<(RuntimeConfig, u64)>,
    /// The embedded store, to close (flush and release its directory) at the end.
    pub(crate) sqlite: Option<SqliteStore>,
    /// What to tell the user about where the data lives.
    pub(crate) description: String,
}

/// Opens the store `flags` name.
pub(crate) async fn open(
    flags: &StoreFlags,
    limits: MemoryLimits,
    dispatch: Arc<dyn Dispatch>,
) -> Result<Opened, String> {
    let in_memory = SchedulerParts::in_memory_with(dispatch, limits);
    match flags.kind {
        StoreKind::Memory => Ok(Opened {
            parts: in_memory,
            runtime_store: RuntimeConfigStore::default(),
            kept_runtime: None,
            sqlite: None,
            description: "memory (nothing survives a restart)".to_owned(),
        }),
        StoreKind::Sqlite => {
            let options = SqliteOptions {
                execution_ttl: limits.execution_ttl,
                idempotency_ttl: limits.idempotency_ttl,
                idempotency_memory_budget: limits.idempotency_memory_budget,
                max_bytes: flags.store_max_bytes.map(|size| size.as_u64()),
            };
            let sqlite = SqliteStore::open(&flags.data_dir, options, SystemClock.now())
                .map_err(|error| format!("--data-dir: {error}"))?;
            let kept = sqlite
                .load()
                .await
                .map_err(|error| format!("--data-dir: {error}"))?;
            let kept_runtime = kept.map(kept_config).transpose()?;
            let description = format!("sqlite at {}", sqlite.path().display());
            Ok(Opened {
                parts: SchedulerParts {
                    executions: Arc::new(sqlite.clone()),
                    idempotency: Arc::new(sqlite.clone()),
                    registry: Arc::new(sqlite.clone()),
                    ..in_memory
                },
                runtime_store: RuntimeConfigStore(Arc::new(sqlite.clone())),
                kept_runtime,
                sqlite: Some(sqlite),
                description,
            })
        }
    }
}

/// The kept runtime configuration, read back.
fn kept_config(kept: StoredConfig) -> Result<(RuntimeConfig, u64), String> {
    let config = RuntimeConfig::from_document(&kept.document).map_err(|error| {
        format!(
            "--data-dir: the kept runtime configuration (revision {}) cannot be read ({error}); \
             move the data directory away to start afresh",
            kept.revision
        )
    })?;
    Ok((config, kept.revision))
}
