//! What the HTTP edge's tests share: a server on a free loopback port (plain or TLS)
//! serving a small app, and raw clients that read answers byte by byte. Every wait is
//! bounded by [`DEADLINE`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::{get, post};
use http_server::{HttpLimits, Listener, ServerTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The most any wait of these tests may take: a bound, never a pause.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// The limits these tests start from: generous, so each test shortens the one it is
/// about.
pub(crate) fn limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        body_read_timeout: Duration::from_secs(30),
        max_head_bytes: 4096,
        max_connections: 64,
    }
}

/// `POST /echo` answers its body; `GET /slow/{ms}` answers after that long;
/// `GET /never` never answers. The last two tell `entered` when they start.
fn app(entered: mpsc::UnboundedSender<()>) -> Router {
    let never_entered = entered.clone();
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/slow/{ms}",
            get(|Path(ms): Path<u64>| async move {
                let _ = entered.send(());
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "done"
            }),
        )
        .route(
            "/never",
            get(|| async move {
                let _ = never_entered.send(());
                std::future::pending::<&'static str>().await
            }),
        )
}

/// A server on a free loopback port, drained when `stop` is sent (or dropped).
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
    /// A request to `/slow` or `/never` is being answered.
    entered: mpsc::UnboundedReceiver<()>,
}

impl Server {
    /// Plain HTTP.
    pub(crate) async fn start(limits: HttpLimits) -> Self {
        Self::start_draining_within(limits, DEADLINE, None).await
    }

    /// HTTP over TLS with `tls`.
    pub(crate) async fn start_tls(limits: HttpLimits, tls: ServerTls) -> Self {
        Self::start_draining_within(limits, DEADLINE, Some(tls)).await
    }

    pub(crate) async fn start_draining_within(
        limits: HttpLimits,
        drain_limit: Duration,
        tls: Option<ServerTls>,
    ) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = match tls {
            Some(tls) => Listener::tls(tcp, tls),
            None => Listener::plain(tcp),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (entered_tx, entered) = mpsc::unbounded_channel();
        #[expect(
            clippy::disallowed_methods,
            reason = "a test server: awaited by `drain`, aborted with the test's runtime"
        )]
        let served = tokio::spawn(http_server::serve(
            listener,
            app(entered_tx),
            limits,
            async {
                let _ = stopped.await;
            },
            drain_limit,
        ));
        Self {
            addr,
            stop: Some(stop),
            served,
            entered,
        }
    }

    /// Waits until a slow request is being answered.
    pub(crate) async fn answering(&mut self) {
        bounded("a slow request to be answered", self.entered.recv())
            .await
            .expect("the app is alive");
    }

    pub(crate) async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Starts the drain and waits until `serve` has returned.
    pub(crate) async fn drain(mut self) {
        drop(self.stop.take());
        bounded("serve to return after the drain", &mut self.served)
            .await
            .unwrap();
    }
}

pub(crate) async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("gave up after {DEADLINE:?} waiting for {what}"))
}

/// One whole answer to a request on `stream` (read up to its `Content-Length`).
pub(crate) async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> Answer {
    let mut bytes = Vec::new();
    bounded("an answer", async {
        loop {
            if let Some(answer) = Answer::parse(&bytes) {
                return answer;
            }
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.expect("the socket reads");
            assert!(
                n > 0,
                "the connection closed before a whole answer: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            bytes.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// Reads until the server closes the connection; what came before the close.
pub(crate) async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut bytes = Vec::new();
    bounded("the server to close the connection", async {
        loop {
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    bytes
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        (body.len() >= length).then(|| Self {
            status,
            head: head.to_ascii_lowercase(),
            body: body[..length].to_owned(),
        })
    }

    pub(crate) fn error_code(&self) -> String {
        let body: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON body");
        body["error"].as_str().expect("an error code").to_owned()
    }
}

/// Writes all of `bytes` to `stream`.
pub(crate) async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: impl AsRef<[u8]>) {
    stream
        .write_all(bytes.as_ref())
        .await
        .expect("the socket writes");
}

/// Sends an echo of `body` on `stream` and reads its answer, expected 200.
pub(crate) async fn echo(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), body: &str) -> String {
    send(stream, echo_request(body)).await;
    let answer = read_answer(stream).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

pub(crate) fn echo_request(body: &str) -> String {
    format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A well-behaved client on a fresh connection gets its echo.
pub(crate) async fn well_behaved_client_is_served(server: &Server) {
    let mut client = server.connect().await;
    assert_eq!(echo(&mut client, "hello").await, "hello");
}
