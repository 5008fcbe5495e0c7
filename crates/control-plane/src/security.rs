//! Who may call the control plane (`--auth-tokens-file`), what is served open
//! (`--allow-unauthenticated`, `--metrics-require-auth`), and the reload on SIGHUP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use auth::{CallbackKey, Tokens};
use http_api::ApiAuth;

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
}

/// Authentication as the flags turn it on.
pub(crate) struct Security {
    pub(crate) auth: Arc<ApiAuth>,
    pub(crate) key: CallbackKey,
}

impl SecurityFlags {
    /// Refuses to serve the API open to the network unless told to; warns when told.
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
