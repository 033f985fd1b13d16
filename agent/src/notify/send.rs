//! Transports: HTTP(S) POST of JSON (Slack, webhook, Alertmanager) and SMTP (lettre).
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use lettre::{
    message::MultiPart, transport::smtp::authentication::Credentials, AsyncSmtpTransport,
    AsyncTransport, Message, Tokio1Executor,
};

pub use crate::config::{Smtp, Tls};

/// How long one delivery attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

pub struct Http {
    client: Client<Https, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Http {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// POST `body` as JSON; Ok only for a 2xx answer. Errors show the URL redacted
    /// (`crate::base::redact`): it may hold a secret.
    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> Result<(), String> {
        let shown = crate::base::redact::url(url);
        let scrub = |e: String| crate::base::redact::scrub(&e, url);
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("infersight/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| scrub(format!("bad request for {shown}: {e}")))?;
        let send = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| scrub(format!("POST {shown}: {e}")))?;
            let status = resp.status();
            let text = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                Err(scrub(format!(
                    "POST {shown}: HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                )))
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, send)
            .await
            .map_err(|_| format!("POST {shown}: no answer in {ATTEMPT_TIMEOUT:?}"))?
    }
}

impl Smtp {
    pub async fn send(&self, subject: &str, text: String, html: String) -> Result<(), String> {
        let mut b = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let msg = b
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| format!("building the mail: {e}"))?;
        let builder = match self.tls {
            Tls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host),
            Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host)
                .map_err(|e| format!("SMTP {}: {e}", self.host))?,
            Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host)
                .map_err(|e| format!("SMTP {}: {e}", self.host))?,
        };
        let mut builder = builder.port(self.port).timeout(Some(ATTEMPT_TIMEOUT));
        if let Some((user, pass)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        // lettre's timeout bounds each network step; this bounds the whole exchange, so
        // a server that answers slowly but steadily cannot hold the channel either.
        let transport = builder.build();
        match tokio::time::timeout(ATTEMPT_TIMEOUT, transport.send(msg)).await {
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| format!("SMTP {}:{}: {e}", self.host, self.port)),
            Err(_) => Err(format!(
                "SMTP {}:{}: no answer in {ATTEMPT_TIMEOUT:?}",
                self.host, self.port
            )),
        }
    }
}
