//! `POOL`: one HTTP `POST` per attempt to the function's `endpointUrl`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use core_types::{
    Dispatch, DispatchOutcome, DispatchRequest, DispatchSuccess, ErrorCode, ErrorInfo, Payload,
    is_json_media_type,
};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::connections::{Conn, Connections, Origin, Scheme};
use crate::tls::Tls;

/// Largest response body read by default (32 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// How much of a non-2xx body goes into the error message.
const ERROR_BODY_PREVIEW_BYTES: usize = 1024;

const X_EXECUTION_ID: HeaderName = HeaderName::from_static(core_types::headers::X_EXECUTION_ID);
const X_DISPATCH_ATTEMPT: HeaderName =
    HeaderName::from_static(core_types::headers::X_DISPATCH_ATTEMPT);
const X_TRACE_ID: HeaderName = HeaderName::from_static(core_types::headers::X_TRACE_ID);
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(core_types::headers::IDEMPOTENCY_KEY);
const X_CALLBACK_URL: HeaderName = HeaderName::from_static(core_types::headers::X_CALLBACK_URL);
const X_COLD_START: HeaderName = HeaderName::from_static(core_types::headers::X_COLD_START);
const X_INIT_DURATION_MS: HeaderName =
    HeaderName::from_static(core_types::headers::X_INIT_DURATION_MS);

/// Settings of the shared connection pool and of every dispatch.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// How long an idle keep-alive connection stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// Largest response body accepted; a larger 2xx body is a `FUNCTION_ERROR`.
    pub max_response_bytes: usize,
    /// Roots trusted for `https://` endpoints besides the platform's (a private CA of
    /// the cluster, a self-signed endpoint); [`read_pem_certificates`] reads and checks
    /// them from a PEM file.
    ///
    /// [`read_pem_certificates`]: crate::read_pem_certificates
    pub extra_root_certificates: Vec<CertificateDer<'static>>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            extra_root_certificates: Vec::new(),
        }
    }
}

/// Dispatches `POOL` functions (and `DEPLOYMENT` functions once they have an endpoint)
/// over HTTP/1.1 (on TLS for `https://` endpoints), through one pool of keep-alive
/// connections shared by every function.
///
/// Each dispatch drives its own keep-alive connection (see `connections.rs`), not a
/// general-purpose client: dispatch needs one `POST` with fixed headers, no redirects,
/// no proxies, no cookies, and the layers and connection tasks of a general-purpose
/// client cost more CPU per dispatch than the control plane's own work (see
/// `docs/performance.md`).
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct PoolDispatcher {
    connections: Arc<Connections>,
    max_response_bytes: usize,
    endpoints: Arc<Endpoints>,
}

/// Endpoint URLs parsed once: parsing one per dispatch showed in profiles. Functions
/// are few; the map is cleared if it ever grows past [`Endpoints::MAX`], so endpoints
/// of removed functions cannot pile up.
#[derive(Debug, Default)]
struct Endpoints(RwLock<HashMap<Box<str>, Target>>);

/// What a dispatch needs of an endpoint URL, parsed and checked once. Cloning shares
/// the bytes.
#[derive(Clone, Debug)]
struct Target {
    /// Scheme, host and port: which connections serve it.
    origin: Origin,
    /// The origin-form request target (`/invoke?x=1`).
    path: Uri,
    /// The `Host` header.
    host: HeaderValue,
}

impl Endpoints {
    const MAX: usize = 1024;

    fn parse(&self, endpoint: &str) -> Result<Target, String> {
        let read = |map: &HashMap<Box<str>, Target>| map.get(endpoint).cloned();
        if let Some(target) = read(&self.0.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(target);
        }
        let uri: Uri = endpoint
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                return Err(format!(
                    "scheme {other}:// is not supported (only http:// and https://)"
                ));
            }
            None => return Err("an absolute http:// or https:// URL is required".to_owned()),
        };
        let Some(authority) = uri.authority().cloned().filter(|a| !a.host().is_empty()) else {
            return Err("the URL has no host".to_owned());
        };
        // `[::1]` is connected to (and named to TLS) as `::1`; host names compare
        // without case, so `Fn.Local` and `fn.local` share connections.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if scheme == Scheme::Https && ServerName::try_from(host.as_str()).is_err() {
            return Err(format!("{host:?} is not a valid TLS server name"));
        }
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let origin = Origin {
            scheme,
            host: host.into(),
            port,
        };
        let path = uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Ok(Uri::from_static("/")), Uri::try_from)
            .map_err(|e| e.to_string())?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let target = Target { origin, path, host };
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(endpoint.into(), target.clone());
        Ok(target)
    }
}

