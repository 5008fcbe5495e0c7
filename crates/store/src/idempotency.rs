//! Idempotency claims: one execution per `(function, key)` within the key's TTL.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use core_types::{DurationMs, ExecutionId, FunctionName, IdempotencyKey, Timestamp};
use dashmap::DashMap;
use tokio::sync::watch;

/// A digest of the request a key was first used with; a different digest under the
/// same key is a reused key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u64);

/// The right to create the execution for a key. Whoever holds it must
/// [`publish`](IdempotencyStore::publish) or [`abandon`](IdempotencyStore::abandon) it;
/// it is deliberately neither `Clone` nor `Copy`.
#[derive(Debug, PartialEq, Eq)]
pub struct ClaimToken {
    function: FunctionName,
    key: IdempotencyKey,
    nonce: u64,
}

/// What a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free: the caller creates the execution.
    Acquired(ClaimToken),
    /// The key already names this execution (same request).
    Existing(ExecutionId),
    /// The key was used with a different request.
    Reused,
}

/// Where idempotency claims live.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for `function`. If another request holds a pending claim on the
    /// same key with the same fingerprint, waits until it is published or abandoned.
    async fn claim(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> ClaimOutcome;
    /// Binds the claimed key to the execution it created.
    async fn publish(&self, token: ClaimToken, execution: ExecutionId, now: Timestamp);
    /// Gives the claim up (the request was rejected): the key is free again. Not async,
    /// so it can run from a guard's `Drop`.
    fn abandon(&self, token: ClaimToken);
    /// Forgets published keys older than the TTL; returns how many went.
    async fn evict_expired(&self, now: Timestamp) -> usize;
}

#[derive(Debug)]
enum Entry {
    /// Someone is creating the execution; dropping `settled` wakes the waiters.
    Pending {
        fingerprint: Fingerprint,
        nonce: u64,
        settled: watch::Sender<()>,
    },
    Published {
        fingerprint: Fingerprint,
        execution: ExecutionId,
        expires_at: Timestamp,
    },
}

type Scope = (FunctionName, IdempotencyKey);

/// In-memory claims, sharded by key.
#[derive(Debug)]
pub struct MemoryIdempotencyStore {
    entries: DashMap<Scope, Entry>,
    ttl: DurationMs,
    next_nonce: AtomicU64,
    /// Published keys in publish order, which is expiry order with one TTL.
    expiry: Mutex<VecDeque<(Timestamp, Scope)>>,
}

impl MemoryIdempotencyStore {
    /// An empty store remembering keys for `ttl`.
    pub fn new(ttl: DurationMs) -> Self {
        Self {
            entries: DashMap::new(),
            ttl,
            next_nonce: AtomicU64::new(1),
            expiry: Mutex::new(VecDeque::new()),
        }
    }

