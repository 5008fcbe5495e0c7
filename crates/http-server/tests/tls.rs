//! The edge over TLS, seen from clients on loopback: certificates made by the test
//! (rcgen) and written as PEM files, a client trusting the test's CA. A round trip, a
//! client that never finishes its handshake, plain HTTP on the TLS port, reloads good
//! and bad, and the drain of a pending handshake. Every wait is bounded by
//! `support::DEADLINE`.

#[allow(
    dead_code,
    reason = "shared with limits.rs; these tests use part of it"
)]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_server::{HttpLimits, ServerTls, TlsError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use support::{Server, bounded, echo, limits, read_until_closed, send};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A certificate authority made for one test, and the directory its files go to.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A server certificate and its key, as PEM files.
struct Pair {
    certificate: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "http-server test ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            issuer,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1 signed by this CA, written as
    /// `<name>.crt` and `<name>.key`.
    fn pair(&self, name: &str) -> Pair {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            certificate: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
            der: leaf.der().clone(),
        };
        std::fs::write(&pair.certificate, leaf.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    /// A file named `name` in this CA's directory holding `text`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A client trusting this CA and offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn serving(pair: &Pair) -> ServerTls {
    ServerTls::from_pem_files(&pair.certificate, &pair.key).unwrap()
}

/// A TLS connection to `server` as `localhost`, its handshake finished.
async fn connect(server: &Server, client: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = server.connect().await;
    let name = ServerName::try_from("localhost").unwrap();
    bounded("a TLS handshake", client.connect(name, tcp)).await
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, session) = stream.get_ref();
    session.peer_certificates().expect("a server certificate")[0].clone()
}

#[tokio::test]
async fn a_request_round_trips_over_tls_speaking_http_1_1() {
    let ca = Ca::new();
    let pair = ca.pair("server");
    let server = Server::start_tls(limits(), serving(&pair)).await;

    let mut stream = connect(&server, &ca.client(&[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(presented(&stream), pair.der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(echo(&mut stream, "over tls").await, "over tls");
    // Kept alive, like a plain connection.
    assert_eq!(echo(&mut stream, "again").await, "again");

    // Without ALPN too; a client that speaks only h2 is refused in the handshake.
    let mut no_alpn = connect(&server, &ca.client(&[])).await.unwrap();
    assert_eq!(
        echo(&mut no_alpn, "plain alpn-less").await,
        "plain alpn-less"
    );
    assert!(connect(&server, &ca.client(&[b"h2"])).await.is_err());
    server.drain().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed_within_the_header_read_timeout() {
    let ca = Ca::new();
    let server = Server::start_tls(
        HttpLimits {
            header_read_timeout: Duration::from_millis(200),
            ..limits()
        },
        serving(&ca.pair("server")),
    )
    .await;
    let mut silent = server.connect().await;
    // The first bytes of a ClientHello record, and then nothing.
    let mut half_hello = server.connect().await;
    send(&mut half_hello, [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;

    let mut served = connect(&server, &ca.client(&[])).await.unwrap();
    assert_eq!(echo(&mut served, "beside them").await, "beside them");
    assert_eq!(read_until_closed(&mut silent).await, b"");
    assert_eq!(read_until_closed(&mut half_hello).await, b"");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_closed_and_the_server_goes_on() {
    let ca = Ca::new();
    let server = Server::start_tls(limits(), serving(&ca.pair("server"))).await;
    let mut plain = server.connect().await;
    send(&mut plain, support::echo_request("plain")).await;
    // At most a TLS alert comes back, never an HTTP answer.
    let closed = read_until_closed(&mut plain).await;
    assert!(!closed.starts_with(b"HTTP/"), "{closed:?}");

    let mut stream = connect(&server, &ca.client(&[])).await.unwrap();
    assert_eq!(echo(&mut stream, "still serving").await, "still serving");
}

#[tokio::test]
async fn a_reload_serves_new_connections_the_new_certificate_and_a_bad_one_keeps_the_old() {
    let ca = Ca::new();
    let first = ca.pair("first");
    let tls = serving(&first);
    let server = Server::start_tls(limits(), tls.clone()).await;
    let client = ca.client(&[]);
    let mut before = connect(&server, &client).await.unwrap();
    assert_eq!(presented(&before), first.der);

    let second = ca.pair("second");
    tls.reload(&second.certificate, &second.key).unwrap();
    let mut after = connect(&server, &client).await.unwrap();
    assert_eq!(presented(&after), second.der);
    assert_eq!(echo(&mut after, "new").await, "new");
    // A connection made before the reload keeps its session.
    assert_eq!(echo(&mut before, "old").await, "old");

    let third = ca.pair("third");
    let missing = ca.dir.path().join("missing.crt");
    let not_pem = ca.file("not-pem.crt", "no certificate here\n");
    for (certificate, key) in [
        (missing.as_path(), second.key.as_path()),
        (not_pem.as_path(), second.key.as_path()),
        (second.certificate.as_path(), second.certificate.as_path()),
        (third.certificate.as_path(), second.key.as_path()),
    ] {
        assert!(
            tls.reload(certificate, key).is_err(),
            "{certificate:?} {key:?}"
        );
        let stream = connect(&server, &client).await.unwrap();
        assert_eq!(
            presented(&stream),
            second.der,
            "a bad reload ({certificate:?}, {key:?}) keeps the pair in force"
        );
    }
}

#[test]
fn a_pair_that_cannot_be_served_is_refused_naming_the_file_and_what_is_wrong() {
    let ca = Ca::new();
    let good = ca.pair("good");
    let other = ca.pair("other");
    let missing = ca.dir.path().join("missing.pem");
    let not_pem = ca.file("not-pem.crt", "no certificate here\n");
    let broken = ca.file(
        "broken.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let garbage = ca.file(
        "garbage.crt",
        "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
    );
    let error = |certificate: &Path, key: &Path| {
        let error = ServerTls::from_pem_files(certificate, key).unwrap_err();
        (error.to_string(), error)
    };
    let shown = |path: &Path| path.display().to_string();

    let (text, e) = error(&missing, &good.key);
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    assert!(
        text.starts_with(&format!("cannot read {}", shown(&missing))),
        "{text}"
    );

    let (text, e) = error(&good.certificate, &missing);
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    assert!(text.contains(&shown(&missing)), "{text}");

    let (text, e) = error(&not_pem, &good.key);
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
    assert!(
        text.contains(&shown(&not_pem)) && text.contains("no PEM certificate"),
        "{text}"
    );

    let (text, e) = error(&broken, &good.key);
    assert!(matches!(e, TlsError::Pem { .. }), "{e:?}");
    assert!(
        text.contains(&shown(&broken)) && text.contains("not valid PEM"),
        "{text}"
    );

    let (text, e) = error(&good.certificate, &good.certificate);
    assert!(matches!(e, TlsError::NoPrivateKey { .. }), "{e:?}");
    assert!(
        text.contains(&shown(&good.certificate)) && text.contains("no PEM private key"),
        "{text}"
    );

    let (text, e) = error(&good.certificate, &other.key);
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
    assert!(
        text.contains(&shown(&other.key))
            && text.contains(&shown(&good.certificate))
            && text.contains("does not match"),
        "{text}"
    );

    let (text, e) = error(&garbage, &good.key);
    assert!(matches!(e, TlsError::Unusable { .. }), "{e:?}");
    assert!(text.contains(&shown(&garbage)), "{text}");

    // One file holding both serves.
    let both = ca.file(
        "both.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(&good.certificate).unwrap(),
            std::fs::read_to_string(&good.key).unwrap()
        ),
    );
    assert!(ServerTls::from_pem_files(&both, &both).is_ok());
}

#[tokio::test]
async fn a_drain_ends_a_pending_handshake_at_once() {
    let ca = Ca::new();
    // Far longer than any wait of the test: only the drain can end the handshake.
    let patient = HttpLimits {
        header_read_timeout: Duration::from_secs(60),
        ..limits()
    };
    let server = Server::start_draining_within(
        patient,
        Duration::from_secs(60),
        Some(serving(&ca.pair("s"))),
    )
    .await;
    let mut pending = server.connect().await;
    send(&mut pending, [0x16, 0x03, 0x01]).await;
    // Connections are accepted in order: once a later one is answered, the pending one
    // has been accepted and is the server's, in its handshake.
    let mut later = connect(&server, &ca.client(&[])).await.unwrap();
    assert_eq!(echo(&mut later, "accepted").await, "accepted");

    let ((), closed) = tokio::join!(server.drain(), read_until_closed(&mut pending));
    assert_eq!(closed, b"");
}
