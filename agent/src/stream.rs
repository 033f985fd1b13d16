//! The live stream: one JSON message per tick with the Snapshot, and one per alert
//! transition, shared by the WebSocket server (`/ws`) and the push client. Messages are
//! built once per tick and only when someone listens; a client that subscribed to some
//! parts of the Snapshot gets those cut from one shared decoded copy.
use std::{
    collections::BTreeSet,
    sync::{Arc, OnceLock},
};

use serde::Serialize;
use tokio::sync::broadcast;
// Shared bytes: every WebSocket client and the push client send the same buffer.
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::{alert::engine::Notification, snapshot::Snapshot};

/// Messages a listener may fall behind by before it is told and dropped.
pub const QUEUE: usize = 32;

/// Snapshot fields every message carries.
const ALWAYS: [&str; 2] = ["timestamp_ms", "tick"];

/// The top-level Snapshot fields a client may subscribe to: all of them but `ALWAYS`,
/// read from the Snapshot itself, so a new collector's part needs no listing here.
pub fn parts() -> &'static [String] {
    static PARTS: OnceLock<Vec<String>> = OnceLock::new();
    PARTS.get_or_init(|| match serde_json::to_value(Snapshot::default()) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !ALWAYS.contains(&k.as_str()))
            .collect(),
        _ => Vec::new(),
    })
}

#[derive(Clone)]
pub enum Message {
    Alert(Utf8Bytes),
    Snapshot(Arc<Tick>),
}

/// A tick's Snapshot: its full message, and the decoded form parts are cut from (made on
/// first use).
pub struct Tick {
    text: Utf8Bytes,
    value: OnceLock<serde_json::Value>,
}

impl Message {
    /// The whole message as sent to a client that takes everything.
    pub fn text(&self) -> Utf8Bytes {
        match self {
            Message::Alert(s) => s.clone(),
            Message::Snapshot(t) => t.text.clone(),
        }
    }
}

/// What one client wants: some Snapshot parts (all when `None`) and alert events or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub parts: Option<BTreeSet<String>>,
    pub alerts: bool,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            parts: None,
            alerts: true,
        }
    }
}

impl Subscription {
    /// `parts=host,gpus&alerts=false` (a query string).
    pub fn from_query(query: &str) -> Result<Subscription, String> {
        let mut s = Subscription::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "parts" => s.set_parts(v.split(',').map(str::trim).filter(|p| !p.is_empty()))?,
                "alerts" => {
                    s.alerts = match v.as_ref() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => return Err(format!("alerts: {other:?} is not true or false")),
                    }
                }
                other => return Err(format!("unknown parameter {other:?} (parts, alerts)")),
            }
        }
        Ok(s)
    }

    /// `{"subscribe": {"parts": [...], "alerts": bool}}`, sent by a client at any time.
    pub fn from_message(text: &str) -> Result<Subscription, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            parts: Option<Vec<String>>,
            alerts: Option<bool>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Envelope {
            subscribe: Body,
        }
        let e: Envelope = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut s = Subscription {
            parts: None,
            alerts: e.subscribe.alerts.unwrap_or(true),
        };
        if let Some(p) = e.subscribe.parts {
            s.set_parts(p.iter().map(String::as_str))?;
        }
        Ok(s)
    }

    fn set_parts<'a>(&mut self, wanted: impl Iterator<Item = &'a str>) -> Result<(), String> {
        let mut set = BTreeSet::new();
        for p in wanted {
            if !parts().iter().any(|k| k == p) {
                return Err(format!(
                    "parts: unknown part {p:?} (one of {})",
                    parts().join(", ")
                ));
            }
            set.insert(p.to_string());
        }
        self.parts = Some(set);
        Ok(())
    }

    /// The text to send for `m`, if any.
    pub fn render(&self, m: &Message) -> Option<Utf8Bytes> {
        match (m, &self.parts) {
            (Message::Alert(_), _) => self.alerts.then(|| m.text()),
            (Message::Snapshot(_), None) => Some(m.text()),
            (Message::Snapshot(t), Some(parts)) => {
                let full = t
                    .value
                    .get_or_init(|| serde_json::from_str(t.text.as_str()).unwrap_or_default());
                let data = full.get("data")?.as_object()?;
                let cut: serde_json::Map<String, serde_json::Value> = data
                    .iter()
                    .filter(|(k, _)| ALWAYS.contains(&k.as_str()) || parts.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Some(
                    serde_json::json!({ "type": "snapshot", "data": cut })
                        .to_string()
                        .into(),
                )
            }
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    Snapshot { data: &'a Snapshot },
    Alert { data: &'a Notification },
}

/// The tick's messages: alert transitions first, then the Snapshot.
pub fn messages(snap: &Snapshot) -> Vec<Message> {
    let mut out = Vec::with_capacity(1 + snap.alerting.events.len());
    for n in &snap.alerting.events {
        if let Ok(s) = serde_json::to_string(&Out::Alert { data: n }) {
            out.push(Message::Alert(s.into()));
        }
    }
    match serde_json::to_string(&Out::Snapshot { data: snap }) {
        Ok(text) => out.push(Message::Snapshot(Arc::new(Tick {
            text: text.into(),
            value: OnceLock::new(),
        }))),
        Err(e) => tracing::error!("stream: cannot encode the snapshot: {e}"),
    }
    out
}

/// Publish the tick's messages if anyone listens.
pub fn publish(tx: &broadcast::Sender<Message>, snap: &Snapshot) {
    if tx.receiver_count() == 0 {
        return;
    }
    for m in messages(snap) {
        let _ = tx.send(m);
    }
}

#[cfg(test)]
mod tests;
