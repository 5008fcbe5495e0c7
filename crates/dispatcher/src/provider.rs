//! What replicas of a `DEPLOYMENT` function are given, for whoever implements the
//! [`DeploymentProvider`](core_types::DeploymentProvider) port.

use std::collections::BTreeMap;

use core_types::FunctionSpec;

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
