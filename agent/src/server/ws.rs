//! `/ws`: the live stream over WebSocket. Each client reads from its own bounded queue on
//! the broadcast channel; a client that falls behind is told and dropped, so a slow client
//! never slows the agent or other clients. A client that stops reading is dropped once a
//! send has waited `SEND_TIMEOUT`; its messages are at most `MAX_CLIENT_MESSAGE`. A
//! browser (which sends `Origin`) is served only from the agent's own page or an origin in
//! `[api] allowed_origins`, so another site a user opens cannot read the stream.
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{
        HeaderValue, CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
    },
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
        Message as WsMessage,
    },
    WebSocketStream,
};

use crate::stream::{Message, Subscription};

/// More clients than this get 503.
pub const MAX_CLIENTS: usize = 64;
/// Largest message (and frame) a client may send: a subscription is a few hundred bytes.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// A send waiting longer than this (the client stopped reading) drops the client.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r
}

/// Answer the upgrade request and serve the client on its own task.
pub fn upgrade(
    mut req: Request<Incoming>,
    stream: &broadcast::Sender<Message>,
    clients: &Arc<AtomicUsize>,
    origins: &[String],
) -> Response<Full<Bytes>> {
    let is_ws = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request",
        );
    };
    if !is_ws {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request",
        );
    }
    if let Err(origin) = origin_allowed(&req, origins) {
        return plain(
            StatusCode::FORBIDDEN,
            &format!("/ws: origin {origin:?} is not allowed ([api] allowed_origins)"),
        );
    }
    let sub = match Subscription::from_query(req.uri().query().unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("/ws: {e}")),
    };
    if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        clients.fetch_sub(1, Ordering::SeqCst);
        return plain(StatusCode::SERVICE_UNAVAILABLE, "too many stream clients");
    }
    let rx = stream.subscribe();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let clients = clients.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_CLIENT_MESSAGE))
                    .max_frame_size(Some(MAX_CLIENT_MESSAGE));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve_client(ws, rx, sub).await;
            }
            Err(e) => tracing::debug!("WebSocket upgrade failed: {e}"),
        }
        clients.fetch_sub(1, Ordering::SeqCst);
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// No `Origin` (not a browser), the agent's own origin (the same host and port as the
/// request's `Host`), or one of `allowed`; `Err` is the refused origin.
fn origin_allowed<B>(req: &Request<B>, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return Ok(());
    };
    let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let Some(parsed) = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
        return Err(shown);
    };
    let origin = parsed.origin();
    if allowed.contains(&origin.ascii_serialization()) {
        return Ok(());
    }
    let own = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| url::Url::parse(&format!("{}://{h}", parsed.scheme())).ok());
    match own {
        Some(own) if origin.is_tuple() && own.origin() == origin => Ok(()),
        _ => Err(shown),
    }
}

/// Send with the deadline; false when the client is gone or stopped reading.
async fn send<S>(tx: &mut S, m: WsMessage) -> bool
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, tx.send(m)).await,
        Ok(Ok(()))
    )
}

async fn serve_client<S>(
    ws: WebSocketStream<S>,
    mut rx: broadcast::Receiver<Message>,
    mut sub: Subscription,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut incoming) = ws.split();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => {
                    let Some(text) = sub.render(&m) else { continue };
                    if !send(&mut tx, WsMessage::Text(text)).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let note = format!("{{\"type\":\"lagged\",\"dropped\":{n}}}");
                    if send(&mut tx, WsMessage::text(note)).await {
                        let _ = tokio::time::timeout(SEND_TIMEOUT, tx.close()).await;
                    }
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            // A text message changes the subscription; a close or an error ends the session.
            m = incoming.next() => match m {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(WsMessage::Text(t))) => {
                    let answer = match Subscription::from_message(&t) {
                        Ok(s) => {
                            sub = s;
                            serde_json::json!({ "type": "subscribed", "parts": sub.parts, "alerts": sub.alerts })
                        }
                        Err(e) => serde_json::json!({ "type": "error", "error": format!("subscribe: {e}") }),
                    };
                    if !send(&mut tx, WsMessage::text(answer.to_string())).await {
                        return;
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
