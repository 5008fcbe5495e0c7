//! What a user of the SQLite store notices: what survives a restart, what a fault
//! leaves behind, and what refuses to open.

mod faults;
mod ports;

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};

use core_types::{
    DurationMs, ErrorCode, ErrorInfo, ExecutionId, ExecutionMode, ExecutionState, FunctionName,
    FunctionSpec, IdempotencyKey, Payload, Timestamp, TraceId,
};
use futures::future::join_all;
use serde_json::json;

use super::{Message, SqliteOptions, SqliteStore, schema};
use crate::{
    AlreadyRegistered, ApplyError, ChangeKind, ClaimOutcome, ConfigStore, Durability,
    ExecutionRecord, ExecutionStore, ExecutionWork, Fingerprint, FunctionRegistry,
    IdempotencyStore, InsertError, OpenError, RecordChange, RegisteredFunction, ReplicaTarget,
    StoreUnavailable, StoredConfig, StoredExecution,
};

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn id(text: &str) -> ExecutionId {
    ExecutionId::new(text)
}

fn f() -> FunctionName {
    FunctionName::parse("f").unwrap()
}

fn execution(name: &str, at: u64, input: Payload) -> StoredExecution {
    StoredExecution {
        record: ExecutionRecord::queued(id(name), f(), t(at)),
        work: ExecutionWork {
            input,
            metadata: Arc::new(BTreeMap::from([("k".to_owned(), format!("v-{name}"))])),
            trace_id: TraceId::new(format!("trace-{name}")),
            idempotency_key: Some(IdempotencyKey::new(format!("key-{name}"))),
        },
    }
}

fn queued(name: &str, at: u64) -> StoredExecution {
    execution(name, at, Payload::from_value(&json!({"n": name})))
}

fn started(version: u64, attempt: u32, at: u64) -> RecordChange {
    RecordChange {
        version,
        kind: ChangeKind::Started { attempt, at: t(at) },
    }
}

fn requeued(version: u64, attempt: u32, at: u64) -> RecordChange {
    RecordChange {
        version,
        kind: ChangeKind::Requeued { attempt, at: t(at) },
    }
}

fn finished(version: u64, at: u64, output: Payload) -> RecordChange {
    RecordChange {
        version,
        kind: ChangeKind::Finished {
            state: ExecutionState::Success,
            at: t(at),
            output: Some(output),
            error: None,
            cold_start: true,
            init_duration_ms: Some(42),
        },
    }
}

fn failed(version: u64, at: u64) -> RecordChange {
    RecordChange {
        version,
        kind: ChangeKind::Finished {
            state: ExecutionState::Error,
            at: t(at),
            output: None,
            error: Some(ErrorInfo::new(ErrorCode::FunctionError, "it broke")),
            cold_start: false,
            init_duration_ms: None,
        },
    }
}

fn options() -> SqliteOptions {
    SqliteOptions {
        execution_ttl: DurationMs(1_000),
        idempotency_ttl: DurationMs(1_000),
        ..SqliteOptions::default()
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path(), options(), t(0)).unwrap()
}

fn function(spec: serde_json::Value, effective_mode: ExecutionMode) -> RegisteredFunction {
    RegisteredFunction {
        effective_mode,
        ..RegisteredFunction::new(Arc::new(FunctionSpec::from_json(&spec).unwrap()), t(7))
    }
}

impl SqliteStore {
    /// Stops the writer after what it has taken; everything sent until the returned
    /// sender is dropped is committed as one group.
    fn hold(&self) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel();
        let sender = self.inner.sender.read().unwrap();
        sender.as_ref().unwrap().send(Message::Hold(held)).unwrap();
        release
    }

    fn page_count(&self) -> i64 {
        self.read(|connection| connection.pragma_query_value(None, "page_count", |row| row.get(0)))
            .unwrap()
    }

    fn work_columns_are_null(&self, execution: &str) -> bool {
        self.read(|connection| {
            connection.query_row(
                "SELECT input IS NULL AND metadata IS NULL AND trace_id IS NULL
                     AND idempotency_key IS NULL
                 FROM executions WHERE id = ?1",
                [execution],
                |row| row.get(0),
            )
        })
        .unwrap()
    }
}

fn records(store: &SqliteStore) -> usize {
    ExecutionStore::stats(store).records
}

async fn evict(store: &SqliteStore, now: Timestamp) -> Result<usize, StoreUnavailable> {
    ExecutionStore::evict_expired(store, now).await
}

async fn claim(store: &SqliteStore, key: &str, fingerprint: u8, now: u64) -> ClaimOutcome {
    let key = IdempotencyKey::new(key);
    store
        .claim(&f(), &key, Fingerprint([fingerprint; 32]), t(now))
        .await
        .unwrap()
}

