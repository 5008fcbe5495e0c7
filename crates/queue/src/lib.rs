//! Per-function work queues: bounded FIFO order, concurrency slots, and the readiness
//! signal that wakes the scheduler.
//!
//! Owns: [`FunctionQueue`] (one per function: its own lock, its own counters, so no
//! lock is shared between functions), [`Slot`] (a concurrency slot, released exactly
//! once because releasing is dropping it), and [`Readiness`] (a queue announces itself
//! when it gains work or frees a slot, at most once until the scheduler looks at it).
//!
//! Must not know: execution records, dispatching, HTTP, or what an execution does.
//!
//! ```
//! use core_types::{ExecutionId, FunctionName, Timestamp};
//! use queue::{FunctionQueue, QueuedExecution, Readiness};
//!
//! let (readiness, mut ready) = Readiness::channel();
//! let queue = FunctionQueue::new(FunctionName::parse("echo").unwrap(), 10, 1, readiness);
//! queue.push(QueuedExecution { id: ExecutionId::new("e-1"), enqueued_at: Timestamp::from_millis(0) }).unwrap();
//! assert_eq!(ready.try_next().unwrap().as_str(), "echo");
//!
//! let slot = queue.try_acquire_slot().expect("concurrency 1, nothing in flight");
//! assert!(queue.try_acquire_slot().is_none());
//! let next = queue.pop().unwrap();
//! assert_eq!(next.id.as_str(), "e-1");
//! drop(slot); // the slot is free again
//! assert_eq!(queue.in_flight(), 0);
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use core_types::{ExecutionId, FunctionName, Timestamp};
use tokio::sync::mpsc;

/// One queued attempt of an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedExecution {
    /// The execution.
    pub id: ExecutionId,
    /// When this attempt entered the queue.
    pub enqueued_at: Timestamp,
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue holds `capacity` executions already.
    #[error("queue of {function} is full ({capacity} queued)")]
    Full {
        /// The function.
        function: FunctionName,
        /// Its queue size.
        capacity: usize,
    },
    /// The queue was closed (function removed or shutting down).
    #[error("queue of {function} is closed")]
    Closed {
        /// The function.
        function: FunctionName,
    },
}

/// Hands the names of queues that may have work to run to whoever schedules them.
#[derive(Clone, Debug)]
pub struct Readiness {
    tx: mpsc::UnboundedSender<FunctionName>,
}

/// The receiving end of [`Readiness`]: yields function names in the order they became
/// ready, each at most once until its queue is looked at again.
#[derive(Debug)]
pub struct ReadyFunctions {
    rx: mpsc::UnboundedReceiver<FunctionName>,
}

impl Readiness {
    /// A readiness channel.
    pub fn channel() -> (Readiness, ReadyFunctions) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Readiness { tx }, ReadyFunctions { rx })
    }
}

impl ReadyFunctions {
    /// The next ready function; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<FunctionName> {
        self.rx.recv().await
    }

    /// The next ready function, if one is waiting.
    pub fn try_next(&mut self) -> Option<FunctionName> {
        self.rx.try_recv().ok()
    }
}

