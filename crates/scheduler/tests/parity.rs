//! Completion-parity cases: each pins, at named checkpoints, what a user could observe
//! of the scheduler (records, queues, slots, events) as an insta snapshot under
//! `snapshots/<case>/`. Deterministic: manual clock, sequential ids, scripted
//! dispatcher, tokio's paused clock for timeouts; no sleeps.

mod support;

use std::time::Duration;

use core_types::{DispatchSuccess, ErrorCode, ErrorInfo, ExecutionState, Payload};
use scheduler::{
    Completion, CompletionOutcome, CompletionSource, IgnoredBecause, RetryBackoff, SubmitError,
};
use serde_json::json;
use support::{Case, Step, gate, spec};

fn answer(value: serde_json::Value) -> Completion {
    Completion::Success(DispatchSuccess::warm(Payload::from_value(&value)))
}

#[tokio::test(start_paused = true)]
async fn case_drain_of_an_empty_queue_dispatches_nothing() {
    let mut case = Case::new("drain_of_an_empty_queue_dispatches_nothing");
    let f = case.function(spec("f", json!({}))).await;
    assert!(!case.drain_once(&f).await);
    case.checkpoint("01_drained_an_empty_queue").await;
}

#[tokio::test(start_paused = true)]
async fn case_unreachable_endpoint_with_max_retries_1_ends_in_error_after_one_drain() {
    let mut case = Case::new("unreachable_endpoint_with_max_retries_1");
    let f = case.function(spec("f", json!({"maxRetries": 1}))).await;
    case.script(&f, [Step::Unreachable]);
    let id = case.submit(&f, json!({"n": 1}), None).await.unwrap();
    case.checkpoint("01_enqueued").await;
    assert!(case.drain_once(&f).await);
    let record = case.scheduler.execution(&id).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Error);
    assert!(record.error.unwrap().has_code(ErrorCode::DispatchError));
    case.checkpoint("02_drained_once_and_failed").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_pool_json_answer_becomes_the_output_right_after_the_drain() {
    let mut case = Case::new("pool_json_answer_becomes_the_output");
    let f = case.function(spec("f", json!({}))).await;
    case.script(
        &f,
        [Step::Answer(Payload::from_value(
            &json!({"greeting": "hello", "n": [1, 2]}),
        ))],
    );
    let id = case
        .submit(&f, json!({"name": "world"}), None)
        .await
        .unwrap();
    assert!(case.drain_once(&f).await);
    let record = case.scheduler.execution(&id).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Success);
    assert_eq!(
        record.output.unwrap().to_value(),
        json!({"greeting": "hello", "n": [1, 2]})
    );
    case.checkpoint("01_drained_and_succeeded").await;
}

#[tokio::test(start_paused = true)]
async fn case_max_retries_3_against_a_failing_endpoint_retries_with_the_same_id() {
    let mut case = Case::new("max_retries_3_against_a_failing_endpoint");
    let f = case.function(spec("f", json!({"maxRetries": 3}))).await;
    case.script(&f, [Step::Http500, Step::Http500, Step::Http500]);
    let id = case.submit(&f, json!(1), None).await.unwrap();

    assert!(case.drain_once(&f).await);
    let record = case.scheduler.execution(&id).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempt), (ExecutionState::Queued, 2));
    case.checkpoint("01_first_drain_queued_again_as_attempt_2")
        .await;

    case.advance_past_backoff(2);
    assert!(case.drain_once(&f).await);
    case.checkpoint("02_second_drain_queued_again_as_attempt_3")
        .await;

    case.advance_past_backoff(3);
    assert!(case.drain_once(&f).await);
    let record = case.scheduler.execution(&id).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempt), (ExecutionState::Error, 3));
    case.checkpoint("03_third_drain_ended_in_error").await;
    assert!(!case.drain_once(&f).await, "nothing is left to dispatch");
}

