//! The memory backend's records through their life, eviction and budget.
use super::*;

/// The store's own view of its writes, for these tests: inserts carry no work,
/// and a change answers the record it left.
impl MemoryExecutionStore {
    async fn put(&self, record: ExecutionRecord) -> Result<(), InsertError> {
        let work = ExecutionWork {
            input: Payload::string(""),
            metadata: Arc::default(),
            trace_id: TraceId::new("t"),
            idempotency_key: None,
        };
        let execution = StoredExecution { record, work };
        ExecutionStore::insert(self, execution, Durability::Committed).await
    }

    async fn change(
        &self,
        id: &ExecutionId,
        change: RecordChange,
    ) -> Result<ExecutionRecord, ApplyError> {
        self.apply_now(id, change)
    }
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn finished(version: u64, at: u64) -> RecordChange {
    RecordChange {
        version,
        kind: ChangeKind::Finished {
            state: ExecutionState::Success,
            at: t(at),
            output: Some(Payload::string("ok")),
            error: None,
            cold_start: false,
            init_duration_ms: None,
        },
    }
}

async fn store_with(ids: &[&str]) -> MemoryExecutionStore {
    let store = MemoryExecutionStore::new(DurationMs(100));
    for id in ids {
        store
            .put(ExecutionRecord::queued(
                ExecutionId::new(*id),
                FunctionName::parse("f").unwrap(),
                t(0),
            ))
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn a_record_moves_through_its_life() {
    let store = store_with(&["a"]).await;
    let id = ExecutionId::new("a");
    store
        .change(
            &id,
            RecordChange {
                version: 1,
                kind: ChangeKind::Started {
                    attempt: 1,
                    at: t(5),
                },
            },
        )
        .await
        .unwrap();
    store
        .change(
            &id,
            RecordChange {
                version: 2,
                kind: ChangeKind::Requeued {
                    attempt: 2,
                    at: t(7),
                },
            },
        )
        .await
        .unwrap();
    store
        .change(
            &id,
            RecordChange {
                version: 3,
                kind: ChangeKind::Started {
                    attempt: 2,
                    at: t(10),
                },
            },
        )
        .await
        .unwrap();
    let done = store.change(&id, finished(4, 30)).await.unwrap();
    let status = done.to_status();
    assert_eq!(
        (status.status, status.attempt),
        (ExecutionState::Success, 2)
    );
    assert_eq!(
        (status.queue_wait_ms, status.duration_ms),
        (Some(3), Some(20))
    );
}

#[tokio::test]
async fn stale_changes_are_dropped_and_terminal_records_never_move() {
    let store = store_with(&["a"]).await;
    let id = ExecutionId::new("a");
    store.change(&id, finished(2, 1)).await.unwrap();
    let late_start = RecordChange {
        version: 1,
        kind: ChangeKind::Started {
            attempt: 1,
            at: t(0),
        },
    };
    assert_eq!(
        store.change(&id, late_start).await,
        Err(ApplyError::Stale {
            change: 1,
            current: 2
        })
    );
    let newer_start = RecordChange {
        version: 3,
        kind: ChangeKind::Started {
            attempt: 1,
            at: t(0),
        },
    };
    assert!(matches!(
        store.change(&id, newer_start).await,
        Err(ApplyError::InvalidTransition(_))
    ));
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().state,
        ExecutionState::Success
    );
}

#[tokio::test]
async fn duplicates_and_unknown_ids_are_refused() {
    let store = store_with(&["a"]).await;
    let again = ExecutionRecord::queued(
        ExecutionId::new("a"),
        FunctionName::parse("f").unwrap(),
        t(0),
    );
    assert!(store.put(again).await.is_err());
    assert!(matches!(
        store.change(&ExecutionId::new("zz"), finished(1, 0)).await,
        Err(ApplyError::Unknown(_))
    ));
}

#[tokio::test]
async fn finished_records_expire_after_the_ttl_and_live_ones_stay() {
    let store = store_with(&["a", "b", "live"]).await;
    store
        .change(&ExecutionId::new("a"), finished(1, 10))
        .await
        .unwrap();
    store
        .change(&ExecutionId::new("b"), finished(1, 50))
        .await
        .unwrap();
    assert_eq!(store.evict_expired(t(109)).await.unwrap(), 0);
    assert_eq!(store.evict_expired(t(110)).await.unwrap(), 1);
    assert!(store.get(&ExecutionId::new("a")).await.unwrap().is_none());
    assert_eq!(store.evict_expired(t(10_000)).await.unwrap(), 1);
    assert!(
        store
            .get(&ExecutionId::new("live"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn past_the_memory_budget_the_oldest_finished_records_go_first() {
    let one = {
        let mut record = ExecutionRecord::queued(
            ExecutionId::new("a"),
            FunctionName::parse("f").unwrap(),
            t(0),
        );
        record.state = ExecutionState::Success;
        record.output = Some(Payload::string("ok"));
        retained_bytes(&record)
    };
    // Room for three finished records.
    let store = MemoryExecutionStore::with_budget(DurationMs(60_000), 3 * one + one / 2);
    for id in ["a", "b", "c", "d", "e", "live"] {
        let record = ExecutionRecord::queued(
            ExecutionId::new(id),
            FunctionName::parse("f").unwrap(),
            t(0),
        );
        store.put(record).await.unwrap();
    }
    for (n, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        store
            .change(&ExecutionId::new(id), finished(1, n as u64))
            .await
            .unwrap();
    }
    for (id, kept) in [
        ("a", false),
        ("b", false),
        ("c", true),
        ("d", true),
        ("e", true),
        ("live", true),
    ] {
        assert_eq!(
            store.get(&ExecutionId::new(id)).await.unwrap().is_some(),
            kept,
            "{id}"
        );
    }
    let stats = store.stats();
    assert_eq!(stats.evicted_over_budget, 2);
    assert_eq!(stats.records, 4);
    assert_eq!(stats.finished_bytes, 3 * one);

    // The TTL sweep takes the rest and gives their bytes back.
    assert_eq!(store.evict_expired(t(1_000_000)).await.unwrap(), 3);
    assert_eq!(store.stats().finished_bytes, 0);
}
