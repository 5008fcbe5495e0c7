//! Contexts: named control planes (an endpoint and maybe a token) kept in a config file,
//! and which control plane a command talks to.
//!
//! The file is `$NANOFAAS_CONFIG` if set, else `nanofaas/config.yaml` in the user's
//! config directory (`$XDG_CONFIG_HOME`, else `~/.config`). It holds tokens, so it is
//! written readable by its owner only (`0600`, in a `0700` directory when this creates
//! it), through a temporary file renamed over it (never half-written).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::args::Global;
use crate::error::{CliError, Result};

/// The endpoint when neither a flag, the environment nor a context names one.
pub(crate) const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// The config file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigFile {
    /// The context commands use unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current: Option<String>,
    /// Every context by name.
    #[serde(default)]
    pub(crate) contexts: BTreeMap<String, Context>,
}

/// One control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Context {
    /// Its API URL.
    pub(crate) endpoint: String,
    /// The bearer token sent to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
}

/// Where the config file is.
pub(crate) fn config_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("NANOFAAS_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    use etcetera::BaseStrategy;
    let base = etcetera::choose_base_strategy().map_err(|e| {
        CliError::local(format!(
            "cannot find your config directory ({e}); set NANOFAAS_CONFIG to a file"
        ))
    })?;
    Ok(base.config_dir().join("nanofaas").join("config.yaml"))
}

impl ConfigFile {
    /// Reads the file at `path`; a missing file is an empty configuration.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(CliError::local(format!(
                    "cannot read the config file {}: {e}",
                    path.display()
                )));
            }
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        yaml_serde::from_str(&text).map_err(|e| {
            CliError::local(format!(
                "the config file {} is not valid: {e}",
                path.display()
            ))
        })
    }

    /// Writes it to `path`, readable by its owner only.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let failed = |what: &str, e: std::io::Error| {
            CliError::local(format!(
                "cannot {what} the config file {}: {e}",
                path.display()
            ))
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed("create the directory of", e))?;
        let text = yaml_serde::to_string(self)
            .map_err(|e| CliError::local(format!("cannot write the configuration: {e}")))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config.yaml".to_owned());
        let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            failed("write", e)
        })
    }
}

/// Checks an endpoint (an `http://` or `https://` URL without query or fragment) and
/// gives it without a trailing slash.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| {
        CliError::usage(format!(
            "the endpoint {endpoint:?} is not a URL ({e}); e.g. http://127.0.0.1:8080"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(CliError::usage(format!(
            "the endpoint {endpoint:?} must be an http:// or https:// URL with a host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::usage(format!(
            "the endpoint {endpoint:?} must not have a query or fragment"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The control plane a command talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// Its API URL, without a trailing slash.
    pub(crate) endpoint: String,
    /// The bearer token, if any.
    pub(crate) token: Option<String>,
}

/// `--endpoint`/`NANOFAAS_ENDPOINT` and `--token`/`NANOFAAS_TOKEN` win over the
/// context (`--context`/`NANOFAAS_CONTEXT`, else the current one); without any, the
/// default endpoint and no token. The config file is read only when needed.
pub(crate) fn resolve(global: &Global) -> Result<Target> {
    let token = global.token.clone().filter(|t| !t.is_empty());
    let endpoint = global.endpoint.clone().filter(|e| !e.is_empty());
    let context = if endpoint.is_some() && token.is_some() && global.context.is_none() {
        None
    } else {
        let path = config_path()?;
        let file = ConfigFile::load(&path)?;
        match &global.context {
            Some(name) => Some(file.contexts.get(name).cloned().ok_or_else(|| {
                CliError::usage(format!(
                    "there is no context {name:?} in {} (`nanofaas context list` shows them)",
                    path.display()
                ))
            })?),
            None => file
                .current
                .as_ref()
                .and_then(|name| file.contexts.get(name).cloned()),
        }
    };
    let endpoint = endpoint
        .or_else(|| context.as_ref().map(|c| c.endpoint.clone()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    Ok(Target {
        endpoint: check_endpoint(&endpoint)?,
        token: token.or_else(|| context.and_then(|c| c.token)),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.yaml");
        assert_eq!(ConfigFile::load(&path).unwrap(), ConfigFile::default());
        let mut file = ConfigFile {
            current: Some("prod".into()),
            ..ConfigFile::default()
        };
        file.contexts.insert(
            "prod".into(),
            Context {
                endpoint: "https://faas.example".into(),
                token: Some("secret-token-0123456789".into()),
            },
        );
        file.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "contexts: [1, 2").unwrap();
        let error = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(error.contains("config.yaml is not valid"), "{error}");
    }

    #[test]
    fn endpoints_are_http_urls() {
        assert_eq!(
            check_endpoint("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(check_endpoint("https://h/base/").unwrap(), "https://h/base");
        for bad in ["127.0.0.1:8080", "ftp://h", "http://h/?a=1", "nonsense"] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
