//! Keep-alive HTTP/1.1 connections (plain or TLS) to function endpoints, driven by the
//! dispatch that uses them.
//!
//! A pooled client (hyper-util's, reqwest's) runs every connection in a task of its
//! own and hands it each request through a channel: every dispatch then costs two task
//! hand-offs and their wake-ups on top of the exchange itself. Here a dispatch takes a
//! connection out of the idle set, polls the connection's I/O future itself while it
//! waits for the answer and reads its body, and puts it back when the exchange is over.
//! Nothing is spawned, so an idle connection is polled by nobody: one the peer closed,
//! or one idle for longer than the idle timeout, is dropped when a dispatch to its
//! origin next looks for a connection, or by [`Connections::sweep`], which the
//! scheduler's sweeper calls periodically (through `Dispatch::sweep_idle`) so that
//! connections to origins nobody dispatches to any more (removed functions) are closed
//! too.
//!
//! Idle connections are keyed by origin (scheme, host, port): an `http` and an `https`
//! endpoint on the same host and port never share a connection.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::{Tls, TlsSetupError};

/// The connection's I/O future, boxed: it is 680 bytes, and a connection moves into and
/// out of the idle set and through the dispatch future on every exchange.
type Driver = Box<Connection<TokioIo<Stream>, Full<Bytes>>>;