impl Default for PoolDispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolDispatcher {
    /// A dispatcher with the default [`PoolConfig`].
    pub fn new() -> Self {
        Self::with_config(PoolConfig::default())
    }

    /// A dispatcher with `config`.
    ///
    /// Dispatches speak HTTP/1.1, in the clear for `http://` endpoints and over TLS
    /// (1.2 or 1.3, SNI from the URL's host, the platform's roots and
    /// `extra_root_certificates` trusted) for `https://` ones, on connections with
    /// `TCP_NODELAY`; they ignore proxy settings of the environment and do not follow
    /// redirects (a 3xx is a non-2xx answer). The platform's roots are read at the
    /// first `https` dispatch, not here.
    pub fn with_config(config: PoolConfig) -> Self {
        Self {
            connections: Arc::new(Connections::new(
                config.pool_idle_timeout,
                config.pool_max_idle_per_host,
                Tls::new(config.extra_root_certificates),
            )),
            max_response_bytes: config.max_response_bytes,
            endpoints: Arc::default(),
        }
    }

    async fn call(&self, endpoint: &str, request: &DispatchRequest) -> DispatchOutcome {
        let target = self.endpoints.parse(endpoint).map_err(|e| {
            dispatch_error(format!("function endpointUrl {endpoint:?} is invalid: {e}"))
        })?;
        let body = serde_json::to_vec(&WireRequest {
            input: &request.input,
            metadata: &request.metadata,
        })
        .map_err(|e| dispatch_error(format!("cannot encode the request body: {e}")))?;
        let mut outgoing = Request::post(target.path)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| dispatch_error(format!("cannot build the request: {e}")))?;
        let mut headers = request_headers(request)?;
        headers.insert(HOST, target.host);
        *outgoing.headers_mut() = headers;
        let origin = target.origin;

        let mut conn = self
            .connections
            .get(&origin)
            .await
            .map_err(|e| transport_error("cannot connect to", &e, endpoint, request))?;
        let response = conn
            .send(outgoing)
            .await
            .map_err(|e| transport_error("request failed to", &e, endpoint, request))?;
        let status = response.status();
        let (parts, mut body) = response.into_parts();
        let outcome = self
            .answer(
                status,
                &parts.headers,
                &mut body,
                &mut conn,
                endpoint,
                request,
            )
            .await;
        self.connections.put(origin, conn);
        outcome
    }

    /// Reads the answer whose head is `status` and `headers`.
    async fn answer(
        &self,
        status: hyper::StatusCode,
        headers: &HeaderMap,
        body: &mut Incoming,
        conn: &mut Conn,
        endpoint: &str,
        request: &DispatchRequest,
    ) -> DispatchOutcome {
        let cold_start = headers
            .get(X_COLD_START)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let init_duration_ms = headers
            .get(X_INIT_DURATION_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let is_json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);

        if !status.is_success() {
            let (preview, end) = read_capped(
                body,
                conn,
                self.max_response_bytes,
                ERROR_BODY_PREVIEW_BYTES + 4,
            )
            .await;
            let mut text = String::from_utf8_lossy(&preview).into_owned();
            let truncated = truncate_at_char(&mut text, ERROR_BODY_PREVIEW_BYTES)
                || !matches!(end, BodyEnd::Complete { total } if total == preview.len());
            if truncated {
                text.push_str("... (truncated)");
            }
            tracing::debug!(
                execution_id = %request.execution_id,
                status = status.as_u16(),
                "function answered non-2xx"
            );
            return Err(ErrorInfo::new(
                ErrorCode::FunctionError,
                format!("function answered {}: {text}", status.as_u16()),
            ));
        }

        let (body, end) =
            read_capped(body, conn, self.max_response_bytes, self.max_response_bytes).await;
        match end {
            BodyEnd::Complete { .. } => {}
            BodyEnd::OverLimit => {
                return Err(ErrorInfo::new(
                    ErrorCode::FunctionError,
                    format!(
                        "function answered {} with a body over the {} byte limit",
                        status.as_u16(),
                        self.max_response_bytes
                    ),
                ));
            }
            BodyEnd::Failed(e) => {
                return Err(transport_error(
                    "lost the response from",
                    &e,
                    endpoint,
                    request,
                ));
            }
        }

        let output = output_from_body(&body, is_json).map_err(|reason| {
            ErrorInfo::new(
                ErrorCode::FunctionError,
                format!("function answered {}: {reason}", status.as_u16()),
            )
        })?;
        tracing::debug!(
            execution_id = %request.execution_id,
            status = status.as_u16(),
            cold_start,
            "function answered"
        );
        Ok(DispatchSuccess {
            output,
            cold_start,
            init_duration_ms,
        })
    }
}

