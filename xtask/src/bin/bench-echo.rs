//! `bench-echo`: the function endpoint of `cargo xtask bench`, and its floor.
//!
//! It answers every `POST` with 200, `Content-Type: application/json` and the request
//! body unchanged, which is what a POOL function must return for the control plane to
//! record the dispatched body as the output. It has to cost as little as possible:
//! whatever CPU it spends on the servers' core is CPU the control plane cannot use, and
//! its direct throughput is the ceiling every ratio of the report is taken against.
//!
//! Hence hyper's connection-level server and nothing above it (no router, no tower
//! layers), HTTP/1.1 keep-alive, `TCP_NODELAY`, and by default one thread: a
//! current-thread runtime that drives every connection from the accept loop itself
//! (a `FuturesUnordered`, so nothing is spawned and nothing is shared between threads).
//! On loopback with the servers pinned to one core, one thread is the fastest choice
//! (measured in `docs/performance.md`); `--threads N` runs N such loops on one
//! listening socket, each on a scoped thread, to measure that again.
//!
//! With `--forward-to PORT` it is not an echo but a bare proxy, the floor of any proxy
//! built on hyper: each client connection gets one keep-alive connection of its own to
//! `127.0.0.1:PORT`, driven by the same task, and every request is forwarded on it (its
//! path, its body, `Content-Type: application/json`) and the answer's body handed back.
//! No pool, no router, no parsing, no bookkeeping: just the two HTTP exchanges a POOL
//! invocation costs the control plane, so the benchmark can show how much of the control
//! plane's cost is those exchanges and how much is the control plane.
//!
//! Usage: `bench-echo [PORT] [--threads N] [--forward-to PORT]`; binds `127.0.0.1:PORT`
//! (without a port argument, the `PORT` environment variable's; without either, `0`:
//! a free port) and prints the bound port alone on the first line of stdout.
//!
//! `GET /health` answers 200 with an empty body, so the control plane's `process`
//! provider can run it as a `DEPLOYMENT` replica: it gives a replica its port in
//! `PORT` and sends it work once `GET /health` answers 2xx. The bench then compares a
//! replica the control plane started with the same server registered as `POOL`.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::ExitCode;
use std::rc::Rc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str =
    "usage: bench-echo [PORT] [--threads N] [--forward-to PORT] (PORT also from $PORT)";

/// The command line: `[PORT] [--threads N] [--forward-to PORT]`.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    port: u16,
    threads: usize,
    /// Be a bare proxy to this port of 127.0.0.1 instead of an echo.
    forward_to: Option<u16>,
}

/// The command line, and `env_port` (the `PORT` variable, if set) as the port when no
/// argument names one.
fn parse_args(
    mut args: impl Iterator<Item = String>,
    env_port: Option<String>,
) -> Result<Args, String> {
    let mut parsed = Args {
        port: 0,
        threads: 1,
        forward_to: None,
    };
    let mut port_argument = false;
    while let Some(arg) = args.next() {
        if arg == "--forward-to" {
            let value = args.next().ok_or("--forward-to needs a port")?;
            parsed.forward_to = Some(
                value
                    .parse()
                    .map_err(|_| format!("--forward-to: not a port number: {value}"))?,
            );
        } else if arg == "--threads" {
            let value = args.next().ok_or("--threads needs a value")?;
            parsed.threads = value
                .parse()
                .ok()
                .filter(|threads| *threads >= 1)
                .ok_or_else(|| format!("--threads: not a positive number: {value}"))?;
        } else {
            parsed.port = arg
                .parse()
                .map_err(|_| format!("not a port number: {arg}"))?;
            port_argument = true;
        }
    }
    if let Some(value) = env_port.filter(|_| !port_argument) {
        parsed.port = value
            .trim()
            .parse()
            .map_err(|_| format!("PORT: not a port number: {value}"))?;
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let env_port = std::env::var_os("PORT").map(|port| port.to_string_lossy().into_owned());
    let args = match parse_args(std::env::args().skip(1), env_port) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("bench-echo: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-echo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    let listener = StdListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{port}")?;
    stdout.flush()?;
    drop(stdout);

    let upstream = args
        .forward_to
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    if args.threads == 1 {
        return serve_on_this_thread(listener, upstream);
    }
    // Each loop accepts from its own clone of the socket; the kernel hands every new
    // connection to one of them. The scope joins them all: nothing outlives `run`.
    std::thread::scope(|scope| {
        let loops: Vec<_> = (0..args.threads)
            .map(|_| {
                let listener = listener.try_clone();
                scope.spawn(move || serve_on_this_thread(listener?, upstream))
            })
            .collect();
        loops
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<std::io::Result<Vec<()>>>()
            .map(drop)
    })
}

/// Serves `listener` on a current-thread runtime built here, until accepting fails: as
/// an echo, or as a bare proxy to `upstream`.
fn serve_on_this_thread(
    listener: StdListener,
    upstream: Option<SocketAddr>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        match upstream {
            None => {
                let http = http1::Builder::new();
                serve(listener, |stream| {
                    http.serve_connection(TokioIo::new(stream), service_fn(echo))
                })
                .await
            }
            Some(upstream) => serve(listener, |stream| forward_connection(stream, upstream)).await,
        }
    })
}

