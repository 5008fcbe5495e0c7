//! Request and response bodies of the HTTP contract.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::payload::{ByteSink, put_len, put_str};
use crate::{ErrorCode, ErrorInfo, ExecutionId, ExecutionState, FunctionName, Payload, Timestamp};

/// One problem with a request: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// The field (`$` for the whole body), dotted for nested fields.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ErrorDetail {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The JSON body of every error the server produces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The code, e.g. `VALIDATION_ERROR`.
    #[cfg_attr(feature = "openapi", schema(value_type = ErrorCode))]
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
    /// One entry per problem, when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<ErrorDetail>>,
}

impl ErrorBody {
    /// An error body with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: code.as_str().to_owned(),
            message: message.into(),
            details: None,
        }
    }
}

/// `POST /v1/functions/{name}:invoke` and `:enqueue` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvocationRequest {
    /// Any JSON value except `null`.
    pub input: Payload,
    /// Free-form string pairs passed to the function (`null` reads as none).
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
}

impl InvocationRequest {
    /// What makes two requests "the same" for idempotency, in the fixed encoding of
    /// [`Payload::write_canonical`]: the input's value (however spelled), then the
    /// number of metadata entries and each key and value, in key order.
    pub fn write_canonical(&self, sink: &mut impl ByteSink) {
        self.input.write_canonical(sink);
        put_len(sink, self.metadata.len());
        for (key, value) in &self.metadata {
            put_str(sink, key);
            put_str(sink, value);
        }
    }
}

fn null_as_empty<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The rule on `input` serde cannot express.
const INPUT_REQUIRED: &str = "is required and must not be null";

impl InvocationRequest {
    /// The rules serde cannot express: `input` must not be `null`.
    pub fn validate(&self) -> Result<(), Vec<ErrorDetail>> {
        if self.input.is_null() {
            Err(vec![ErrorDetail::new("input", INPUT_REQUIRED)])
        } else {
            Ok(())
        }
    }

    /// Every problem with a JSON body that did not deserialize as an invocation, one
    /// detail per field (serde stops at the first).
    pub fn problems(body: &Value) -> Vec<ErrorDetail> {
        let Some(object) = body.as_object() else {
            return vec![ErrorDetail::new(
                "$",
                "the request body must be a JSON object",
            )];
        };
        let mut details = Vec::new();
        if object.get("input").is_none_or(Value::is_null) {
            details.push(ErrorDetail::new("input", INPUT_REQUIRED));
        }
        match object.get("metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) if map.values().all(Value::is_string) => {}
            Some(_) => details.push(ErrorDetail::new(
                "metadata",
                "must be an object of string values",
            )),
        }
        details
    }
}

/// The answer to an invocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct InvocationResponse {
    /// The execution's id (also in the `X-Execution-Id` header).
    pub execution_id: ExecutionId,
    /// Its status when the answer was made.
    pub status: ExecutionState,
    /// The output, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Payload>,
    /// The error, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// `GET /v1/executions/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStatus {
    /// The execution's id.
    pub execution_id: ExecutionId,
    /// The function it runs.
    pub function_name: FunctionName,
    /// Where it is.
    pub status: ExecutionState,
    /// The current (1-based) attempt.
    pub attempt: u32,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When its latest attempt started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Output on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Payload>,
    /// Error on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Whether the function reported a cold start.
    pub cold_start: bool,
    /// The runtime's reported init time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_duration_ms: Option<u64>,
    /// Time from enqueue to the start of its latest attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_wait_ms: Option<u64>,
    /// Time from the start of its latest attempt to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `POST /v1/internal/executions/{id}:complete` body: either
/// `{"status", "output"?, "error"?}` or the runtimes' `{"success", "output"?, "error"?}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompletionRequest {
    /// `success`, `error` or `timeout`.
    #[serde(default)]
    pub status: Option<ExecutionState>,
    /// The runtimes' form.
    #[serde(default)]
    pub success: Option<bool>,
    /// Output on success.
    #[serde(default)]
    pub output: Option<Payload>,
    /// `{"code"?, "message"}` (no code: `RUNTIME_ERROR`), or a plain string message.
    #[serde(default)]
    pub error: Option<Value>,
}

/// What a callback says happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackResult {
    /// The function produced an output (`null` if it sent none).
    Success(Payload),
    /// The function failed or timed out.
    Failure {
        /// `Error` or `Timeout`.
        state: ExecutionState,
        /// What went wrong.
        error: ErrorInfo,
    },
}

impl CompletionRequest {
    /// Interprets either body form; `Err` lists what is wrong with the body. The body is
    /// judged whole, whatever it reports: a malformed `error` is refused even beside
    /// `success`, so a runtime learns of its bug from the first callback, not from the
    /// first failure.
    pub fn into_result(self) -> Result<CallbackResult, Vec<ErrorDetail>> {
        let mut problems = Vec::new();
        let state = match (self.status, self.success) {
            (Some(s), _) if !s.is_terminal() => {
                problems.push(ErrorDetail::new(
                    "status",
                    format!("must be success, error or timeout, not {s}"),
                ));
                None
            }
            (Some(s), Some(success)) if (s == ExecutionState::Success) != success => {
                problems.push(ErrorDetail::new(
                    "success",
                    format!("contradicts status {s}"),
                ));
                None
            }
            (Some(s), _) => Some(s),
            (None, Some(true)) => Some(ExecutionState::Success),
            (None, Some(false)) => Some(ExecutionState::Error),
            (None, None) => {
                problems.push(ErrorDetail::new(
                    "status",
                    "either status or success is required",
                ));
                None
            }
        };
        let reported = match self.error {
            None | Some(Value::Null) => None,
            Some(value) => match reported_error(value) {
                Ok(error) => Some(error),
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            },
        };
        let Some(state) = state.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        if state == ExecutionState::Success {
            return Ok(CallbackResult::Success(
                self.output
                    .unwrap_or_else(|| Payload::from_value(&Value::Null)),
            ));
        }
        let error = reported.unwrap_or_else(|| {
            ErrorInfo::new(
                if state == ExecutionState::Timeout {
                    ErrorCode::DispatchTimeout
                } else {
                    ErrorCode::RuntimeError
                },
                "the runtime reported a failure without details",
            )
        });
        Ok(CallbackResult::Failure { state, error })
    }
}

