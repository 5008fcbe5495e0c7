//! The roles of api.md and what each may do.

use std::fmt;
use std::str::FromStr;

/// A token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// `:invoke`, `:enqueue`, and reading functions and executions.
    Invoker,
    /// Every `GET`.
    Reader,
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone (health probes).
    Open,
    /// Reading functions and executions: every role.
    ReadFunctions,
    /// Any other read (logs, metrics when they need a token, the runtime configuration,
    /// the API document): `reader` and `admin`.
    Read,
    /// `:invoke`, `:enqueue`: `invoker` and `admin`.
    Invoke,
    /// Every change: `admin` only.
    Admin,
}

impl Role {
    /// Whether a holder of this role may do what `access` names.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Open | Access::ReadFunctions => true,
            Access::Read => matches!(self, Role::Reader | Role::Admin),
            Access::Invoke => matches!(self, Role::Invoker | Role::Admin),
            Access::Admin => self == Role::Admin,
        }
    }

    /// Its name in the tokens file and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Invoker => "invoker",
            Role::Reader => "reader",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "admin" => Ok(Role::Admin),
            "invoker" => Ok(Role::Invoker),
            "reader" => Ok(Role::Reader),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_api_md_gives_it() {
        use Access::*;
        let table = [
            (Role::Admin, [true, true, true, true, true]),
            (Role::Invoker, [true, true, false, true, false]),
            (Role::Reader, [true, true, true, false, false]),
        ];
        for (role, allowed) in table {
            let got = [Open, ReadFunctions, Read, Invoke, Admin].map(|a| role.allows(a));
            assert_eq!(got, allowed, "{role}");
        }
    }

    #[test]
    fn roles_read_back_from_their_names() {
        for role in [Role::Admin, Role::Invoker, Role::Reader] {
            assert_eq!(role.as_str().parse(), Ok(role));
        }
        assert_eq!("Admin".parse::<Role>(), Err(()));
    }
}