/// Accepts connections and drives each of them, as `connection` makes it, to its end,
/// all on this task.
async fn serve<C, E>(
    listener: TcpListener,
    connection: impl Fn(TcpStream) -> C,
) -> std::io::Result<()>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connections = FuturesUnordered::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // A client that gave up before its connection was accepted.
                    Err(error) if is_transient(&error) => continue,
                    Err(error) => return Err(error),
                };
                // Without TCP_NODELAY small answers wait for Nagle: serve none that way.
                if stream.set_nodelay(true).is_err() {
                    continue;
                }
                connections.push(connection(stream));
            }
            // A connection that ends with an error (a client that went away mid-request)
            // concerns that client only.
            Some(_ended) = connections.next(), if !connections.is_empty() => {}
        }
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// One client connection of the bare proxy, with its own connection to `upstream`.
async fn forward_connection(stream: TcpStream, upstream: SocketAddr) -> Result<(), BoxError> {
    let upstream = TcpStream::connect(upstream).await?;
    upstream.set_nodelay(true)?;
    let (sender, upstream) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    // A RefCell, not a lock: everything here runs on this one task, and each borrow of
    // the sender ends before the next await.
    let sender = Rc::new(RefCell::new(sender));
    let client = http1::Builder::new().serve_connection(
        TokioIo::new(stream),
        service_fn(move |request| forward(Rc::clone(&sender), request)),
    );
    // Whichever ends first ends both: the client left, or the upstream went away.
    tokio::select! {
        ended = client => ended?,
        ended = upstream => ended?,
    }
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bare proxy's endpoint: the request's body to the upstream, its answer's body back.
async fn forward(
    sender: Rc<RefCell<SendRequest<Full<Bytes>>>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    if let Some(answer) = not_an_invocation(&request) {
        return Ok(answer);
    }
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let upstream = Request::post(path)
        .header(header::HOST, HeaderValue::from_static("127.0.0.1"))
        .header(header::CONTENT_TYPE, HeaderValue::from_static(JSON))
        .body(Full::new(body))?;
    poll_fn(|cx| sender.borrow_mut().poll_ready(cx)).await?;
    let answer = sender.borrow_mut().send_request(upstream);
    let answer = answer.await?;
    let status = answer.status();
    let body = answer.into_body().collect().await?.to_bytes();
    Ok(json_response(status, body))
}

/// The endpoint: the body back, as JSON.
async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if let Some(answer) = not_an_invocation(&request) {
        return Ok(answer);
    }
    let body = request.into_body().collect().await?.to_bytes();
    Ok(json_response(StatusCode::OK, body))
}

/// The answer to anything but a `POST`: 200 to `GET /health` (the readiness probe of a
/// replica), 405 otherwise. `None` for a `POST`.
fn not_an_invocation(request: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if request.method() == Method::POST {
        None
    } else if request.method() == Method::GET && request.uri().path() == "/health" {
        Some(Response::new(Full::new(Bytes::new())))
    } else {
        Some(method_not_allowed())
    }
}

fn method_not_allowed() -> Response<Full<Bytes>> {
    let body = Bytes::from_static(
        br#"{"error":"METHOD_NOT_ALLOWED","message":"bench-echo answers POST only"}"#,
    );
    let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, body);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

const JSON: &str = "application/json";

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Result<Args, String> {
        parse_args(words.iter().map(|word| (*word).to_owned()), None)
    }

    fn args_with_env_port(words: &[&str], port: &str) -> Result<Args, String> {
        parse_args(
            words.iter().map(|word| (*word).to_owned()),
            Some(port.to_owned()),
        )
    }

    #[test]
    fn binds_a_free_port_on_one_thread_by_default() {
        assert_eq!(
            args(&[]),
            Ok(Args {
                port: 0,
                threads: 1,
                forward_to: None,
            })
        );
    }

    #[test]
    fn takes_a_port_and_a_thread_count() {
        assert_eq!(
            args(&["9000", "--threads", "2", "--forward-to", "9001"]),
            Ok(Args {
                port: 9000,
                threads: 2,
                forward_to: Some(9001),
            })
        );
        assert!(args(&["--forward-to"]).is_err());
        assert!(args(&["--forward-to", "echo"]).is_err());
        assert!(args(&["--threads", "0"]).is_err());
        assert!(args(&["http"]).is_err());
    }

    #[test]
    fn takes_the_port_from_the_environment_when_no_argument_names_one() {
        let replica = args_with_env_port(&[], "41234").map(|args| args.port);
        assert_eq!(replica, Ok(41_234));
        let threads = args_with_env_port(&["--threads", "2"], "41234");
        assert_eq!(
            threads.map(|args| (args.port, args.threads)),
            Ok((41_234, 2))
        );
        // An argument wins over the environment, so the bench's own runs stay as they were.
        let argument = args_with_env_port(&["9000"], "41234").map(|args| args.port);
        assert_eq!(argument, Ok(9_000));
        assert!(args_with_env_port(&[], "http").is_err());
    }
}