/// A function's queue and its concurrency slots.
#[derive(Debug)]
pub struct FunctionQueue {
    name: FunctionName,
    entries: Mutex<Entries>,
    depth: AtomicUsize,
    capacity: AtomicUsize,
    concurrency: AtomicUsize,
    in_flight: AtomicUsize,
    /// Set while the function's name sits in the readiness channel.
    announced: AtomicBool,
    readiness: Readiness,
    /// Woken whenever a slot is released, for callers that drive the queue themselves
    /// (a sync invoke when no background loop runs) and wait for a slot.
    slot_released: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Entries {
    fifo: VecDeque<QueuedExecution>,
    closed: bool,
}

impl FunctionQueue {
    /// A queue holding at most `capacity` executions with at most `concurrency` in
    /// flight.
    pub fn new(
        name: FunctionName,
        capacity: usize,
        concurrency: usize,
        readiness: Readiness,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            entries: Mutex::new(Entries::default()),
            depth: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity),
            concurrency: AtomicUsize::new(concurrency),
            in_flight: AtomicUsize::new(0),
            announced: AtomicBool::new(false),
            readiness,
            slot_released: tokio::sync::Notify::new(),
        })
    }

    /// Resolves at the next release of a slot after this call. To not miss a release
    /// between checking for a free slot and waiting, create (and `enable`) the future
    /// before the check.
    pub fn slot_released(&self) -> tokio::sync::futures::Notified<'_> {
        self.slot_released.notified()
    }

    /// The function this queue belongs to.
    pub fn function(&self) -> &FunctionName {
        &self.name
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // Nothing panics while holding the lock; if something did, the deque is still
        // consistent (every operation on it is a single call).
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds an execution at the tail and announces the queue.
    pub fn push(&self, execution: QueuedExecution) -> Result<(), PushError> {
        self.push_unannounced(execution)?;
        self.announce();
        Ok(())
    }

    /// Adds an execution at the tail without announcing it, for a caller that tries to
    /// take work from the queue itself right after (`try_acquire_slot`, then `pop`).
    /// If that finds no free slot, the release of a taken one announces the queue: the
    /// fence here and the one in [`Slot`]'s release make sure at least one of the two
    /// sees the other (the new depth, or the freed slot).
    pub fn push_unannounced(&self, execution: QueuedExecution) -> Result<(), PushError> {
        {
            let mut entries = self.entries();
            if entries.closed {
                return Err(PushError::Closed {
                    function: self.name.clone(),
                });
            }
            let capacity = self.capacity.load(Ordering::Relaxed);
            if entries.fifo.len() >= capacity {
                return Err(PushError::Full {
                    function: self.name.clone(),
                    capacity,
                });
            }
            entries.fifo.push_back(execution);
            self.depth.store(entries.fifo.len(), Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        Ok(())
    }

    /// Takes the execution at the head.
    pub fn pop(&self) -> Option<QueuedExecution> {
        let mut entries = self.entries();
        let head = entries.fifo.pop_front();
        self.depth.store(entries.fifo.len(), Ordering::Relaxed);
        head
    }

    /// Takes a specific execution out of the queue; `false` if it is not queued.
    pub fn remove(&self, id: &ExecutionId) -> bool {
        let mut entries = self.entries();
        let Some(position) = entries.fifo.iter().position(|e| &e.id == id) else {
            return false;
        };
        entries.fifo.remove(position);
        self.depth.store(entries.fifo.len(), Ordering::Relaxed);
        true
    }

    /// Refuses every later push and hands back what was queued, in order.
    pub fn close(&self) -> Vec<QueuedExecution> {
        let mut entries = self.entries();
        entries.closed = true;
        self.depth.store(0, Ordering::Relaxed);
        entries.fifo.drain(..).collect()
    }

    /// The queued executions' ids, head first (for inspection; takes the lock).
    pub fn queued_ids(&self) -> Vec<ExecutionId> {
        self.entries().fifo.iter().map(|e| e.id.clone()).collect()
    }

    /// How many executions are queued.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// How many slots are taken.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The queue size.
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// The most slots that can be taken at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency.load(Ordering::Relaxed)
    }

    /// Changes the queue size. Shrinking keeps what is queued; pushes are refused
    /// until the depth is below the new size.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Changes the concurrency. Raising it announces the queue so waiting work starts.
    pub fn set_concurrency(&self, concurrency: usize) {
        let before = self.concurrency.swap(concurrency, Ordering::AcqRel);
        if concurrency > before && self.depth() > 0 {
            self.announce();
        }
    }

    /// Takes a concurrency slot if one is free.
    pub fn try_acquire_slot(self: &Arc<Self>) -> Option<Slot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.concurrency.load(Ordering::Relaxed)).then_some(taken + 1)
            })
            .ok()
            .map(|_| Slot {
                queue: Arc::clone(self),
            })
    }

    /// Marks the queue as looked at: the next push or freed slot announces it again.
    /// Call before trying to take work from it, so nothing that happens during the
    /// attempt goes unannounced.
    pub fn clear_announcement(&self) {
        self.announced.store(false, Ordering::Release);
    }

    /// Puts the function's name in the readiness channel unless it is there already.
    pub fn announce(&self) {
        if !self.announced.swap(true, Ordering::AcqRel) {
            // A closed channel means nobody schedules in the background (manual mode or
            // shut down): there is nobody to tell.
            let _ = self.readiness.tx.send(self.name.clone());
        }
    }
}

/// A taken concurrency slot. Dropping it frees the slot and, if work is waiting,
/// announces the queue. It cannot be cloned, so a slot is freed exactly once.
#[derive(Debug)]
pub struct Slot {
    queue: Arc<FunctionQueue>,
}

