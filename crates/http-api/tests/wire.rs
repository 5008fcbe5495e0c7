//! What a client reads: every answer of the function, execution and runtime-configuration
//! routes deserializes into the core-types type both sides share, and serializes back
//! to the very JSON the server sent (so a client built on core-types, the CLI, loses
//! nothing the server says).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use core_types::{
    Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ExecutionStatus, FunctionView,
    InvocationResponse, RuntimeConfigChange, RuntimeConfigView,
};
use http_api::{ApiConfig, AppState, router};
use scheduler::{SchedulerConfig, SchedulerParts};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Answers every dispatch with a cold start and its input.
struct ColdEcho;

#[async_trait::async_trait]
impl Dispatch for ColdEcho {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        let mut success = DispatchSuccess::warm(request.input);
        success.cold_start = true;
        success.init_duration_ms = Some(120);
        Ok(success)
    }
}

async fn call(
    app: &http_api::Api,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let builder = Request::builder().method(method).uri(uri);
    let request = match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    };
    let response = app.clone().oneshot(request.unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// `answer` read as `T` and written again is `answer`.
fn reads_back_as<T: DeserializeOwned + Serialize>(answer: &Value) -> T {
    let typed: T = serde_json::from_value(answer.clone()).unwrap_or_else(|e| {
        panic!(
            "{answer} does not read as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    assert_eq!(
        &serde_json::to_value(&typed).unwrap(),
        answer,
        "written back"
    );
    typed
}

#[tokio::test]
async fn every_answer_a_client_reads_round_trips_through_core_types() {
    let state = AppState::assemble(
        SchedulerParts::in_memory(Arc::new(ColdEcho)),
        SchedulerConfig::default(),
        ApiConfig {
            admin_api: true,
            ..ApiConfig::default()
        },
    );
    let app = router(state);

    let (status, created) = call(
        &app,
        "POST",
        "/v1/functions",
        Some(json!({
            "name": "greet", "image": "nanofaas/echo", "executionMode": "POOL",
            "endpointUrl": "http://127.0.0.1:9/invoke", "env": {"LANG": "C"},
            "resources": {"cpu": "1"}, "timeoutMs": 2000,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let view: FunctionView = reads_back_as(&created);
    assert_eq!(view.spec.timeout_ms, 2000);
    let (_, got) = call(&app, "GET", "/v1/functions/greet", None).await;
    assert_eq!(reads_back_as::<FunctionView>(&got), view);
    let (_, listed) = call(&app, "GET", "/v1/functions", None).await;
    assert_eq!(reads_back_as::<Vec<FunctionView>>(&listed), vec![view]);

    let (status, invoked) = call(
        &app,
        "POST",
        "/v1/functions/greet:invoke",
        Some(json!({"input": {"hello": "world"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{invoked}");
    let response: InvocationResponse = reads_back_as(&invoked);
    let (_, record) = call(
        &app,
        "GET",
        &format!("/v1/executions/{}", response.execution_id),
        None,
    )
    .await;
    let status: ExecutionStatus = reads_back_as(&record);
    assert!(
        status.cold_start && status.init_duration_ms == Some(120),
        "{record}"
    );
    assert!(status.finished_at.is_some(), "{record}");

    let (_, config) = call(&app, "GET", "/v1/admin/runtime-config", None).await;
    let config: RuntimeConfigView = reads_back_as(&config);
    let (status, changed) = call(
        &app,
        "PATCH",
        "/v1/admin/runtime-config",
        Some(json!({
            "expectedRevision": config.revision, "syncQueueMaxQueueWait": "PT3S",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let change: RuntimeConfigChange = reads_back_as(&changed);
    assert_eq!(change.effective_config.sync_queue_max_queue_wait, "PT3S");
    assert_eq!(change.revision, config.revision + 1);
}
