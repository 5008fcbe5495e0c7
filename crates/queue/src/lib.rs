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
//! use core_types::{DurationMs, ExecutionId, FunctionName, Timestamp};
//! use queue::{FunctionQueue, QueuedExecution, Readiness};
//!
//! let (readiness, mut ready) = Readiness::channel();
//! let queue = FunctionQueue::new(FunctionName::parse("echo").unwrap(), 10, 1, readiness);
//! queue.push(QueuedExecution { id: ExecutionId::new("e-1"), enqueued_at: Timestamp::from_millis(0) }).unwrap();
//! assert_eq!(ready.try_next().unwrap().as_str(), "echo");
//!
//! let (slot, next) = queue.take(Timestamp::from_millis(0), DurationMs(0)).expect("concurrency 1, nothing in flight");
//! assert_eq!(next.id.as_str(), "e-1");
//! assert!(queue.try_acquire_slot().is_none());
//! drop(slot); // the slot is free again
//! assert_eq!(queue.in_flight(), 0);
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use core_types::{DurationMs, ExecutionId, FunctionName, Timestamp};
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
///
/// Besides the FIFO line, a queue holds retries that are not due yet (waiting out their
/// backoff, or held until their `queued` record is written): they count towards the
/// depth and the capacity, but [`take`](Self::take) never hands them out before their due
/// time. A due retry joins the tail of the line.
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

/// Due time of a retry held until [`FunctionQueue::schedule_retry`] names its real one.
const HELD: Timestamp = Timestamp::from_millis(u64::MAX);

/// What the lock protects. An execution is queued at most once; `members` says which
/// entry is its live one, so taking one out of the middle ([`FunctionQueue::remove`]) is
/// O(1): its entry stays behind, stale, and is skipped (and dropped) when reached.
#[derive(Debug, Default)]
struct Entries {
    fifo: VecDeque<Entry>,
    /// Retries not due yet, by due time, then arrival.
    later: BTreeMap<(Timestamp, u64), QueuedExecution>,
    /// The queued executions and the sequence number of each one's live entry.
    members: HashMap<ExecutionId, Member, foldhash::fast::RandomState>,
    next_seq: u64,
    closed: bool,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    execution: QueuedExecution,
}

#[derive(Clone, Copy, Debug)]
struct Member {
    seq: u64,
    /// `Some` while the entry waits in `later`, with its due time.
    due: Option<Timestamp>,
}

impl Entries {
    fn is_live(&self, id: &ExecutionId, seq: u64) -> bool {
        self.members.get(id).is_some_and(|m| m.seq == seq)
    }

    fn admit(&mut self, function: &FunctionName, capacity: usize) -> Result<u64, PushError> {
        if self.closed {
            return Err(PushError::Closed {
                function: function.clone(),
            });
        }
        if self.members.len() >= capacity {
            return Err(PushError::Full {
                function: function.clone(),
                capacity,
            });
        }
        self.next_seq += 1;
        Ok(self.next_seq)
    }

    /// Moves the retries due at `now` to the tail of the line, earliest first. One
    /// due further ahead than `longest_wait` was timed by a wall clock that has since
    /// stepped back: it is due too, rather than delayed by the step.
    fn promote_due(&mut self, now: Timestamp, longest_wait: DurationMs) {
        while let Some(entry) = self.later.first_entry()
            && entry.key().0 <= now
        {
            let ((_, seq), execution) = entry.remove_entry();
            self.promote(seq, execution);
        }
        let beyond = (now.plus(longest_wait).plus(DurationMs(1)), 0)..(HELD, 0);
        if self.later.range(beyond.clone()).next().is_some() {
            let stepped_back: Vec<_> = self.later.range(beyond).map(|(key, _)| *key).collect();
            for key in stepped_back {
                let execution = self.later.remove(&key).expect("listed");
                self.promote(key.1, execution);
            }
        }
    }

    fn promote(&mut self, seq: u64, execution: QueuedExecution) {
        if let Some(member) = self.members.get_mut(&execution.id)
            && member.seq == seq
        {
            member.due = None;
            self.fifo.push_back(Entry { seq, execution });
        }
    }

    /// Drops stale entries once they outnumber the live ones, so a queue whose
    /// executions keep ending while queued (sync timeouts, callbacks) stays small.
    fn compact_if_stale(&mut self) {
        let held = self.fifo.len() + self.later.len();
        if held > 64 && held > 2 * self.members.len() {
            let members = &self.members;
            self.fifo
                .retain(|e| members.get(&e.execution.id).is_some_and(|m| m.seq == e.seq));
            self.later
                .retain(|(_, seq), e| members.get(&e.id).is_some_and(|m| m.seq == *seq));
        }
    }
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
        // Nothing panics while holding the lock; if something did, the entries are
        // still consistent (every operation leaves them so before it can fail).
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish_depth(&self, entries: &Entries) {
        self.depth.store(entries.members.len(), Ordering::Relaxed);
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
            let seq = entries.admit(&self.name, self.capacity.load(Ordering::Relaxed))?;
            entries
                .members
                .insert(execution.id.clone(), Member { seq, due: None });
            entries.fifo.push_back(Entry { seq, execution });
            self.publish_depth(&entries);
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        Ok(())
    }