impl Slot {
    /// The queue this slot belongs to.
    pub fn queue(&self) -> &Arc<FunctionQueue> {
        &self.queue
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.in_flight.fetch_sub(1, Ordering::AcqRel);
        // Pairs with the fence of `push_unannounced`: see its documentation.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.queue.slot_released.notify_waiters();
        if self.queue.depth() > 0 {
            self.queue.announce();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: &str) -> QueuedExecution {
        QueuedExecution {
            id: ExecutionId::new(id),
            enqueued_at: Timestamp::from_millis(0),
        }
    }

    fn queue(capacity: usize, concurrency: usize) -> (Arc<FunctionQueue>, ReadyFunctions) {
        let (readiness, ready) = Readiness::channel();
        (
            FunctionQueue::new(
                FunctionName::parse("f").unwrap(),
                capacity,
                concurrency,
                readiness,
            ),
            ready,
        )
    }

    #[test]
    fn executions_leave_in_the_order_they_came() {
        let (q, _) = queue(10, 1);
        for id in ["a", "b", "c"] {
            q.push(queued(id)).unwrap();
        }
        assert!(q.remove(&ExecutionId::new("b")));
        assert!(!q.remove(&ExecutionId::new("b")));
        assert_eq!(q.pop().unwrap().id.as_str(), "a");
        assert_eq!(q.pop().unwrap().id.as_str(), "c");
        assert_eq!(q.pop(), None);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn a_full_queue_refuses_with_a_typed_error() {
        let (q, _) = queue(2, 1);
        q.push(queued("a")).unwrap();
        q.push(queued("b")).unwrap();
        assert!(matches!(
            q.push(queued("c")),
            Err(PushError::Full { capacity: 2, .. })
        ));
        q.set_capacity(3);
        q.push(queued("c")).unwrap();
        assert_eq!(q.depth(), 3);
    }

    #[test]
    fn a_closed_queue_hands_back_its_work_and_refuses_more() {
        let (q, _) = queue(5, 1);
        q.push(queued("a")).unwrap();
        q.push(queued("b")).unwrap();
        let drained: Vec<_> = q.close().into_iter().map(|e| e.id.to_string()).collect();
        assert_eq!(drained, ["a", "b"]);
        assert!(matches!(q.push(queued("c")), Err(PushError::Closed { .. })));
    }

    #[test]
    fn slots_never_exceed_concurrency_and_free_on_drop() {
        let (q, _) = queue(5, 2);
        let a = q.try_acquire_slot().unwrap();
        let b = q.try_acquire_slot().unwrap();
        assert!(q.try_acquire_slot().is_none());
        assert_eq!(q.in_flight(), 2);
        drop(a);
        assert_eq!(q.in_flight(), 1);
        q.set_concurrency(3);
        let c = q.try_acquire_slot().unwrap();
        let d = q.try_acquire_slot().unwrap();
        assert!(q.try_acquire_slot().is_none());
        drop((b, c, d));
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn a_queue_is_announced_once_until_looked_at() {
        let (q, mut ready) = queue(5, 1);
        q.push(queued("a")).unwrap();
        q.push(queued("b")).unwrap();
        assert_eq!(ready.try_next().unwrap().as_str(), "f");
        assert!(ready.try_next().is_none(), "announced once");
        q.clear_announcement();
        let slot = q.try_acquire_slot().unwrap();
        q.pop();
        drop(slot);
        assert_eq!(
            ready.try_next().unwrap().as_str(),
            "f",
            "a freed slot with work waiting announces"
        );
    }

    #[test]
    fn a_freed_slot_with_nothing_queued_stays_quiet() {
        let (q, mut ready) = queue(5, 1);
        drop(q.try_acquire_slot().unwrap());
        assert!(ready.try_next().is_none());
    }

    #[test]
    fn a_caller_waiting_for_a_slot_hears_of_its_release() {
        let (q, _) = queue(5, 1);
        let held = q.try_acquire_slot().unwrap();
        let released = q.slot_released();
        tokio::pin!(released);
        released.as_mut().enable();
        assert!(q.try_acquire_slot().is_none(), "the only slot is taken");
        drop(held);
        assert!(
            futures::FutureExt::now_or_never(released).is_some(),
            "the release woke the waiter"
        );
        assert!(q.try_acquire_slot().is_some());
    }

    #[tokio::test]
    async fn many_threads_never_take_more_slots_than_allowed() {
        let (q, _) = queue(5, 3);
        let peak = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (q, peak) = (Arc::clone(&q), Arc::clone(&peak));
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(slot) = q.try_acquire_slot() {
                            peak.fetch_max(q.in_flight(), Ordering::Relaxed);
                            drop(slot);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(q.in_flight(), 0);
    }
}