impl PoolDispatcher {
    /// Dispatches `request` to `endpoint` rather than to its function's
    /// `endpointUrl`: how a deployment provider reaches the replica it picked. The
    /// wire contract and the pooling are those of every `POOL` dispatch.
    pub async fn dispatch_to(&self, endpoint: &str, request: &DispatchRequest) -> DispatchOutcome {
        self.call(endpoint, request).await
    }
}

#[async_trait::async_trait]
impl Dispatch for PoolDispatcher {
    async fn dispatch(&self, request: DispatchRequest) -> DispatchOutcome {
        let Some(endpoint) = request.function.endpoint_url.as_deref() else {
            return Err(dispatch_error("function has no endpointUrl"));
        };
        tracing::debug!(
            execution_id = %request.execution_id,
            function = %request.function.name,
            attempt = request.attempt,
            endpoint,
            "pool dispatch"
        );
        // No deadline here: the scheduler bounds every attempt by the function's
        // `timeoutMs` and drops this future when it runs out (a second timer of the
        // same length would only race it). Dropped mid-request, the connection goes
        // with the future and is never reused.
        self.call(endpoint, &request).await
    }

    /// Closes idle connections past the pool's idle timeout (or closed by their
    /// peer): without it, those to endpoints nobody dispatches to any more would stay
    /// open for good, since nothing else looks at them.
    fn sweep_idle(&self) {
        let closed = self.connections.sweep();
        if closed > 0 {
            tracing::debug!(closed, "closed idle pooled connections");
        }
    }
}

/// The request body: `{"input": <input as given>, "metadata": {..}}`.
#[derive(serde::Serialize)]
struct WireRequest<'a> {
    input: &'a Payload,
    metadata: &'a BTreeMap<String, String>,
}

fn request_headers(request: &DispatchRequest) -> Result<HeaderMap, ErrorInfo> {
    fn value(name: &str, text: &str) -> Result<HeaderValue, ErrorInfo> {
        HeaderValue::from_str(text)
            .map_err(|_| dispatch_error(format!("{name} {text:?} is not a valid header value")))
    }

    // Room for all seven (with `Host`) without growing.
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        X_EXECUTION_ID,
        value("X-Execution-Id", request.execution_id.as_str())?,
    );
    headers.insert(X_DISPATCH_ATTEMPT, HeaderValue::from(request.attempt));
    headers.insert(X_TRACE_ID, value("X-Trace-Id", request.trace_id.as_str())?);
    if let Some(key) = &request.idempotency_key {
        headers.insert(IDEMPOTENCY_KEY, value("Idempotency-Key", key.as_str())?);
    }
    if let Some(callback) = &request.callback_url {
        headers.insert(X_CALLBACK_URL, value("X-Callback-Url", callback)?);
    }
    Ok(headers)
}

/// The output of a 2xx answer: an empty body is `null`; a JSON body is taken as it
/// is; anything else becomes a JSON string.
fn output_from_body(body: &[u8], is_json: bool) -> Result<Payload, String> {
    if body.is_empty() {
        return Ok(Payload::from_value(&serde_json::Value::Null));
    }
    if !is_json {
        return Ok(Payload::string(&String::from_utf8_lossy(body)));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| "the body is declared JSON but is not valid JSON (not UTF-8)".to_owned())?;
    if text.trim().is_empty() {
        return Ok(Payload::from_value(&serde_json::Value::Null));
    }
    Payload::from_json_text(text)
        .map_err(|e| format!("the body is declared JSON but is not valid JSON: {e}"))
}

/// How reading a body ended.
enum BodyEnd {
    /// All of it arrived; `total` bytes in all.
    Complete { total: usize },
    /// It is longer than the limit; reading stopped.
    OverLimit,
    /// The connection failed mid-body.
    Failed(hyper::Error),
}

