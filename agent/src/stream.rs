//! The live stream: one JSON message per tick with the Snapshot, and one per alert
//! transition, shared by the WebSocket server (`/ws`) and the push client. Messages are
//! built once per tick and only when someone listens.
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::{alert::engine::Notification, snapshot::Snapshot};

/// Messages a listener may fall behind by before it is told and dropped.
pub const QUEUE: usize = 32;

pub type Message = Arc<str>;

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
            out.push(s.into());
        }
    }
    match serde_json::to_string(&Out::Snapshot { data: snap }) {
        Ok(s) => out.push(s.into()),
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