#[tokio::test(start_paused = true)]
async fn case_a_retry_is_not_dispatched_before_its_backoff_is_over() {
    let mut case = Case::new("retry_waits_out_its_backoff");
    let f = case.function(spec("f", json!({"maxRetries": 2}))).await;
    case.script(&f, [Step::Http500, Step::Echo]);
    let id = case.submit(&f, json!("again"), None).await.unwrap();
    assert!(case.drain_once(&f).await);
    assert!(
        !case.drain_once(&f).await,
        "the retry waits out its backoff: nothing is due"
    );
    case.checkpoint("01_retry_queued_not_yet_due").await;

    let wait = RetryBackoff::default().delay(&id, 2).0;
    case.advance_clock(wait - 1);
    assert!(!case.drain_once(&f).await, "1 ms early");
    case.advance_clock(1);
    assert!(case.drain_once(&f).await);
    let record = case.scheduler.execution(&id).await.unwrap().unwrap();
    assert_eq!((record.state, record.attempt), (ExecutionState::Success, 2));
    case.checkpoint("02_due_then_drained").await;
}

#[tokio::test(start_paused = true)]
async fn case_local_succeeds_with_the_input_as_output() {
    let mut case = Case::new("local_echo_succeeds");
    let f = case
        .function(spec(
            "echo",
            json!({"executionMode": "LOCAL", "endpointUrl": null}),
        ))
        .await;
    case.script(&f, [Step::Echo]);
    let id = case
        .submit(&f, json!({"text": "same", "list": [true, null]}), None)
        .await
        .unwrap();
    assert!(case.drain_once(&f).await);
    let record = case.scheduler.execution(&id).await.unwrap().unwrap();
    assert_eq!(
        record.output.unwrap().to_value(),
        json!({"text": "same", "list": [true, null]})
    );
    case.checkpoint("01_echoed").await;
}

#[tokio::test(start_paused = true)]
async fn case_an_idempotent_reenqueue_during_a_pending_retry_returns_the_same_id() {
    let mut case = Case::new("idempotent_reenqueue_during_pending_retry");
    let f = case.function(spec("f", json!({"maxRetries": 2}))).await;
    case.script(
        &f,
        [
            Step::Http500,
            Step::Answer(Payload::from_value(&json!("second time lucky"))),
        ],
    );
    let first = case
        .submit(&f, json!({"order": 7}), Some("key-1"))
        .await
        .unwrap();
    assert!(case.drain_once(&f).await);
    case.checkpoint("01_first_attempt_failed_retry_pending")
        .await;

    let again = case
        .submit(&f, json!({"order": 7}), Some("key-1"))
        .await
        .unwrap();
    assert_eq!(again, first);
    let reused = case.submit(&f, json!({"order": 8}), Some("key-1")).await;
    assert!(matches!(reused, Err(SubmitError::IdempotencyKeyReused(_))));
    case.checkpoint("02_replay_returned_the_same_execution")
        .await;

    case.advance_past_backoff(2);
    assert!(case.drain_once(&f).await);
    case.checkpoint("03_retry_succeeded_without_the_idempotency_key")
        .await;
}

