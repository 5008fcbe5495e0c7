//! A scripted [`Dispatch`] for tests that decide, attempt by attempt, what a function
//! answers and when: the scheduler's completion-parity cases and the HTTP-level ones
//! both drive it. Behind the `testing` feature: nothing in a running control plane uses
//! it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use core_types::{
    Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ErrorCode, ErrorInfo, Payload,
};
use tokio::sync::oneshot;

/// What the scripted dispatcher does for one attempt.
#[derive(Debug)]
pub enum Step {
    /// Answer with the input (what `LOCAL` does).
    Echo,
    /// Answer with this output.
    Answer(Payload),
    /// Fail like an unreachable endpoint (`DISPATCH_ERROR`).
    Unreachable,
    /// Fail like an endpoint answering 500 (`FUNCTION_ERROR`).
    Http500,
    /// Tell the test it started, then wait until the test releases it (see [`gate`]).
    Wait {
        /// Fired when the dispatch reaches this step.
        started: oneshot::Sender<()>,
        /// What the dispatch answers, once the test sends it.
        release: oneshot::Receiver<DispatchOutcome>,
    },
    /// Panic inside the dispatcher.
    Panic,
}

/// The test's side of a [`Step::Wait`].
#[derive(Debug)]
pub struct Gate {
    started: oneshot::Receiver<()>,
    release: oneshot::Sender<DispatchOutcome>,
}

impl Gate {
    /// Resolves once the dispatcher is inside this step.
    pub async fn started(&mut self) {
        (&mut self.started)
            .await
            .expect("the dispatcher reached this step");
    }

    /// Lets the dispatch answer; `false` if nobody listens any more (the dispatch was
    /// dropped because another completion won).
    pub fn release(self, outcome: DispatchOutcome) -> bool {
        self.release.send(outcome).is_ok()
    }
}

/// A dispatch step that waits for the test, and the test's handle on it.
pub fn gate() -> (Step, Gate) {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    (
        Step::Wait {
            started: started_tx,
            release: release_rx,
        },
        Gate {
            started: started_rx,
            release: release_tx,
        },
    )
}

/// What the test hears of every call, before its step runs.
type OnCall = Box<dyn Fn(&DispatchRequest) + Send + Sync>;

/// A dispatcher that follows a script per function. A call with no step left panics
/// (inside the dispatch, so the scheduler ends that attempt as `DISPATCH_PANICKED`).
pub struct ScriptedDispatch {
    scripts: Mutex<HashMap<String, VecDeque<Step>>>,
    on_call: OnCall,
}

impl std::fmt::Debug for ScriptedDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedDispatch")
            .field("scripts", &self.scripts)
            .finish_non_exhaustive()
    }
}

impl ScriptedDispatch {
    /// An empty script; `on_call` hears every call (to log it) before its step runs.
    pub fn new(on_call: impl Fn(&DispatchRequest) + Send + Sync + 'static) -> Self {
        Self {
            scripts: Mutex::default(),
            on_call: Box::new(on_call),
        }
    }

    /// Appends steps to `function`'s script.
    pub fn script(&self, function: &str, steps: impl IntoIterator<Item = Step>) {
        self.scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(function.to_owned())
            .or_default()
            .extend(steps);
    }
}

#[async_trait::async_trait]
impl Dispatch for ScriptedDispatch {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        (self.on_call)(&request);
        let step = self
            .scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(request.function.name.as_str())
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("no scripted step left for {}", request.function.name));
        match step {
            Step::Echo => Ok(DispatchSuccess::warm(request.input)),
            Step::Answer(output) => Ok(DispatchSuccess::warm(output)),
            Step::Unreachable => Err(ErrorInfo::new(
                ErrorCode::DispatchError,
                "cannot connect to function endpoint http://127.0.0.1:9/: connection refused",
            )),
            Step::Http500 => Err(ErrorInfo::new(
                ErrorCode::FunctionError,
                "function answered 500: boom",
            )),
            Step::Wait { started, release } => {
                let _ = started.send(());
                release
                    .await
                    .expect("the test releases every waiting dispatch")
            }
            Step::Panic => panic!("scripted dispatcher panic"),
        }
    }
}