    /// Takes a place for a retry without making it eligible yet: it counts towards the
    /// depth and the capacity, [`remove`](Self::remove) and [`close`](Self::close) see
    /// it, but [`take`](Self::take) does not hand it out until
    /// [`schedule_retry`](Self::schedule_retry) names its due time. The caller writes
    /// the retry's record in between, so no attempt of it can start before that write.
    pub fn hold_retry(&self, execution: QueuedExecution) -> Result<(), PushError> {
        let mut entries = self.entries();
        let seq = entries.admit(&self.name, self.capacity.load(Ordering::Relaxed))?;
        entries.members.insert(
            execution.id.clone(),
            Member {
                seq,
                due: Some(HELD),
            },
        );
        entries.later.insert((HELD, seq), execution);
        self.publish_depth(&entries);
        Ok(())
    }

    /// Makes a held retry eligible at `due`: at once (at the tail, announced) when
    /// `due <= now`, else once [`take`](Self::take) is asked at or after `due`. `false`
    /// when `id` is no longer held (it ended in the meantime).
    pub fn schedule_retry(&self, id: &ExecutionId, due: Timestamp, now: Timestamp) -> bool {
        let due_now = {
            let mut entries = self.entries();
            let Some(member) = entries.members.get(id).copied() else {
                return false;
            };
            if member.due != Some(HELD) {
                return false;
            }
            let execution = entries
                .later
                .remove(&(HELD, member.seq))
                .expect("a held member has its entry");
            let seq = member.seq;
            if due <= now {
                entries
                    .members
                    .insert(id.clone(), Member { seq, due: None });
                entries.fifo.push_back(Entry { seq, execution });
                true
            } else {
                entries.members.insert(
                    id.clone(),
                    Member {
                        seq,
                        due: Some(due),
                    },
                );
                entries.later.insert((due, seq), execution);
                false
            }
        };
        if due_now {
            self.announce();
        }
        true
    }

    /// When the earliest retry that is waiting for its due time becomes due, if any.
    pub fn next_due(&self) -> Option<Timestamp> {
        let entries = self.entries();
        entries
            .later
            .keys()
            .map(|(due, _)| *due)
            .find(|due| *due != HELD)
    }

    /// Takes the execution at the head together with a concurrency slot for it, after
    /// moving the retries due at `now` to the tail; `None` when no slot is free or
    /// nothing is due. Both are decided under the queue's lock, so a slot is only taken
    /// for work that gets it (a slot taken and given back unused would wake everyone
    /// waiting for a release for nothing). `longest_wait` is the longest a retry waits:
    /// one due later than that was timed before the wall clock stepped back, and is
    /// taken as due.
    pub fn take(
        self: &Arc<Self>,
        now: Timestamp,
        longest_wait: DurationMs,
    ) -> Option<(Slot, QueuedExecution)> {
        let mut entries = self.entries();
        if !entries.later.is_empty() {
            entries.promote_due(now, longest_wait);
        }
        while let Some(head) = entries.fifo.front() {
            if entries.is_live(&head.execution.id, head.seq) {
                break;
            }
            entries.fifo.pop_front();
        }
        entries.fifo.front()?;
        let slot = self.try_acquire_slot()?;
        let Entry { execution, .. } = entries.fifo.pop_front().expect("the head is live");
        entries.members.remove(&execution.id);
        self.publish_depth(&entries);
        Some((slot, execution))
    }

    /// Takes a specific execution out of the queue (waiting in line or for its due
    /// time); `false` if it is not queued.
    pub fn remove(&self, id: &ExecutionId) -> bool {
        let mut entries = self.entries();
        if entries.members.remove(id).is_none() {
            return false;
        }
        entries.compact_if_stale();
        self.publish_depth(&entries);
        true
    }

    /// Refuses every later push and hands back what was queued: the line in order,
    /// then the retries not yet due, earliest first.
    pub fn close(&self) -> Vec<QueuedExecution> {
        let mut entries = self.entries();
        entries.closed = true;
        let Entries {
            fifo,
            later,
            members,
            ..
        } = &mut *entries;
        let line = fifo.drain(..).map(|e| (e.seq, e.execution));
        let waiting = std::mem::take(later)
            .into_iter()
            .map(|((_, seq), execution)| (seq, execution));
        let queued = line
            .chain(waiting)
            .filter(|(seq, e)| members.get(&e.id).is_some_and(|m| m.seq == *seq))
            .map(|(_, e)| e)
            .collect();
        members.clear();
        self.depth.store(0, Ordering::Relaxed);
        queued
    }

    /// The queued executions' ids: the line head first, then the retries not yet due
    /// (for inspection; takes the lock and copies every id).
    pub fn queued_ids(&self) -> Vec<ExecutionId> {
        let entries = self.entries();
        let line = entries.fifo.iter().map(|e| (e.seq, &e.execution));
        let waiting = entries.later.iter().map(|((_, seq), e)| (*seq, e));
        line.chain(waiting)
            .filter(|(seq, e)| entries.is_live(&e.id, *seq))
            .map(|(_, e)| e.id.clone())
            .collect()
    }

    /// How many executions are queued (in line or waiting for their due time).
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
        // The store above and the caller's next read of the slot count form the
        // store-buffer pattern with a slot's release (which decrements the count, then
        // reads `announced`): without a SeqCst fence on each side both can miss the
        // other, leaving queued work beside a free slot with nobody told. `Slot::drop`
        // has the other fence.
        std::sync::atomic::fence(Ordering::SeqCst);
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
        // Pairs with the fences of `push_unannounced` and `clear_announcement`: see
        // their comments.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.queue.slot_released.notify_waiters();
        if self.queue.depth() > 0 {
            self.queue.announce();
        }
    }
}

#[cfg(test)]
mod tests;
