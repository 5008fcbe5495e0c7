//! The bench's own few HTTP calls (registration, health, metrics), outside loadgen's runs.

use super::*;

/// A blocking HTTP/1.1 client for the handful of calls outside loadgen's runs.
#[derive(Debug)]
pub(super) struct Http {
    pub(super) runtime: tokio::runtime::Runtime,
}

impl Http {
    pub(super) fn new() -> Result<Self> {
        Ok(Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// One request on a fresh connection; the status and the body as text.
    pub(super) fn call(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        body: Option<&str>,
    ) -> Result<(StatusCode, String)> {
        let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or("").to_owned())));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse()?;
        let headers = request.headers_mut();
        headers.insert(header::HOST, HeaderValue::from_str(&addr.to_string())?);
        if body.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            let work = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, crate::Error>((status, String::from_utf8_lossy(&body).into_owned()))
            };
            tokio::select! {
                answer = work => answer,
                _closed = connection => Err("the connection closed before the answer".into()),
            }
        };
        self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), exchange)
                .await
                .map_err(|_| format!("no answer to {path} from {addr} within 10 s"))?
        })
    }
}
