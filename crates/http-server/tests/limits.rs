//! The edge's limits and its drain, seen from raw TCP clients on loopback: what a
//! slow, silent, oversized or patient client gets, and what a well-behaved one still
//! gets beside it. Limits are short so each test runs in well under a second of waiting;
//! every wait is bounded by `support::DEADLINE`.

#[allow(dead_code, reason = "shared with tls.rs; these tests use part of it")]
mod support;

use std::time::Duration;

use http_server::{HttpLimits, InvalidLimits};
use support::{
    Answer, Server, bounded, echo, echo_request, limits, read_answer, read_until_closed, send,
    well_behaved_client_is_served,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let mut server =
        Server::start_draining_within(limits(), Duration::from_millis(100), None).await;
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