    /// How many keys are claimed or published.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> ClaimOutcome {
        let scope = (function.clone(), key.clone());
        let pending = || {
            let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
            let entry = Entry::Pending {
                fingerprint,
                nonce,
                settled: watch::channel(()).0,
            };
            let token = ClaimToken {
                function: function.clone(),
                key: key.clone(),
                nonce,
            };
            (entry, ClaimOutcome::Acquired(token))
        };
        loop {
            let mut settled = match self.entries.entry(scope.clone()) {
                dashmap::Entry::Vacant(vacant) => {
                    let (entry, acquired) = pending();
                    vacant.insert(entry);
                    return acquired;
                }
                dashmap::Entry::Occupied(mut occupied) => match occupied.get() {
                    Entry::Published { expires_at, .. } if *expires_at <= now => {
                        let (entry, acquired) = pending();
                        occupied.insert(entry);
                        return acquired;
                    }
                    Entry::Published {
                        fingerprint: first,
                        execution,
                        ..
                    } => {
                        return if *first == fingerprint {
                            ClaimOutcome::Existing(execution.clone())
                        } else {
                            ClaimOutcome::Reused
                        };
                    }
                    Entry::Pending {
                        fingerprint: first, ..
                    } if *first != fingerprint => {
                        return ClaimOutcome::Reused;
                    }
                    // Subscribed while the shard is locked, so the wake-up cannot be missed.
                    Entry::Pending { settled, .. } => settled.subscribe(),
                },
            };
            // Err means the sender is gone: the claim was published or abandoned.
            let _ = settled.changed().await;
        }
    }

    async fn publish(&self, token: ClaimToken, execution: ExecutionId, now: Timestamp) {
        let scope = (token.function, token.key);
        let expires_at = now.plus(self.ttl);
        let Some(mut entry) = self.entries.get_mut(&scope) else {
            return;
        };
        let fingerprint = match &*entry {
            Entry::Pending {
                fingerprint, nonce, ..
            } if *nonce == token.nonce => *fingerprint,
            // Not ours any more (abandoned and claimed again): nothing to publish.
            _ => return,
        };
        *entry = Entry::Published {
            fingerprint,
            execution,
            expires_at,
        };
        drop(entry);
        self.expiry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((expires_at, scope));
    }

    fn abandon(&self, token: ClaimToken) {
        let scope = (token.function, token.key);
        self.entries.remove_if(
            &scope,
            |_, entry| matches!(entry, Entry::Pending { nonce, .. } if *nonce == token.nonce),
        );
    }

    async fn evict_expired(&self, now: Timestamp) -> usize {
        let mut expiry = self.expiry.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = 0;
        while expiry.front().is_some_and(|(deadline, _)| *deadline <= now) {
            let (_, scope) = expiry.pop_front().expect("front exists");
            let expired = |_: &Scope, entry: &Entry| matches!(entry, Entry::Published { expires_at, .. } if *expires_at <= now);
            if self.entries.remove_if(&scope, expired).is_some() {
                evicted += 1;
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn scope() -> (FunctionName, IdempotencyKey) {
        (FunctionName::parse("f").unwrap(), IdempotencyKey::new("k"))
    }

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// Claims the test key, which must be free.
    async fn acquire(
        store: &MemoryIdempotencyStore,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> ClaimToken {
        let (f, k) = scope();
        match store.claim(&f, &k, fingerprint, now).await {
            ClaimOutcome::Acquired(token) => token,
            other => panic!("expected the key to be free, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_published_key_returns_its_execution_and_detects_another_body() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint(1), t(0)).await;
        store.publish(token, ExecutionId::new("e1"), t(0)).await;
        assert_eq!(
            store.claim(&f, &k, Fingerprint(1), t(50)).await,
            ClaimOutcome::Existing(ExecutionId::new("e1"))
        );
        assert_eq!(
            store.claim(&f, &k, Fingerprint(2), t(50)).await,
            ClaimOutcome::Reused
        );
        let other_function = FunctionName::parse("g").unwrap();
        assert!(matches!(
            store
                .claim(&other_function, &k, Fingerprint(2), t(50))
                .await,
            ClaimOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn an_abandoned_claim_leaves_the_key_free() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint(1), t(0)).await;
        store.abandon(token);
        assert!(store.is_empty());
        assert!(matches!(
            store.claim(&f, &k, Fingerprint(2), t(0)).await,
            ClaimOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn keys_expire_after_the_ttl() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint(1), t(0)).await;
        store.publish(token, ExecutionId::new("e1"), t(0)).await;
        assert!(matches!(
            store.claim(&f, &k, Fingerprint(1), t(100)).await,
            ClaimOutcome::Acquired(_)
        ));
        assert_eq!(
            store.evict_expired(t(100)).await,
            0,
            "the key was claimed again, so it is not published-and-expired"
        );
    }

    #[tokio::test]
    async fn the_sweep_forgets_expired_keys() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let token = acquire(&store, Fingerprint(1), t(0)).await;
        store.publish(token, ExecutionId::new("e1"), t(0)).await;
        assert_eq!(store.evict_expired(t(99)).await, 0);
        assert_eq!(store.evict_expired(t(100)).await, 1);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn concurrent_claims_with_one_key_create_one_execution() {
        let store = Arc::new(MemoryIdempotencyStore::new(DurationMs(1_000)));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint(7), t(0)).await;
        let waiters: Vec<_> = (0..8)
            .map(|_| store.claim(&f, &k, Fingerprint(7), t(1)))
            .collect();
        let publish = store.publish(token, ExecutionId::new("only"), t(1));
        let (outcomes, ()) = futures::join!(futures::future::join_all(waiters), publish);
        assert!(
            outcomes
                .iter()
                .all(|o| *o == ClaimOutcome::Existing(ExecutionId::new("only")))
        );
    }

    #[tokio::test]
    async fn waiters_on_an_abandoned_claim_compete_again() {
        let store = Arc::new(MemoryIdempotencyStore::new(DurationMs(1_000)));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint(7), t(0)).await;
        let waiter = || async {
            let outcome = store.claim(&f, &k, Fingerprint(7), t(1)).await;
            match outcome {
                ClaimOutcome::Acquired(token) => {
                    store.publish(token, ExecutionId::new("second"), t(1)).await;
                    None
                }
                other => Some(other),
            }
        };
        let abandon = async { store.abandon(token) };
        let (outcomes, ()) = futures::join!(
            futures::future::join_all([waiter(), waiter(), waiter()]),
            abandon
        );
        let acquired = outcomes.iter().filter(|o| o.is_none()).count();
        assert_eq!(
            acquired, 1,
            "exactly one waiter takes the freed key; {outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .flatten()
                .all(|o| *o == ClaimOutcome::Existing(ExecutionId::new("second")))
        );
    }
}
