//! Names and rules of the HTTP wire contract that both sides of the control plane
//! speak: the API (clients and runtime callbacks) and the dispatcher (function
//! runtimes). One place, so the two cannot drift apart.

/// Header names, lowercase as HTTP/2 requires.
pub mod headers {
    /// The execution an invocation response or a dispatch belongs to.
    pub const X_EXECUTION_ID: &str = "x-execution-id";
    /// 1-based attempt number on a dispatch and on a callback.
    pub const X_DISPATCH_ATTEMPT: &str = "x-dispatch-attempt";
    /// Trace id from the client to the function.
    pub const X_TRACE_ID: &str = "x-trace-id";
    /// The client's idempotency key (passed on to the first attempt only).
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// The callback base a runtime POSTs `<base>/<id>:complete` to.
    pub const X_CALLBACK_URL: &str = "x-callback-url";
    /// A runtime's answer: `true` when the invocation started a cold replica.
    pub const X_COLD_START: &str = "x-cold-start";
    /// A runtime's answer: its init time in milliseconds.
    pub const X_INIT_DURATION_MS: &str = "x-init-duration-ms";
    /// A sync invoke's wait limit in milliseconds.
    pub const X_TIMEOUT_MS: &str = "x-timeout-ms";
    /// Why sync-queue admission refused an invoke (`depth`, `est_wait`).
    pub const X_QUEUE_REJECT_REASON: &str = "x-queue-reject-reason";
}

/// Whether a `Content-Type` value declares JSON: `application/json` or an
/// `application/*+json` type, parameters and case ignored.
pub fn is_json_media_type(content_type: &str) -> bool {
    // Compared in place, not lowercased into a new string: this runs twice per POOL
    // invocation (the client's body and the function's answer).
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let starts = |prefix: &str| {
        essence
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &str| {
        essence
            .len()
            .checked_sub(suffix.len())
            .and_then(|start| essence.get(start..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
    };
    essence.eq_ignore_ascii_case("application/json") || (starts("application/") && ends("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
            " application/vnd.api+json ;x=y",
            "APPLICATION/VND.API+JSON",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "text/json-ish",
            "text/x+json",
            "application/jsonp",
            "applicatio",
            "é+json",
            "",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
