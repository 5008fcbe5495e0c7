//! One connection: hyper's HTTP/1.1 state machine, watched by a deadline that follows
//! the connection's phase, and stopped by the server's drain.
//!
//! Every change of phase happens while the connection's own task polls it (a read of the
//! socket, the call of the service, the end of an answer), so the deadline is checked
//! right after each poll of the connection: no timer is touched per request, and the
//! one timer of a connection is only moved earlier, never reset on the hot path.

use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::DeadlineBody;
use crate::drain::Drain;
use crate::tls::{self, ServerTls};
use crate::{HttpLimits, refusal};

/// Where a connection is between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the next request (after an answer).
    Idle = 0,
    /// Receiving a request head (from the connection's start, or from the first byte of
    /// a request after an answer).
    Head = 1,
    /// A request is being answered; its body has its own deadline.
    Busy = 2,
}

/// What the connection's task and its service calls share: the phase and when it
/// began, packed in one word so they are read together.
#[derive(Debug)]
pub(crate) struct ConnState {
    started: Instant,
    /// `(milliseconds since `started`) << 2 | phase`; a busy phase keeps no time.
    phase: AtomicU64,
    /// Set by a request body that ran out of time; the answer becomes a 408.
    body_expired: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            phase: AtomicU64::new(Phase::Head as u64),
            body_expired: AtomicBool::new(false),
        }
    }

    /// Enters `Idle` or `Head`, which are timed from now.
    fn enter_timed(&self, phase: Phase) {
        let since = self.now_ms().min(u64::MAX >> 2);
        self.phase
            .store((since << 2) | phase as u64, Ordering::Relaxed);
    }

    fn enter_busy(&self) {
        self.phase.store(Phase::Busy as u64, Ordering::Relaxed);
    }

    fn load(&self) -> (Phase, u64) {
        let packed = self.phase.load(Ordering::Relaxed);
        let phase = match packed & 0b11 {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Busy,
        };
        (phase, packed >> 2)
    }

    pub(crate) fn phase(&self) -> Phase {
        self.load().0
    }

    /// Bytes arrived: an idle connection starts receiving a head.
    fn bytes_arrived(&self) {
        if self.phase() == Phase::Idle {
            self.enter_timed(Phase::Head);
        }
    }

    /// When the connection must have left its current phase, in milliseconds since
    /// its start; `None` while busy.
    fn deadline_ms(&self, timeouts: &PhaseTimeouts) -> Option<u64> {
        let (phase, since) = self.load();
        match phase {
            Phase::Idle => Some(since.saturating_add(timeouts.idle_ms)),
            Phase::Head => Some(since.saturating_add(timeouts.head_ms)),
            Phase::Busy => None,
        }
    }

    fn instant(&self, ms: u64) -> Instant {
        self.started + std::time::Duration::from_millis(ms)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn expire_body(&self) {
        self.body_expired.store(true, Ordering::Relaxed);
    }
}

/// The phase timeouts of [`HttpLimits`] in milliseconds (at least one), the unit of
/// [`ConnState`]'s clock.
#[derive(Debug)]
struct PhaseTimeouts {
    head_ms: u64,
    idle_ms: u64,
}

impl PhaseTimeouts {
    fn new(limits: &HttpLimits) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            head_ms: ms(limits.header_read_timeout),
            idle_ms: ms(limits.idle_timeout),
        }
    }
}

/// The connection's stream (the socket, or the TLS session over it), telling the state
/// when bytes of HTTP arrive.
struct Watched<T> {
    stream: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Extra head bytes hyper itself lets through beyond [`HttpLimits::max_head_bytes`], so
/// that a head a little too large is answered with the contract's JSON 431 by
/// [`answer`]; hyper answers a bare 431 to anything larger.
const HEAD_SLACK: usize = 16 * 1024;

/// hyper's default read buffer (8 KiB plus 100 headers' worth).
const HYPER_DEFAULT_BUFFER: usize = 8192 + 4096 * 100;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed it, or hyper did (an error, `Connection: close`, the drain).
    Closed(Result<(), hyper::Error>),
    /// It stayed in a phase past that phase's deadline.
    Expired(Phase),
    /// The server drained while it was idle or still sending a head.
    Drained,
}

