//! loadgen's HTTP/1.1 client: where a URL points, the request a worker repeats, one
//! keep-alive connection per worker driven by the worker itself, and one-off fetches.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Error;

type Sender = SendRequest<Full<Bytes>>;
type Driver = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// Where to connect and what to put in the request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) authority: String,
    /// Origin-form: path and query only, as HTTP/1.1 sends it to a server.
    path: Uri,
}

pub(crate) fn parse_url(url: &str) -> Result<Target, Error> {
    let uri: Uri = url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("only http:// URLs are supported: {url}").into());
    }
    let authority = uri.authority().ok_or_else(|| format!("no host in {url}"))?;
    let port = authority.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .parse()?;
    Ok(Target {
        authority: format!("{}:{port}", authority.host()),
        path,
    })
}

/// The request every send of a worker repeats.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    method: Method,
    /// Set by a caller that sends the same request to another path.
    pub(crate) path: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    pub(crate) fn new(
        method: Method,
        target: &Target,
        headers: &[String],
        body: Bytes,
    ) -> Result<Self, Error> {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_str(&target.authority)?);
        if !body.is_empty() {
            map.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for line in headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("a header is `Name: value`, got {line}"))?;
            map.insert(
                HeaderName::try_from(name.trim())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(Self {
            method,
            path: target.path.clone(),
            headers: map,
            body,
        })
    }

    pub(crate) fn get(target: &Target, path: &str) -> Result<Self, Error> {
        let mut template = Self::new(Method::GET, target, &[], Bytes::new())?;
        template.path = path.parse()?;
        Ok(template)
    }

    pub(crate) fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

pub(crate) async fn connect(authority: &str) -> Result<(Sender, Driver), Error> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    Ok(http1::handshake(TokioIo::new(stream)).await?)
}

/// Runs `work` while driving the connection its sender talks through; `None` when the
/// connection ended first.
pub(crate) async fn driven<T>(driver: Driver, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        output = work => Some(output),
        _closed = driver => None,
    }
}

/// What a request came back with.
pub(crate) enum Answer {
    /// The status was 2xx and the body held the expected text.
    Ok,
    /// An answer, but not a successful one.
    Refused,
}

/// Sends one request and reads its whole answer. `Err` means the connection is unusable.
pub(crate) async fn exchange(
    sender: &mut Sender,
    template: &Template,
    expect: Option<&[u8]>,
) -> Result<Answer, Error> {
    sender.ready().await?;
    let response = sender.send_request(template.request()).await?;
    let success = response.status().is_success();
    let mut body = response.into_body();
    let complete = match expect {
        Some(text) => contains(&body.collect().await?.to_bytes(), text),
        None => {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            true
        }
    };
    Ok(if success && complete {
        Answer::Ok
    } else {
        Answer::Refused
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// One request on a fresh connection, for the few calls outside the measured loops.
pub(crate) async fn fetch(
    target: &Target,
    template: &Template,
) -> Result<(StatusCode, Bytes), Error> {
    let (mut sender, driver) = connect(&target.authority).await?;
    let work = async {
        let response = sender.send_request(template.request()).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, Error>((status, body))
    };
    driven(driver, work)
        .await
        .ok_or("the connection closed before the answer")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_an_address_and_an_origin_form_path() {
        let target = parse_url("http://127.0.0.1:8080/v1/functions/echo:invoke").unwrap();
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.path, "/v1/functions/echo:invoke");
        assert_eq!(parse_url("http://localhost").unwrap().path, "/");
        assert!(parse_url("https://127.0.0.1:8443/").is_err());
    }
}
