//! Who may call which route (api.md "Authentication (decided)"): the one table of what
//! each route needs ([`required`]), and the check the [`crate::Api`] service runs on
//! every request before it is routed.
//!
//! With authentication on, a request carries `Authorization: Bearer <token>`; the
//! token's role must allow what the route needs. Runtime callbacks are the exception:
//! `/v1/internal/executions/{credential}/{id}:complete` proves itself with the signed
//! credential in its path (its handler checks it against the execution), while the
//! plain `/v1/internal/executions/{id}:complete` needs an `admin` token (an
//! operator's override). Every request an `admin` token makes to change something is
//! an audit event (target `audit`) naming the token, the route and the answer.

use std::sync::{Arc, RwLock};

use auth::{Access, CallbackKey, Principal, Tokens};
use axum::http::{HeaderMap, Method, header};

use crate::ApiError;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A token whose role allows this.
    Access(Access),
    /// A callback credential in the path, checked by the handler.
    CallbackCredential,
}

/// What `method` on `path` needs. Paths no route serves need what their method would
/// anywhere (any token to read, `admin` to change), so that without a token nothing is
/// learned about which routes exist.
pub fn required(method: &Method, path: &str, metrics_require_auth: bool) -> Need {
    let reads = method == Method::GET || method == Method::HEAD;
    let read_or_change = |read: Access| Need::Access(if reads { read } else { Access::Admin });
    if path.starts_with("/actuator/health") {
        return Need::Access(Access::Open);
    }
    if path == "/actuator/prometheus" {
        return Need::Access(if metrics_require_auth {
            Access::Read
        } else {
            Access::Open
        });
    }
    if let Some(rest) = path.strip_prefix("/v1/internal/executions/") {
        return if rest.contains('/') {
            Need::CallbackCredential
        } else {
            Need::Access(Access::Admin)
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/functions/") {
        if rest.contains('/') {
            // `{name}/logs` is read with `reader`; `{name}/replicas` is changed.
            return read_or_change(Access::Read);
        }
        let invokes = rest.ends_with(":invoke") || rest.ends_with(":enqueue");
        if method == Method::POST && invokes {
            return Need::Access(Access::Invoke);
        }
        return read_or_change(Access::ReadFunctions);
    }
    if path == "/v1/functions" || path.starts_with("/v1/executions/") {
        return read_or_change(Access::ReadFunctions);
    }
    if path == "/openapi.json" || path.starts_with("/v1/admin/") {
        return read_or_change(Access::Read);
    }
    read_or_change(Access::ReadFunctions)
}

/// Authentication as the binary configures it: the tokens (replaced whole on a
/// reload), the key callback credentials are signed with, and whether metrics need a
/// token.
pub struct ApiAuth {
    tokens: RwLock<Arc<Tokens>>,
    key: CallbackKey,
    metrics_require_auth: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("tokens", &self.tokens())
            .field("metrics_require_auth", &self.metrics_require_auth)
            .finish_non_exhaustive()
    }
}

/// A request let through, and whether its answer is an audit event.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) principal: Option<Principal>,
    pub(crate) audited: bool,
}

impl ApiAuth {
    pub fn new(tokens: Tokens, key: CallbackKey, metrics_require_auth: bool) -> Self {
        Self {
            tokens: RwLock::new(Arc::new(tokens)),
            key,
            metrics_require_auth,
        }
    }

    /// Replaces every token at once (a reload of the tokens file).
    pub fn replace_tokens(&self, tokens: Tokens) {
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Arc<Tokens> {
        Arc::clone(&self.tokens.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The key callback credentials are signed and checked with.
    pub fn key(&self) -> &CallbackKey {
        &self.key
    }

    /// Lets the request through, or says why not (401, 403).
    pub(crate) fn admit(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Admitted, ApiError> {
        let access = match required(method, path, self.metrics_require_auth) {
            Need::CallbackCredential | Need::Access(Access::Open) => {
                return Ok(Admitted {
                    principal: None,
                    audited: false,
                });
            }
            Need::Access(access) => access,
        };
        let principal = self.principal(headers)?;
        if !principal.role.allows(access) {
            return Err(ApiError::Forbidden(format!(
                "the {} role may not {}",
                principal.role,
                describe(access)
            )));
        }
        Ok(Admitted {
            principal: Some(principal),
            audited: access == Access::Admin,
        })
    }

    /// Who the request's bearer token names.
    pub(crate) fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "this route needs a token: Authorization: Bearer <token>".to_owned(),
                )
            })?;
        self.tokens()
            .authenticate(token)
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("the bearer token is not known".to_owned()))
    }
}

fn describe(access: Access) -> &'static str {
    match access {
        Access::Open | Access::ReadFunctions => "read functions and executions",
        Access::Read => "read this",
        Access::Invoke => "invoke functions",
        Access::Admin => "change anything",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_route_needs_what_api_md_says() {
        use Access::*;
        let table: &[(&str, &str, Need)] = &[
            ("GET", "/actuator/health", Need::Access(Open)),
            ("GET", "/actuator/health/readiness", Need::Access(Open)),
            ("GET", "/actuator/prometheus", Need::Access(Open)),
            ("GET", "/v1/functions", Need::Access(ReadFunctions)),
            ("POST", "/v1/functions", Need::Access(Admin)),
            ("GET", "/v1/functions/f", Need::Access(ReadFunctions)),
            ("DELETE", "/v1/functions/f", Need::Access(Admin)),
            ("POST", "/v1/functions/f:invoke", Need::Access(Invoke)),
            ("POST", "/v1/functions/f:enqueue", Need::Access(Invoke)),
            ("POST", "/v1/functions/f:other", Need::Access(Admin)),
            ("PUT", "/v1/functions/f/replicas", Need::Access(Admin)),
            ("GET", "/v1/functions/f/logs", Need::Access(Read)),
            ("GET", "/v1/executions/e", Need::Access(ReadFunctions)),
            (
                "POST",
                "/v1/internal/executions/e:complete",
                Need::Access(Admin),
            ),
            (
                "POST",
                "/v1/internal/executions/c/e:complete",
                Need::CallbackCredential,
            ),
            (
                "POST",
                "/v1/internal/functions/f:drain-once",
                Need::Access(Admin),
            ),
            ("GET", "/v1/admin/runtime-config", Need::Access(Read)),
            ("PATCH", "/v1/admin/runtime-config", Need::Access(Admin)),
            (
                "POST",
                "/v1/admin/runtime-config/validate",
                Need::Access(Admin),
            ),
            ("GET", "/openapi.json", Need::Access(Read)),
            ("GET", "/no/such/route", Need::Access(ReadFunctions)),
            ("POST", "/no/such/route", Need::Access(Admin)),
        ];
        for (method, path, need) in table {
            let method: Method = method.parse().unwrap();
            assert_eq!(required(&method, path, false), *need, "{method} {path}");
        }
        assert_eq!(
            required(&Method::GET, "/actuator/prometheus", true),
            Need::Access(Read)
        );
    }
}
