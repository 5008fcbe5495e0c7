//! Idempotency claims: one execution per `(function, key)` within the key's TTL.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use core_types::{DurationMs, ExecutionId, FunctionName, IdempotencyKey, Timestamp};
use dashmap::DashMap;
use tokio::sync::watch;

use crate::StoreUnavailable;

/// A digest of the request a key was first used with (SHA-256 of its canonical
/// encoding, `InvocationRequest::write_canonical`); a different digest under the same
/// key is a reused key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// The right to create the execution for a key. Whoever holds it must
/// [`publish`](IdempotencyStore::publish) or [`abandon`](IdempotencyStore::abandon) it;
/// it is deliberately neither `Clone` nor `Copy`.
#[derive(Debug, PartialEq, Eq)]
pub struct ClaimToken {
    function: FunctionName,
    key: IdempotencyKey,
    nonce: u64,
}

impl ClaimToken {
    /// The function whose key it claims (for a durable backend's row).
    pub(crate) fn function(&self) -> &FunctionName {
        &self.function
    }

    /// The key it claims (for a durable backend's row).
    pub(crate) fn key(&self) -> &IdempotencyKey {
        &self.key
    }
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

/// Where idempotency claims live. A published claim is durable in a durable backend
/// (its `publish` returns after the commit); a pending one belongs to a request in
/// progress.
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
    ) -> Result<ClaimOutcome, StoreUnavailable>;
    /// Binds the claimed key to the execution it created. On a fault the claim is
    /// given up (as by [`abandon`](Self::abandon)): the key is free again.
    async fn publish(
        &self,
        token: ClaimToken,
        execution: ExecutionId,
        now: Timestamp,
    ) -> Result<(), StoreUnavailable>;
    /// Gives the claim up (the request was rejected): the key is free again.
    async fn abandon(&self, token: ClaimToken);
    /// Forgets `key` if it still names `execution`: that execution has been forgotten
    /// (its record evicted, or it was never accepted), and the key goes with it.
    async fn forget(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        execution: &ExecutionId,
    ) -> Result<(), StoreUnavailable>;
    /// Forgets published keys older than the TTL; returns how many went.
    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable>;
    /// What the store holds now, for metrics. Backends that do not count say zeros.
    fn stats(&self) -> ClaimStats {
        ClaimStats::default()
    }
}

/// What an idempotency store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimStats {
    /// Keys remembered (published).
    pub keys: usize,
    /// Estimated bytes they hold (see [`MemoryIdempotencyStore`]).
    pub bytes: usize,
    /// Keys forgotten before their TTL to stay within the memory budget.
    pub evicted_over_budget: u64,
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
        /// What it is charged against the budget.
        bytes: usize,
    },
}

type Scope = (FunctionName, IdempotencyKey);

/// In-memory claims, sharded by key.
///
/// Published keys live within a memory budget as well as their TTL: each is charged an
/// estimate of what it keeps (its map entry, the function name's and key's text, the
/// execution id, its expiry entry), and past the budget the oldest are forgotten at
/// once, before their TTL, and counted ([`ClaimStats::evicted_over_budget`]). A
/// forgotten key is a new key: the next request with it starts a new execution, as
/// after its TTL. Pending claims are not charged: each belongs to a request in
/// progress.
#[derive(Debug)]
pub struct MemoryIdempotencyStore {
    entries: DashMap<Scope, Entry>,
    ttl: DurationMs,
    budget_bytes: usize,
    bytes: AtomicUsize,
    published: AtomicUsize,
    evicted_over_budget: AtomicU64,
    next_nonce: AtomicU64,
    /// Published keys in publish order, which is expiry order with one TTL. An entry
    /// whose key was forgotten or claimed again stays until it is reached, and is then
    /// skipped.
    expiry: Mutex<VecDeque<(Timestamp, Scope)>>,
}

