//! TLS on the API listener, end to end: the real `control-plane` binary with
//! `--tls-cert`/`--tls-key` (certificates made by the test with rcgen, for `localhost`
//! and 127.0.0.1, signed by a test CA), a client trusting that CA, the reload on
//! SIGHUP, and a runtime (the Python test runtime, trusting the CA through
//! `SSL_CERT_FILE`) calling back over https, and the `nanofaas` CLI trusting it the same
//! way. Waits are polls with a bound.

#[path = "e2e/processes.rs"]
#[allow(dead_code, reason = "shared with e2e.rs; these tests use part of it")]
mod processes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use processes::{ControlPlane, DEADLINE, Log, Runtime, eventually};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A certificate authority made for one test, with the directory its files go to.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "control-plane e2e test ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            issuer,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA's certificate as a PEM file (what a runtime is told to trust).
    fn write_root(&self) -> PathBuf {
        let path = self.path("ca.pem");
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A new certificate for `localhost` and 127.0.0.1 signed by this CA, written over
    /// `server.crt` and `server.key` (as a renewal replaces them in place); its DER.
    fn write_server_pair(&self) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.path("server.crt"), leaf.pem()).unwrap();
        std::fs::write(self.path("server.key"), key.serialize_pem()).unwrap();
        leaf.der().clone()
    }

    /// A client that trusts this CA only.
    fn client(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// An answer over https, and the certificate the server presented for it.
struct Reply {
    status: u16,
    body: Value,
    certificate: CertificateDer<'static>,
}

/// One request on a new TLS connection to the API (`https://127.0.0.1:<port>`), as
/// `localhost`; `Connection: close`, so the whole answer is what comes before the close.
async fn https(api: &str, client: &TlsConnector, method: &str, path: &str, body: &Value) -> Reply {
    let authority = api.strip_prefix("https://").expect("the API speaks https");
    let exchange = async {
        let tcp = TcpStream::connect(authority)
            .await
            .expect("the API port accepts");
        let name = ServerName::try_from("localhost").unwrap();
        let mut stream = client.connect(name, tcp).await.expect("a TLS handshake");
        let certificate = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // rustls reports a close without close_notify as an error, after the bytes.
        let _ = stream.read_to_end(&mut answer).await;
        (answer, certificate)
    };
    let (answer, certificate) = tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {path} within {DEADLINE:?}"));
    let text = String::from_utf8(answer).expect("a text answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Reply {
        status,
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
        },
        certificate,
    }
}

