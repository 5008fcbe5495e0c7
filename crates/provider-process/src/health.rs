//! Whether a replica is ready: `GET http://127.0.0.1:$PORT/health` answers 2xx. And
//! where a new replica listens: a free loopback port.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take before it counts as a failed one.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A free loopback port for a new replica. Another process may take it before the
/// replica binds it; the replica then fails to start and is started again on another.
pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// One readiness probe: `true` when the replica answered 2xx.
pub(crate) async fn probe(port: u16) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, probe_once(port))
        .await
        .unwrap_or(false)
}

async fn probe_once(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // The status line is all a probe needs: `HTTP/1.x 2xx`.
    let mut head = [0_u8; 12];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    head.starts_with(b"HTTP/1.") && head[8] == b' ' && head[9] == b'2'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes a server that answers one request with `status`.
    async fn probe_answered_with(status: &str) -> bool {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = async {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = [0_u8; 512];
            let _ = stream.read(&mut buffer).await;
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
        };
        let ((), ready) = tokio::join!(answer, probe(port));
        ready
    }

    #[tokio::test]
    async fn a_2xx_is_ready_and_anything_else_is_not() {
        assert!(probe_answered_with("200 OK").await);
        assert!(probe_answered_with("204 No Content").await);
        assert!(!probe_answered_with("503 Service Unavailable").await);
        assert!(!probe_answered_with("302 Found").await);
    }

    #[tokio::test]
    async fn nobody_listening_is_not_ready() {
        let port = free_port().unwrap();
        assert!(!probe(port).await);
    }
}
