//! The in-memory execution store with a hook around its writes: what the tests that
//! watch a store (count its refusals) or break it (slow it, make it panic) wrap,
//! written once instead of once per test.

use async_trait::async_trait;
use core_types::{ExecutionId, Timestamp};
use store::{
    ApplyError, Durability, ExecutionRecord, ExecutionStore, InsertError, MemoryExecutionStore,
    RecordChange, StoreUnavailable, StoredExecution,
};

/// What a test does around the store's writes. Every method does nothing by default.
pub(crate) trait WriteHook: Send + Sync + 'static {
    /// Before an insert reaches the store.
    fn before_insert(&self, _execution: &StoredExecution) {}
    /// Before a change reaches the store.
    fn before_apply(&self, _id: &ExecutionId, _change: &RecordChange) {}
    /// With what the store answered a change.
    fn after_apply(&self, _applied: &Result<(), ApplyError>) {}
}

/// `inner`, with `hook` around every write.
pub(crate) struct WatchedStore<H> {
    pub(crate) inner: MemoryExecutionStore,
    pub(crate) hook: H,
}

#[async_trait]
impl<H: WriteHook> ExecutionStore for WatchedStore<H> {
    async fn insert(
        &self,
        execution: StoredExecution,
        durability: Durability,
    ) -> Result<(), InsertError> {
        self.hook.before_insert(&execution);
        self.inner.insert(execution, durability).await
    }

    async fn get(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreUnavailable> {
        self.inner.get(id).await
    }

    async fn apply(
        &self,
        id: &ExecutionId,
        change: RecordChange,
        durability: Durability,
    ) -> Result<(), ApplyError> {
        self.hook.before_apply(id, &change);
        let applied = self.inner.apply(id, change, durability).await;
        self.hook.after_apply(&applied);
        applied
    }

    async fn remove(&self, id: &ExecutionId) -> Result<bool, StoreUnavailable> {
        self.inner.remove(id).await
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        self.inner.evict_expired(now).await
    }

    async fn unfinished(&self) -> Result<Vec<StoredExecution>, StoreUnavailable> {
        self.inner.unfinished().await
    }
}
