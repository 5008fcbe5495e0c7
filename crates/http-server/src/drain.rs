//! The server's drain signal as its connections see it: a flag each connection reads
//! whenever it is polled, and a wake-up when the drain starts. A connection registers
//! for the wake-up once; after that, reading the flag is all a poll costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A clonable handle on one server's drain.
#[derive(Clone, Debug, Default)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    started: AtomicBool,
    wake: Notify,
}

impl Drain {
    /// Starts the drain: every connection sees the flag on its next poll, and each one
    /// waiting is woken for that poll.
    pub(crate) fn start(&self) {
        self.shared.started.store(true, Ordering::SeqCst);
        self.shared.wake.notify_waiters();
    }

    /// Whether the drain has started.
    pub(crate) fn has_started(&self) -> bool {
        self.shared.started.load(Ordering::SeqCst)
    }

    /// The wake-up to poll once from the connection's task. It is woken by a
    /// [`start`](Self::start) after its creation even before that poll, and the poll
    /// stores the task's waker, which stays the same for the task's life.
    pub(crate) fn wake_up(&self) -> Notified<'_> {
        self.shared.wake.notified()
    }
}
