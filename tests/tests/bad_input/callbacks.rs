//! Bad callback bodies: refused with 400 whatever the execution's state, and leaving it
//! as it was.

use super::*;

#[tokio::test(start_paused = true)]
async fn bad_callback_bodies_are_400_and_leave_the_execution_as_it_was() {
    let api = api_with_echo().await;
    api.script(ECHO, [Step::Echo]);
    let queued = api
        .send(&Call::post_json(
            action(ECHO, "enqueue"),
            &json!({"input": "kept"}),
        ))
        .await;
    let id = queued.execution_id();
    let mut sweep = Sweep::new(&api);
    for (body, field) in [
        (json!({}), "status"),
        (json!({"status": null, "success": null}), "status"),
        (json!({"status": "running"}), "status"),
        (json!({"status": "queued"}), "status"),
        (json!({"status": "bogus"}), "$"),
        (json!({"success": "yes"}), "$"),
        (json!({"success": 1}), "$"),
        (json!({"success": false, "error": 5}), "error"),
        (json!({"status": "error", "error": {"code": 1}}), "error"),
        (json!(null), "$"),
        (json!("success"), "$"),
    ] {
        let call = Call::post_json(complete(id.as_str()), &body).header("X-Dispatch-Attempt", "1");
        sweep.invalid_field(call, field).await;
    }
    // Well-formed JSON of the wrong shape is a validation error, never MALFORMED_JSON
    // (serde_json itself reports a non-string enum value as a syntax error).
    let wrong_enum = Call::post_json(complete(id.as_str()), &json!({"status": 1}));
    sweep.invalid_field(wrong_enum, "$").await;
    // Every body is an object: serde would read `[]` as a struct's fields in order.
    let empty_array = Call::post_json(complete(id.as_str()), &json!([]));
    sweep.invalid_field(empty_array, "$").await;
    sweep.finish();

    let record = api.execution(&id).await;
    assert_eq!(record.json()["status"], "queued", "{}", record.json());
    assert_eq!(record.json()["attempt"], 1);
    let drained = api.send(&Call::post(drain(ECHO))).await;
    assert_eq!(drained.json(), &json!({"dispatched": true}));
    let record = api.execution(&id).await;
    assert_eq!(record.json()["status"], "success");
    assert_eq!(record.json()["output"], "kept");
}

/// api.md: 400 for an invalid body whatever the execution's state. A runtime whose
/// callbacks are malformed learns it from the first one, even when that one arrives
/// late or reports a success beside a broken `error`.
#[tokio::test(start_paused = true)]
async fn a_bad_callback_body_is_400_also_for_a_finished_execution() {
    let api = api_with_echo().await;
    api.script(ECHO, [Step::Echo]);
    let queued = api
        .send(&Call::post_json(
            action(ECHO, "enqueue"),
            &json!({"input": "kept"}),
        ))
        .await;
    let id = queued.execution_id();
    let drained = api.send(&Call::post(drain(ECHO))).await;
    assert_eq!(drained.json(), &json!({"dispatched": true}));
    assert_eq!(api.execution(&id).await.json()["status"], "success");
    let mut sweep = Sweep::new(&api);
    for (body, field) in [
        (json!({"success": false, "error": 42}), "error"),
        (json!({"success": true, "error": 42}), "error"),
        (json!({"status": "success", "error": ["x"]}), "error"),
        (json!({"status": "error", "error": {"code": 7}}), "error"),
        (json!({"status": "success", "success": false}), "success"),
        (json!({"status": "running"}), "status"),
    ] {
        let call = Call::post_json(complete(id.as_str()), &body).header("X-Dispatch-Attempt", "1");
        sweep.invalid_field(call, field).await;
    }
    sweep.finish();
    let record = api.execution(&id).await;
    assert_eq!(record.json()["status"], "success");
    assert_eq!(record.json()["output"], "kept");
    // A well-formed late callback is still answered 204 and ignored.
    let late = api
        .send(
            &Call::post_json(
                complete(id.as_str()),
                &json!({"success": false, "error": "late"}),
            )
            .header("X-Dispatch-Attempt", "1"),
        )
        .await;
    assert_eq!(late.status, StatusCode::NO_CONTENT);
    assert_eq!(api.execution(&id).await.json()["output"], "kept");
}
