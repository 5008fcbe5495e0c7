//! Keep-alive HTTP/1.1 connections to function endpoints, driven by the dispatch that
//! uses them.
//!
//! A pooled client (hyper-util's, reqwest's) runs every connection in a task of its
//! own and hands it each request through a channel: every dispatch then costs two task
//! hand-offs and their wake-ups on top of the exchange itself. Here a dispatch takes a
//! connection out of the idle set, polls the connection's I/O future itself while it
//! waits for the answer and reads its body, and puts it back when the exchange is over.
//! An idle connection is polled by nobody, so a closed one is noticed when it is taken
//! (its future then resolves at once) and dropped; idle connections older than the
//! idle timeout are dropped too. Nothing is spawned.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::http::uri::Authority;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The connection's I/O future, boxed: it is 680 bytes, and a connection moves into and
/// out of the idle set and through the dispatch future on every exchange.
type Driver = Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TCP connect (or name resolution) failed.
    #[error(transparent)]
    Tcp(#[from] std::io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error(transparent)]
    Handshake(#[from] hyper::Error),
}

/// Idle connections by endpoint authority (`host:port`).
#[derive(Debug)]
pub(crate) struct Connections {
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
    idle_timeout: Duration,
    max_idle_per_host: usize,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
    since: Instant,
}

impl Connections {
    pub(crate) fn new(idle_timeout: Duration, max_idle_per_host: usize) -> Self {
        Self {
            idle: Mutex::default(),
            idle_timeout,
            max_idle_per_host,
        }
    }

    /// A connection to `authority`: an idle one still open, or a new one.
    pub(crate) async fn get(&self, authority: &Authority) -> Result<Conn, ConnectError> {
        while let Some(idle) = self.take_idle(authority) {
            let Idle {
                sender,
                mut driver,
                since,
            } = idle;
            // A connection the peer closed while idle resolves at its first poll.
            if since.elapsed() < self.idle_timeout
                && (&mut driver).now_or_never().is_none()
                && sender.is_ready()
            {
                return Ok(Conn {
                    sender,
                    driver,
                    driver_done: false,
                });
            }
        }
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            driver: Box::new(driver),
            driver_done: false,
        })
    }

    fn take_idle(&self, authority: &Authority) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(authority)?.pop()
    }

    /// Returns a connection whose exchange is over; kept unless it has already ended.
    /// It is not polled here: `get` polls it once before reuse, and that one poll both
    /// lets it see the end of this exchange and tells whether it closed since (a
    /// `Connection: close` answer included).
    pub(crate) fn put(&self, authority: Authority, conn: Conn) {
        if conn.driver_done {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let host = idle.entry(authority).or_default();
        if host.len() < self.max_idle_per_host {
            host.push(Idle {
                sender: conn.sender,
                driver: conn.driver,
                since: Instant::now(),
            });
        }
    }
}

/// A connection in use by one exchange.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
    /// The connection's I/O future has finished (closed or failed): it cannot be reused,
    /// and whatever it delivered is read without polling it again.
    driver_done: bool,
}

impl Conn {
    /// Sends `request` and waits for the answer's head, driving the connection.
    pub(crate) async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> hyper::Result<Response<Incoming>> {
        let mut answer = std::pin::pin!(self.sender.send_request(request));
        if !self.driver_done {
            tokio::select! {
                biased;
                answer = &mut answer => return answer,
                _ = &mut self.driver => self.driver_done = true,
            }
        }
        answer.await
    }

    /// The next frame of `body`, driving the connection that delivers it.
    pub(crate) async fn frame(
        &mut self,
        body: &mut Incoming,
    ) -> Option<Result<Frame<Bytes>, hyper::Error>> {
        if !self.driver_done {
            tokio::select! {
                biased;
                frame = body.frame() => return frame,
                _ = &mut self.driver => self.driver_done = true,
            }
        }
        body.frame().await
    }
}
