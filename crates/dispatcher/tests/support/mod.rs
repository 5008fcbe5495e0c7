//! A function endpoint on 127.0.0.1:0 speaking HTTP/1.1 in the clear and, given a
//! certificate, TLS on the same port (told apart by the first byte a client sends),
//! and test certificates made by rcgen.
//!
//! Every answer says how the request came (`{"tls": .., "sni": .., "peer": ..}`), so a
//! test sees which connection served it; the server counts connections accepted and
//! closed, so a test sees the pool close one.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use core_types::{DispatchRequest, ExecutionId, FunctionSpec, Payload, TraceId};
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// A certificate authority made for one test.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server configuration with a certificate for `names` signed by this CA.
    pub(crate) fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), self.der()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// A running function endpoint.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Server {
    /// Plain HTTP only.
    pub(crate) async fn plain() -> Self {
        Self::start(None).await
    }

    /// TLS with `config`, and plain HTTP on the same port.
    pub(crate) async fn tls(config: Arc<ServerConfig>) -> Self {
        Self::start(Some(TlsAcceptor::from(config))).await
    }

    async fn start(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (accepting, closing) = (Arc::clone(&accepted), Arc::clone(&closed));
        #[expect(
            clippy::disallowed_methods,
            reason = "the test's function server runs beside the test body"
        )]
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                accepting.fetch_add(1, Ordering::SeqCst);
                let (tls, closing) = (tls.clone(), Arc::clone(&closing));
                #[expect(
                    clippy::disallowed_methods,
                    reason = "one task per connection of the test's server"
                )]
                tokio::spawn(async move {
                    serve(stream, peer, tls).await;
                    closing.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            closed,
        }
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections that ended so far (the client closed them, or a handshake failed).
    pub(crate) fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}/invoke", self.addr.port())
    }
}

/// Serves one connection until the client closes it, in TLS if it starts with a TLS
/// handshake and a certificate was given.
async fn serve(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
    let mut first = [0u8; 1];
    let starts_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE);
    match tls {
        Some(acceptor) if starts_tls => {
            let Ok(stream) = acceptor.accept(stream).await else {
                return; // the client refused the certificate, or spoke no TLS
            };
            let sni = stream.get_ref().1.server_name().map(str::to_owned);
            serve_http(TokioIo::new(stream), peer, true, sni).await;
        }
        _ => serve_http(TokioIo::new(stream), peer, false, None).await,
    }
}

async fn serve_http<IO>(io: IO, peer: SocketAddr, tls: bool, sni: Option<String>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let answer = serde_json::json!({"tls": tls, "sni": sni, "peer": peer.port()}).to_string();
    let service = service_fn(move |_request| {
        let answer = answer.clone();
        async move {
            let response = Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer)))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// How a request reached the server, as its answer says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) tls: bool,
    pub(crate) sni: Option<String>,
    /// The client's port: which connection carried it.
    pub(crate) peer: u16,
}

impl Served {
    pub(crate) fn from_output(output: &Payload) -> Self {
        let value = output.to_value();
        Self {
            tls: value["tls"].as_bool().unwrap(),
            sni: value["sni"].as_str().map(str::to_owned),
            peer: u16::try_from(value["peer"].as_u64().unwrap()).unwrap(),
        }
    }
}

/// A first attempt of a `POOL` function at `endpoint`.
pub(crate) fn request(endpoint: &str) -> DispatchRequest {
    let spec = serde_json::json!({
        "name": "fn-under-test", "image": "img", "executionMode": "POOL",
        "endpointUrl": endpoint, "timeoutMs": 5000
    });
    DispatchRequest {
        execution_id: ExecutionId::new("exec-1"),
        function: Arc::new(FunctionSpec::from_json(&spec).unwrap()),
        attempt: 1,
        input: Payload::from_json_text("1").unwrap(),
        metadata: Arc::new(BTreeMap::new()),
        trace_id: TraceId::new("trace-1"),
        idempotency_key: None,
        callback_url: None,
    }
}

/// Every wait of these tests ends within this.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);
