//! `FunctionSpec`: what a user registers, with the contract's defaults and validation.
//!
//! Validation reads the JSON document field by field instead of through a derived
//! `Deserialize`, so that one request gets every problem back at once (a derived
//! deserializer stops at the first wrong type).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ErrorDetail, FunctionName};

/// How invocations of a function are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionMode {
    /// Built in: the output is the input.
    Local,
    /// A pool of already-running replicas behind `endpointUrl`.
    Pool,
    /// Replicas managed by a deployment provider.
    Deployment,
}

/// How the function's runtime receives an invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuntimeMode {
    /// An HTTP request per invocation.
    Http,
    /// Through the watchdog's stdin/stdout.
    Stdio,
    /// Through files handed over by the watchdog.
    File,
}

/// Who scales a `DEPLOYMENT` function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScalingStrategy {
    /// The control plane.
    Internal,
    /// A Kubernetes HorizontalPodAutoscaler.
    Hpa,
    /// Nobody: the replica count stays as set.
    None,
}

/// What a scaling rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScalingMetricType {
    /// Queued invocations per replica.
    QueueDepth,
    /// In-flight invocations per replica.
    InFlight,
    /// Requests per second per replica.
    Rps,
    /// CPU use (HPA only).
    Cpu,
    /// Memory use (HPA only).
    Memory,
}

/// One scaling rule: keep `type` near `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScalingMetric {
    /// The metric watched.
    #[serde(rename = "type")]
    pub metric_type: ScalingMetricType,
    /// The target, a number written as a string (as nanofaas does).
    pub target: String,
}

/// How a `DEPLOYMENT` function scales.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ScalingConfig {
    /// Who scales.
    pub strategy: ScalingStrategy,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// What the scaler watches.
    pub metrics: Vec<ScalingMetric>,
}

/// Resource requests of a replica, kept as given (`"500m"`, `"256Mi"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// CPU request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// A function with every default resolved. Only [`FunctionSpec::from_json`] makes one
/// from user input, so a `FunctionSpec` is always valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    /// Unique name.
    pub name: FunctionName,
    /// Container image (non-blank).
    pub image: String,
    /// How invocations are run.
    #[cfg_attr(feature = "openapi", schema(default = "DEPLOYMENT"))]
    pub execution_mode: ExecutionMode,
    /// How the runtime receives an invocation.
    #[cfg_attr(feature = "openapi", schema(default = "HTTP"))]
    pub runtime_mode: RuntimeMode,
    /// Where `POOL` (and provider-less `DEPLOYMENT`) invocations are sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Per-attempt dispatch timeout, 1..=300000 ms.
    #[cfg_attr(
        feature = "openapi",
        schema(default = 30000, minimum = 1, maximum = 300000)
    )]
    pub timeout_ms: u64,
    /// Most in-flight dispatches.
    #[cfg_attr(feature = "openapi", schema(default = 4, minimum = 1))]
    pub concurrency: u32,
    /// Most queued invocations.
    #[cfg_attr(feature = "openapi", schema(default = 100, minimum = 1))]
    pub queue_size: u32,
    /// Total attempts (0 and 1 both mean one attempt).
    #[cfg_attr(feature = "openapi", schema(default = 3))]
    pub max_retries: u32,
    /// Container command.
    pub command: Vec<String>,
    /// Extra environment of a replica.
    pub env: BTreeMap<String, String>,
    /// Resource requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The watchdog's command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_command: Option<String>,
    /// Image pull secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<String>>,
    /// Scaling rules (always present for `DEPLOYMENT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_config: Option<ScalingConfig>,
}

/// Reading a spec back (a client reading an answer) goes through the same validation
/// as a registration, so a `FunctionSpec` is valid however it was made; an answer's
/// resolved spec reads back unchanged.
impl<'de> serde::Deserialize<'de> for FunctionSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let document = Value::deserialize(deserializer)?;
        Self::from_json(&document).map_err(serde::de::Error::custom)
    }
}

/// Every problem found in a spec, one detail per field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ErrorDetail>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect();
        write!(f, "invalid function spec: {}", parts.join("; "))
    }
}

/// The timeout bounds of the contract, shared with `X-Timeout-Ms`.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 1..=300_000;

