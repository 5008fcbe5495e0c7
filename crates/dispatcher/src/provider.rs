//! The seam for deployment providers: whoever runs the replicas of a `DEPLOYMENT`
//! function (Kubernetes, local processes, ...). No provider is implemented yet.
//!
//! A provider works at registration time, not on the dispatch path: `provision` returns
//! the endpoint URL, the registry stores it as the function's `endpointUrl`, and from
//! then on [`ModeRouter`](crate::ModeRouter) dispatches to it exactly as for `POOL`.

use std::collections::BTreeMap;

use core_types::{ErrorCode, FunctionName, FunctionSpec};

/// Runs the replicas of `DEPLOYMENT` functions and tells where they listen.
#[async_trait::async_trait]
pub trait DeploymentProvider: Send + Sync + 'static {
    /// A short name for logs and errors (`"kubernetes"`, `"local-process"`).
    fn name(&self) -> &str;

    /// Whether this provider can run `spec` at all (right runtime mode, image
    /// available, ...). The registry asks before provisioning; the default is yes.
    fn supports(&self, spec: &FunctionSpec) -> bool {
        let _ = spec;
        true
    }

    /// Starts (or updates) the replicas of `spec` and returns the endpoint URL
    /// invocations are to be POSTed to. Must be idempotent for the same spec: a
    /// registration that failed half-way may be provisioned again.
    async fn provision(&self, spec: &FunctionSpec) -> Result<String, ProvisionError>;

    /// Removes everything provisioned for `function`. Removing a function that is not
    /// (or no longer) provisioned is not an error.
    async fn deprovision(&self, function: &FunctionName) -> Result<(), DeprovisionError>;

    /// Sets the replica count of `function` (0 stops it without removing it).
    async fn set_replicas(
        &self,
        function: &FunctionName,
        replicas: u32,
    ) -> Result<(), SetReplicasError>;
}

/// Why [`DeploymentProvider::provision`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The provider cannot run this function at all.
    #[error("provider {provider} cannot run function {function}: {reason}")]
    Unsupported {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
        /// Why not.
        reason: String,
    },
    /// The provider (or what it drives, e.g. the Kubernetes API) failed.
    #[error("provider {provider} failed to provision function {function}: {message}")]
    Failed {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
        /// What went wrong.
        message: String,
    },
}

impl ProvisionError {
    /// The error code a registration that failed this way reports
    /// (`PROVIDER_UNAVAILABLE`, answered as 503).
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::ProviderUnavailable
    }
}

/// Why [`DeploymentProvider::deprovision`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider {provider} failed to deprovision function {function}: {message}")]
pub struct DeprovisionError {
    /// The provider's name.
    pub provider: String,
    /// The function.
    pub function: FunctionName,
    /// What went wrong.
    pub message: String,
}

/// Why [`DeploymentProvider::set_replicas`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetReplicasError {
    /// The provider does not run this function.
    #[error("provider {provider} does not run function {function}")]
    NotProvisioned {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
    },
    /// The provider (or what it drives) failed.
    #[error("provider {provider} failed to scale function {function} to {replicas}: {message}")]
    Failed {
        /// The provider's name.
        provider: String,
        /// The function.
        function: FunctionName,
        /// The replica count asked for.
        replicas: u32,
        /// What went wrong.
        message: String,
    },
}

/// The environment every replica of `spec` receives (the runtime wire contract):
/// the function's own `env`, then `FUNCTION_NAME`, `WARM=true`, `TIMEOUT_MS`,
/// `EXECUTION_MODE` (the runtime mode), `WATCHDOG_CMD` (when a `runtimeCommand` is
/// set) and `CALLBACK_URL` (the callback base, when callbacks are possible).
///
/// The control plane's variables win over same-named entries of the function's `env`,
/// so a user setting cannot break the callback or the timeout a runtime relies on.
pub fn replica_env(spec: &FunctionSpec, callback_url: Option<&str>) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    let mut set = |key: &str, value: String| {
        env.insert(key.to_owned(), value);
    };
    set("FUNCTION_NAME", spec.name.to_string());
    set("WARM", "true".to_owned());
    set("TIMEOUT_MS", spec.timeout_ms.to_string());
    set("EXECUTION_MODE", runtime_mode_name(spec));
    if let Some(command) = &spec.runtime_command {
        set("WATCHDOG_CMD", command.clone());
    }
    if let Some(url) = callback_url {
        set("CALLBACK_URL", url.to_owned());
    }
    env
}

fn runtime_mode_name(spec: &FunctionSpec) -> String {
    match serde_json::to_value(spec.runtime_mode) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{:?}", spec.runtime_mode).to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_get_the_contract_env_and_the_function_env() {
        let spec = FunctionSpec::from_json(&serde_json::json!({
            "name": "resize", "image": "img", "runtimeMode": "STDIO",
            "runtimeCommand": "python handler.py", "timeoutMs": 1500,
            "env": {"LOG_LEVEL": "debug", "WARM": "false"}
        }))
        .unwrap();
        let env = replica_env(&spec, Some("http://cp:8080/v1/internal/executions"));
        let expected: BTreeMap<String, String> = [
            ("CALLBACK_URL", "http://cp:8080/v1/internal/executions"),
            ("EXECUTION_MODE", "STDIO"),
            ("FUNCTION_NAME", "resize"),
            ("LOG_LEVEL", "debug"),
            ("TIMEOUT_MS", "1500"),
            ("WARM", "true"),
            ("WATCHDOG_CMD", "python handler.py"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn optional_variables_are_left_out() {
        let spec =
            FunctionSpec::from_json(&serde_json::json!({"name": "f", "image": "img"})).unwrap();
        let env = replica_env(&spec, None);
        assert_eq!(env.get("EXECUTION_MODE").map(String::as_str), Some("HTTP"));
        assert!(!env.contains_key("WATCHDOG_CMD"));
        assert!(!env.contains_key("CALLBACK_URL"));
    }
}
