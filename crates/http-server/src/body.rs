//! A request body that must arrive by a deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::connection::ConnState;

/// The body did not arrive within the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTooSlow(Duration);

/// hyper's body, failing with [`BodyTooSlow`] once `timeout` has passed since the
/// server first waited for it (and telling the connection, whose answer then becomes a
/// 408). The timer is made only then: most bodies arrive with their head, and cost no
/// timer and no clock reading.
#[derive(Debug)]
pub(crate) struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnState>,
}

impl DeadlineBody {
    pub(crate) fn new(inner: Incoming, timeout: Duration, state: Arc<ConnState>) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            state,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.state.expire_body();
        Poll::Ready(Some(Err(BodyTooSlow(this.timeout).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
