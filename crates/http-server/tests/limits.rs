//! The edge's limits and its drain, seen from raw TCP clients on loopback: what a
//! slow, silent, oversized or patient client gets, and what a well-behaved one still
//! gets beside it. Limits are short so each test runs in well under a second of waiting;
//! every wait is bounded by [`DEADLINE`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::{get, post};
use http_server::{HttpLimits, InvalidLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The most any wait of these tests may take: a bound, never a pause.
const DEADLINE: Duration = Duration::from_secs(10);

/// The limits these tests start from: generous, so each test shortens the one it is
/// about.
fn limits() -> HttpLimits {
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
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
    /// A request to `/slow` or `/never` is being answered.
    entered: mpsc::UnboundedReceiver<()>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Self {
        Self::start_draining_within(limits, DEADLINE).await
    }

    async fn start_draining_within(limits: HttpLimits, drain_limit: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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
    async fn answering(&mut self) {
        bounded("a slow request to be answered", self.entered.recv())
            .await
            .expect("the app is alive");
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Starts the drain and waits until `serve` has returned.
    async fn drain(mut self) {
        drop(self.stop.take());
        bounded("serve to return after the drain", &mut self.served)
            .await
            .unwrap();
    }
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("gave up after {DEADLINE:?} waiting for {what}"))
}

/// One whole answer to a request on `stream` (read up to its `Content-Length`).
async fn read_answer(stream: &mut TcpStream) -> Answer {
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
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
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
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Option<Self> {
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

    fn error_code(&self) -> String {
        let body: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON body");
        body["error"].as_str().expect("an error code").to_owned()
    }
}

/// Writes all of `bytes` to `stream`.
async fn send(stream: &mut TcpStream, bytes: impl AsRef<[u8]>) {
    stream
        .write_all(bytes.as_ref())
        .await
        .expect("the socket writes");
}

/// Sends an echo of `body` on `stream` and reads its answer, expected 200.
async fn echo(stream: &mut TcpStream, body: &str) -> String {
    send(stream, echo_request(body)).await;
    let answer = read_answer(stream).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

fn echo_request(body: &str) -> String {
    format!(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A well-behaved client on a fresh connection gets its echo.
async fn well_behaved_client_is_served(server: &Server) {
    let mut client = server.connect().await;
    assert_eq!(echo(&mut client, "hello").await, "hello");
}

#[tokio::test]
async fn a_head_that_does_not_arrive_within_the_header_read_timeout_is_closed() {
    let server = Server::start(HttpLimits {
        header_read_timeout: Duration::from_millis(200),
        ..limits()
    })
    .await;
    let mut silent = server.connect().await;
    let mut trickling = server.connect().await;
    send(&mut trickling, b"POST /echo HTTP/1.1\r\nHost: test\r\n").await;

    well_behaved_client_is_served(&server).await;
    assert_eq!(read_until_closed(&mut silent).await, b"");
    assert_eq!(read_until_closed(&mut trickling).await, b"");
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_never_while_it_is_answered() {
    let server = Server::start(HttpLimits {
        idle_timeout: Duration::from_millis(200),
        ..limits()
    })
    .await;
    let mut client = server.connect().await;
    // Answered after three idle timeouts: a request being answered is not idle.
    send(&mut client, b"GET /slow/600 HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let answer = read_answer(&mut client).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "done"));

    assert_eq!(read_until_closed(&mut client).await, b"");
}

#[tokio::test]
async fn the_idle_timeout_not_the_header_timeout_bounds_the_wait_for_the_next_request() {
    let server = Server::start(HttpLimits {
        header_read_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let mut client = server.connect().await;
    assert_eq!(echo(&mut client, "one").await, "one");
    // Idle for several header timeouts: the connection is kept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(echo(&mut client, "two").await, "two");
}

#[tokio::test]
async fn a_body_slower_than_the_body_read_timeout_is_answered_408_and_the_connection_closed() {
    let server = Server::start(HttpLimits {
        body_read_timeout: Duration::from_millis(200),
        ..limits()
    })
    .await;
    let mut trickling = server.connect().await;
    send(
        &mut trickling,
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\nonly a part",
    )
    .await;
    // Like a slow uploader, it goes on sending a byte now and then and looks for an
    // answer in between: the 408 must reach it although the server closes with bytes
    // of it unread (closing at once would reset the connection and destroy the answer).
    let mut bytes = Vec::new();
    let answer = bounded("a 408", async {
        loop {
            let _ = trickling.write_all(b"x").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut chunk = [0; 4096];
            match trickling.try_read(&mut chunk) {
                Ok(0) => panic!("closed without an answer: {bytes:?}"),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!(
                    "{e} before an answer: {:?}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
            if let Some(answer) = Answer::parse(&bytes) {
                return answer;
            }
        }
    })
    .await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.error_code(), "REQUEST_TIMEOUT");
    assert!(answer.head.contains("connection: close"), "{answer:?}");
    assert_eq!(read_until_closed(&mut trickling).await, b"");
    well_behaved_client_is_served(&server).await;
}

#[tokio::test]
async fn a_head_over_the_limit_is_431_and_the_connection_closed() {
    let server = Server::start(limits()).await;
    let limit = limits().max_head_bytes;
    for padding in [limit, 100 * limit] {
        let mut client = server.connect().await;
        let request = format!(
            "GET /slow/0 HTTP/1.1\r\nHost: test\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(padding)
        );
        // A far larger head is refused before it is all sent: the write may fail.
        let _ = client.write_all(request.as_bytes()).await;
        let closed = read_until_closed(&mut client).await;
        let answer = Answer::parse(&closed).expect("an answer before the close");
        assert_eq!(answer.status, 431, "{padding}: {answer:?}");
        if padding == limit {
            // Just over the limit: the contract's JSON error.
            assert_eq!(answer.error_code(), "REQUEST_HEADER_FIELDS_TOO_LARGE");
        }
    }
    // A head just under the limit is served.
    let mut client = server.connect().await;
    let request = format!(
        "GET /slow/0 HTTP/1.1\r\nHost: test\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(limit - 100)
    );
    send(&mut client, &request).await;
    assert_eq!(read_answer(&mut client).await.status, 200);
}

#[tokio::test]
async fn past_the_connection_cap_a_client_waits_until_a_connection_closes() {
    let server = Server::start(HttpLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    // Two clients hold both places: each has been answered, so both are accepted.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut holder = server.connect().await;
        assert_eq!(echo(&mut holder, "held").await, "held");
        holders.push(holder);
    }
    let mut waiting = server.connect().await;
    send(&mut waiting, echo_request("waited")).await;
    let mut early = [0; 1];
    let answered_early =
        tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut early)).await;
    assert!(
        answered_early.is_err(),
        "a third connection was served while two held the cap"
    );

    drop(holders.pop());
    assert_eq!(read_answer(&mut waiting).await.body, "waited");
}

#[tokio::test]
async fn a_drain_closes_idle_and_half_sent_connections_at_once_and_lets_answers_finish() {
    let mut server = Server::start(limits()).await;
    let mut idle = server.connect().await;
    assert_eq!(echo(&mut idle, "before").await, "before");
    let mut half_sent = server.connect().await;
    send(&mut half_sent, b"POST /echo HTTP/1.1\r\nHost: te").await;
    let mut busy = server.connect().await;
    send(&mut busy, b"GET /slow/300 HTTP/1.1\r\nHost: test\r\n\r\n").await;
    server.answering().await;
    let addr = server.addr;

    let (drained, (), ()) = tokio::join!(
        server.drain(),
        async { assert_eq!(read_until_closed(&mut idle).await, b"") },
        async { assert_eq!(read_until_closed(&mut half_sent).await, b"") },
    );
    let () = drained;
    let answer = read_answer(&mut busy).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "done"));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the drain"
    );
}

#[tokio::test]
async fn an_answer_that_outlasts_the_drain_limit_is_cut() {
    let mut server = Server::start_draining_within(limits(), Duration::from_millis(100)).await;
    let mut stuck = server.connect().await;
    send(&mut stuck, b"GET /never HTTP/1.1\r\nHost: test\r\n\r\n").await;
    server.answering().await;

    server.drain().await;
    assert_eq!(read_until_closed(&mut stuck).await, b"");
}

#[test]
fn limits_that_cannot_serve_are_refused() {
    assert_eq!(HttpLimits::default().validate(), Ok(()));
    let zero = Duration::ZERO;
    for (limits, expected) in [
        (
            HttpLimits {
                header_read_timeout: zero,
                ..limits()
            },
            InvalidLimits::ZeroTimeout("header read timeout"),
        ),
        (
            HttpLimits {
                idle_timeout: zero,
                ..limits()
            },
            InvalidLimits::ZeroTimeout("idle timeout"),
        ),
        (
            HttpLimits {
                body_read_timeout: zero,
                ..limits()
            },
            InvalidLimits::ZeroTimeout("body read timeout"),
        ),
        (
            HttpLimits {
                max_head_bytes: 1023,
                ..limits()
            },
            InvalidLimits::HeadTooSmall(1023),
        ),
        (
            HttpLimits {
                max_connections: 0,
                ..limits()
            },
            InvalidLimits::NoConnections,
        ),
    ] {
        assert_eq!(limits.validate(), Err(expected));
    }
}
