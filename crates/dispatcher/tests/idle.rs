//! Idle pooled connections are closed by `sweep_idle` once past the idle timeout, even
//! when nobody dispatches to their endpoint again (a removed function's), as the
//! endpoint's server sees: its end of the connection reads EOF.

mod support;

use std::time::{Duration, Instant};

use core_types::Dispatch;
use dispatcher::{ModeRouter, PoolConfig, PoolDispatcher};
use support::{Ca, PATIENCE, Served, Server, request};

fn pool(idle_timeout: Duration) -> PoolDispatcher {
    PoolDispatcher::with_config(PoolConfig {
        pool_idle_timeout: idle_timeout,
        ..PoolConfig::default()
    })
}

async fn served(pool: &impl Dispatch, endpoint: &str) -> Served {
    let success = tokio::time::timeout(PATIENCE, pool.dispatch(request(endpoint)))
        .await
        .expect("the dispatch ends")
        .unwrap_or_else(|e| panic!("{endpoint}: {e:?}"));
    Served::from_output(&success.output)
}

/// Sweeps every few milliseconds until `server` has seen `closed` connections end;
/// panics past [`PATIENCE`]. Returns how long that took.
async fn sweep_until_closed(pool: &impl Dispatch, server: &Server, closed: usize) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(PATIENCE, async {
        while server.closed() < closed {
            pool.sweep_idle();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the server saw {} of {closed} connections closed within {PATIENCE:?}",
            server.closed()
        )
    });
    start.elapsed()
}

#[tokio::test]
async fn a_sweep_closes_an_idle_connection_to_an_endpoint_no_longer_used() {
    const IDLE_TIMEOUT: Duration = Duration::from_millis(300);
    let server = Server::plain().await;
    let pool = pool(IDLE_TIMEOUT);
    served(&pool, &server.url("http", "127.0.0.1")).await;
    let idle_since = Instant::now();
    assert_eq!((server.accepted(), server.closed()), (1, 0));

    // Nobody dispatches there again; only the sweeps can close the connection, and
    // they do once it has been idle for the timeout (not before).
    sweep_until_closed(&pool, &server, 1).await;
    assert!(
        idle_since.elapsed() >= IDLE_TIMEOUT,
        "closed after {:?}, before the idle timeout",
        idle_since.elapsed()
    );
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn the_router_forwards_the_sweep_to_the_pool_for_tls_connections_too() {
    let ca = Ca::new("test ca");
    let server = Server::tls(ca.server_config(&["localhost"])).await;
    let router = ModeRouter::new(PoolDispatcher::with_config(PoolConfig {
        pool_idle_timeout: Duration::from_millis(100),
        extra_root_certificates: vec![ca.der()],
        ..PoolConfig::default()
    }));
    assert!(served(&router, &server.url("https", "localhost")).await.tls);
    sweep_until_closed(&router, &server, 1).await;
}

#[tokio::test]
async fn a_sweep_keeps_connections_younger_than_the_idle_timeout() {
    let server = Server::plain().await;
    let pool = pool(Duration::from_secs(3600));
    let endpoint = server.url("http", "127.0.0.1");
    let first = served(&pool, &endpoint).await;
    pool.sweep_idle();
    pool.sweep_idle();
    // Still there: the next dispatch reuses it.
    assert_eq!(served(&pool, &endpoint).await.peer, first.peer);
    assert_eq!((server.accepted(), server.closed()), (1, 0));
}