impl FunctionSpec {
    /// Validates a `POST /v1/functions` body and fills in every default.
    /// Unknown fields are ignored; `timeoutMillis` and `url` are aliases.
    pub fn from_json(body: &Value) -> Result<Self, ValidationErrors> {
        let Some(object) = body.as_object() else {
            return Err(ValidationErrors(vec![ErrorDetail::new(
                "$",
                "the function spec must be a JSON object",
            )]));
        };
        let mut fields = Fields {
            object,
            errors: Vec::new(),
        };

        let name = fields
            .required_str("name")
            .and_then(|text| match FunctionName::parse(text) {
                Ok(name) => Some(name),
                Err(e) => fields.fail("name", e.to_string()),
            });
        let image = fields.required_str("image").and_then(|text| {
            if text.trim().is_empty() {
                fields.fail("image", "must not be blank")
            } else {
                Some(text.to_owned())
            }
        });
        let execution_mode = fields
            .enum_field("executionMode")
            .unwrap_or(ExecutionMode::Deployment);
        let runtime_mode = fields
            .enum_field("runtimeMode")
            .unwrap_or(RuntimeMode::Http);
        let endpoint_url = fields.url(&["endpointUrl", "url"]);
        let timeout_ms = fields
            .integer(
                &["timeoutMs", "timeoutMillis"],
                *TIMEOUT_RANGE_MS.start(),
                *TIMEOUT_RANGE_MS.end(),
            )
            .unwrap_or(30_000);
        let concurrency = fields
            .integer(&["concurrency"], 1, u64::from(u32::MAX))
            .unwrap_or(4);
        let queue_size = fields
            .integer(&["queueSize"], 1, u64::from(u32::MAX))
            .unwrap_or(100);
        let max_retries = fields
            .integer(&["maxRetries"], 0, u64::from(u32::MAX))
            .unwrap_or(3);
        let command = fields.string_list("command").unwrap_or_default();
        let env = fields.string_map("env").unwrap_or_default();
        let resources = fields.resources();
        let runtime_command = fields.optional_str("runtimeCommand").map(str::to_owned);
        let image_pull_secrets = fields.string_list("imagePullSecrets");
        let scaling_config = fields.scaling_config(execution_mode);

        if execution_mode == ExecutionMode::Pool
            && endpoint_url.is_none()
            && !fields.has_error_for("endpointUrl")
        {
            fields.fail::<()>("endpointUrl", "is required when executionMode is POOL");
        }

        match (name, image) {
            (Some(name), Some(image)) if fields.errors.is_empty() => Ok(FunctionSpec {
                name,
                image,
                execution_mode,
                runtime_mode,
                endpoint_url,
                timeout_ms,
                concurrency: narrow(concurrency),
                queue_size: narrow(queue_size),
                max_retries: narrow(max_retries),
                command,
                env,
                resources,
                runtime_command,
                image_pull_secrets,
                scaling_config,
            }),
            _ => Err(ValidationErrors(fields.errors)),
        }
    }

    /// Total attempts an execution of this function may make (at least one).
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.max(1)
    }
}

fn narrow(value: u64) -> u32 {
    u32::try_from(value).expect("range-checked against u32::MAX")
}

/// Reads fields of one JSON object, collecting every problem.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<ErrorDetail>,
}

impl<'a> Fields<'a> {
    fn fail<T>(&mut self, field: &str, message: impl Into<String>) -> Option<T> {
        self.errors.push(ErrorDetail::new(field, message));
        None
    }

    fn has_error_for(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }

    /// The first present, non-null field among `names` (the canonical name first).
    fn get(&self, names: &[&str]) -> Option<(&'a Value, String)> {
        names.iter().find_map(|name| match self.object.get(*name) {
            Some(Value::Null) | None => None,
            Some(value) => Some((value, (*name).to_owned())),
        })
    }

