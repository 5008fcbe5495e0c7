//! The HTTP client of the control plane's API: one request at a time, the bearer token
//! on each, answers read into core-types' wire types, and every failure turned into a
//! [`CliError`] (transport, or the server's JSON error).

use std::time::Duration;

use core_types::ErrorBody;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::contexts::Target;
use crate::error::{CliError, Result};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an answer may take, except an invocation's (which waits for the function).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The control plane's API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    target: Target,
}

impl Api {
    /// A client of `target`.
    pub(crate) fn new(target: Target) -> Result<Self> {
        // reqwest's rustls is built without a provider (no aws-lc): ring, like the rest
        // of the workspace. Installing fails only if one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("nanofaas-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::local(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, target })
    }

    /// A request to `path` (which starts with `/`), with the token and the default
    /// timeout.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{path}", self.target.endpoint))
            .timeout(REQUEST_TIMEOUT);
        match &self.target.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends `request`; a 2xx answer is returned, anything else is an error.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refusal(response).await)
    }

    /// `GET path`, read as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.send(self.request(Method::GET, path)).await?;
        self.read(response).await
    }

    /// `method path` with a JSON body, read as `T`.
    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let response = self.send(self.request(method, path).json(body)).await?;
        self.read(response).await
    }

    /// Reads a 2xx answer as `T`.
    pub(crate) async fn read<T: DeserializeOwned>(&self, response: Response) -> Result<T> {
        let text = response.text().await.map_err(|e| self.transport(&e))?;
        serde_json::from_str(&text).map_err(|e| {
            CliError::local(format!(
                "the answer of {} is not what this client understands ({e}): {}",
                self.target.endpoint,
                text.chars().take(200).collect::<String>()
            ))
        })
    }

    /// A request that got no answer.
    pub(crate) fn transport(&self, error: &reqwest::Error) -> CliError {
        let endpoint = &self.target.endpoint;
        let mut cause = String::new();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
        while let Some(inner) = source {
            cause = inner.to_string();
            source = inner.source();
        }
        let what = if error.is_timeout() {
            format!("{endpoint} did not answer in time")
        } else if error.is_connect() {
            format!("cannot connect to the control plane at {endpoint}")
        } else {
            format!("the request to {endpoint} failed")
        };
        let mut message = if cause.is_empty() {
            what
        } else {
            format!("{what}: {cause}")
        };
        if error.is_connect() {
            message.push_str(
                "\n  hint: is it running? (`nanofaas up` starts one; --endpoint, \
                 NANOFAAS_ENDPOINT or a context names another)",
            );
        }
        CliError::Transport(message)
    }

    /// An answer with an error status, as an error (the server's JSON error if it sent
    /// one).
    async fn refusal(&self, response: Response) -> CliError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).ok();
        let hint = match status {
            StatusCode::UNAUTHORIZED => Some(if self.target.token.is_some() {
                "the control plane does not know this token".to_owned()
            } else {
                "it needs a token: --token, NANOFAAS_TOKEN or a context's".to_owned()
            }),
            StatusCode::FORBIDDEN => Some("the token's role does not allow this".to_owned()),
            StatusCode::TOO_MANY_REQUESTS => retry_after
                .map(|seconds| format!("the control plane asks to try again in {seconds} s")),
            _ => None,
        };
        CliError::Server {
            status: status.as_u16(),
            body,
            text,
            hint,
        }
    }
}
