//! The queue's unit tests: FIFO order and capacity, held and scheduled retries, slots,
//! readiness, and the memory-ordering litmus test of the release/look hand-off.

use super::*;

const LONGEST: DurationMs = DurationMs(10_000);

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// The head, if due, without keeping its slot.
fn pop(q: &Arc<FunctionQueue>, now: Timestamp) -> Option<QueuedExecution> {
    q.take(now, LONGEST).map(|(_slot, execution)| execution)
}

fn ids(q: &FunctionQueue) -> Vec<String> {
    q.queued_ids().iter().map(ToString::to_string).collect()
}

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
    assert_eq!(pop(&q, t(0)).unwrap().id.as_str(), "a");
    assert_eq!(pop(&q, t(0)).unwrap().id.as_str(), "c");
    assert_eq!(pop(&q, t(0)), None);
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
    let (slot, _) = q.take(t(0), LONGEST).unwrap();
    drop(slot);
    assert_eq!(
        ready.try_next().unwrap().as_str(),
        "f",
        "a freed slot with work waiting announces"
    );
}

#[test]
fn no_slot_is_taken_for_work_that_is_not_due() {
    let (q, _) = queue(5, 1);
    q.hold_retry(queued("r")).unwrap();
    let released = q.slot_released();
    tokio::pin!(released);
    released.as_mut().enable();
    assert!(q.take(t(0), LONGEST).is_none());
    assert_eq!(q.in_flight(), 0);
    assert!(
        futures::FutureExt::now_or_never(released).is_none(),
        "nobody was woken by a slot taken and given back"
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

#[test]
fn a_held_retry_takes_its_place_but_waits_for_its_due_time() {
    let (q, _) = queue(3, 1);
    q.push(queued("a")).unwrap();
    q.hold_retry(queued("r")).unwrap();
    assert_eq!(q.depth(), 2, "a held retry counts");
    assert_eq!(pop(&q, t(1_000)).unwrap().id.as_str(), "a");
    assert_eq!(pop(&q, t(1_000)), None, "held: not handed out at any time");
    assert!(q.schedule_retry(&ExecutionId::new("r"), t(50), t(10)));
    assert_eq!(q.next_due(), Some(t(50)));
    q.push(queued("b")).unwrap();
    assert_eq!(
        pop(&q, t(49)).unwrap().id.as_str(),
        "b",
        "not due yet: b goes first"
    );
    assert_eq!(pop(&q, t(49)), None);
    assert_eq!(pop(&q, t(50)).unwrap().id.as_str(), "r");
    assert_eq!(q.depth(), 0);
    assert!(
        !q.schedule_retry(&ExecutionId::new("r"), t(0), t(0)),
        "no longer held"
    );
}

#[test]
fn a_retry_timed_before_the_clock_stepped_back_is_not_held_back_by_the_step() {
    let (q, _) = queue(5, 1);
    q.hold_retry(queued("r")).unwrap();
    let hour = 3_600_000;
    q.schedule_retry(&ExecutionId::new("r"), t(2 * hour + 500), t(2 * hour));
    assert_eq!(pop(&q, t(2 * hour + 499)), None, "not due yet");
    // The clock steps back an hour: by it the retry is due in an hour and a bit,
    // longer than any retry waits.
    let popped = pop(&q, t(hour + 100)).expect("due");
    assert_eq!(popped.id.as_str(), "r");
}

#[test]
fn a_due_retry_joins_the_tail_of_the_line() {
    let (q, mut ready) = queue(5, 1);
    q.hold_retry(queued("r")).unwrap();
    assert!(ready.try_next().is_none(), "holding announces nothing");
    q.push(queued("a")).unwrap();
    assert!(ready.try_next().is_some());
    q.clear_announcement();
    assert!(q.schedule_retry(&ExecutionId::new("r"), t(5), t(5)));
    assert!(ready.try_next().is_some(), "due at once: announced");
    q.push(queued("b")).unwrap();
    assert_eq!(ids(&q), ["a", "r", "b"]);
}

#[test]
fn a_full_or_closed_queue_has_no_room_for_a_retry() {
    let (q, _) = queue(1, 1);
    q.push(queued("a")).unwrap();
    assert!(matches!(
        q.hold_retry(queued("r")),
        Err(PushError::Full { .. })
    ));
    q.close();
    assert!(matches!(
        q.hold_retry(queued("r")),
        Err(PushError::Closed { .. })
    ));
}

#[test]
fn removing_takes_waiting_retries_too_and_closing_hands_back_everything() {
    let (q, _) = queue(10, 1);
    for id in ["a", "b"] {
        q.push(queued(id)).unwrap();
    }
    for (id, due) in [("late", 90), ("early", 20), ("gone", 30)] {
        q.hold_retry(queued(id)).unwrap();
        q.schedule_retry(&ExecutionId::new(id), t(due), t(0));
    }
    q.hold_retry(queued("held")).unwrap();
    assert!(q.remove(&ExecutionId::new("gone")));
    assert!(!q.remove(&ExecutionId::new("gone")));
    assert_eq!(q.depth(), 5);
    // Held retries have no due time yet: they come last.
    assert_eq!(ids(&q), ["a", "b", "early", "late", "held"]);
    let closed: Vec<_> = q.close().into_iter().map(|e| e.id.to_string()).collect();
    assert_eq!(closed, ["a", "b", "early", "late", "held"]);
    assert_eq!(q.depth(), 0);
}

#[test]
fn executions_ending_while_queued_cost_no_scan_and_leave_nothing_behind() {
    let (q, _) = queue(100_000, 1);
    for n in 0..50_000 {
        q.push(queued(&format!("e{n}"))).unwrap();
    }
    // Every one ends while queued (a storm of sync timeouts), newest first: with a
    // scan per removal this is quadratic.
    for n in (0..50_000).rev() {
        assert!(q.remove(&ExecutionId::new(format!("e{n}"))));
    }
    assert_eq!(q.depth(), 0);
    assert_eq!(pop(&q, t(0)), None);
    let held = q.entries().fifo.len();
    assert!(held <= 64, "stale entries are dropped, {held} left");
}

#[test]
fn an_execution_popped_before_its_removal_is_not_removed() {
    let (q, _) = queue(5, 1);
    q.push(queued("a")).unwrap();
    q.push(queued("b")).unwrap();
    assert_eq!(pop(&q, t(0)).unwrap().id.as_str(), "a");
    assert!(!q.remove(&ExecutionId::new("a")), "already taken");
    assert_eq!(q.depth(), 1);
    assert_eq!(pop(&q, t(0)).unwrap().id.as_str(), "b");
}

/// The store-buffer pattern between the background loop (clears the announcement,
/// then looks for a free slot) and a slot's release (frees it, then announces if
/// work waits): each side writes one location and reads the other. Without a SeqCst
/// fence on both sides both reads may miss the other's write, even on x86, whose
/// store buffer lets a load pass an earlier store. Then the loop finds no slot and
/// the release tells nobody: queued work sits beside a free slot.
#[test]
fn a_released_slot_and_a_looking_loop_never_miss_each_other() {
    const ROUNDS: usize = 2_000_000;
    let (q, mut ready) = queue(10, 1);
    q.push(queued("waiting")).unwrap();
    // Each round the releaser drops a slot while the looker clears the
    // announcement and looks for a slot; both spin on `go` so they start within
    // nanoseconds of each other.
    let go = AtomicUsize::new(0);
    let looked_in = AtomicUsize::new(0);
    let found = AtomicBool::new(false);
    let mut lost = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 1..=ROUNDS {
                while go.load(Ordering::Acquire) != round {
                    std::hint::spin_loop();
                }
                q.clear_announcement();
                let slot = q.try_acquire_slot();
                found.store(slot.is_some(), Ordering::Relaxed);
                // Released before reporting, so the next round starts with it free.
                drop(slot);
                looked_in.store(round, Ordering::Release);
            }
        });
        for round in 1..=ROUNDS {
            // The slot taken, the queue announced and being looked at.
            while ready.try_next().is_some() {}
            let slot = q.try_acquire_slot().expect("free");
            while ready.try_next().is_some() {}
            q.announced.store(true, Ordering::SeqCst);
            go.store(round, Ordering::Release);
            drop(slot);
            while looked_in.load(Ordering::Acquire) != round {
                std::hint::spin_loop();
            }
            if !found.load(Ordering::Relaxed) && ready.try_next().is_none() {
                lost += 1;
            }
        }
    });
    assert_eq!(lost, 0, "{lost} of {ROUNDS} releases went unseen");
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
