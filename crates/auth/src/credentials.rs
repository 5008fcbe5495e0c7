//! Callback credentials: proof that a `:complete` call answers a dispatch this control
//! plane sent.
//!
//! A credential is `<payload>.<tag>`, both base64url without padding: the payload names
//! what it is for (one attempt of one execution, until an expiry; or one function's
//! registration, for the `CALLBACK_URL` of its replicas) and the tag is its HMAC-SHA256
//! under the key of `--data-dir` (32 random bytes, created on first start with mode
//! 0600, so credentials outlive a restart). It travels in the path of the callback URL,
//! which is all the unmodified nanofaas runtimes echo back. Verifying checks the tag in
//! constant time before anything of the payload is believed.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use core_types::{CallbackSigner, ExecutionId, FunctionName, Timestamp};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const KEY_BYTES: usize = 32;

/// Separates the payload's fields (neither an execution id nor a function name holds
/// one: ids come from this control plane, names match `[a-zA-Z0-9._-]`).
const FIELD: char = '\n';

/// What a credential is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// One attempt of one execution, until `expires_at`.
    Attempt {
        execution: ExecutionId,
        attempt: u32,
        expires_at: Timestamp,
    },
    /// Any execution of one function, for as long as the registration made at
    /// `registered_at` stands (a replica's `CALLBACK_URL`).
    Function {
        function: FunctionName,
        registered_at: Timestamp,
    },
}

/// Why a presented credential proves nothing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the callback credential is malformed")]
    Malformed,
    #[error("the callback credential's signature is not this control plane's")]
    Forged,
    #[error("the callback credential expired")]
    Expired,
}

/// The key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("the callback key {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the callback key {} is not {KEY_BYTES} bytes: restore it or move it away (credentials it signed then stop working)", path.display())]
    Damaged { path: PathBuf },
    #[error("the callback key {} may be read by other users (mode {mode:o}): chmod 600 it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("no random bytes for a new callback key: {0}")]
    NoRandomness(String),
}

/// The key callback credentials are signed with.
#[derive(Clone)]
pub struct CallbackKey {
    key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for CallbackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackKey(..)")
    }
}

