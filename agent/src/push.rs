//! The push client: sends the live stream to a configured WebSocket URL (a monitoring
//! server), a Snapshot every interval and every alert event. Reconnects with exponential
//! backoff and jitter; while down, keeps a bounded buffer and counts what it drops. Not
//! started at all when no URL is configured. A connect and each send have a deadline, so a
//! server that hangs (or stops reading) is dropped and retried, never shown as connected.
//! The URL may hold a secret: only its redacted form is logged or shown.
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::SinkExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{snapshot::PushView, stream::Message};

/// Messages kept while disconnected; older ones are dropped first.
pub const BUFFER: usize = 1000;
const MIN_BACKOFF: f64 = 0.5;
const MAX_BACKOFF: f64 = 30.0;
/// How long the TCP connect and WebSocket handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one message may take to be handed to the server.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct PushStats {
    pub connected: AtomicBool,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub connects: AtomicU64,
}

impl PushStats {
    /// What `/metrics` and the Snapshot show; `url` is shown redacted.
    pub fn view(&self, url: &str) -> PushView {
        PushView {
            url: crate::base::redact::url(url),
            connected: self.connected.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }
}

/// Run forever: take messages from `rx`, push them to `url`.
pub async fn run(
    url: String,
    interval: Duration,
    mut rx: broadcast::Receiver<Message>,
    stats: Arc<PushStats>,
) {
    let mut buffer: VecDeque<Message> = VecDeque::new();
    let mut last_snapshot: Option<Instant> = None;
    let mut backoff = MIN_BACKOFF;
    let mut next_try = Instant::now();
    let mut conn = None;
    let shown = crate::base::redact::url(&url);
    let scrub = |e: &dyn std::fmt::Display| crate::base::redact::scrub(&e.to_string(), &url);
    let keep = |buffer: &mut VecDeque<Message>, m: Message, stats: &PushStats| {
        if buffer.len() >= BUFFER {
            buffer.pop_front();
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        buffer.push_back(m);
    };
    loop {
        // Wait for the next message, or for the reconnect time while down.
        let wait = if conn.is_none() {
            next_try.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            m = rx.recv() => match m {
                Ok(m) => {
                    if matches!(m, Message::Snapshot(_)) {
                        // One Snapshot per interval; alert events always go.
                        if last_snapshot.is_some_and(|t| t.elapsed() < interval) {
                            continue;
                        }
                        last_snapshot = Some(Instant::now());
                    }
                    keep(&mut buffer, m, &stats);
                }
                Err(RecvError::Lagged(n)) => {
                    stats.dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(wait) => {}
        }
        if conn.is_none() && Instant::now() >= next_try {
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await;
            match attempt {
                Ok(Ok((ws, _))) => {
                    tracing::info!("push: connected to {shown}");
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    stats.connected.store(true, Ordering::Relaxed);
                    backoff = MIN_BACKOFF;
                    conn = Some(ws);
                }
                Ok(Err(_)) | Err(_) => {
                    let why = match attempt {
                        Ok(Err(e)) => scrub(&e),
                        _ => format!("no answer in {CONNECT_TIMEOUT:?}"),
                    };
                    let delay = backoff * (0.5 + fastrand::f64());
                    tracing::warn!(
                        "push: cannot connect to {shown}: {why}; retrying in {delay:.1} s"
                    );
                    next_try = Instant::now() + Duration::from_secs_f64(delay);
                    backoff = (backoff * 2.0).min(MAX_BACKOFF);
                }
            }
        }
        let Some(ws) = conn.as_mut() else { continue };
        while let Some(m) = buffer.front() {
            let sent = tokio::time::timeout(SEND_TIMEOUT, ws.send(WsMessage::Text(m.text()))).await;
            match sent {
                Ok(Ok(())) => {
                    buffer.pop_front();
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(_)) | Err(_) => {
                    let why = match sent {
                        Ok(Err(e)) => scrub(&e),
                        _ => format!(
                            "a send took over {SEND_TIMEOUT:?} (the server stopped reading)"
                        ),
                    };
                    tracing::warn!("push: connection to {shown} lost: {why}");
                    stats.connected.store(false, Ordering::Relaxed);
                    conn = None;
                    next_try =
                        Instant::now() + Duration::from_secs_f64(backoff * (0.5 + fastrand::f64()));
                    backoff = (backoff * 2.0).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
}