/// An estimate of the heap one published key keeps.
fn retained_bytes(scope: &Scope, execution: &ExecutionId) -> usize {
    /// The strong and weak counts in front of an `Arc`'s data.
    const ARC_HEADER: usize = 2 * size_of::<usize>();
    let (function, key) = scope;
    // The map's slot and control byte, the expiry entry, and the texts (the function's
    // name is shared with the registry, but charged: it is small).
    size_of::<(Scope, Entry)>()
        + 1
        + size_of::<(Timestamp, Scope)>()
        + ARC_HEADER
        + function.as_str().len()
        + ARC_HEADER
        + key.as_str().len()
        + ARC_HEADER
        + execution.as_str().len()
}

impl MemoryIdempotencyStore {
    /// An empty store remembering keys for `ttl`, with no memory budget.
    pub fn new(ttl: DurationMs) -> Self {
        Self::with_budget(ttl, usize::MAX)
    }

    /// An empty store remembering keys for `ttl`, or less when their estimated size
    /// passes `budget_bytes` (the oldest go first).
    pub fn with_budget(ttl: DurationMs, budget_bytes: usize) -> Self {
        Self {
            entries: DashMap::new(),
            ttl,
            budget_bytes,
            bytes: AtomicUsize::new(0),
            published: AtomicUsize::new(0),
            evicted_over_budget: AtomicU64::new(0),
            next_nonce: AtomicU64::new(1),
            expiry: Mutex::new(VecDeque::new()),
        }
    }

