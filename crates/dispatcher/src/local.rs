//! `LOCAL`: the built-in echo function.

use core_types::{Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess};

/// Runs `LOCAL` functions in process: the output is the input, always warm, no network.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalDispatcher;

impl LocalDispatcher {
    /// The echo dispatcher.
    pub const fn new() -> Self {
        Self
    }
}

#[async_trait::async_trait]
impl Dispatch for LocalDispatcher {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        tracing::debug!(
            execution_id = %request.execution_id,
            function = %request.function.name,
            attempt = request.attempt,
            "local dispatch (echo)"
        );
        Ok(DispatchSuccess::warm(request.input))
    }
}