#[tokio::test]
async fn everything_survives_a_close_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let committed = Durability::Committed;
    for (name, at) in [
        ("done", 1),
        ("broken", 2),
        ("late", 30),
        ("early", 10),
        ("retry", 5),
    ] {
        store.insert(queued(name, at), committed).await.unwrap();
    }
    let output = Payload::from_value(&json!({"answer": [1, 2, 3], "text": "ünïcode"}));
    store
        .apply(&id("done"), started(1, 1, 3), committed)
        .await
        .unwrap();
    store
        .apply(&id("done"), finished(2, 9, output.clone()), committed)
        .await
        .unwrap();
    store
        .apply(&id("broken"), failed(1, 4), committed)
        .await
        .unwrap();
    // Its retry enters the queue after `early` and before `late`.
    store
        .apply(&id("retry"), started(1, 1, 6), committed)
        .await
        .unwrap();
    store
        .apply(&id("retry"), requeued(2, 2, 20), committed)
        .await
        .unwrap();

    let ClaimOutcome::Acquired(token) = claim(&store, "k", 1, 0).await else {
        panic!("a free key");
    };
    store.publish(token, id("done"), t(0)).await.unwrap();
    let full = function(
        json!({"name": "g", "image": "i", "executionMode": "POOL", "endpointUrl": "http://h:1"}),
        ExecutionMode::Pool,
    );
    store.register(full.clone()).await.unwrap();
    let config = StoredConfig {
        revision: 2,
        document: r#"{"rateLimit":5}"#.to_owned(),
    };
    assert!(store.save(config.clone(), 1).await.unwrap());
    let ids = ["done", "broken", "retry"].map(id);
    let before: Vec<_> = join_all(ids.iter().map(|id| store.get(id)))
        .await
        .into_iter()
        .map(|record| record.unwrap().unwrap())
        .collect();
    store.close().await;

    let store = SqliteStore::open(dir.path(), options(), t(500)).unwrap();
    for record in &before {
        assert_eq!(store.get(&record.id).await.unwrap().as_ref(), Some(record));
    }
    let done = &before[0];
    assert_eq!(
        (
            done.state,
            done.output.as_ref(),
            done.cold_start,
            done.init_duration_ms
        ),
        (ExecutionState::Success, Some(&output), true, Some(42))
    );
    assert_eq!(
        before[1].error,
        Some(ErrorInfo::new(ErrorCode::FunctionError, "it broke"))
    );
    let unfinished = store.unfinished().await.unwrap();
    let order: Vec<_> = unfinished.iter().map(|e| e.record.id.as_str()).collect();
    assert_eq!(
        order,
        ["early", "retry", "late"],
        "by when each entered its queue"
    );
    assert_eq!(
        unfinished[2],
        queued("late", 30),
        "the work comes back whole"
    );
    assert_eq!(
        (unfinished[1].record.attempt, unfinished[1].record.version),
        (2, 2)
    );
    assert_eq!(records(&store), 5);

    assert_eq!(
        claim(&store, "k", 1, 500).await,
        ClaimOutcome::Existing(id("done"))
    );
    assert_eq!(claim(&store, "k", 2, 500).await, ClaimOutcome::Reused);
    assert_eq!(IdempotencyStore::stats(&store).keys, 1);
    assert_eq!(store.list().await.unwrap(), [full]);
    assert_eq!(store.load().await.unwrap(), Some(config));
    store.close().await;

    // Past its TTL the key is not restored.
    let store = SqliteStore::open(dir.path(), options(), t(1_000)).unwrap();
    assert!(matches!(
        claim(&store, "k", 2, 1_000).await,
        ClaimOutcome::Acquired(_)
    ));
}

#[tokio::test]
async fn concurrent_writes_share_their_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let before = store.commits();
    let names: Vec<String> = (0..200).map(|n| format!("e{n}")).collect();
    let inserts = names
        .iter()
        .map(|name| store.insert(queued(name, 1), Durability::Committed));
    assert!(join_all(inserts).await.iter().all(Result::is_ok));
    let commits = store.commits() - before;
    assert!(
        commits <= 20,
        "200 concurrent writes took {commits} transactions"
    );
    assert_eq!(records(&store), 200);
    assert_eq!(store.unfinished().await.unwrap().len(), 200);
}

