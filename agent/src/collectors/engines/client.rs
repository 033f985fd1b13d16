//! GET with a deadline and a size bound, for engine scrapes and health probes. Every
//! request carries the agent's own marker in its query string, so the HTTP collector
//! does not count it as the target's request. No connection is kept between requests: a
//! server's keep-alive timeout racing the next scrape would fail it for nothing.
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client as HyperClient},
    rt::TokioExecutor,
};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Why a GET gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Failed(String),
}

/// An answer: its status and (up to the bound) its body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

pub struct Client {
    inner: HyperClient<Https, Empty<Bytes>>,
    timeout: Duration,
}

/// `url` with the agent's marker added to its query string.
pub fn marked(url: &str) -> String {
    let (url, fragment) = url.split_once('#').map_or((url, ""), |(u, f)| (u, f));
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut out = format!("{url}{sep}{}", crate::base::own_request_marker());
    if !fragment.is_empty() {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

impl Client {
    pub fn new(timeout: Duration) -> Client {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client {
            inner: HyperClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            timeout,
        }
    }

    /// GET `url` (marked as the agent's own) and read at most `max_bytes` of the body.
    /// With `bounded_ok`, a longer body is cut rather than refused (a health probe only
    /// needs the status).
    pub async fn get(
        &self,
        url: &str,
        max_bytes: usize,
        bounded_ok: bool,
    ) -> Result<Answer, FetchError> {
        let req = hyper::Request::get(marked(url))
            .header("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
            .header(
                "user-agent",
                concat!("infersight/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Failed(format!("bad URL: {e}")))?;
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                if e.is_connect() {
                    FetchError::Connect(source_text(&e))
                } else {
                    FetchError::Failed(source_text(&e))
                }
            })?;
            let status = resp.status().as_u16();
            let declared = resp
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max_bytes as u64) {
                return match bounded_ok {
                    true => Ok(Answer {
                        status,
                        body: Bytes::new(),
                    }),
                    false => Err(FetchError::TooLarge(max_bytes)),
                };
            }
            // Limited stops reading at the bound: memory never exceeds it.
            let body = match Limited::new(resp.into_body(), max_bytes).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    if bounded_ok {
                        Bytes::new()
                    } else {
                        return Err(FetchError::TooLarge(max_bytes));
                    }
                }
                Err(e) => return Err(FetchError::Failed(format!("reading the body: {e}"))),
            };
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }
}

/// An error with its causes, on one line (hyper's own text is only "client error").
fn source_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// `404 Not Found` style text for a status code.
pub fn status_text(code: u16) -> String {
    match hyper::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(r) => format!("{code} {r}"),
        None => code.to_string(),
    }
}
