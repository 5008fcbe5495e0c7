//! Admission: the rate limit and the sync queue (depth, estimated wait, the places given
//! back, the queue timeout), and the memory budget of finished records.

use super::*;

#[tokio::test]
async fn a_rate_limited_request_leaves_no_idempotency_claim() {
    let service = service_with(RuntimeConfig {
        rate_max_per_second: 1,
        ..RuntimeConfig::default()
    });
    service.register_local("fn", json!({})).await;
    let keyed = || {
        let mut request = json_request("POST", "/v1/functions/fn:enqueue", &json!({"input": 1}));
        request
            .headers_mut()
            .insert("Idempotency-Key", "k-1".parse().unwrap());
        request
    };

    let first = service.enqueue("fn", json!(0)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    send(&service.app, keyed())
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(service.queued("fn"), 1);

    // A second later the same key makes a new execution: the refusal claimed nothing.
    service.clock.advance_ms(1_000);
    let accepted = send(&service.app, keyed()).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let id = accepted.json()["executionId"].clone();
    assert_ne!(id, first.json()["executionId"]);
    service.clock.advance_ms(1_000);
    let replay = send(&service.app, keyed()).await;
    assert_eq!(replay.json()["executionId"], id);
}

#[tokio::test]
async fn sync_admission_refuses_a_line_as_deep_as_the_queue() {
    let service = service_with(sync_queue_admission());
    service.register_local("fn", json!({"queueSize": 2})).await;

    let mut first = pin!(service.invoke("fn", json!(1), &[]));
    park(first.as_mut(), || service.queued("fn") == 1).await;
    let mut second = pin!(service.invoke("fn", json!(2), &[]));
    park(second.as_mut(), || service.queued("fn") == 2).await;

    let refused = service.invoke("fn", json!(3), &[]).await;
    refused.error(StatusCode::TOO_MANY_REQUESTS, "SYNC_QUEUE_REJECTED");
    assert_eq!(refused.header("x-queue-reject-reason"), "depth");
    // No completion rate yet: the configured least wait.
    assert_eq!(refused.header("retry-after"), "2");
    assert_eq!(service.queued("fn"), 2);

    assert!(service.drain("fn").await);
    assert!(service.drain("fn").await);
    assert_eq!(first.await.json()["status"], "success");
    assert_eq!(second.await.json()["status"], "success");
    assert_eq!(service.state.sync_queue_waiting("fn"), 0);

    // The line is empty again: the next caller is let in.
    let mut next = pin!(service.invoke("fn", json!(4), &[]));
    park(next.as_mut(), || service.queued("fn") == 1).await;
    assert!(service.drain("fn").await);
    assert_eq!(next.await.json()["status"], "success");
}

#[tokio::test]
async fn sync_admission_refuses_an_estimated_wait_over_the_limit() {
    let service = service_with(RuntimeConfig {
        sync_queue_max_estimated_wait: std::time::Duration::from_millis(500),
        sync_queue_retry_after_seconds: 1,
        ..sync_queue_admission()
    });
    service.register_local("fn", json!({})).await;
    // Two completions in one second: 2 per second.
    for n in 0..2 {
        service.enqueue("fn", json!(n)).await;
        assert!(service.drain("fn").await);
    }
    service.clock.advance_ms(1_000);

    // Nobody ahead: 0 s. One ahead: 0.5 s, still within the limit.
    let mut first = pin!(service.invoke("fn", json!(1), &[]));
    park(first.as_mut(), || service.queued("fn") == 1).await;
    let mut second = pin!(service.invoke("fn", json!(2), &[]));
    park(second.as_mut(), || service.queued("fn") == 2).await;

    // Two ahead: 1 s, over the 0.5 s allowed.
    let refused = service.invoke("fn", json!(3), &[]).await;
    let body = refused.error(StatusCode::TOO_MANY_REQUESTS, "SYNC_QUEUE_REJECTED");
    assert_eq!(refused.header("x-queue-reject-reason"), "est_wait");
    assert_eq!(refused.header("retry-after"), "1");
    assert!(
        body["message"].as_str().unwrap().contains("estimated wait"),
        "{body}"
    );
    assert_eq!(service.queued("fn"), 2);

    assert!(service.drain("fn").await);
    assert!(service.drain("fn").await);
    assert_eq!(first.await.status, StatusCode::OK);
    assert_eq!(second.await.status, StatusCode::OK);
    let metrics = service.scrape().await;
    assert_eq!(
        metrics.value("sync_queue_admitted_total{function=\"fn\"}"),
        2.0
    );
    assert_eq!(
        metrics.value("sync_queue_rejected_total{function=\"fn\"}"),
        1.0
    );
}

#[tokio::test]
async fn every_admitted_sync_invocation_gives_its_place_back_once() {
    let service = service_with(sync_queue_admission());
    service.register_local("fn", json!({"queueSize": 2})).await;
    service
        .register_local("tiny", json!({"queueSize": 1}))
        .await;
    let waiting = |function: &str| service.state.sync_queue_waiting(function);

    // Timed out.
    let timed_out = service
        .invoke("fn", json!(1), &[("X-Timeout-Ms", "5")])
        .await;
    assert_eq!(timed_out.json()["status"], "timeout");
    assert_eq!(waiting("fn"), 0);

    // A replay is a second caller: it holds a place of its own until answered.
    let key = [("Idempotency-Key", "k-1")];
    let mut original = pin!(service.invoke("fn", json!(2), &key));
    park(original.as_mut(), || service.queued("fn") == 1).await;
    let mut replay = pin!(service.invoke("fn", json!(2), &key));
    park(replay.as_mut(), || waiting("fn") == 2).await;
    service
        .invoke("fn", json!(3), &[])
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "SYNC_QUEUE_REJECTED");
    assert!(service.drain("fn").await);
    let (original, replay) = (original.await.json(), replay.await.json());
    assert_eq!(original["executionId"], replay["executionId"]);
    assert_eq!(replay["status"], "success");
    assert_eq!(waiting("fn"), 0);

    // Refused further down: the queue itself is full.
    service.enqueue("tiny", json!(0)).await;
    let full = service.invoke("tiny", json!(1), &[]).await;
    full.error(StatusCode::TOO_MANY_REQUESTS, "QUEUE_FULL");
    assert_eq!(full.header("retry-after"), "1");
    assert_eq!(waiting("tiny"), 0);

    // The client went away: the handler is dropped mid-wait.
    {
        let mut gone = pin!(service.invoke("fn", json!(4), &[]));
        park(gone.as_mut(), || service.queued("fn") == 1).await;
        assert_eq!(waiting("fn"), 1);
    }
    assert_eq!(waiting("fn"), 0);

    let metrics = service.scrape().await;
    let fun = |name: &str| metrics.value(&format!("{name}{{function=\"fn\"}}"));
    assert_eq!(fun("sync_queue_admitted_total"), 4.0);
    assert_eq!(fun("sync_queue_rejected_total"), 1.0);
    assert_eq!(fun("sync_queue_wait_ms_count"), 4.0);
    assert_eq!(
        metrics.value("sync_queue_admitted_total{function=\"tiny\"}"),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_sync_invocation_queued_past_the_max_queue_wait_ends_as_queue_timeout() {
    let service = service_with(RuntimeConfig {
        sync_queue_enabled: true,
        sync_queue_max_estimated_wait: std::time::Duration::from_secs(1),
        sync_queue_max_queue_wait: std::time::Duration::from_secs(1),
        ..RuntimeConfig::default()
    });
    service.register_local("fn", json!({})).await;

    // Nothing dispatches: after 1 s in the queue it ends, well before its 30 s timeout.
    let answer = service.invoke("fn", json!(1), &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["status"], "timeout");
    assert_eq!(body["error"]["code"], "QUEUE_TIMEOUT");
    assert!(
        !service.drain("fn").await,
        "a queue timeout is never dispatched"
    );
    assert_eq!(service.state.sync_queue_waiting("fn"), 0);

    // Dispatched in time, it runs to its answer.
    service.scheduler.start_background();
    let answer = service.invoke("fn", json!(2), &[]).await;
    assert_eq!(answer.json()["status"], "success");
    service
        .scheduler
        .shutdown(std::time::Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn finished_records_stay_within_the_memory_budget_and_evictions_are_counted() {
    let service = service_within(
        ApiConfig::default(),
        MemoryLimits {
            execution_memory_budget: 2_000,
            ..MemoryLimits::default()
        },
    );
    service.register_local("fn", json!({})).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let queued = service.enqueue("fn", json!({ "n": n })).await;
        ids.push(queued.json()["executionId"].as_str().unwrap().to_owned());
        assert!(service.drain("fn").await);
    }
    let metrics = service.scrape().await;
    let kept = metrics.value("execution_records");
    assert!((1.0..20.0).contains(&kept), "{kept} records kept");
    assert!(metrics.value("execution_records_finished_bytes") <= 2_000.0);
    assert_eq!(
        metrics.value("execution_records_evicted_total"),
        20.0 - kept
    );
    let newest = service
        .call("GET", &format!("/v1/executions/{}", ids[19]), None)
        .await;
    assert_eq!(newest.status, StatusCode::OK, "the newest is kept");
    let oldest = service
        .call("GET", &format!("/v1/executions/{}", ids[0]), None)
        .await;
    assert_eq!(
        oldest.status,
        StatusCode::NOT_FOUND,
        "the oldest went first"
    );
}