#[tokio::test]
async fn a_refused_op_fails_alone_in_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for name in ["a", "b", "c"] {
        store
            .insert(queued(name, 1), Durability::Committed)
            .await
            .unwrap();
    }
    store
        .apply(&id("c"), started(5, 1, 2), Durability::Committed)
        .await
        .unwrap();
    let commits = store.commits();
    let (a, c, zz) = (id("a"), id("c"), id("zz"));
    let release = store.hold();
    let (good, stale, invalid, unknown, duplicate, fresh, ()) = futures::join!(
        store.apply(&a, started(1, 1, 2), Durability::Committed),
        store.apply(&c, started(4, 1, 2), Durability::Committed),
        store.apply(&c, started(6, 1, 3), Durability::Committed),
        store.apply(&zz, started(1, 1, 2), Durability::Committed),
        store.insert(queued("b", 1), Durability::Committed),
        store.insert(queued("d", 1), Durability::Committed),
        async { drop(release) },
    );
    assert_eq!(good, Ok(()));
    assert_eq!(
        stale,
        Err(ApplyError::Stale {
            change: 4,
            current: 5
        })
    );
    assert!(matches!(invalid, Err(ApplyError::InvalidTransition(_))));
    assert_eq!(unknown, Err(ApplyError::Unknown(id("zz"))));
    assert_eq!(duplicate, Err(InsertError::Duplicate(id("b"))));
    assert_eq!(fresh, Ok(()));
    assert_eq!(store.commits() - commits, 1, "one group, one commit");
    let a = store.get(&id("a")).await.unwrap().unwrap();
    assert_eq!((a.state, a.version), (ExecutionState::Running, 1));
    let c = store.get(&id("c")).await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.version, c.started_at),
        (ExecutionState::Running, 5, Some(t(2)))
    );
    assert_eq!(records(&store), 4);
}

#[tokio::test]
async fn writes_nobody_waits_for_land_in_order_and_survive_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for n in 0..50 {
        let name = format!("e{n}");
        store
            .insert(queued(&name, n), Durability::Behind)
            .await
            .unwrap();
        store
            .apply(&id(&name), started(1, 1, n), Durability::Behind)
            .await
            .unwrap();
    }
    // Handed over after the behind ones: applied after them, so it finds its record.
    store
        .apply(
            &id("e49"),
            finished(2, 60, Payload::string("ok")),
            Durability::Committed,
        )
        .await
        .unwrap();
    store.close().await;
    let store = open(&dir);
    let unfinished = store.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 49);
    assert!(
        unfinished
            .iter()
            .all(|e| e.record.state == ExecutionState::Running)
    );
    assert_eq!(
        store.get(&id("e49")).await.unwrap().unwrap().state,
        ExecutionState::Success
    );
}

#[tokio::test]
async fn a_record_handed_over_behind_is_readable_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // The writer waits: nothing handed over from now on is committed yet.
    let release = store.hold();
    store
        .insert(queued("early", 1), Durability::Behind)
        .await
        .unwrap();
    store
        .apply(&id("early"), started(1, 1, 2), Durability::Behind)
        .await
        .unwrap();
    let commits = store.commits();
    let read = store.get(&id("early")).await.unwrap().unwrap();
    assert_eq!(
        read.state,
        ExecutionState::Running,
        "as handed over, at once"
    );
    assert_eq!(store.commits(), commits, "not committed yet");
    drop(release);
    store.close().await;
    let store = open(&dir);
    assert_eq!(
        store.get(&id("early")).await.unwrap().unwrap().state,
        ExecutionState::Running
    );
}

#[tokio::test]
async fn dropping_the_last_handle_commits_and_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let clone = store.clone();
    assert_eq!(
        SqliteStore::open(dir.path(), options(), t(0)).unwrap_err(),
        OpenError::InUse {
            path: dir.path().to_owned()
        },
        "one control plane per data directory"
    );
    clone
        .insert(queued("a", 1), Durability::Behind)
        .await
        .unwrap();
    drop(store);
    drop(clone);
    let store = open(&dir);
    assert!(store.get(&id("a")).await.unwrap().is_some());
}

#[tokio::test]
async fn a_closed_store_is_one_file_and_refuses_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .insert(queued("a", 1), Durability::Committed)
        .await
        .unwrap();
    assert!(
        store.get(&id("a")).await.unwrap().is_some(),
        "a reader is open"
    );
    let other = store.clone();
    store.close().await;
    store.close().await;
    // The log was checkpointed into the database: the file alone is the whole store,
    // to copy as a backup.
    let wal = dir.path().join(format!("{}-wal", schema::DATABASE_FILE));
    assert!(!wal.exists(), "{wal:?} is left");
    let closed = StoreUnavailable::new("the store is closed");
    assert_eq!(
        other.insert(queued("b", 1), Durability::Committed).await,
        Err(InsertError::Unavailable(closed.clone()))
    );
    assert_eq!(other.get(&id("a")).await, Err(closed.clone()));
    assert_eq!(other.load().await, Err(closed.clone()));
    assert_eq!(evict(&other, t(10_000)).await, Err(closed));
    // The directory is free for the next store, and it has everything.
    let store = open(&dir);
    assert!(store.get(&id("a")).await.unwrap().is_some());
}
