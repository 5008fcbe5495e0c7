//! Who may call the control plane (`--auth-tokens-file`), what is served open
//! (`--allow-unauthenticated`, `--metrics-require-auth`), TLS on the API listener
//! (`--tls-cert`, `--tls-key`), and the reload of tokens and certificate on SIGHUP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use auth::{CallbackKey, Tokens};
use http_api::ApiAuth;
use http_server::ServerTls;

/// The file the callback key lives in, inside `--data-dir`.
const CALLBACK_KEY_FILE: &str = "callback.key";

/// The flags of authentication.
#[derive(Debug, clap::Args)]
pub(crate) struct SecurityFlags {
    /// Turns authentication on: a file of `ROLE TOKEN [NAME]` lines (roles `admin`,
    /// `invoker`, `reader`); re-read on SIGHUP.
    #[arg(long, env = "CONTROL_PLANE_AUTH_TOKENS_FILE")]
    auth_tokens_file: Option<PathBuf>,
    /// Serve the API without authentication on an address other than loopback.
    #[arg(long, env = "CONTROL_PLANE_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// `/actuator/prometheus` needs a `reader` (or `admin`) token too.
    #[arg(long, env = "CONTROL_PLANE_METRICS_REQUIRE_AUTH")]
    metrics_require_auth: bool,
    /// Serve the API over TLS (HTTPS only) with this certificate chain: PEM, the
    /// server's certificate first, then any intermediates; needs --tls-key. Re-read on
    /// SIGHUP. Runtimes then call back over https, so they must trust it (its CA) and it
    /// must name the callback URL's host (by default the bound API address, an IP).
    /// The management listener stays plain HTTP. TLS does not replace authentication:
    /// off loopback, --auth-tokens-file (or --allow-unauthenticated) is still needed.
    #[arg(
        long,
        env = "CONTROL_PLANE_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1; may be the same
    /// file); re-read on SIGHUP.
    #[arg(
        long,
        env = "CONTROL_PLANE_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

/// Authentication as the flags turn it on.
pub(crate) struct Security {
    pub(crate) auth: Arc<ApiAuth>,
    pub(crate) key: CallbackKey,
}

impl SecurityFlags {
    /// Refuses to serve the API open to the network unless told to; warns when told.
    /// TLS changes nothing here: it hides the traffic, not who may send it.
    pub(crate) fn check_exposure(&self, api_addr: SocketAddr) -> Result<(), String> {
        if self.auth_tokens_file.is_some() || api_addr.ip().is_loopback() {
            return Ok(());
        }
        if !self.allow_unauthenticated {
            return Err(format!(
                "refusing to serve the API on {api_addr} without authentication: anyone who \
                 reaches it could run commands on this host; give --auth-tokens-file, or \
                 --allow-unauthenticated to serve it open anyway"
            ));
        }
        tracing::warn!(
            %api_addr,
            "serving the API WITHOUT authentication on a non-loopback address (--allow-unauthenticated): anyone who reaches it can register and run functions"
        );
        Ok(())
    }

    /// The tokens and the callback key, when authentication is on. The key is created
    /// in `data_dir` on first start.
    pub(crate) fn load(&self, data_dir: &Path) -> Result<Option<Security>, String> {
        let Some(path) = &self.auth_tokens_file else {
            if self.metrics_require_auth {
                return Err(
                    "--metrics-require-auth needs --auth-tokens-file (there is no token to require)"
                        .to_owned(),
                );
            }
            return Ok(None);
        };
        let tokens = Tokens::read(path).map_err(|error| format!("--auth-tokens-file: {error}"))?;
        std::fs::create_dir_all(data_dir)
            .map_err(|error| format!("--data-dir {}: {error}", data_dir.display()))?;
        let key = CallbackKey::load_or_create(&data_dir.join(CALLBACK_KEY_FILE))
            .map_err(|error| format!("--data-dir: {error}"))?;
        tracing::info!(
            tokens = tokens.len(),
            file = %path.display(),
            metrics_require_auth = self.metrics_require_auth,
            "authentication on"
        );
        Ok(Some(Security {
            auth: Arc::new(ApiAuth::new(tokens, key.clone(), self.metrics_require_auth)),
            key,
        }))
    }

    /// The API listener's certificate and key, when TLS is on; a pair that cannot be
    /// served stops the start, with its reason.
    pub(crate) fn load_tls(&self) -> Result<Option<ServerTls>, String> {
        let Some((certificate, key)) = self.tls_files() else {
            return Ok(None);
        };
        let tls = ServerTls::from_pem_files(certificate, key)
            .map_err(|error| format!("--tls-cert/--tls-key: {error}"))?;
        tracing::info!(
            certificate = %certificate.display(),
            key = %key.display(),
            "TLS on for the API listener"
        );
        Ok(Some(tls))
    }