/// The next line of `log` holding `needle`, within [`DEADLINE`].
async fn logged(log: &mut Log, needle: &str) -> String {
    let read = async {
        while let Some(line) = log.next_line().await.expect("the log is readable") {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("the control plane's log ended before {needle:?}");
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the log within {DEADLINE:?}"))
}

fn http_client() -> reqwest::Client {
    processes::http_client_builder()
        .build()
        .expect("an HTTP client")
}

fn tls_args(ca: &Ca) -> [String; 4] {
    let shown = |p: &Path| p.to_str().unwrap().to_owned();
    [
        "--tls-cert".to_owned(),
        shown(&ca.path("server.crt")),
        "--tls-key".to_owned(),
        shown(&ca.path("server.key")),
    ]
}

#[tokio::test]
async fn the_api_serves_https_only_and_sighup_reloads_its_certificate_keeping_it_on_a_bad_one() {
    let ca = Ca::new();
    let first = ca.write_server_pair();
    let args = tls_args(&ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let http = http_client();
    let mut plane = ControlPlane::start(&args, &http).await;
    assert!(plane.api.starts_with("https://127.0.0.1:"), "{}", plane.api);
    let client = ca.client();

    let listed = https(&plane.api, &client, "GET", "/v1/functions", &Value::Null).await;
    assert_eq!((listed.status, &listed.body), (200, &json!([])));
    assert_eq!(listed.certificate, first);
    // Plain HTTP on the same port gets no answer.
    let plain = plane.api.replacen("https://", "http://", 1);
    let refused = tokio::time::timeout(DEADLINE, http.get(format!("{plain}/v1/functions")).send())
        .await
        .expect("plain HTTP is refused within the deadline");
    assert!(refused.is_err(), "{refused:?}");

    // A renewal in place, then SIGHUP. The answer above means the server's tasks run,
    // so the SIGHUP handler (installed on their first poll) is in place.
    let mut log = plane.take_log();
    let second = ca.write_server_pair();
    plane.hangup();
    logged(&mut log, "TLS certificate reloaded").await;
    let renewed = https(&plane.api, &client, "GET", "/v1/functions", &Value::Null).await;
    assert_eq!(renewed.status, 200);
    assert_eq!(
        renewed.certificate, second,
        "a new connection sees the new certificate"
    );

    // A broken renewal keeps the second certificate in force, and says why.
    std::fs::write(ca.path("server.crt"), "not a certificate\n").unwrap();
    plane.hangup();
    let warning = logged(&mut log, "was not reloaded").await;
    assert!(warning.contains("server.crt"), "{warning}");
    let kept = https(&plane.api, &client, "GET", "/v1/functions", &Value::Null).await;
    assert_eq!((kept.status, kept.certificate), (200, second));

    plane.terminate();
    assert!(plane.exit_status().await.success());
}

#[tokio::test]
async fn a_runtime_trusting_the_certificate_calls_back_over_https() {
    let ca = Ca::new();
    ca.write_server_pair();
    let root = ca.write_root();
    let args = tls_args(&ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let http = http_client();
    // OpenSSL, under Python's urllib, takes its roots from SSL_CERT_FILE.
    let trust = [("SSL_CERT_FILE", root.to_str().unwrap())];
    let (plane, runtime) = tokio::join!(
        ControlPlane::start(&args, &http),
        Runtime::start_with_env(&trust),
    );
    let client = ca.client();
    let spec = json!({
        "name": "calls-back",
        "image": "nanofaas/python-runtime",
        "executionMode": "POOL",
        "endpointUrl": runtime.endpoint(),
    });
    let registered = https(&plane.api, &client, "POST", "/v1/functions", &spec).await;
    assert_eq!(registered.status, 201, "{}", registered.body);

    // The runtime POSTs the result to `<X-Callback-Url>/<id>:complete` before it answers
    // 202: the output comes only through the callback.
    let input = json!({"input": {"mode": "callback", "output": {"via": "https"}}});
    let path = "/v1/functions/calls-back:invoke";
    let reply = https(&plane.api, &client, "POST", path, &input).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body["output"],
        json!({"via": "https"}),
        "{}",
        reply.body
    );
    let id = reply.body["executionId"].as_str().unwrap().to_owned();
    let stats = format!("{}/stats", runtime.url);
    let callback = eventually("the runtime's callback", || async {
        let stats: Value = http.get(&stats).send().await.ok()?.json().await.ok()?;
        stats["callbacks"].get(&id).cloned()
    })
    .await;
    assert_eq!(callback, json!(204), "the callback over https was answered");
}

#[tokio::test]
async fn the_nanofaas_cli_talks_to_a_tls_control_plane_that_it_trusts() {
    let ca = Ca::new();
    ca.write_server_pair();
    let root = ca.write_root();
    let args = tls_args(&ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let http = http_client();
    let plane = ControlPlane::start(&args, &http).await;
    let nanofaas = processes::workspace_binary("cli", "nanofaas");
    let config = ca.path("nanofaas.yaml");
    let list = |trusted: &Path| {
        let mut command = tokio::process::Command::new(&nanofaas);
        command
            .args(["--endpoint", &plane.api, "-o", "json", "fn", "list"])
            .env("NANOFAAS_CONFIG", &config)
            .env("SSL_CERT_FILE", trusted)
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(DEADLINE, command.output())
                .await
                .expect("nanofaas ends within the deadline")
                .expect("nanofaas runs")
        }
    };

    let listed = list(&root).await;
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}: {stdout}{}",
        listed.status,
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!([]));

    // Trusting another CA only, it refuses the certificate: a transport problem (5).
    let stranger = Ca::new();
    let untrusted = list(&stranger.write_root()).await;
    assert_eq!(
        untrusted.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
}
