//! `POOL` dispatch to `https://` endpoints: servers on 127.0.0.1:0 with certificates
//! made by the test (rcgen), trusted through `PoolConfig::extra_root_certificates`.

mod support;

use core_types::{Dispatch, DispatchOutcome, ErrorCode, ErrorInfo};
use dispatcher::{CertificateFileError, PoolConfig, PoolDispatcher, read_pem_certificates};
use support::{Ca, PATIENCE, Served, Server, request};

fn trusting(ca: &Ca) -> PoolDispatcher {
    PoolDispatcher::with_config(PoolConfig {
        extra_root_certificates: vec![ca.der()],
        ..PoolConfig::default()
    })
}

async fn dispatch(pool: &PoolDispatcher, endpoint: &str) -> DispatchOutcome {
    tokio::time::timeout(PATIENCE, pool.dispatch(request(endpoint)))
        .await
        .expect("the dispatch ends")
}

async fn served(pool: &PoolDispatcher, endpoint: &str) -> Served {
    let success = dispatch(pool, endpoint)
        .await
        .unwrap_or_else(|e| panic!("{endpoint}: {e:?}"));
    Served::from_output(&success.output)
}

/// The failure of a dispatch that must fail, checked to be a `DISPATCH_ERROR` naming
/// the endpoint.
async fn refused(pool: &PoolDispatcher, endpoint: &str) -> ErrorInfo {
    let error = dispatch(pool, endpoint)
        .await
        .expect_err("the dispatch must fail");
    assert!(error.has_code(ErrorCode::DispatchError), "{error:?}");
    assert!(error.message.contains(endpoint), "{error:?}");
    error
}

/// A path under the test target's scratch directory, unique to `name`.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dispatcher-tls");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}", std::process::id()))
}

#[tokio::test]
async fn a_pool_dispatch_round_trips_over_tls_to_a_server_the_extra_roots_trust() {
    let ca = Ca::new("test ca");
    let server = Server::tls(ca.server_config(&["localhost", "127.0.0.1"])).await;
    let pool = trusting(&ca);

    // By name: SNI carries the URL's host.
    let endpoint = server.url("https", "localhost");
    let first = served(&pool, &endpoint).await;
    assert!(first.tls, "{first:?}");
    assert_eq!(first.sni.as_deref(), Some("localhost"));
    // The connection is kept alive and reused.
    let again = served(&pool, &endpoint).await;
    assert_eq!(again.peer, first.peer);

    // By address: the certificate's IP address entry is checked; no SNI is sent.
    let by_ip = served(&pool, &server.url("https", "127.0.0.1")).await;
    assert!(by_ip.tls);
    assert_eq!(by_ip.sni, None);
    assert_eq!(server.accepted(), 2, "one connection per origin");
}

#[tokio::test]
async fn roots_read_from_a_pem_file_are_trusted() {
    let ca = Ca::new("file ca");
    let server = Server::tls(ca.server_config(&["localhost"])).await;
    let path = scratch("roots.pem");
    // Another certificate and a key beside the root: keys are skipped, every
    // certificate is kept.
    let other = Ca::new("other ca");
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(&path, format!("{}{key}{}", other.pem(), ca.pem())).unwrap();
    let roots = read_pem_certificates(&path).unwrap();
    assert_eq!(roots, vec![other.der(), ca.der()]);

    let pool = PoolDispatcher::with_config(PoolConfig {
        extra_root_certificates: roots,
        ..PoolConfig::default()
    });
    assert!(served(&pool, &server.url("https", "localhost")).await.tls);
}

#[tokio::test]
async fn a_certificate_nobody_trusts_is_a_dispatch_error_naming_the_endpoint() {
    let trusted = Ca::new("trusted ca");
    let stranger = Ca::new("stranger ca");
    let server = Server::tls(stranger.server_config(&["localhost"])).await;
    let endpoint = server.url("https", "localhost");

    let error = refused(&trusting(&trusted), &endpoint).await;
    assert!(error.message.contains("TLS handshake failed"), "{error:?}");
    assert!(
        error.message.contains("not issued by a trusted root"),
        "{error:?}"
    );
    assert!(error.message.contains("UnknownIssuer"), "{error:?}");
    // Neither does the platform store trust a certificate made by the test.
    let error = refused(&PoolDispatcher::new(), &endpoint).await;
    assert!(
        error.message.contains("not issued by a trusted root"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_dispatch_error() {
    let ca = Ca::new("test ca");
    let server = Server::tls(ca.server_config(&["elsewhere.example"])).await;
    let error = refused(&trusting(&ca), &server.url("https", "localhost")).await;
    assert!(
        error
            .message
            .contains("certificate not valid for name \"localhost\""),
        "{error:?}"
    );
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_a_dispatch_error() {
    let server = Server::plain().await;
    let error = refused(&PoolDispatcher::new(), &server.url("https", "127.0.0.1")).await;
    assert!(error.message.contains("TLS handshake failed"), "{error:?}");
    assert!(error.message.contains("does not speak TLS"), "{error:?}");
}

#[tokio::test]
async fn http_and_https_on_the_same_port_never_share_a_connection() {
    let ca = Ca::new("test ca");
    // One port, both protocols (the server tells them apart by the first byte).
    let server = Server::tls(ca.server_config(&["127.0.0.1"])).await;
    let pool = trusting(&ca);
    let (plain, secure) = (
        server.url("http", "127.0.0.1"),
        server.url("https", "127.0.0.1"),
    );

    let plain_first = served(&pool, &plain).await;
    let secure_first = served(&pool, &secure).await;
    let plain_again = served(&pool, &plain).await;
    let secure_again = served(&pool, &secure).await;
    assert!(!plain_first.tls && !plain_again.tls);
    assert!(secure_first.tls && secure_again.tls);
    // Each scheme reuses its own connection, and the two are different connections.
    assert_eq!(plain_again.peer, plain_first.peer);
    assert_eq!(secure_again.peer, secure_first.peer);
    assert_ne!(plain_first.peer, secure_first.peer);
    assert_eq!(server.accepted(), 2);
}

#[test]
fn unusable_certificate_files_are_refused_with_the_reason() {
    let missing = scratch("missing.pem");
    let error = read_pem_certificates(&missing).unwrap_err();
    assert!(
        matches!(error, CertificateFileError::Read { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("missing.pem"), "{error}");

    let not_pem = scratch("not-pem.pem");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let error = read_pem_certificates(&not_pem).unwrap_err();
    assert!(
        matches!(error, CertificateFileError::Empty { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("no PEM certificate"), "{error}");

    let only_key = scratch("only-key.pem");
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(&only_key, key).unwrap();
    let error = read_pem_certificates(&only_key).unwrap_err();
    assert!(
        matches!(error, CertificateFileError::Empty { .. }),
        "{error}"
    );

    let broken = scratch("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = read_pem_certificates(&broken).unwrap_err();
    assert!(matches!(error, CertificateFileError::Pem { .. }), "{error}");

    // Well-formed PEM around bytes that are no certificate.
    let garbage = scratch("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = read_pem_certificates(&garbage).unwrap_err();
    assert!(
        matches!(error, CertificateFileError::Invalid { index: 1, .. }),
        "{error}"
    );
}
