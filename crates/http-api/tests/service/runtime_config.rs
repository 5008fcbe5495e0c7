//! The runtime-config admin API: off unless enabled, a change applies to the next request
//! and needs the current revision, a refused change changes nothing, `validate` applies
//! nothing.

use super::*;

#[tokio::test]
async fn the_admin_routes_do_not_exist_unless_enabled() {
    let service = service(ApiConfig::default());
    let get = service.call("GET", "/v1/admin/runtime-config", None).await;
    get.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let patch = service
        .patch(json!({"expectedRevision": 1, "rateMaxPerSecond": 1}))
        .await;
    patch.error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let validate = service
        .call("POST", "/v1/admin/runtime-config/validate", Some(json!({})))
        .await;
    validate.error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn a_change_applies_to_the_next_request_and_needs_the_current_revision() {
    let service = service_with(RuntimeConfig::default());
    service.register_local("fn", json!({})).await;
    assert_eq!(
        service.runtime_config().await,
        json!({
            "revision": 1,
            "rateMaxPerSecond": 100_000,
            "syncQueueEnabled": false,
            "syncQueueAdmissionEnabled": false,
            "syncQueueMaxEstimatedWait": "PT2S",
            "syncQueueMaxQueueWait": "PT2S",
            "syncQueueRetryAfterSeconds": 2,
        })
    );

    let changed = service
        .patch(json!({"expectedRevision": 1, "rateMaxPerSecond": 1, "syncQueueMaxEstimatedWait": "PT0.5S"}))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let changed = changed.json();
    assert_eq!(changed["revision"], 2);
    assert_eq!(changed["effectiveConfig"]["revision"], 2);
    assert_eq!(changed["effectiveConfig"]["rateMaxPerSecond"], 1);
    assert_eq!(
        changed["effectiveConfig"]["syncQueueMaxEstimatedWait"],
        "PT0.5S"
    );
    assert_eq!(changed["appliedAt"], "2027-01-15T08:00:00Z");
    assert!(
        changed["changeId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(changed["warnings"], json!([]));
    assert_eq!(service.runtime_config().await, changed["effectiveConfig"]);

    // One request per second now: the first fits, the next is refused and queues nothing.
    assert_eq!(
        service.enqueue("fn", json!(1)).await.status,
        StatusCode::ACCEPTED
    );
    let limited = service.invoke("fn", json!(2), &[]).await;
    limited.error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(limited.header("retry-after"), "1");
    assert_eq!(service.queued("fn"), 1);
    service.clock.advance_ms(1_000);
    assert_eq!(
        service.enqueue("fn", json!(3)).await.status,
        StatusCode::ACCEPTED
    );

    // Written against revision 1: refused, and nothing changes.
    let stale = service
        .patch(json!({"expectedRevision": 1, "rateMaxPerSecond": 500}))
        .await;
    let body = stale.error(StatusCode::CONFLICT, "REVISION_MISMATCH");
    assert_eq!(body["currentRevision"], 2);
    assert_eq!(service.runtime_config().await["rateMaxPerSecond"], 1);

    // Accepted but pointless settings are applied with a warning.
    let warned = service
        .patch(json!({"expectedRevision": 2, "syncQueueAdmissionEnabled": true}))
        .await
        .json();
    assert_eq!(warned["revision"], 3);
    assert_eq!(
        warned["warnings"],
        json!(["syncQueueAdmissionEnabled has no effect while syncQueueEnabled is false"])
    );
}

#[tokio::test]
async fn a_refused_change_changes_nothing() {
    let service = service_with(RuntimeConfig::default());
    let before = service.runtime_config().await;

    let semantic = service
        .patch(json!({
            "expectedRevision": 1,
            "rateMaxPerSecond": 0,
            "syncQueueRetryAfterSeconds": 0,
            "syncQueueMaxEstimatedWait": "PT10S",
        }))
        .await;
    let body = semantic.error(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_RUNTIME_CONFIG");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{body}");
    for field in [
        "rateMaxPerSecond",
        "syncQueueRetryAfterSeconds",
        "syncQueueMaxEstimatedWait",
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.as_str().unwrap().starts_with(field)),
            "{field} missing from {body}"
        );
    }

    let malformed: [(Value, &str); 4] = [
        (
            json!({"expectedRevision": 1, "syncQueueMaxQueueWait": "2 seconds"}),
            "syncQueueMaxQueueWait",
        ),
        (
            json!({"expectedRevision": 1, "syncQueueMaxQueueWait": "-PT1S"}),
            "syncQueueMaxQueueWait",
        ),
        (json!({"rateMaxPerSecond": 5}), "expectedRevision"),
        (
            json!({"expectedRevision": 1, "rateMaxPerSecond": "fast"}),
            "rateMaxPerSecond",
        ),
    ];
    for (patch, field) in malformed {
        let answer = service.patch(patch.clone()).await;
        let body = answer.error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(body["details"][0]["field"], field, "{patch}: {body}");
    }
    let not_json = send(
        &service.app,
        Request::patch("/v1/admin/runtime-config")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"expectedRevision\": "))
            .unwrap(),
    )
    .await;
    not_json.error(StatusCode::BAD_REQUEST, "MALFORMED_JSON");

    assert_eq!(service.runtime_config().await, before);
}

#[tokio::test]
async fn validate_judges_a_change_without_applying_it() {
    let service = service_with(RuntimeConfig::default());
    let validate =
        |body: Value| service.call("POST", "/v1/admin/runtime-config/validate", Some(body));
    let valid = validate(json!({"rateMaxPerSecond": 7, "syncQueueMaxQueueWait": "PT5S"})).await;
    assert_eq!(valid.status, StatusCode::OK, "{}", valid.text);
    assert_eq!(valid.json(), json!({"valid": true}));

    let invalid = validate(json!({"syncQueueMaxQueueWait": "PT0.5S"})).await;
    let body = invalid.error(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_RUNTIME_CONFIG");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");

    let malformed = validate(json!({"syncQueueEnabled": "yes"})).await;
    malformed.error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR");

    let config = service.runtime_config().await;
    assert_eq!(config["revision"], 1);
    assert_eq!(config["rateMaxPerSecond"], 100_000);
}
