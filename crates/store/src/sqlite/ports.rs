//! The four ports on the SQLite store.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use core_types::{ExecutionId, FunctionName, IdempotencyKey, Timestamp};
use rusqlite::OptionalExtension;

use super::writer::{Done, Failure, Op, Outcome, Refusal};
use super::{SqliteStore, rows, unexpected};
use crate::{
    AlreadyRegistered, ApplyError, ClaimOutcome, ClaimStats, ClaimToken, ConfigStore, Durability,
    ExecutionRecord, ExecutionStore, Fingerprint, FunctionRegistry, IdempotencyStore, InsertError,
    MemoryIdempotencyStore, RecordChange, RegisteredFunction, RegistryError, StoreStats,
    StoreUnavailable, StoredConfig, StoredExecution,
};

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn insert(
        &self,
        execution: StoredExecution,
        durability: Durability,
    ) -> Result<(), InsertError> {
        let id = execution.record.id.clone();
        if durability == Durability::Behind {
            // Readable at once; the writer forgets it here once its group is done.
            let behind = &self.inner.counters.behind;
            behind.insert(id.clone(), execution.record.clone());
        }
        match self.write(Op::Insert(execution), durability).await {
            Ok(_) => Ok(()),
            Err(Failure::Refused(Refusal::Duplicate)) => Err(InsertError::Duplicate(id)),
            Err(Failure::Refused(other)) => Err(unexpected(other).into()),
            Err(Failure::Unavailable(error)) => Err(error.into()),
        }
    }

    async fn get(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreUnavailable> {
        if let Some(record) = self.inner.counters.behind.get(id) {
            return Ok(Some(record.clone()));
        }
        let sql = format!(
            "SELECT {} FROM executions WHERE id = ?1",
            rows::RECORD_COLUMNS
        );
        self.read(|connection| {
            connection
                .prepare_cached(&sql)?
                .query_row([id.as_str()], rows::record)
                .optional()
        })
    }

    async fn apply(
        &self,
        id: &ExecutionId,
        change: RecordChange,
        durability: Durability,
    ) -> Result<(), ApplyError> {
        if durability == Durability::Behind
            && let Some(mut record) = self.inner.counters.behind.get_mut(id)
        {
            // Kept true to what was handed over; the writer applies the same change.
            let _ = record.apply_change(change.clone());
        }
        match self.write(Op::Apply(id.clone(), change), durability).await {
            Ok(_) => Ok(()),
            Err(Failure::Refused(refusal)) => Err(match refusal {
                Refusal::Unknown => ApplyError::Unknown(id.clone()),
                Refusal::Stale { change, current } => ApplyError::Stale { change, current },
                Refusal::Invalid(invalid) => ApplyError::InvalidTransition(invalid),
                other => unexpected(other).into(),
            }),
            Err(Failure::Unavailable(error)) => Err(error.into()),
        }
    }

    async fn remove(&self, id: &ExecutionId) -> Result<bool, StoreUnavailable> {
        match self
            .write(Op::Remove(id.clone()), Durability::Committed)
            .await
        {
            Ok(Done::Removed(removed)) => Ok(removed),
            other => Err(fault(other)),
        }
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        // finished_at + ttl <= now, as finished_at <= now - ttl (none before the TTL
        // has passed since the epoch).
        let Some(cutoff) = now
            .as_millis()
            .checked_sub(self.inner.options.execution_ttl.0)
        else {
            return Ok(0);
        };
        let op = Op::EvictExecutions(Timestamp::from_millis(cutoff));
        match self.write(op, Durability::Committed).await {
            Ok(Done::Count(evicted)) => Ok(evicted),
            other => Err(fault(other)),
        }
    }

    async fn unfinished(&self) -> Result<Vec<StoredExecution>, StoreUnavailable> {
        let sql = format!(
            "SELECT {}, {} FROM executions WHERE state IN ('queued', 'running')
             ORDER BY enqueued_at, seq",
            rows::RECORD_COLUMNS,
            rows::WORK_COLUMNS
        );
        self.read(|connection| {
            connection
                .prepare(&sql)?
                .query_map([], rows::stored)?
                .collect()
        })
    }

    fn outlives_process(&self) -> bool {
        true
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            records: self.inner.counters.records.load(Ordering::Acquire),
            ..StoreStats::default()
        }
    }
}

/// The fault in an answer that is not the op's success.
fn fault(outcome: Outcome) -> StoreUnavailable {
    match outcome {
        Err(Failure::Unavailable(error)) => error,
        other => unexpected(other),
    }
}