/// Serves one connection until it ends, holding `_permit` (its place among the open
/// connections) until then. With `tls`, the connection's task first makes the TLS
/// handshake, within the head deadline (the time a client has to send its first request
/// counts from the connection's start) and ended by the drain.
pub(crate) async fn serve_connection<S>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    limits: Arc<HttpLimits>,
    draining: Drain,
    tls: Option<ServerTls>,
    _permit: OwnedSemaphorePermit,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let timeouts = PhaseTimeouts::new(&limits);
    match tls {
        None => serve_http(stream, peer, service, limits, draining, state, timeouts).await,
        Some(tls) => {
            let deadline = state.instant(timeouts.head_ms);
            if let Some(stream) = tls::handshake(stream, peer, &tls, deadline, &draining).await {
                serve_http(stream, peer, service, limits, draining, state, timeouts).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on `stream` until the connection ends: its phase deadlines, its
/// drain.
async fn serve_http<T, S>(
    stream: T,
    peer: SocketAddr,
    service: S,
    limits: Arc<HttpLimits>,
    draining: Drain,
    state: Arc<ConnState>,
    timeouts: PhaseTimeouts,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(Watched {
        stream,
        state: Arc::clone(&state),
    });
    let per_request = {
        let state = Arc::clone(&state);
        let limits = Arc::clone(&limits);
        hyper::service::service_fn(move |request| {
            answer(
                service.clone(),
                Arc::clone(&state),
                Arc::clone(&limits),
                request,
            )
        })
    };
    let head_cap = limits.max_head_bytes.saturating_add(HEAD_SLACK);
    let connection = hyper::server::conn::http1::Builder::new()
        // The phase deadlines below replace hyper's own header timer, which would also
        // count a kept-alive connection's idle time as head time.
        .header_read_timeout(None)
        .max_header_size(head_cap)
        .max_buf_size(head_cap.max(HYPER_DEFAULT_BUFFER))
        .serve_connection(io, per_request);
    let mut connection = pin!(connection);
    let mut armed_ms = timeouts.head_ms;
    let mut watchdog = pin!(tokio::time::sleep_until(state.instant(armed_ms)));
    // Polled again only after it was moved or once it has fired: a timer that has
    // stored this task's waker wakes it without being polled on every wake.
    let mut watchdog_registered = false;
    let mut drain_wake_up = pin!(draining.wake_up());
    let mut drain_registered = false;
    let mut shutting_down = false;

    let end = poll_fn(|cx| {
        if !drain_registered {
            // Stores this task's waker; the flag below says whether the drain started.
            let _ = drain_wake_up.as_mut().poll(cx);
            drain_registered = true;
        }
        if !shutting_down && draining.has_started() {
            if state.phase() != Phase::Busy {
                return Poll::Ready(End::Drained);
            }
            // Let the answer being made go out, then close.
            connection.as_mut().graceful_shutdown();
            shutting_down = true;
        }
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            return Poll::Ready(End::Closed(result));
        }
        // The poll may have changed the phase: a deadline earlier than the armed one
        // moves the timer; a later one waits for it to fire, and is looked at then.
        if let Some(deadline) = state.deadline_ms(&timeouts)
            && deadline < armed_ms
        {
            armed_ms = deadline;
            watchdog.as_mut().reset(state.instant(armed_ms));
            watchdog_registered = false;
        }
        if watchdog_registered && !watchdog.is_elapsed() {
            return Poll::Pending;
        }
        while watchdog.as_mut().poll(cx).is_ready() {
            let now = state.now_ms();
            armed_ms = match state.deadline_ms(&timeouts) {
                Some(deadline) if deadline <= now => {
                    return Poll::Ready(End::Expired(state.phase()));
                }
                Some(deadline) => deadline,
                // Busy: its end sets a deadline at least this far away.
                None => now.saturating_add(timeouts.head_ms.min(timeouts.idle_ms)),
            };
            watchdog.as_mut().reset(state.instant(armed_ms));
        }
        watchdog_registered = true;
        Poll::Pending
    })
    .await;
    match end {
        End::Closed(Ok(())) | End::Drained => {}
        End::Closed(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection failed"),
        End::Expired(phase) => {
            tracing::debug!(%peer, ?phase, "HTTP connection closed: past its deadline");
        }
    }
}

/// Answers one request: refuses a head over the limit, bounds the body's arrival, and
/// turns an answer given to a body that ran out of time into a 408.
async fn answer<S>(
    service: S,
    state: Arc<ConnState>,
    limits: Arc<HttpLimits>,
    request: hyper::Request<Incoming>,
) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    state.enter_busy();
    if head_bytes(&request) > limits.max_head_bytes {
        state.enter_timed(Phase::Idle);
        return Ok(refusal::head_too_large(limits.max_head_bytes));
    }
    let request = request.map(|body| {
        Body::new(DeadlineBody::new(
            body,
            limits.body_read_timeout,
            Arc::clone(&state),
        ))
    });
    let Ok(response) = service.oneshot(request).await;
    state.enter_timed(Phase::Idle);
    if state.body_expired.swap(false, Ordering::Relaxed) {
        return Ok(refusal::body_too_slow(limits.body_read_timeout));
    }
    Ok(response)
}

/// The size of a request's head as sent (request line, headers, the blank line).
fn head_bytes<B>(request: &hyper::Request<B>) -> usize {
    // "<method> <target> HTTP/1.1\r\n" and the final "\r\n"; the target is the path and
    // query, with a scheme and authority when the client sent the absolute form.
    let uri = request.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len());
    let request_line = request.method().as_str().len() + target + 12;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    request_line + headers + 2
}
