//! Completion parity at the HTTP level: each case drives the real router over the real
//! scheduler (manual clock, sequential ids, scripted dispatcher, tokio's paused clock)
//! through `oneshot`, and pins at named checkpoints what a client saw -- every request
//! and response -- and what it could read afterwards: each execution
//! (`GET /v1/executions/{id}`), each queue and its slots, and the dispatches made.
//! Snapshots live in `snapshots/<case>/NN_what_happened.snap`; `cargo xtask parity`
//! runs every `case_*` test here.

mod support;

use axum::http::StatusCode;
use core_types::{DispatchSuccess, ExecutionState, Payload};
use scheduler::RetryBackoff;
use serde_json::json;
use support::{Api, Call, Step, action, complete, drain, gate, spec, until};

fn status_of(answer: &support::Answer) -> ExecutionState {
    serde_json::from_value(answer.json()["status"].clone()).expect("a status")
}

#[tokio::test(start_paused = true)]
async fn case_a_sync_invoke_of_an_echo_answers_200_with_the_input_as_output() {
    let api = Api::case_in_background("sync_invoke_echo_succeeds");
    api.register(spec("echo", json!({}))).await;
    api.script("echo", [Step::Echo]);
    api.checkpoint("01_registered").await;

    let answer = api
        .exchange(
            Call::post_json(
                action("echo", "invoke"),
                &json!({"input": {"hello": "world", "n": [1, 2]}}),
            )
            .header("X-Trace-Id", "client-trace"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(status_of(&answer), ExecutionState::Success);
    api.checkpoint("02_invoked_and_echoed").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_sync_invoke_that_fails_every_attempt_answers_200_with_status_error() {
    let api = Api::case_in_background("sync_invoke_fails_after_max_retries");
    api.register(spec("flaky", json!({"maxRetries": 2}))).await;
    api.script("flaky", [Step::Http500, Step::Http500]);

    let answer = api
        .exchange(Call::post_json(
            action("flaky", "invoke"),
            &json!({"input": 1}),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(status_of(&answer), ExecutionState::Error);
    assert_eq!(answer.json()["error"]["code"], "FUNCTION_ERROR");
    let record = api.execution(&answer.execution_id()).await;
    assert_eq!(record.json()["attempt"], 2);
    api.checkpoint("01_two_attempts_then_error").await;
}

#[tokio::test(start_paused = true)]
async fn case_drain_once_answers_only_after_the_execution_moved() {
    let api = Api::case("enqueue_then_drain_once");
    api.register(spec("echo", json!({}))).await;
    api.script("echo", [Step::Echo]);
    let queued = api
        .exchange(Call::post_json(
            action("echo", "enqueue"),
            &json!({"input": "work", "metadata": {"tenant": "t1"}}),
        ))
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED);
    api.checkpoint("01_enqueued_and_still_queued").await;

    api.advance_clock(25);
    let drained = api.exchange(Call::post(drain("echo"))).await;
    assert_eq!(drained.json(), &json!({"dispatched": true}));
    // The very next read sees the end: the drain answered after the record moved.
    let record = api.execution(&queued.execution_id()).await;
    assert_eq!(status_of(&record), ExecutionState::Success);
    api.checkpoint("02_drained_and_already_terminal").await;
}

#[tokio::test(start_paused = true)]
async fn case_drain_once_of_an_empty_queue_dispatches_nothing() {
    let api = Api::case("drain_once_of_an_empty_queue");
    api.register(spec("idle", json!({}))).await;
    let drained = api.exchange(Call::post(drain("idle"))).await;
    assert_eq!(drained.status, StatusCode::OK);
    assert_eq!(drained.json(), &json!({"dispatched": false}));
    api.checkpoint("01_nothing_dispatched").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_status_form_callback_completes_a_queued_execution_that_is_never_dispatched() {
    let api = Api::case("callback_status_form_completes_a_queued_execution");
    api.register(spec("f", json!({}))).await;
    let queued = api
        .exchange(Call::post_json(
            action("f", "enqueue"),
            &json!({"input": 1}),
        ))
        .await;
    let id = queued.execution_id();

    api.advance_clock(10);
    let done = api
        .exchange(Call::post_json(
            complete(id.as_str()),
            &json!({"status": "success", "output": {"from": "callback"}}),
        ))
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT);
    let drained = api.exchange(Call::post(drain("f"))).await;
    assert_eq!(drained.json(), &json!({"dispatched": false}));
    api.checkpoint("01_completed_by_callback_and_not_dispatched")
        .await;
}

#[tokio::test(start_paused = true)]
async fn case_a_runtime_form_callback_completes_a_running_attempt_and_its_response_is_ignored() {
    let api = Api::case("callback_runtime_form_completes_a_running_attempt");
    api.register(spec("f", json!({}))).await;
    let (waits, mut dispatch) = gate();
    api.script("f", [waits]);
    let queued = api
        .exchange(Call::post_json(
            action("f", "enqueue"),
            &json!({"input": 1}),
        ))
        .await;
    let id = queued.execution_id();

    let drained = async { api.exchange(Call::post(drain("f"))).await };
    let callback = async {
        dispatch.started().await;
        api.checkpoint("01_dispatch_running").await;
        api.advance_clock(40);
        let done = api
            .exchange(
                Call::post_json(
                    complete(id.as_str()),
                    &json!({"success": true, "output": {"from": "callback"}}),
                )
                .header("X-Dispatch-Attempt", "1"),
            )
            .await;
        assert_eq!(done.status, StatusCode::NO_CONTENT);
    };
    let (drained, ()) = tokio::join!(drained, callback);
    assert_eq!(drained.json(), &json!({"dispatched": true}));
    assert!(
        !dispatch.release(Ok(DispatchSuccess::warm(Payload::string("too late")))),
        "the callback won, so the dispatch was dropped"
    );
    api.checkpoint("02_callback_won_and_drain_answered").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_callback_for_an_older_attempt_is_ignored() {
    let api = Api::case("callback_for_an_older_attempt");
    api.register(spec("f", json!({"maxRetries": 2}))).await;
    let (second_waits, mut second) = gate();
    api.script("f", [Step::Http500, second_waits]);
    let queued = api
        .exchange(Call::post_json(
            action("f", "enqueue"),
            &json!({"input": 1}),
        ))
        .await;
    let id = queued.execution_id();
    api.exchange(Call::post(drain("f"))).await;
    api.checkpoint("01_first_attempt_failed_and_requeued").await;

    api.advance_clock(RetryBackoff::default().ceiling(2).0);
    let drained = async { api.exchange(Call::post(drain("f"))).await };
    let stale_callback = async {
        second.started().await;
        let stale = api
            .exchange(
                Call::post_json(
                    complete(id.as_str()),
                    &json!({"success": true, "output": "from attempt 1"}),
                )
                .header("X-Dispatch-Attempt", "1"),
            )
            .await;
        assert_eq!(stale.status, StatusCode::NO_CONTENT);
        let record = api.execution(&id).await;
        assert_eq!(status_of(&record), ExecutionState::Running);
        api.checkpoint("02_stale_callback_ignored_attempt_2_still_running")
            .await;
        assert!(second.release(Ok(DispatchSuccess::warm(Payload::string("from attempt 2")))));
    };
    let (drained, ()) = tokio::join!(drained, stale_callback);
    assert_eq!(drained.json(), &json!({"dispatched": true}));
    api.checkpoint("03_attempt_2_answered").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_callback_for_an_unknown_execution_is_404() {
    let api = Api::case("callback_for_an_unknown_execution");
    let answer = api
        .exchange(Call::post_json(
            complete("exec-404"),
            &json!({"success": true, "output": 1}),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    api.checkpoint("01_not_found").await;
}

#[tokio::test(start_paused = true)]
async fn case_a_late_callback_after_a_sync_timeout_leaves_the_timeout_in_place() {
    let api = Api::case("late_callback_after_sync_timeout");
    api.register(spec("slow", json!({}))).await;
    // No background loop and nobody drains: the invocation waits queued until the
    // caller's X-Timeout-Ms runs out (tokio's paused clock skips the wait).
    let answer = api
        .exchange(
            Call::post_json(action("slow", "invoke"), &json!({"input": "x"}))
                .header("X-Timeout-Ms", "100"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(status_of(&answer), ExecutionState::Timeout);
    api.checkpoint("01_sync_timeout_answered_200").await;

    let late = api
        .exchange(Call::post_json(
            complete(answer.execution_id().as_str()),
            &json!({"success": true, "output": "late"}),
        ))
        .await;
    assert_eq!(late.status, StatusCode::NO_CONTENT);
    let drained = api.exchange(Call::post(drain("slow"))).await;
    assert_eq!(drained.json(), &json!({"dispatched": false}));
    api.checkpoint("02_late_callback_ignored_never_dispatched")
        .await;
}

#[tokio::test(start_paused = true)]
async fn case_an_idempotent_enqueue_replays_its_execution_and_refuses_another_body() {
    let api = Api::case("idempotent_enqueue_replay");
    api.register(spec("f", json!({}))).await;
    let enqueue = |input: serde_json::Value| {
        Call::post_json(action("f", "enqueue"), &json!({ "input": input }))
            .header("Idempotency-Key", "order-7")
    };
    let first = api.exchange(enqueue(json!({"order": 7}))).await;
    let again = api.exchange(enqueue(json!({"order": 7}))).await;
    assert_eq!(first.execution_id(), again.execution_id());
    let reused = api.exchange(enqueue(json!({"order": 8}))).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    api.checkpoint("01_one_execution_replayed_other_body_refused")
        .await;
}

#[tokio::test(start_paused = true)]
async fn case_an_enqueue_into_a_full_queue_is_429_and_creates_no_record() {
    let api = Api::case("enqueue_into_a_full_queue");
    api.register(spec("tiny", json!({"queueSize": 1}))).await;
    api.script("tiny", [Step::Echo, Step::Echo]);
    let first = api
        .exchange(Call::post_json(
            action("tiny", "enqueue"),
            &json!({"input": 1}),
        ))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let refused = api
        .exchange(
            Call::post_json(action("tiny", "enqueue"), &json!({"input": 2}))
                .header("Idempotency-Key", "k"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"], "QUEUE_FULL");
    api.checkpoint("01_second_refused_only_the_first_exists")
        .await;

    api.exchange(Call::post(drain("tiny"))).await;
    let retried = api
        .exchange(
            Call::post_json(action("tiny", "enqueue"), &json!({"input": 2}))
                .header("Idempotency-Key", "k"),
        )
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    api.checkpoint("02_after_a_drain_the_same_key_is_accepted_fresh")
        .await;
}

#[tokio::test(start_paused = true)]
async fn case_deleting_a_function_ends_its_queued_executions_with_function_removed() {
    let api = Api::case("delete_with_queued_executions");
    api.register(spec("doomed", json!({}))).await;
    let queued = api
        .exchange(Call::post_json(
            action("doomed", "enqueue"),
            &json!({"input": 1}),
        ))
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED);

    let waiting = async {
        api.exchange(Call::post_json(
            action("doomed", "invoke"),
            &json!({"input": 2}),
        ))
        .await
    };
    let delete = async {
        // Delete once the sync invocation is queued behind the first one.
        until("the sync invocation is queued", || {
            api.scheduler
                .queue_snapshot("doomed")
                .is_some_and(|q| q.queued.len() == 2)
        })
        .await;
        api.advance_clock(5);
        api.exchange(Call::delete("/v1/functions/doomed")).await
    };
    let (waiting, deleted) = tokio::join!(waiting, delete);
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(waiting.status, StatusCode::OK);
    assert_eq!(waiting.json()["error"]["code"], "FUNCTION_REMOVED");
    let gone = api.exchange(Call::get("/v1/functions/doomed")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    api.checkpoint("01_both_ended_function_removed").await;
}
