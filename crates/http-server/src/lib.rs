//! The HTTP edge: serves a tower service (the API's `Api`) on a TCP listener, in plain
//! HTTP or over TLS, with the limits a public service needs, and drains it at shutdown.
//!
//! Owns: accepting connections (at most [`HttpLimits::max_connections`] open; beyond it
//! new ones wait in the listener's backlog until one closes); TLS when the [`Listener`]
//! has a [`ServerTls`] (rustls on ring, TLS 1.2 and 1.3, ALPN `http/1.1` only; the
//! certificate and key read from PEM files, swapped for new connections by
//! [`ServerTls::reload`]; each handshake made in its connection's task, never in the
//! accept loop); HTTP/1.1 on each connection (hyper); the deadlines of a connection (a
//! complete request head within [`HttpLimits::header_read_timeout`] of its start, the
//! TLS handshake included, or of a kept-alive request's first byte; the next request
//! within [`HttpLimits::idle_timeout`] of the last answer; a request body within
//! [`HttpLimits::body_read_timeout`], else 408); the head size limit (431); the
//! connection tasks (each owned by the server, all ended before [`serve`] returns); and
//! the drain: when told to stop, the listener closes, idle connections and connections
//! still in their handshake or sending a head close at once, and requests being
//! answered get [`serve`]'s `drain_limit` to finish.
//!
//! Must not know: routes, the engine, the stores. What it answers itself (408, 431) is
//! the contract's JSON error body from core-types.

mod body;
mod connection;
mod drain;
mod refusal;
mod tls;

pub use tls::{ServerTls, TlsError};

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::Service;

/// The limits every connection is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client has to send a whole request head, from the connection's start
    /// or from the first byte of a request on a kept-alive connection; past it the
    /// connection is closed (a slowloris client holds nothing for longer).
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may stay open with no request after its last
    /// answer.
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive, from when the server first waits for
    /// it (right after its head); past it the request is answered 408
    /// `REQUEST_TIMEOUT` and the connection closed.
    pub body_read_timeout: Duration,
    /// The largest request head (request line and headers) served; a larger one is
    /// answered 431 `REQUEST_HEADER_FIELDS_TOO_LARGE` and the connection closed.
    pub max_head_bytes: usize,
    /// Connections open at once; more wait in the listener's backlog.
    pub max_connections: usize,
}

impl HttpLimits {
    /// The smallest `max_head_bytes` accepted: a request line and a few ordinary
    /// headers must fit.
    pub const MIN_HEAD_BYTES: usize = 1024;

    /// The limits, if they can serve anything: positive timeouts, a head limit of at
    /// least [`Self::MIN_HEAD_BYTES`], at least one connection.
    pub fn validate(&self) -> Result<(), InvalidLimits> {
        let timeouts = [
            ("header read timeout", self.header_read_timeout),
            ("idle timeout", self.idle_timeout),
            ("body read timeout", self.body_read_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, t)| t.is_zero()) {
            return Err(InvalidLimits::ZeroTimeout(name));
        }
        if self.max_head_bytes < Self::MIN_HEAD_BYTES {
            return Err(InvalidLimits::HeadTooSmall(self.max_head_bytes));
        }
        if self.max_connections == 0 {
            return Err(InvalidLimits::NoConnections);
        }
        Ok(())
    }
}

impl Default for HttpLimits {
    /// What a public service would use: 10 s for a head (nginx allows 60 s, but a client
    /// that needs more than 10 s for a few hundred bytes is not one to wait for), 60 s of
    /// keep-alive idleness, 60 s for a body (6 MiB on a 1 Mbit/s link), 64 KiB of head
    /// (Envoy's default is 60 KiB), 4096 connections.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            max_head_bytes: 64 * 1024,
            max_connections: 4096,
        }
    }
}

/// Limits that cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLimits {
    /// A timeout of zero would close every connection at once.
    #[error("the HTTP {0} must be positive")]
    ZeroTimeout(&'static str),
    /// No request fits.
    #[error(
        "the HTTP head limit must be at least {min} bytes, got {0}",
        min = HttpLimits::MIN_HEAD_BYTES
    )]
    HeadTooSmall(usize),
    /// No connection could ever be served.
    #[error("the HTTP connection limit must be at least 1")]
    NoConnections,
}

/// What [`serve`] accepts connections on: a bound TCP listener, and the TLS its
/// connections begin with, if any (a plain listener converts from a [`TcpListener`]).
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<ServerTls>,
}

impl Listener {
    /// Plain HTTP on `tcp`.
    pub fn plain(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }

    /// HTTP over TLS on `tcp`: every connection first makes a handshake with the
    /// certificate `tls` holds when that handshake begins, or is closed.
    pub fn tls(tcp: TcpListener, tls: ServerTls) -> Self {
        Self {
            tcp,
            tls: Some(tls),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self::plain(tcp)
    }
}

/// How long to wait before accepting again after the listener failed (out of file
/// descriptors, say): the condition passes only as connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `service` on `listener` under `limits` until `stop` resolves, then drains:
/// the listener is closed, idle connections, connections still in their TLS handshake
/// and connections still sending a head are closed at once, and requests being
/// answered get `drain_limit` to finish before their connections are closed too.
/// Returns when every connection has ended.
///
/// Before `stop`, new connections keep being accepted: a shutdown that still waits for
/// runtimes' callbacks resolves `stop` only after that wait.
pub async fn serve<S>(
    listener: impl Into<Listener>,
    service: S,
    limits: HttpLimits,
    stop: impl Future<Output = ()>,
    drain_limit: Duration,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let Listener { tcp: listener, tls } = listener.into();
    let limits = Arc::new(limits);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let draining = drain::Drain::default();
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            permit = Arc::clone(&open).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Answers are written whole; waiting for an ACK before the next segment
                // only adds latency.
                let _ = stream.set_nodelay(true);
                #[expect(
                    clippy::disallowed_methods,
                    reason = "the spawn invariant: every connection task is owned by this JoinSet, which `serve` drains or aborts before it returns"
                )]
                connections.spawn(connection::serve_connection(
                    stream,
                    peer,
                    service.clone(),
                    Arc::clone(&limits),
                    draining.clone(),
                    // A clone of an `Arc`, or nothing: plain connections pay nothing.
                    tls.clone(),
                    permit,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection; trying again shortly");
                drop(permit);
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
        // Finished connections are collected as new ones come, so what the set keeps is
        // bounded by the connections open.
        while let Some(ended) = connections.try_join_next() {
            log_panic(ended);
        }
    }
    drop(listener);
    draining.start();
    let open_connections = connections.len();
    let drained = tokio::time::timeout(drain_limit, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            still_open = connections.len(),
            ?drain_limit,
            "closing connections whose answers did not finish within the drain limit"
        );
    }
    connections.shutdown().await;
    tracing::debug!(open_connections, "HTTP server drained");
}

/// A connection task that panicked is logged; the server goes on.
fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended
        && e.is_panic()
    {
        tracing::error!(error = %e, "an HTTP connection task panicked");
    }
}
