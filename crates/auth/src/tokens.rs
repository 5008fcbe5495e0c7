//! The tokens file and the tokens it names.
//!
//! Kept as SHA-256 digests: the tokens themselves are not held in memory after the file
//! is read (a heap dump or a debug print shows no token), and a presented token is
//! digested and compared against every entry in constant time, so neither how much of
//! a guess matched nor which entry it was shows in the answer's timing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Role;

/// The shortest token accepted: a guessable token is no protection.
const MIN_TOKEN_CHARS: usize = 16;

/// Who a token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// The token's `NAME` (or `<role>@line<N>` when the line names none): what logs
    /// and audit events show instead of the token.
    pub name: Arc<str>,
}

#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

/// The tokens of a tokens file.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.entries.iter().map(|e| &e.principal).collect();
        f.debug_struct("Tokens")
            .field("principals", &names)
            .finish()
    }
}

/// Why a tokens file was refused. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the tokens file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("the tokens file names no token (one `ROLE TOKEN [NAME]` a line)")]
    Empty,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads and parses the tokens file at `path`.
    pub fn read(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses a tokens file: one `ROLE TOKEN [NAME]` a line, fields separated by
    /// whitespace; blank lines and lines starting with `#` are skipped. Every token is
    /// at least 16 printable ASCII characters (what an `Authorization` header carries)
    /// and appears once.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let malformed = |reason: &str| TokenFileError::Malformed {
                line: number,
                reason: reason.to_owned(),
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (role, token, name) = match fields.as_slice() {
                [role, token] => (*role, *token, None),
                [role, token, name] => (*role, *token, Some(*name)),
                _ => return Err(malformed("expected `ROLE TOKEN [NAME]`")),
            };
            let role: Role = role.parse().map_err(|()| {
                malformed(&format!(
                    "unknown role {role:?} (one of admin, invoker, reader)"
                ))
            })?;
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(malformed(&format!(
                    "the token is shorter than {MIN_TOKEN_CHARS} characters"
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(malformed(
                    "the token has characters other than printable ASCII",
                ));
            }
            let digest = digest(token);
            if entries.iter().any(|e| e.digest == digest) {
                return Err(malformed("the token appears on an earlier line too"));
            }
            let name = name.map_or_else(|| format!("{role}@line{number}"), str::to_owned);
            entries.push(Entry {
                digest,
                principal: Principal {
                    role,
                    name: name.into(),
                },
            });
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Self { entries })
    }

    /// Who `presented` names, if it is one of the tokens. Every entry is compared, in
    /// constant time, whatever matched.
    pub fn authenticate(&self, presented: &str) -> Option<&Principal> {
        let presented = digest(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(&entry.principal);
            }
        }
        found
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never: an empty tokens file is refused.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# who may do what
admin   admin-token-0123456789  ops
invoker invoker-token-0123456789
reader  reader-token-0123456789 dashboards
";

    #[test]
    fn a_token_names_its_role_and_name() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.len(), 3);
        let admin = tokens.authenticate("admin-token-0123456789").unwrap();
        assert_eq!((admin.role, &*admin.name), (Role::Admin, "ops"));
        let invoker = tokens.authenticate("invoker-token-0123456789").unwrap();
        assert_eq!(
            (invoker.role, &*invoker.name),
            (Role::Invoker, "invoker@line3")
        );
        assert_eq!(
            tokens.authenticate("reader-token-0123456789").unwrap().role,
            Role::Reader
        );
    }

    #[test]
    fn an_unknown_or_partial_token_names_nobody() {
        let tokens = Tokens::parse(FILE).unwrap();
        for guess in [
            "",
            "admin-token-012345678",
            "admin-token-01234567890",
            "ops",
        ] {
            assert_eq!(tokens.authenticate(guess), None, "{guess:?}");
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number_and_never_the_token() {
        let cases = [
            ("admin", 1, "expected `ROLE TOKEN [NAME]`"),
            ("root secret-secret-secret", 1, "unknown role"),
            ("\nadmin short", 2, "shorter than 16"),
            ("admin a-token-that-is-long b c", 1, "expected"),
            ("admin tok\u{e9}n-long-enough-here", 1, "printable ASCII"),
            (
                "admin same-token-0123456789\nreader same-token-0123456789",
                2,
                "earlier line",
            ),
        ];
        for (text, line, reason) in cases {
            let error = Tokens::parse(text).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, TokenFileError::Malformed { line: l, .. } if l == line),
                "{text:?}: {message}"
            );
            assert!(message.contains(reason), "{text:?}: {message}");
            assert!(!message.contains("token-0123456789"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn a_file_without_tokens_is_refused() {
        assert!(matches!(
            Tokens::parse("# nothing yet\n\n"),
            Err(TokenFileError::Empty)
        ));
    }

    #[test]
    fn the_debug_form_shows_names_not_tokens() {
        let tokens = Tokens::parse(FILE).unwrap();
        let shown = format!("{tokens:?}");
        assert!(shown.contains("ops"), "{shown}");
        assert!(!shown.contains("admin-token"), "{shown}");
    }
}