impl CallbackKey {
    /// The key in `path`, created (32 random bytes, mode 0600) if there is none. A key
    /// of the wrong size, or one other users may read, is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let mut key = [0_u8; KEY_BYTES];
                getrandom::fill(&mut key)
                    .map_err(|error| KeyFileError::NoRandomness(error.to_string()))?;
                file.write_all(&key).map_err(io)?;
                file.sync_all().map_err(io)?;
                return Ok(Self { key });
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io(error)),
        }
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let key =
            <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| KeyFileError::Damaged {
                path: path.to_owned(),
            })?;
        Ok(Self { key })
    }

    /// A key from fixed bytes (tests that need two control planes to agree or differ).
    pub fn from_bytes(key: [u8; KEY_BYTES]) -> Self {
        Self { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any size")
    }

    /// The credential's text: URL-safe, to put in a path segment.
    pub fn sign(&self, credential: &Credential) -> String {
        let payload = match credential {
            Credential::Attempt {
                execution,
                attempt,
                expires_at,
            } => format!(
                "a{FIELD}{execution}{FIELD}{attempt}{FIELD}{}",
                expires_at.as_millis()
            ),
            Credential::Function {
                function,
                registered_at,
            } => format!("f{FIELD}{function}{FIELD}{}", registered_at.as_millis()),
        };
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// What `text` is a credential for, if this key signed it and, for an attempt's,
    /// it has not expired at `now`.
    pub fn verify(&self, text: &str, now: Timestamp) -> Result<Credential, CredentialError> {
        let (payload, tag) = text.split_once('.').ok_or(CredentialError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CredentialError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CredentialError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag)
            .map_err(|_| CredentialError::Forged)?;
        let payload = String::from_utf8(payload).map_err(|_| CredentialError::Malformed)?;
        let fields: Vec<&str> = payload.split(FIELD).collect();
        let millis = |text: &str| {
            text.parse::<u64>()
                .map(Timestamp::from_millis)
                .map_err(|_| CredentialError::Malformed)
        };
        let credential = match fields.as_slice() {
            ["a", execution, attempt, expires] => Credential::Attempt {
                execution: ExecutionId::new(*execution),
                attempt: attempt.parse().map_err(|_| CredentialError::Malformed)?,
                expires_at: millis(expires)?,
            },
            ["f", function, registered] => Credential::Function {
                function: FunctionName::parse(function).map_err(|_| CredentialError::Malformed)?,
                registered_at: millis(registered)?,
            },
            _ => return Err(CredentialError::Malformed),
        };
        if let Credential::Attempt { expires_at, .. } = &credential
            && *expires_at <= now
        {
            return Err(CredentialError::Expired);
        }
        Ok(credential)
    }
}

impl CallbackSigner for CallbackKey {
    fn for_attempt(&self, execution: &ExecutionId, attempt: u32, expires_at: Timestamp) -> String {
        self.sign(&Credential::Attempt {
            execution: execution.clone(),
            attempt,
            expires_at,
        })
    }

    fn for_function(&self, function: &FunctionName, registered_at: Timestamp) -> String {
        self.sign(&Credential::Function {
            function: function.clone(),
            registered_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(expires: u64) -> Credential {
        Credential::Attempt {
            execution: ExecutionId::new("01a23d85-a4f0-76cb-bf2b-b87c97bfabe8"),
            attempt: 2,
            expires_at: Timestamp::from_millis(expires),
        }
    }

    #[test]
    fn a_signed_credential_verifies_to_what_it_names_until_it_expires() {
        let key = CallbackKey::from_bytes([7; 32]);
        let text = key.sign(&attempt(10_000));
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "fits a path segment: {text}"
        );
        assert_eq!(
            key.verify(&text, Timestamp::from_millis(9_999)),
            Ok(attempt(10_000))
        );
        assert_eq!(
            key.verify(&text, Timestamp::from_millis(10_000)),
            Err(CredentialError::Expired)
        );
        let function = Credential::Function {
            function: FunctionName::parse("hello").unwrap(),
            registered_at: Timestamp::from_millis(5),
        };
        let text = key.sign(&function);
        assert_eq!(
            key.verify(&text, Timestamp::from_millis(u64::MAX)),
            Ok(function)
        );
    }

    #[test]
    fn another_key_or_a_changed_payload_is_forged_and_junk_is_malformed() {
        let key = CallbackKey::from_bytes([7; 32]);
        let other = CallbackKey::from_bytes([8; 32]);
        let now = Timestamp::from_millis(1);
        let text = other.sign(&attempt(10_000));
        assert_eq!(key.verify(&text, now), Err(CredentialError::Forged));

        // The payload of attempt 3 with the tag of attempt 2.
        let genuine = key.sign(&attempt(10_000));
        let (_, tag) = genuine.split_once('.').unwrap();
        let mut changed = attempt(10_000);
        if let Credential::Attempt { attempt, .. } = &mut changed {
            *attempt = 3;
        }
        let (payload, _) = key
            .sign(&changed)
            .split_once('.')
            .map(|(p, t)| (p.to_owned(), t.to_owned()))
            .unwrap();
        assert_eq!(
            key.verify(&format!("{payload}.{tag}"), now),
            Err(CredentialError::Forged)
        );
        for junk in ["", ".", "no-dot", "a.b", "%%%.%%%"] {
            assert!(key.verify(junk, now).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn the_key_is_created_once_private_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callback.key");
        let first = CallbackKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = CallbackKey::load_or_create(&path).unwrap();
        let text = first.sign(&attempt(10));
        assert!(again.verify(&text, Timestamp::from_millis(1)).is_ok());
    }

    #[test]
    fn a_damaged_or_exposed_key_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callback.key");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = CallbackKey::load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("move it away"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = CallbackKey::load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
