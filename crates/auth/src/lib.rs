//! Who may call the control plane (api.md "Authentication (decided)").
//!
//! Owns: the tokens file (`ROLE TOKEN [NAME]` a line) and the tokens it names, kept as
//! SHA-256 digests and compared in constant time ([`Tokens`]); the roles and what each
//! may do ([`Role`], [`Access`]); the callback credentials a dispatch carries, HMAC-signed
//! with a key kept in `--data-dir` ([`CallbackKey`], [`Credential`]).
//!
//! Must not know: routes, HTTP, the engine. Which route needs which [`Access`] is the
//! HTTP layer's table; when a credential is minted is the scheduler's business (through
//! the [`core_types::CallbackSigner`] port).

mod credentials;
mod roles;
mod tokens;

pub use credentials::{CallbackKey, Credential, CredentialError, KeyFileError};
pub use roles::{Access, Role};
pub use tokens::{Principal, TokenFileError, Tokens};