    fn required_str(&mut self, name: &str) -> Option<&'a str> {
        match self.get(&[name]) {
            None => self.fail(name, "is required"),
            Some((Value::String(s), _)) => Some(s),
            Some(_) => self.fail(name, "must be a string"),
        }
    }

    fn optional_str(&mut self, name: &str) -> Option<&'a str> {
        match self.get(&[name])? {
            (Value::String(s), _) => Some(s),
            _ => self.fail(name, "must be a string"),
        }
    }

    fn enum_field<T: for<'de> Deserialize<'de>>(&mut self, name: &str) -> Option<T> {
        let (value, _) = self.get(&[name])?;
        match serde_json::from_value::<T>(value.clone()) {
            Ok(v) => Some(v),
            Err(_) => self.fail(name, format!("unsupported value {value}")),
        }
    }

    fn url(&mut self, names: &[&str]) -> Option<String> {
        let (value, field) = self.get(names)?;
        let Value::String(text) = value else {
            return self.fail(&field, "must be a string");
        };
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"));
        match rest {
            Some(host)
                if !host.is_empty()
                    && !host.starts_with('/')
                    && !text.chars().any(char::is_whitespace) =>
            {
                Some(text.clone())
            }
            _ => self.fail(&field, "must be an http:// or https:// URL"),
        }
    }

    fn integer(&mut self, names: &[&str], min: u64, max: u64) -> Option<u64> {
        let (value, field) = self.get(names)?;
        let in_range = match value {
            Value::Number(n) => n.as_u64().filter(|v| (min..=max).contains(v)),
            _ => return self.fail(&field, "must be an integer"),
        };
        match in_range {
            Some(v) => Some(v),
            None => self.fail(&field, format!("must be an integer from {min} to {max}")),
        }
    }

    fn string_list(&mut self, name: &str) -> Option<Vec<String>> {
        let (value, _) = self.get(&[name])?;
        let list = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        });
        match list {
            Some(list) => Some(list),
            None => self.fail(name, "must be an array of strings"),
        }
    }

    fn string_map(&mut self, name: &str) -> Option<BTreeMap<String, String>> {
        let (value, _) = self.get(&[name])?;
        let map = value.as_object().and_then(|entries| {
            entries
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect::<Option<BTreeMap<_, _>>>()
        });
        match map {
            Some(map) => Some(map),
            None => self.fail(name, "must be an object of string values"),
        }
    }

    fn resources(&mut self) -> Option<Resources> {
        let (value, _) = self.get(&["resources"])?;
        match serde_json::from_value::<Resources>(value.clone()) {
            Ok(r) if value.is_object() => Some(r),
            _ => self.fail("resources", "must be an object {cpu, memory} of strings"),
        }
    }

    fn scaling_config(&mut self, mode: ExecutionMode) -> Option<ScalingConfig> {
        const FIELD: &str = "scalingConfig";
        let given = match self.get(&[FIELD]) {
            None => None,
            Some((Value::Object(map), _)) => Some(map),
            Some(_) => return self.fail(FIELD, "must be an object"),
        };
        if given.is_none() && mode != ExecutionMode::Deployment {
            return None;
        }
        let empty = Map::new();
        let mut nested = Fields {
            object: given.unwrap_or(&empty),
            errors: Vec::new(),
        };
        let strategy = nested
            .enum_field("strategy")
            .unwrap_or(ScalingStrategy::Internal);
        let min_replicas = nested
            .integer(&["minReplicas"], 0, u64::from(u32::MAX))
            .map(narrow);
        let max_replicas = nested
            .integer(&["maxReplicas"], 0, u64::from(u32::MAX))
            .map(narrow);
        let metrics = nested.metrics(strategy);
        let errors = std::mem::take(&mut nested.errors);
        for e in errors {
            self.fail::<()>(&format!("{FIELD}.{}", e.field), e.message);
        }
        let (min_replicas, max_replicas) = (min_replicas.unwrap_or(1), max_replicas.unwrap_or(10));
        if min_replicas > max_replicas {
            return self.fail(FIELD, "minReplicas must not exceed maxReplicas");
        }
        Some(ScalingConfig {
            strategy,
            min_replicas,
            max_replicas,
            metrics: metrics.unwrap_or_else(|| {
                vec![ScalingMetric {
                    metric_type: ScalingMetricType::QueueDepth,
                    target: "5".into(),
                }]
            }),
        })
    }

    fn metrics(&mut self, strategy: ScalingStrategy) -> Option<Vec<ScalingMetric>> {
        let (value, _) = self.get(&["metrics"])?;
        let Some(items) = value.as_array() else {
            return self.fail("metrics", "must be an array");
        };
        let mut metrics = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("metrics[{i}]");
            match serde_json::from_value::<ScalingMetric>(item.clone()) {
                Err(_) => {
                    self.fail::<()>(&field, "must be {type: queue_depth|in_flight|rps|cpu|memory, target: \"<number>\"}");
                }
                Ok(m)
                    if m.target
                        .trim()
                        .parse::<f64>()
                        .map_or(true, |t| !t.is_finite() || t <= 0.0) =>
                {
                    self.fail::<()>(
                        &format!("{field}.target"),
                        "must be a positive number written as a string",
                    );
                }
                Ok(m)
                    if strategy == ScalingStrategy::Internal
                        && matches!(
                            m.metric_type,
                            ScalingMetricType::Cpu | ScalingMetricType::Memory
                        ) =>
                {
                    self.fail::<()>(
                        &format!("{field}.type"),
                        "INTERNAL scaling accepts only queue_depth, in_flight and rps",
                    );
                }
                Ok(m) => metrics.push(m),
            }
        }
        Some(metrics)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields_of(err: ValidationErrors) -> Vec<String> {
        err.0.into_iter().map(|d| d.field).collect()
    }

    #[test]
    fn defaults_are_filled_in() {
        let spec = FunctionSpec::from_json(&json!({"name": "f", "image": "img"})).unwrap();
        assert_eq!(spec.execution_mode, ExecutionMode::Deployment);
        assert_eq!(spec.runtime_mode, RuntimeMode::Http);
        assert_eq!(
            (
                spec.timeout_ms,
                spec.concurrency,
                spec.queue_size,
                spec.max_retries
            ),
            (30_000, 4, 100, 3)
        );
        let scaling = spec.scaling_config.unwrap();
        assert_eq!(scaling.strategy, ScalingStrategy::Internal);
        assert_eq!((scaling.min_replicas, scaling.max_replicas), (1, 10));
        assert_eq!(
            scaling.metrics,
            vec![ScalingMetric {
                metric_type: ScalingMetricType::QueueDepth,
                target: "5".into()
            }]
        );
    }

    #[test]
    fn aliases_are_accepted() {
        let spec = FunctionSpec::from_json(&json!({
            "name": "f", "image": "i", "executionMode": "POOL", "url": "http://h:1/x", "timeoutMillis": 5
        }))
        .unwrap();
        assert_eq!(spec.endpoint_url.as_deref(), Some("http://h:1/x"));
        assert_eq!(spec.timeout_ms, 5);
        assert_eq!(spec.scaling_config, None);
    }

    #[test]
    fn every_invalid_field_is_listed() {
        let err = FunctionSpec::from_json(&json!({
            "name": "9bad", "image": " ", "executionMode": "CLOUD", "timeoutMs": 0,
            "concurrency": "4", "queueSize": 0, "maxRetries": -1, "command": [1],
            "env": {"A": 1}, "resources": 5, "scalingConfig": {"minReplicas": 3, "maxReplicas": 2}
        }))
        .unwrap_err();
        assert_eq!(
            fields_of(err),
            [
                "name",
                "image",
                "executionMode",
                "timeoutMs",
                "concurrency",
                "queueSize",
                "maxRetries",
                "command",
                "env",
                "resources",
                "scalingConfig"
            ]
        );
    }

    #[test]
    fn missing_and_null_required_fields_are_reported() {
        assert_eq!(
            fields_of(FunctionSpec::from_json(&json!({"name": null})).unwrap_err()),
            ["name", "image"]
        );
        assert_eq!(
            fields_of(FunctionSpec::from_json(&json!([1])).unwrap_err()),
            ["$"]
        );
    }

    #[test]
    fn pool_needs_an_http_endpoint() {
        let missing =
            FunctionSpec::from_json(&json!({"name": "f", "image": "i", "executionMode": "POOL"}));
        assert_eq!(fields_of(missing.unwrap_err()), ["endpointUrl"]);
        let bad = FunctionSpec::from_json(
            &json!({"name": "f", "image": "i", "executionMode": "POOL", "endpointUrl": "ftp://x"}),
        );
        assert_eq!(fields_of(bad.unwrap_err()), ["endpointUrl"]);
    }

    #[test]
    fn internal_scaling_rejects_resource_metrics() {
        let err = FunctionSpec::from_json(&json!({
            "name": "f", "image": "i",
            "scalingConfig": {"metrics": [{"type": "cpu", "target": "50"}, {"type": "rps", "target": "x"}]}
        }))
        .unwrap_err();
        assert_eq!(
            fields_of(err),
            [
                "scalingConfig.metrics[0].type",
                "scalingConfig.metrics[1].target"
            ]
        );
        let hpa = FunctionSpec::from_json(&json!({
            "name": "f", "image": "i", "scalingConfig": {"strategy": "HPA", "metrics": [{"type": "cpu", "target": "50"}]}
        }));
        assert!(hpa.is_ok());
    }

    #[test]
    fn max_retries_zero_still_means_one_attempt() {
        let spec =
            FunctionSpec::from_json(&json!({"name": "f", "image": "i", "maxRetries": 0})).unwrap();
        assert_eq!(spec.max_attempts(), 1);
    }

    #[test]
    fn resolved_spec_serialises_in_camel_case() {
        let spec = FunctionSpec::from_json(&json!({"name": "f", "image": "i", "executionMode": "LOCAL", "resources": {"cpu": "1"}})).unwrap();
        let out = serde_json::to_value(&spec).unwrap();
        assert_eq!(out["executionMode"], "LOCAL");
        assert_eq!(out["timeoutMs"], 30000);
        assert_eq!(out["resources"], json!({"cpu": "1"}));
        assert!(out.get("scalingConfig").is_none());
    }

    /// The API document promises these defaults; they must be the ones applied.
    #[cfg(feature = "openapi")]
    #[test]
    fn documented_defaults_are_the_applied_ones() {
        let schema =
            serde_json::to_value(<FunctionSpec as utoipa::PartialSchema>::schema()).unwrap();
        let resolved = serde_json::to_value(
            FunctionSpec::from_json(&json!({"name": "f", "image": "i"})).unwrap(),
        )
        .unwrap();
        let documented: Vec<&String> = schema["properties"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(field, property)| {
                let default = property.get("default")?;
                assert_eq!(&resolved[field], default, "default of {field}");
                Some(field)
            })
            .collect();
        assert_eq!(
            documented,
            [
                "concurrency",
                "executionMode",
                "maxRetries",
                "queueSize",
                "runtimeMode",
                "timeoutMs"
            ]
        );
    }
}