/// Reads at most `limit` bytes of the body, keeping the first `keep` of them.
async fn read_capped(
    body: &mut Incoming,
    conn: &mut Conn,
    limit: usize,
    keep: usize,
) -> (Vec<u8>, BodyEnd) {
    let declared = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    if declared.is_some_and(|n| n > limit) {
        return (Vec::new(), BodyEnd::OverLimit);
    }
    let mut kept = Vec::with_capacity(declared.unwrap_or(0).min(keep));
    let mut total = 0usize;
    loop {
        match conn.frame(body).await {
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else {
                    continue; // trailers
                };
                total = total.saturating_add(chunk.len());
                if total > limit {
                    return (kept, BodyEnd::OverLimit);
                }
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => return (kept, BodyEnd::Complete { total }),
            Some(Err(e)) => return (kept, BodyEnd::Failed(e)),
        }
    }
}

/// Cuts `text` to at most `max` bytes on a char boundary; true if it cut anything.
fn truncate_at_char(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    true
}

fn dispatch_error(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::DispatchError, message)
}

/// A failure of the HTTP exchange itself (connect, send, or reading the body): `what`
/// happened, and why.
fn transport_error(
    what: &str,
    error: &(dyn std::error::Error + 'static),
    endpoint: &str,
    request: &DispatchRequest,
) -> ErrorInfo {
    let info = dispatch_error(format!(
        "{what} function endpoint {endpoint}: {}",
        error_chain(error)
    ));
    tracing::debug!(execution_id = %request.execution_id, error = %info.message, "dispatch failed");
    info
}

/// `error` and its causes, `error: cause: cause ...`, without repeats.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_from_bodies() {
        assert!(output_from_body(b"", true).unwrap().is_null());
        assert!(output_from_body(b"", false).unwrap().is_null());
        assert!(output_from_body(b" \n", true).unwrap().is_null());
        assert_eq!(
            output_from_body(br#"{"a": 1}"#, true).unwrap().json_text(),
            r#"{"a": 1}"#
        );
        assert_eq!(
            output_from_body(b"{not json", false).unwrap().json_text(),
            r#""{not json""#
        );
        let err = output_from_body(b"{not json", true).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(output_from_body(&[0xff, 0xfe], true).is_err());
    }

    #[test]
    fn an_endpoint_url_becomes_its_connection_key_request_target_and_host() {
        let endpoints = Endpoints::default();
        let target = endpoints.parse("http://fn.local:9000/invoke?x=1").unwrap();
        assert_eq!(
            target.origin,
            Origin {
                scheme: Scheme::Http,
                host: "fn.local".into(),
                port: 9000
            }
        );
        assert_eq!(target.path.to_string(), "/invoke?x=1");
        assert_eq!(target.host, "fn.local:9000");
        // Asked again, the same answer (from the cache).
        let again = endpoints.parse("http://fn.local:9000/invoke?x=1").unwrap();
        assert_eq!(again.path, target.path);
        assert_eq!(endpoints.parse("http://fn.local").unwrap().path, "/");
        assert_eq!(endpoints.parse("http://fn.local").unwrap().origin.port, 80);

        // https: its own origin (never sharing connections with http on the same port),
        // 443 by default, the host lower-cased and unbracketed for SNI and connecting.
        let secure = endpoints.parse("https://Fn.Local/invoke").unwrap();
        assert_eq!(
            secure.origin,
            Origin {
                scheme: Scheme::Https,
                host: "fn.local".into(),
                port: 443
            }
        );
        assert_eq!(secure.host, "Fn.Local");
        let plain_same_port = endpoints.parse("http://fn.local:443/invoke").unwrap();
        assert_ne!(plain_same_port.origin, secure.origin);
        assert_eq!(
            endpoints
                .parse("https://[::1]:8443/")
                .unwrap()
                .origin
                .host
                .as_ref(),
            "::1"
        );

        for (bad, why) in [
            ("ftp://fn.local/invoke", "only http:// and https://"),
            ("/invoke", "absolute http:// or https:// URL"),
            ("http:///invoke", ""),
            ("not a url", ""),
        ] {
            let error = endpoints.parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut text = "aé".repeat(10);
        assert!(truncate_at_char(&mut text, 4));
        assert_eq!(text, "aéa");
        let mut short = "abc".to_owned();
        assert!(!truncate_at_char(&mut short, 4));
    }
}