    /// Re-reads the certificate and key into `tls` for new connections; a pair that
    /// cannot be served keeps the one in force, and says why.
    pub(crate) fn reload_tls(&self, tls: &ServerTls) {
        let Some((certificate, key)) = self.tls_files() else {
            return;
        };
        match tls.reload(certificate, key) {
            Ok(()) => tracing::info!(
                certificate = %certificate.display(),
                "TLS certificate reloaded"
            ),
            Err(error) => tracing::warn!(
                %error,
                "the TLS certificate was not reloaded; the one in force stays"
            ),
        }
    }

    /// `--tls-cert` and `--tls-key`: clap has made sure they come together.
    fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// Re-reads the tokens file into `auth`; a file that cannot be used keeps the
    /// tokens in force, and says why.
    pub(crate) fn reload_tokens(&self, auth: &ApiAuth) {
        let Some(path) = &self.auth_tokens_file else {
            return;
        };
        match Tokens::read(path) {
            Ok(tokens) => {
                let count = tokens.len();
                auth.replace_tokens(tokens);
                tracing::info!(target: "audit", tokens = count, file = %path.display(), "tokens reloaded");
            }
            Err(error) => tracing::warn!(
                %error,
                "the tokens file was not reloaded; the tokens in force stay"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        security: SecurityFlags,
    }

    fn flags(args: &[&str]) -> SecurityFlags {
        Flags::try_parse_from(std::iter::once("control-plane").chain(args.iter().copied()))
            .unwrap()
            .security
    }

    #[test]
    fn an_open_api_is_refused_off_loopback_unless_allowed() {
        let anywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let refused = flags(&[]).check_exposure(anywhere).unwrap_err();
        assert!(refused.contains("--auth-tokens-file"), "{refused}");
        assert!(flags(&[]).check_exposure(loopback).is_ok());
        assert!(
            "[::1]:8080"
                .parse()
                .is_ok_and(|a| flags(&[]).check_exposure(a).is_ok())
        );
        assert!(
            flags(&["--allow-unauthenticated"])
                .check_exposure(anywhere)
                .is_ok()
        );
        let with_tokens = flags(&["--auth-tokens-file", "/nonexistent"]);
        assert!(with_tokens.check_exposure(anywhere).is_ok());
    }

    #[test]
    fn tls_is_not_authentication_for_the_exposure_check() {
        let anywhere: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let tls = [
            "--tls-cert",
            "/nonexistent.crt",
            "--tls-key",
            "/nonexistent.key",
        ];
        let refused = flags(&tls).check_exposure(anywhere).unwrap_err();
        assert!(refused.contains("without authentication"), "{refused}");
    }

    #[test]
    fn tls_needs_both_files_and_files_that_can_be_served() {
        for half in [&["--tls-cert", "a.crt"][..], &["--tls-key", "a.key"]] {
            let error =
                Flags::try_parse_from(std::iter::once("control-plane").chain(half.iter().copied()))
                    .unwrap_err()
                    .to_string();
            let other = if half[0] == "--tls-cert" {
                "--tls-key"
            } else {
                "--tls-cert"
            };
            assert!(error.contains(other), "{half:?}: {error}");
        }
        assert!(flags(&[]).load_tls().unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&key, "no key here\n").unwrap();
        let error = flags(&[
            "--tls-cert",
            missing.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .load_tls()
        .err()
        .unwrap();
        assert!(
            error.starts_with("--tls-cert/--tls-key: cannot read ")
                && error.contains("missing.crt"),
            "{error}"
        );
    }

    #[test]
    fn metrics_behind_auth_without_tokens_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = flags(&["--metrics-require-auth"])
            .load(dir.path())
            .err()
            .unwrap();
        assert!(error.contains("--auth-tokens-file"), "{error}");
    }

    #[test]
    fn a_bad_tokens_file_stops_the_start_and_a_bad_reload_keeps_the_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "admin first-admin-token-0123\n").unwrap();
        let path = file.to_str().unwrap();
        let security = flags(&["--auth-tokens-file", path])
            .load(dir.path())
            .unwrap()
            .unwrap();
        assert!(
            security
                .auth
                .tokens()
                .authenticate("first-admin-token-0123")
                .is_some()
        );

        std::fs::write(&file, "root second-admin-token-0123\n").unwrap();
        flags(&["--auth-tokens-file", path]).reload_tokens(&security.auth);
        assert!(
            security
                .auth
                .tokens()
                .authenticate("first-admin-token-0123")
                .is_some(),
            "a malformed file keeps the tokens in force"
        );
        let error = flags(&["--auth-tokens-file", path])
            .load(dir.path())
            .err()
            .unwrap();
        assert!(
            error.contains("line 1") && error.contains("unknown role"),
            "{error}"
        );

        std::fs::write(&file, "admin second-admin-token-0123\n").unwrap();
        flags(&["--auth-tokens-file", path]).reload_tokens(&security.auth);
        let tokens = security.auth.tokens();
        assert!(tokens.authenticate("first-admin-token-0123").is_none());
        assert!(tokens.authenticate("second-admin-token-0123").is_some());
    }
}