/// Abandons a claim whose publication did not finish (its caller went away while the
/// write was in flight), so its waiters are not left waiting.
struct Publishing<'a> {
    claims: &'a MemoryIdempotencyStore,
    token: Option<ClaimToken>,
}

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.claims.abandon_now(token);
        }
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    /// From memory: a claim costs no query.
    async fn claim(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreUnavailable> {
        Ok(self
            .inner
            .claims
            .claim_now(function, key, fingerprint, now)
            .await)
    }

    /// Writes the key (committed), then publishes it in memory; on a fault the claim
    /// is abandoned.
    async fn publish(
        &self,
        token: ClaimToken,
        execution: ExecutionId,
        now: Timestamp,
    ) -> Result<(), StoreUnavailable> {
        let claims = &self.inner.claims;
        let Some(fingerprint) = claims.pending_fingerprint(&token) else {
            // Not a pending claim of ours any more: nothing to publish.
            claims.publish_now(token, execution, now);
            return Ok(());
        };
        let op = Op::Publish {
            function: token.function().clone(),
            key: token.key().clone(),
            fingerprint,
            execution: execution.clone(),
            expires_at: now.plus(self.inner.options.idempotency_ttl),
        };
        let mut publishing = Publishing {
            claims,
            token: Some(token),
        };
        let outcome = self.write(op, Durability::Committed).await;
        let token = publishing.token.take().expect("taken only here");
        match outcome {
            Ok(_) => {
                claims.publish_now(token, execution, now);
                Ok(())
            }
            Err(failure) => {
                claims.abandon_now(token);
                Err(fault(Err(failure)))
            }
        }
    }

    /// In memory only: pending claims are never written.
    async fn abandon(&self, token: ClaimToken) {
        self.inner.claims.abandon_now(token);
    }

    async fn forget(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        execution: &ExecutionId,
    ) -> Result<(), StoreUnavailable> {
        let op = Op::Forget {
            function: function.clone(),
            key: key.clone(),
            execution: execution.clone(),
        };
        match self.write(op, Durability::Committed).await {
            Ok(_) => {
                self.inner.claims.forget_now(function, key, execution);
                Ok(())
            }
            other => Err(fault(other)),
        }
    }

    /// Deletes the expired keys' rows, then forgets them in memory; returns how many
    /// rows went (which counts keys the memory budget had forgotten early, too).
    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        match self
            .write(Op::EvictClaims(now), Durability::Committed)
            .await
        {
            Ok(Done::Count(evicted)) => {
                self.inner.claims.evict_expired_now(now);
                Ok(evicted)
            }
            other => Err(fault(other)),
        }
    }

    fn stats(&self) -> ClaimStats {
        IdempotencyStore::stats(&self.inner.claims)
    }
}

#[async_trait]
impl FunctionRegistry for SqliteStore {
    async fn register(&self, function: RegisteredFunction) -> Result<(), RegistryError> {
        let name = function.spec.name.clone();
        match self
            .write(Op::Register(function), Durability::Committed)
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Refused(Refusal::NameTaken)) => Err(AlreadyRegistered(name).into()),
            other => Err(fault(other).into()),
        }
    }

    async fn replace(&self, function: RegisteredFunction) -> Result<(), StoreUnavailable> {
        match self
            .write(Op::Replace(function), Durability::Committed)
            .await
        {
            Ok(_) => Ok(()),
            other => Err(fault(other)),
        }
    }

    async fn list(&self) -> Result<Vec<RegisteredFunction>, StoreUnavailable> {
        let sql = format!(
            "SELECT {} FROM functions ORDER BY name",
            rows::FUNCTION_COLUMNS
        );
        self.read(|connection| {
            connection
                .prepare(&sql)?
                .query_map([], rows::function)?
                .collect()
        })
    }

    async fn remove(&self, name: &str) -> Result<Option<RegisteredFunction>, StoreUnavailable> {
        let op = Op::Unregister(name.to_owned());
        match self.write(op, Durability::Committed).await {
            Ok(Done::Function(removed)) => Ok(removed),
            other => Err(fault(other)),
        }
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn load(&self) -> Result<Option<StoredConfig>, StoreUnavailable> {
        self.read(|connection| {
            connection
                .prepare_cached(rows::CONFIG_SELECT)?
                .query_row([], rows::config)
                .optional()
        })
    }

    async fn save(&self, config: StoredConfig, replaces: u64) -> Result<bool, StoreUnavailable> {
        match self
            .write(Op::SaveConfig(config, replaces), Durability::Committed)
            .await
        {
            Ok(Done::Saved(saved)) => Ok(saved),
            other => Err(fault(other)),
        }
    }
}