/// How an endpoint is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// Which connections can serve an endpoint: the same scheme, host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) scheme: Scheme,
    /// Lower case, without the brackets of an IPv6 literal: what is resolved, and the
    /// TLS server name (SNI, and the name the certificate must carry).
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// TCP connect (or name resolution) failed.
    #[error(transparent)]
    Tcp(#[from] io::Error),
    /// No TLS client configuration could be built.
    #[error("TLS is not available")]
    TlsSetup(#[source] TlsSetupError),
    /// The host is no TLS server name (checked when the URL is parsed; kept so a
    /// mismatch is an error, not a panic).
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(Arc<str>),
    /// The TLS handshake failed (a mismatched certificate included).
    #[error("TLS handshake failed")]
    Tls(#[source] io::Error),
    /// The server's certificate chains to no trusted root: the most likely TLS failure
    /// of a private endpoint, so it says what to do about it.
    #[error(
        "TLS handshake failed: the server's certificate is not issued by a trusted root \
         (the platform's, or the extra roots of the configuration)"
    )]
    UntrustedCertificate(#[source] io::Error),
    /// What came back is not TLS at all.
    #[error("TLS handshake failed: the endpoint does not speak TLS (is it http://?)")]
    NotTls(#[source] io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error(transparent)]
    Handshake(#[from] hyper::Error),
}

/// Idle connections by origin.
#[derive(Debug)]
pub(crate) struct Connections {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    idle_timeout: Duration,
    max_idle_per_host: usize,
    tls: Tls,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
    since: Instant,
}

impl Idle {
    /// Still worth keeping: younger than `idle_timeout` and not closed by the peer
    /// (a closed connection's future resolves at its first poll, with no waker needed).
    fn usable(&mut self, idle_timeout: Duration) -> bool {
        self.since.elapsed() < idle_timeout
            && (&mut self.driver).now_or_never().is_none()
            && self.sender.is_ready()
    }
}

/// The byte stream under a connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    /// Boxed: the TLS state is over a kilobyte, and plain connections should not carry
    /// its size.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // hyper writes head and body in one vectored call when the stream takes it.
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connections {
    pub(crate) fn new(idle_timeout: Duration, max_idle_per_host: usize, tls: Tls) -> Self {
        Self {
            idle: Mutex::default(),
            idle_timeout,
            max_idle_per_host,
            tls,
        }
    }

    /// A connection to `origin`: an idle one still open, or a new one.
    pub(crate) async fn get(&self, origin: &Origin) -> Result<Conn, ConnectError> {
        while let Some(mut idle) = self.take_idle(origin) {
            if idle.usable(self.idle_timeout) {
                return Ok(Conn {
                    sender: idle.sender,
                    driver: idle.driver,
                    driver_done: false,
                });
            }
        }
        let tcp = TcpStream::connect((&*origin.host, origin.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match origin.scheme {
            Scheme::Http => Stream::Plain(tcp),
            Scheme::Https => {
                let config = self.tls.config().map_err(ConnectError::TlsSetup)?;
                let name = ServerName::try_from(&*origin.host)
                    .map_err(|_| ConnectError::ServerName(Arc::clone(&origin.host)))?
                    .to_owned();
                let tls = TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(tls_failure)?;
                Stream::Tls(Box::new(tls))
            }
        };
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            driver: Box::new(driver),
            driver_done: false,
        })
    }

    fn take_idle(&self, origin: &Origin) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(origin)?.pop()
    }

    /// Returns a connection whose exchange is over; kept unless it has already ended.
    /// It is not polled here: `get` polls it once before reuse, and that one poll both
    /// lets it see the end of this exchange and tells whether it closed since (a
    /// `Connection: close` answer included).
    pub(crate) fn put(&self, origin: Origin, conn: Conn) {
        if conn.driver_done {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let host = idle.entry(origin).or_default();
        if host.len() < self.max_idle_per_host {
            host.push(Idle {
                sender: conn.sender,
                driver: conn.driver,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections older than the idle timeout or closed by their peer,
    /// and forgets origins left without any, so neither sockets nor map entries of
    /// origins no longer dispatched to outlive the idle timeout by more than a sweep.
    /// Returns how many connections it closed.
    pub(crate) fn sweep(&self) -> usize {
        let closing: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut closing = Vec::new();
            idle.retain(|_, conns| {
                closing.extend(conns.extract_if(.., |c| !c.usable(self.idle_timeout)));
                !conns.is_empty()
            });
            closing
        };
        // Dropped outside the lock: closing sockets (and TLS sessions) is I/O.
        let closed = closing.len();
        drop(closing);
        closed
    }

    /// How many connections are idle, for tests.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> (usize, usize) {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        (idle.len(), idle.values().map(Vec::len).sum())
    }
}

/// A failed TLS handshake, told apart by the rustls error inside.
fn tls_failure(error: io::Error) -> ConnectError {
    use rustls::{CertificateError, Error};
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            ConnectError::UntrustedCertificate(error)
        }
        Some(Error::InvalidMessage(_)) => ConnectError::NotTls(error),
        _ => ConnectError::Tls(error),
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hyper::service::service_fn;

    use super::*;

    /// A plain HTTP/1.1 server on loopback answering every request with 200 "ok".
    async fn server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        #[expect(
            clippy::disallowed_methods,
            reason = "the test's server runs beside the test body"
        )]
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                #[expect(
                    clippy::disallowed_methods,
                    reason = "one task per connection of the test's server"
                )]
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    async fn exchange(connections: &Connections, origin: &Origin) {
        let mut conn = connections.get(origin).await.unwrap();
        let request = Request::post("/")
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), conn.send(request))
            .await
            .unwrap()
            .unwrap();
        let mut body = response.into_body();
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), conn.frame(&mut body))
            .await
            .unwrap()
        {
            frame.unwrap();
        }
        connections.put(origin.clone(), conn);
    }

    #[tokio::test]
    async fn a_sweep_closes_expired_idle_connections_and_forgets_their_origin() {
        let addr = server().await;
        let origin = Origin {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: addr.port(),
        };

        // Young connections stay.
        let keeping = Connections::new(Duration::from_secs(3600), 8, Tls::new(Vec::new()));
        exchange(&keeping, &origin).await;
        assert_eq!(keeping.idle_count(), (1, 1));
        assert_eq!(keeping.sweep(), 0);
        assert_eq!(keeping.idle_count(), (1, 1));

        // With no idle time allowed, every idle connection is expired at once: the sweep
        // closes it and leaves no empty entry behind.
        let expiring = Connections::new(Duration::ZERO, 8, Tls::new(Vec::new()));
        exchange(&expiring, &origin).await;
        assert_eq!(expiring.idle_count(), (1, 1));
        assert_eq!(expiring.sweep(), 1);
        assert_eq!(expiring.idle_count(), (0, 0));
        assert_eq!(expiring.sweep(), 0);
    }
}