    fn release(&self, entry: &Entry) {
        if let Entry::Published { bytes, .. } = entry {
            self.bytes.fetch_sub(*bytes, Ordering::AcqRel);
            self.published.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn expiry(&self) -> std::sync::MutexGuard<'_, VecDeque<(Timestamp, Scope)>> {
        self.expiry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets published keys, oldest first, while `go(deadline)` says so; returns how
    /// many went.
    fn evict_while(&self, mut go: impl FnMut(&Self, Timestamp) -> bool) -> usize {
        let mut expiry = self.expiry();
        let mut evicted = 0;
        while let Some((deadline, _)) = expiry.front() {
            let deadline = *deadline;
            if !go(self, deadline) {
                break;
            }
            let (_, scope) = expiry.pop_front().expect("front exists");
            let this_one = |_: &Scope, entry: &Entry| matches!(entry, Entry::Published { expires_at, .. } if *expires_at == deadline);
            if let Some((_, entry)) = self.entries.remove_if(&scope, this_one) {
                self.release(&entry);
                evicted += 1;
            }
        }
        evicted
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

impl MemoryIdempotencyStore {
    /// [`IdempotencyStore::claim`], which cannot fail in memory.
    pub async fn claim_now(
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
                        let expired = occupied.insert(entry);
                        self.release(&expired);
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

    /// [`IdempotencyStore::publish`], which cannot fail in memory.
    pub fn publish_now(&self, token: ClaimToken, execution: ExecutionId, now: Timestamp) {
        self.remember(token, execution, now.plus(self.ttl));
    }

    /// Publishes `token` as expiring at `expires_at`.
    fn remember(&self, token: ClaimToken, execution: ExecutionId, expires_at: Timestamp) {
        let scope = (token.function, token.key);
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
        let bytes = retained_bytes(&scope, &execution);
        *entry = Entry::Published {
            fingerprint,
            execution,
            expires_at,
            bytes,
        };
        drop(entry);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.published.fetch_add(1, Ordering::AcqRel);
        self.expiry().push_back((expires_at, scope));
        if self.bytes.load(Ordering::Acquire) > self.budget_bytes {
            let evicted = self
                .evict_while(|store, _| store.bytes.load(Ordering::Acquire) > store.budget_bytes);
            self.evicted_over_budget
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
    }

    /// The fingerprint `token` claimed its key with, while its claim is still pending
    /// (what a durable backend writes when it publishes).
    pub(crate) fn pending_fingerprint(&self, token: &ClaimToken) -> Option<Fingerprint> {
        let scope = (token.function.clone(), token.key.clone());
        match &*self.entries.get(&scope)? {
            Entry::Pending {
                fingerprint, nonce, ..
            } if *nonce == token.nonce => Some(*fingerprint),
            _ => None,
        }
    }

    /// [`IdempotencyStore::abandon`].
    pub fn abandon_now(&self, token: ClaimToken) {
        let scope = (token.function, token.key);
        self.entries.remove_if(
            &scope,
            |_, entry| matches!(entry, Entry::Pending { nonce, .. } if *nonce == token.nonce),
        );
    }

    /// [`IdempotencyStore::forget`].
    pub fn forget_now(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        execution: &ExecutionId,
    ) {
        let scope = (function.clone(), key.clone());
        let names_it = |_: &Scope, entry: &Entry| matches!(entry, Entry::Published { execution: named, .. } if named == execution);
        if let Some((_, entry)) = self.entries.remove_if(&scope, names_it) {
            self.release(&entry);
        }
    }

    /// [`IdempotencyStore::evict_expired`].
    pub fn evict_expired_now(&self, now: Timestamp) -> usize {
        self.evict_while(|_, deadline| deadline <= now)
    }

    /// Remembers a key published before (by an earlier process, read back from a
    /// durable backend), unless it has expired or the key is held already.
    pub fn restore(
        &self,
        function: FunctionName,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
        execution: ExecutionId,
        expires_at: Timestamp,
        now: Timestamp,
    ) {
        if expires_at <= now {
            return;
        }
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let scope = (function.clone(), key.clone());
        if let dashmap::Entry::Vacant(vacant) = self.entries.entry(scope) {
            vacant.insert(Entry::Pending {
                fingerprint,
                nonce,
                settled: watch::channel(()).0,
            });
        } else {
            return;
        }
        let token = ClaimToken {
            function,
            key,
            nonce,
        };
        self.remember(token, execution, expires_at);
    }

    fn stats_now(&self) -> ClaimStats {
        ClaimStats {
            keys: self.published.load(Ordering::Acquire),
            bytes: self.bytes.load(Ordering::Acquire),
            evicted_over_budget: self.evicted_over_budget.load(Ordering::Relaxed),
        }
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
    ) -> Result<ClaimOutcome, StoreUnavailable> {
        Ok(self.claim_now(function, key, fingerprint, now).await)
    }

    async fn publish(
        &self,
        token: ClaimToken,
        execution: ExecutionId,
        now: Timestamp,
    ) -> Result<(), StoreUnavailable> {
        self.publish_now(token, execution, now);
        Ok(())
    }

    async fn abandon(&self, token: ClaimToken) {
        self.abandon_now(token);
    }

    async fn forget(
        &self,
        function: &FunctionName,
        key: &IdempotencyKey,
        execution: &ExecutionId,
    ) -> Result<(), StoreUnavailable> {
        self.forget_now(function, key, execution);
        Ok(())
    }

    async fn evict_expired(&self, now: Timestamp) -> Result<usize, StoreUnavailable> {
        Ok(self.evict_expired_now(now))
    }

    fn stats(&self) -> ClaimStats {
        self.stats_now()
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
        match store.claim_now(&f, &k, fingerprint, now).await {
            ClaimOutcome::Acquired(token) => token,
            other => panic!("expected the key to be free, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_published_key_returns_its_execution_and_detects_another_body() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint([1; 32]), t(0)).await;
        store.publish_now(token, ExecutionId::new("e1"), t(0));
        assert_eq!(
            store.claim_now(&f, &k, Fingerprint([1; 32]), t(50)).await,
            ClaimOutcome::Existing(ExecutionId::new("e1"))
        );
        assert_eq!(
            store.claim_now(&f, &k, Fingerprint([2; 32]), t(50)).await,
            ClaimOutcome::Reused
        );
        let other_function = FunctionName::parse("g").unwrap();
        assert!(matches!(
            store
                .claim_now(&other_function, &k, Fingerprint([2; 32]), t(50))
                .await,
            ClaimOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn an_abandoned_claim_leaves_the_key_free() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint([1; 32]), t(0)).await;
        store.abandon_now(token);
        assert!(store.is_empty());
        assert!(matches!(
            store.claim_now(&f, &k, Fingerprint([2; 32]), t(0)).await,
            ClaimOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn keys_expire_after_the_ttl() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint([1; 32]), t(0)).await;
        store.publish_now(token, ExecutionId::new("e1"), t(0));
        assert!(matches!(
            store.claim_now(&f, &k, Fingerprint([1; 32]), t(100)).await,
            ClaimOutcome::Acquired(_)
        ));
        assert_eq!(
            store.evict_expired_now(t(100)),
            0,
            "the key was claimed again, so it is not published-and-expired"
        );
    }

    #[tokio::test]
    async fn the_sweep_forgets_expired_keys() {
        let store = MemoryIdempotencyStore::new(DurationMs(100));
        let token = acquire(&store, Fingerprint([1; 32]), t(0)).await;
        store.publish_now(token, ExecutionId::new("e1"), t(0));
        assert_eq!(store.evict_expired_now(t(99)), 0);
        assert_eq!(store.evict_expired_now(t(100)), 1);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn concurrent_claims_with_one_key_create_one_execution() {
        let store = Arc::new(MemoryIdempotencyStore::new(DurationMs(1_000)));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint([7; 32]), t(0)).await;
        let waiters: Vec<_> = (0..8)
            .map(|_| store.claim_now(&f, &k, Fingerprint([7; 32]), t(1)))
            .collect();
        let publish = async { store.publish_now(token, ExecutionId::new("only"), t(1)) };
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
        let token = acquire(&store, Fingerprint([7; 32]), t(0)).await;
        let waiter = || async {
            let outcome = store.claim_now(&f, &k, Fingerprint([7; 32]), t(1)).await;
            match outcome {
                ClaimOutcome::Acquired(token) => {
                    store.publish_now(token, ExecutionId::new("second"), t(1));
                    None
                }
                other => Some(other),
            }
        };
        let abandon = async { store.abandon_now(token) };
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

    #[tokio::test]
    async fn past_the_budget_the_oldest_keys_are_forgotten_first() {
        let scope_of = |n: u32| {
            (
                FunctionName::parse("f").unwrap(),
                IdempotencyKey::new(format!("key-{n}")),
            )
        };
        let one = retained_bytes(&scope_of(0), &ExecutionId::new("e0"));
        // Room for three keys.
        let store = MemoryIdempotencyStore::with_budget(DurationMs(60_000), 3 * one + one / 2);
        for n in 0..5 {
            let (f, k) = scope_of(n);
            let ClaimOutcome::Acquired(token) = store
                .claim_now(&f, &k, Fingerprint([1; 32]), t(n.into()))
                .await
            else {
                panic!("free key");
            };
            store.publish_now(token, ExecutionId::new(format!("e{n}")), t(n.into()));
        }
        let stats = store.stats();
        assert_eq!((stats.keys, stats.evicted_over_budget), (3, 2));
        assert_eq!(stats.bytes, 3 * one);
        for n in 0..5 {
            let (f, k) = scope_of(n);
            let outcome = store.claim_now(&f, &k, Fingerprint([1; 32]), t(10)).await;
            let remembered = matches!(outcome, ClaimOutcome::Existing(_));
            assert_eq!(remembered, n >= 2, "key-{n}: {outcome:?}");
            if let ClaimOutcome::Acquired(token) = outcome {
                store.abandon_now(token);
            }
        }
        assert_eq!(store.evict_expired_now(t(1_000_000)), 3);
        assert_eq!(
            store.stats(),
            ClaimStats {
                keys: 0,
                bytes: 0,
                evicted_over_budget: 2
            }
        );
    }

    #[tokio::test]
    async fn a_key_is_forgotten_with_its_execution_only() {
        let store = MemoryIdempotencyStore::new(DurationMs(60_000));
        let (f, k) = scope();
        let token = acquire(&store, Fingerprint([1; 32]), t(0)).await;
        store.publish_now(token, ExecutionId::new("e1"), t(0));
        store.forget_now(&f, &k, &ExecutionId::new("other"));
        assert_eq!(
            store.claim_now(&f, &k, Fingerprint([1; 32]), t(1)).await,
            ClaimOutcome::Existing(ExecutionId::new("e1")),
            "it names another execution: kept"
        );
        store.forget_now(&f, &k, &ExecutionId::new("e1"));
        assert!(matches!(
            store.claim_now(&f, &k, Fingerprint([2; 32]), t(1)).await,
            ClaimOutcome::Acquired(_)
        ));
        assert_eq!(store.stats().bytes, 0);
    }
}