/// A callback's `error`: `{"code"?, "message"}` or a string (the message). A missing code
/// is `RUNTIME_ERROR`: the runtime failed without naming how.
fn reported_error(value: Value) -> Result<ErrorInfo, ErrorDetail> {
    let shape = || ErrorDetail::new("error", "must be {\"code\"?, \"message\"} or a string");
    match value {
        Value::String(message) => Ok(ErrorInfo::new(ErrorCode::RuntimeError, message)),
        Value::Object(mut fields) => {
            let message = match fields.remove("message") {
                Some(Value::String(message)) => message,
                Some(Value::Null) | None => String::new(),
                Some(_) => return Err(ErrorDetail::new("error.message", "must be a string")),
            };
            match fields.remove("code") {
                Some(Value::String(code)) if !code.is_empty() => Ok(ErrorInfo {
                    code: code.into(),
                    message,
                }),
                Some(Value::Null) | None => Ok(ErrorInfo::new(ErrorCode::RuntimeError, message)),
                Some(_) => Err(ErrorDetail::new("error.code", "must be a non-empty string")),
            }
        }
        _ => Err(shape()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<CallbackResult, Vec<ErrorDetail>> {
        serde_json::from_value::<CompletionRequest>(body)
            .unwrap()
            .into_result()
    }

    #[test]
    fn null_metadata_reads_as_none() {
        let request: InvocationRequest =
            serde_json::from_value(json!({"input": 1, "metadata": null})).unwrap();
        assert!(request.metadata.is_empty());
    }

    #[test]
    fn a_callback_error_is_an_object_or_a_string_never_an_array() {
        let refused = parse(json!({"success": false, "error": ["boom"]}));
        assert_eq!(refused.unwrap_err()[0].field, "error");
    }

    #[test]
    fn both_callback_forms_are_understood() {
        assert_eq!(
            parse(json!({"status": "success", "output": 1})),
            Ok(CallbackResult::Success(Payload::from_value(&json!(1))))
        );
        assert_eq!(
            parse(json!({"success": true, "output": "x"})),
            Ok(CallbackResult::Success(Payload::string("x")))
        );
        let failed =
            parse(json!({"success": false, "error": {"code": "BOOM", "message": "m"}})).unwrap();
        assert_eq!(
            failed,
            CallbackResult::Failure {
                state: ExecutionState::Error,
                error: ErrorInfo {
                    code: "BOOM".into(),
                    message: "m".into()
                }
            }
        );
        let timed_out = parse(json!({"status": "timeout"})).unwrap();
        assert!(matches!(
            timed_out,
            CallbackResult::Failure {
                state: ExecutionState::Timeout,
                ..
            }
        ));
    }

    #[test]
    fn a_malformed_callback_error_is_refused_even_beside_success() {
        for body in [
            json!({"success": true, "error": 42}),
            json!({"status": "success", "output": 1, "error": [1]}),
            json!({"success": false, "error": {"code": 7, "message": "m"}}),
            json!({"success": false, "error": {"code": "", "message": "m"}}),
            json!({"status": "error", "error": {"message": {"nested": true}}}),
        ] {
            assert!(parse(body.clone()).is_err(), "accepted {body}");
        }
    }

    #[test]
    fn a_callback_error_may_leave_out_its_code() {
        let failed = parse(json!({"success": false, "error": {"message": "m"}})).unwrap();
        assert_eq!(
            failed,
            CallbackResult::Failure {
                state: ExecutionState::Error,
                error: ErrorInfo::new(ErrorCode::RuntimeError, "m"),
            }
        );
    }

    #[test]
    fn a_status_and_a_success_that_disagree_are_refused() {
        let refused = parse(json!({"status": "success", "success": false})).unwrap_err();
        assert_eq!(refused[0].field, "success");
        assert!(parse(json!({"status": "timeout", "success": false})).is_ok());
    }

    #[test]
    fn callbacks_must_say_how_it_ended() {
        assert!(parse(json!({})).is_err());
        assert!(parse(json!({"status": "running"})).is_err());
        assert!(parse(json!({"success": false, "error": 3})).is_err());
    }

    #[test]
    fn every_problem_of_a_refused_invocation_is_named() {
        let fields = |body: Value| -> Vec<String> {
            InvocationRequest::problems(&body)
                .into_iter()
                .map(|d| d.field)
                .collect()
        };
        assert_eq!(fields(json!({"metadata": {"a": 1}})), ["input", "metadata"]);
        assert_eq!(fields(json!({"input": null, "metadata": null})), ["input"]);
        assert_eq!(fields(json!([1])), ["$"]);
        assert!(fields(json!({"input": 1, "metadata": {"a": "b"}})).is_empty());
    }

    #[test]
    fn null_input_is_invalid() {
        let req: InvocationRequest = serde_json::from_value(json!({"input": null})).unwrap();
        assert!(req.validate().is_err());
        let req: InvocationRequest = serde_json::from_value(json!({"input": {"a": 1}})).unwrap();
        assert!(req.validate().is_ok());
    }
}