#[tokio::test(start_paused = true)]
async fn case_concurrent_duplicates_with_one_key_share_one_execution() {
    let mut case = Case::new("concurrent_duplicates_share_one_execution");
    let f = case.function(spec("f", json!({}))).await;
    let submits: Vec<_> = (0..5)
        .map(|_| {
            let request = core_types::InvocationRequest {
                input: Payload::from_value(&json!(42)),
                metadata: Default::default(),
            };
            let options = scheduler::SubmitOptions {
                idempotency_key: Some(core_types::IdempotencyKey::new("same")),
                ..Default::default()
            };
            case.scheduler.submit(&f, request, options)
        })
        .collect();
    let results = futures::future::join_all(submits).await;
    let ids: std::collections::BTreeSet<_> = results
        .into_iter()
        .map(|r| r.unwrap().execution_id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    case.submit(&f, json!(42), Some("same")).await.unwrap();
    case.checkpoint("01_one_execution_queued").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_retry_that_finds_the_queue_full_ends_in_error_with_the_original_error() {
    let mut case = Case::new("retry_finds_the_queue_full");
    let f = case
        .function(spec(
            "f",
            json!({"maxRetries": 3, "queueSize": 1, "concurrency": 1}),
        ))
        .await;
    let (a_waits, release_a) = gate();
    case.script(&f, [a_waits, Step::Echo]);
    let a = case.submit(&f, json!("a"), None).await.unwrap();
    let running_a = case
        .scheduler
        .tick_once(&f)
        .await
        .unwrap()
        .expect("a starts");
    let b = case.submit(&f, json!("b"), None).await.unwrap();
    assert!(matches!(
        case.submit(&f, json!("c"), None).await,
        Err(SubmitError::QueueFull { .. })
    ));
    case.checkpoint("01_a_running_b_fills_the_queue").await;

    assert!(release_a.release(Err(ErrorInfo::new(
        ErrorCode::FunctionError,
        "function answered 500: a failed"
    ))));
    running_a.await.unwrap();
    let record = case.scheduler.execution(&a).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Error);
    assert_eq!(
        record.error.unwrap().message,
        "function answered 500: a failed"
    );
    case.checkpoint("02_a_could_not_requeue_and_ended_with_its_error")
        .await;

    assert!(case.drain_once(&f).await);
    assert_eq!(
        case.scheduler.execution(&b).await.unwrap().unwrap().state,
        ExecutionState::Success
    );
    case.checkpoint("03_b_ran").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_sync_wait_that_times_out_is_terminal_and_a_late_completion_does_not_rewrite_it() {
    let mut case = Case::new("sync_wait_times_out");
    let f = case.function(spec("f", json!({"concurrency": 1}))).await;
    let (waits, mut release) = gate();
    case.script(&f, [waits]);
    let running = case.submit(&f, json!("slow"), None).await.unwrap();
    let queued = case.submit(&f, json!("behind"), None).await.unwrap();
    let attempt = case.scheduler.tick_once(&f).await.unwrap().expect("starts");
    release.started().await;

    let timed_out = case
        .scheduler
        .wait_for_result(&running, Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(timed_out.state, ExecutionState::Timeout);
    attempt.await.unwrap();
    assert!(
        !release.release(Ok(DispatchSuccess::warm(Payload::string("late")))),
        "the dispatch was abandoned"
    );
    let queued_timed_out = case
        .scheduler
        .wait_for_result(&queued, Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(queued_timed_out.state, ExecutionState::Timeout);
    case.checkpoint("01_both_waits_timed_out").await;

    let late = case
        .scheduler
        .complete(
            &running,
            Some(1),
            answer(json!("late")),
            CompletionSource::Callback,
        )
        .await;
    assert_eq!(
        late,
        Ok(CompletionOutcome::Ignored(IgnoredBecause::AlreadyFinished))
    );
    assert!(
        !case.drain_once(&f).await,
        "the timed-out queued execution is never dispatched"
    );
    assert_eq!(
        case.scheduler
            .execution(&running)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecutionState::Timeout
    );
    case.checkpoint("02_late_callback_ignored_nothing_dispatched")
        .await;
}

#[tokio::test(start_paused = true)]
async fn case_a_callback_for_a_still_queued_execution_ends_it_and_it_is_never_dispatched() {
    let mut case = Case::new("callback_for_a_queued_execution");
    let f = case.function(spec("f", json!({}))).await;
    let id = case.submit(&f, json!("in"), None).await.unwrap();
    let outcome = case
        .scheduler
        .complete(
            &id,
            None,
            answer(json!({"from": "callback"})),
            CompletionSource::Callback,
        )
        .await;
    assert_eq!(
        outcome,
        Ok(CompletionOutcome::Applied(ExecutionState::Success))
    );
    case.checkpoint("01_callback_ended_the_queued_execution")
        .await;
    assert!(!case.drain_once(&f).await);
    case.checkpoint("02_drain_found_nothing").await;
}

#[tokio::test(start_paused = true)]
async fn case_callback_and_response_racing_first_wins_and_the_slot_is_released_once() {
    let mut case = Case::new("callback_and_response_race");
    let f = case.function(spec("f", json!({"concurrency": 1}))).await;
    let (waits, mut release) = gate();
    case.script(
        &f,
        [waits, Step::Answer(Payload::from_value(&json!("response")))],
    );

    let callback_first = case.submit(&f, json!(1), None).await.unwrap();
    let attempt = case.scheduler.tick_once(&f).await.unwrap().expect("starts");
    release.started().await;
    let won = case
        .scheduler
        .complete(
            &callback_first,
            Some(1),
            answer(json!("callback")),
            CompletionSource::Callback,
        )
        .await;
    assert_eq!(won, Ok(CompletionOutcome::Applied(ExecutionState::Success)));
    attempt.await.unwrap();
    assert!(!release.release(Ok(DispatchSuccess::warm(Payload::string("response")))));
    assert_eq!(case.scheduler.queue_snapshot("f").unwrap().in_flight, 0);
    case.checkpoint("01_callback_won_response_dropped").await;

    let response_first = case.submit(&f, json!(2), None).await.unwrap();
    assert!(case.drain_once(&f).await);
    let lost = case
        .scheduler
        .complete(
            &response_first,
            Some(1),
            answer(json!("callback")),
            CompletionSource::Callback,
        )
        .await;
    assert_eq!(
        lost,
        Ok(CompletionOutcome::Ignored(IgnoredBecause::AlreadyFinished))
    );
    assert_eq!(case.scheduler.queue_snapshot("f").unwrap().in_flight, 0);
    case.checkpoint("02_response_won_callback_ignored").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_callback_for_an_older_attempt_is_ignored() {
    let mut case = Case::new("callback_for_an_older_attempt");
    let f = case.function(spec("f", json!({"maxRetries": 2}))).await;
    let (waits, mut release) = gate();
    case.script(&f, [Step::Http500, waits]);
    let id = case.submit(&f, json!(1), None).await.unwrap();
    assert!(case.drain_once(&f).await);
    case.advance_past_backoff(2);
    let attempt_2 = case
        .scheduler
        .tick_once(&f)
        .await
        .unwrap()
        .expect("attempt 2 starts");
    release.started().await;
    let stale = case
        .scheduler
        .complete(
            &id,
            Some(1),
            answer(json!("from attempt 1")),
            CompletionSource::Callback,
        )
        .await;
    assert_eq!(
        stale,
        Ok(CompletionOutcome::Ignored(IgnoredBecause::StaleAttempt {
            reported: 1,
            current: 2
        }))
    );
    case.checkpoint("01_attempt_1_callback_ignored_attempt_2_running")
        .await;

    assert!(release.release(Ok(DispatchSuccess::warm(Payload::string("attempt 2")))));
    attempt_2.await.unwrap();
    case.checkpoint("02_attempt_2_succeeded").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_sync_waiter_sees_the_final_result_after_retries() {
    let mut case = Case::new("sync_waiter_after_retries");
    let f = case.function(spec("f", json!({"maxRetries": 3}))).await;
    case.script(
        &f,
        [
            Step::Http500,
            Step::Unreachable,
            Step::Answer(Payload::from_value(&json!({"ok": true}))),
        ],
    );
    let id = case.submit(&f, json!(1), None).await.unwrap();
    let drains = async {
        assert!(case.drain_once(&f).await);
        for next_attempt in [2, 3] {
            case.advance_past_backoff(next_attempt);
            assert!(case.drain_once(&f).await);
        }
    };
    let (waited, ()) = tokio::join!(case.scheduler.wait_for_result(&id, None), drains);
    let record = waited.unwrap();
    assert_eq!((record.state, record.attempt), (ExecutionState::Success, 3));
    assert_eq!(record.output.unwrap().to_value(), json!({"ok": true}));
    case.checkpoint("01_waiter_woken_once_with_the_final_result")
        .await;
}

#[tokio::test(start_paused = true)]
async fn case_removal_ends_queued_executions_with_function_removed() {
    let mut case = Case::new("removal_with_queued_executions");
    let f = case.function(spec("f", json!({"concurrency": 1}))).await;
    let (waits, mut release) = gate();
    case.script(&f, [waits]);
    let running = case.submit(&f, json!("a"), None).await.unwrap();
    let waited_on = case.submit(&f, json!("b"), None).await.unwrap();
    case.submit(&f, json!("c"), None).await.unwrap();
    let attempt = case
        .scheduler
        .tick_once(&f)
        .await
        .unwrap()
        .expect("a starts");
    // The attempt's call is made on its own task: wait for it, so the events below come
    // in one order whichever task the runtime polls first.
    release.started().await;
    case.checkpoint("01_one_running_two_queued").await;

    let (waited, removed) = tokio::join!(
        case.scheduler.wait_for_result(&waited_on, None),
        case.scheduler.remove_function(&f)
    );
    removed.unwrap();
    let waited = waited.unwrap();
    assert_eq!(waited.state, ExecutionState::Error);
    assert!(waited.error.unwrap().has_code(ErrorCode::FunctionRemoved));
    assert!(matches!(
        case.submit(&f, json!("d"), None).await,
        Err(SubmitError::UnknownFunction(_))
    ));
    case.checkpoint("02_removed_queued_ones_ended").await;

    assert!(release.release(Ok(DispatchSuccess::warm(Payload::string("a done")))));
    attempt.await.unwrap();
    assert_eq!(
        case.scheduler
            .execution(&running)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecutionState::Success
    );
    case.checkpoint("03_the_running_one_finished").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_dispatch_panic_ends_the_execution_in_error_and_frees_the_slot() {
    let mut case = Case::new("dispatch_panic");
    let f = case
        .function(spec("f", json!({"concurrency": 1, "maxRetries": 3})))
        .await;
    case.script(&f, [Step::Panic, Step::Echo]);
    let panicked = case.submit(&f, json!("boom"), None).await.unwrap();
    let next = case.submit(&f, json!("fine"), None).await.unwrap();
    assert!(case.drain_once(&f).await);
    let record = case.scheduler.execution(&panicked).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.attempt),
        (ExecutionState::Error, 1),
        "a panic is not retried"
    );
    assert_eq!(case.scheduler.queue_snapshot("f").unwrap().in_flight, 0);
    case.checkpoint("01_panic_ended_in_error_slot_free").await;
    assert!(case.drain_once(&f).await);
    assert_eq!(
        case.scheduler
            .execution(&next)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecutionState::Success
    );
    case.checkpoint("02_next_execution_used_the_slot").await;
}

#[tokio::test(start_paused = true)]
async fn case_shutdown_ends_in_flight_and_queued_work() {
    let mut case = Case::new("shutdown_with_in_flight_and_queued_work");
    let hangs = case
        .function(spec("hangs", json!({"concurrency": 1})))
        .await;
    let quick = case
        .function(spec("quick", json!({"concurrency": 1})))
        .await;
    let (hang, _never) = gate();
    let (quick_waits, release_quick) = gate();
    case.script(&hangs, [hang]);
    case.script(&quick, [quick_waits]);
    let stuck = case.submit(&hangs, json!("stuck"), None).await.unwrap();
    let queued = case.submit(&hangs, json!("queued"), None).await.unwrap();
    let finishing = case.submit(&quick, json!("finishing"), None).await.unwrap();
    let _stuck_attempt = case
        .scheduler
        .tick_once(&hangs)
        .await
        .unwrap()
        .expect("starts");
    let _quick_attempt = case
        .scheduler
        .tick_once(&quick)
        .await
        .unwrap()
        .expect("starts");
    case.checkpoint("01_two_running_one_queued").await;

    let finish_during_grace = async {
        assert!(release_quick.release(Ok(DispatchSuccess::warm(Payload::string("made it")))));
    };
    let (waited, (), ()) = tokio::join!(
        case.scheduler.wait_for_result(&queued, None),
        case.scheduler.shutdown(Duration::from_secs(5)),
        finish_during_grace,
    );
    assert!(waited.unwrap().error.unwrap().has_code(ErrorCode::Shutdown));
    for (id, state) in [
        (&stuck, ExecutionState::Error),
        (&queued, ExecutionState::Error),
        (&finishing, ExecutionState::Success),
    ] {
        assert_eq!(
            case.scheduler.execution(id).await.unwrap().unwrap().state,
            state,
            "{id}"
        );
    }
    assert!(matches!(
        case.submit(&quick, json!("late"), None).await,
        Err(SubmitError::NotAccepting(_))
    ));
    case.checkpoint("02_every_execution_ended").await;
}

#[tokio::test(start_paused = true)]
async fn case_concurrency_n_never_exceeds_n_in_flight_and_the_next_starts_when_a_slot_frees() {
    let mut case = Case::new("concurrency_limit");
    let f = case.function(spec("f", json!({"concurrency": 2}))).await;
    let (waits_1, release_1) = gate();
    let (waits_2, release_2) = gate();
    case.script(&f, [waits_1, waits_2, Step::Echo]);
    for n in 1..=3 {
        case.submit(&f, json!(n), None).await.unwrap();
    }
    let first = case.scheduler.tick_once(&f).await.unwrap().expect("slot 1");
    let second = case.scheduler.tick_once(&f).await.unwrap().expect("slot 2");
    assert!(
        case.scheduler.tick_once(&f).await.unwrap().is_none(),
        "no third slot"
    );
    case.checkpoint("01_two_in_flight_one_waiting").await;

    assert!(release_1.release(Ok(DispatchSuccess::warm(Payload::string("one")))));
    first.await.unwrap();
    assert_eq!(case.scheduler.queue_snapshot("f").unwrap().in_flight, 1);
    let third = case
        .scheduler
        .tick_once(&f)
        .await
        .unwrap()
        .expect("the freed slot is taken");
    third.await.unwrap();
    case.checkpoint("02_a_freed_slot_started_the_next").await;

    assert!(release_2.release(Ok(DispatchSuccess::warm(Payload::string("two")))));
    second.await.unwrap();
    case.checkpoint("03_all_done").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_blocked_function_does_not_stall_another() {
    let mut case = Case::new("blocked_function_does_not_stall_another");
    let slow = case.function(spec("slow", json!({"concurrency": 1}))).await;
    let fast = case.function(spec("fast", json!({}))).await;
    let (slow_waits, release_slow) = gate();
    case.script(&slow, [slow_waits, Step::Echo]);
    case.script(&fast, [Step::Echo, Step::Echo]);
    case.scheduler.start_background();

    let blocked = case.submit(&slow, json!("blocked"), None).await.unwrap();
    let behind = case.submit(&slow, json!("behind"), None).await.unwrap();
    for n in 1..=2 {
        let id = case.submit(&fast, json!(n), None).await.unwrap();
        let record = case.scheduler.wait_for_result(&id, None).await.unwrap();
        assert_eq!(record.state, ExecutionState::Success);
    }
    assert_eq!(
        case.scheduler
            .execution(&blocked)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecutionState::Running
    );
    case.checkpoint("01_fast_done_while_slow_blocked").await;

    assert!(release_slow.release(Ok(DispatchSuccess::warm(Payload::string("unblocked")))));
    let record = case.scheduler.wait_for_result(&behind, None).await.unwrap();
    assert_eq!(record.state, ExecutionState::Success);
    case.checkpoint("02_slow_caught_up_in_the_background").await;
    case.scheduler.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn case_in_manual_mode_a_sync_waiter_drives_the_work_ahead_of_it_and_then_its_own() {
    let mut case = Case::waiters_drive("manual_mode_sync_waiter_drives_its_queue");
    let f = case.function(spec("f", json!({"concurrency": 1}))).await;
    case.script(&f, [Step::Echo, Step::Echo]);
    let ahead = case.submit(&f, json!("queued first"), None).await.unwrap();
    let own = case.submit(&f, json!("sync"), None).await.unwrap();
    case.checkpoint("01_two_queued_nothing_dispatched").await;

    let record = case.scheduler.wait_for_result(&own, None).await.unwrap();
    assert_eq!(record.state, ExecutionState::Success);
    assert_eq!(
        case.scheduler
            .execution(&ahead)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecutionState::Success,
        "FIFO: the work ahead ran first"
    );
    case.checkpoint("02_both_done_in_order").await;
}

#[tokio::test(start_paused = true)]
async fn case_in_manual_mode_a_sync_waiter_waits_for_a_busy_slot_and_retries_itself() {
    let mut case = Case::waiters_drive("manual_mode_sync_waiter_waits_for_a_slot");
    let f = case
        .function(spec("f", json!({"concurrency": 1, "maxRetries": 2})))
        .await;
    let (busy, mut running) = gate();
    case.script(&f, [busy, Step::Http500, Step::Echo]);
    let first = case.submit(&f, json!("drained"), None).await.unwrap();
    let drain = case.scheduler.tick_once(&f).await.unwrap().expect("starts");
    running.started().await;
    let own = case.submit(&f, json!("sync"), None).await.unwrap();

    let waiter = case.scheduler.clone();
    let waiting = {
        let own = own.clone();
        async move { waiter.wait_for_result(&own, None).await }
    };
    let release = async {
        tokio::task::yield_now().await;
        assert!(running.release(Ok(DispatchSuccess::warm(Payload::string("first")))));
        drain.await.unwrap();
    };
    // The waiter sleeps until its retry is due by the clock; time passes for it.
    let backoff = async {
        case.until_record(&own, |r| r.attempt == 2).await;
        case.advance_past_backoff(2);
    };
    let (record, (), ()) = tokio::join!(waiting, release, backoff);
    let record = record.unwrap();
    assert_eq!(record.state, ExecutionState::Success);
    assert_eq!(record.attempt, 2, "the waiter dispatched its retry too");
    assert_eq!(
        case.scheduler
            .execution(&first)
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecutionState::Success
    );
    case.checkpoint("01_slot_freed_then_own_attempts_ran").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_replay_that_stops_waiting_leaves_the_shared_execution_running() {
    let mut case = Case::new("replay_stops_waiting_without_ending_the_execution");
    let f = case.function(spec("f", json!({}))).await;
    let (slow, mut running) = gate();
    case.script(&f, [slow]);
    let id = case.submit(&f, json!("in"), Some("key-1")).await.unwrap();
    let attempt = case.scheduler.tick_once(&f).await.unwrap().expect("starts");
    running.started().await;

    let replay = case
        .scheduler
        .wait_at_most(&mut case.scheduler.waiter(&id), Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(
        replay.state,
        ExecutionState::Running,
        "answered as it stands"
    );
    case.checkpoint("01_replay_gave_up_execution_still_running")
        .await;

    assert!(running.release(Ok(DispatchSuccess::warm(Payload::string("out")))));
    attempt.await.unwrap();
    assert_eq!(
        case.scheduler.execution(&id).await.unwrap().unwrap().state,
        ExecutionState::Success
    );
    case.checkpoint("02_the_owner_s_result_arrived").await;
}
