//! SQLite in the state directory (WAL): alert instances (so states survive a restart),
//! alert history, and the notification outbox (written before a notification is sent).
//! One alert's messages leave the outbox in order per channel; delivered and expired rows
//! are pruned; a row whose payload no longer reads is moved to `outbox_poisoned`.
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{
    alert::engine::{Active, AlertState, Notification, Status},
    base::signal::Labels,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database: bad stored value: {0}")]
    Json(#[from] serde_json::Error),
}

pub struct Store {
    conn: Connection,
}

/// One alert of the history: labels as JSON, times as unix seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryRow {
    pub id: i64,
    pub name: String,
    pub labels: String,
    pub state: String,
    pub started: f64,
    pub resolved: Option<f64>,
    pub acknowledged: Option<f64>,
}

/// What is due in the outbox: rows to send, and the channels of rows that were moved aside
/// because their payload no longer reads (one entry per row).
#[derive(Debug, Default)]
pub struct Due {
    pub rows: Vec<OutboxRow>,
    pub poisoned: Vec<String>,
}

/// One notification waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub channel: String,
    pub notification: Notification,
    pub attempts: u32,
    pub created: f64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_state (
    rule TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    active_since REAL NOT NULL,
    value REAL NOT NULL,
    last_sent REAL,
    cleared_since REAL,
    PRIMARY KEY (rule, labels)
);
CREATE TABLE IF NOT EXISTS alert_history (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    resolved REAL,
    acknowledged REAL,
    value REAL NOT NULL,
    UNIQUE (name, labels, started)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    in_flight REAL,
    delivered REAL,
    expired REAL,
    last_error TEXT,
    alert TEXT,
    status TEXT
);
CREATE TABLE IF NOT EXISTS outbox_poisoned (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    moved REAL NOT NULL,
    error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_rules (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_attempt) WHERE delivered IS NULL AND expired IS NULL;
";

fn state_name(s: AlertState) -> &'static str {
    match s {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
    }
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("infersight.db");
        let open = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        conn.execute_batch(SCHEMA).map_err(open)?;
        migrate(&conn).map_err(open)?;
        Ok(Store { conn })
    }

    /// Replace the saved alert instances with `items`.
    pub fn save_alerts(&mut self, items: &[(String, Labels, Active)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM alert_state", [])?;
        for (rule, labels, a) in items {
            tx.execute(
                "INSERT INTO alert_state VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    rule,
                    serde_json::to_string(labels)?,
                    state_name(a.state),
                    a.active_since,
                    a.value,
                    a.last_sent,
                    a.cleared_since
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn load_alerts(&self) -> Result<Vec<(String, Labels, Active)>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT rule, labels, state, active_since, value, last_sent, cleared_since FROM alert_state",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, Option<f64>>(5)?,
                r.get::<_, Option<f64>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rule, labels, state, active_since, value, last_sent, cleared_since) = row?;
            out.push((
                rule,
                serde_json::from_str(&labels)?,
                Active {
                    state: if state == "firing" {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    },
                    active_since,
                    value,
                    last_sent,
                    cleared_since,
                },
            ));
        }
        Ok(out)
    }

    /// A firing notification opens a history row (once per alert start); a resolved one
    /// closes it.
    pub fn record_history(&mut self, n: &Notification) -> Result<(), StoreError> {
        let labels = serde_json::to_string(&n.labels)?;
        match n.status {
            Status::Firing => self.conn.execute(
                "INSERT INTO alert_history (name, labels, severity, state, started, value)
                 VALUES (?1, ?2, ?3, 'firing', ?4, ?5)
                 ON CONFLICT (name, labels, started) DO UPDATE SET value = excluded.value",
                params![n.rule, labels, n.severity.as_str(), n.starts_at, n.value],
            )?,
            Status::Resolved => self.conn.execute(
                "UPDATE alert_history SET state = 'resolved', resolved = ?4, value = ?5
                 WHERE name = ?1 AND labels = ?2 AND started = ?3",
                params![n.rule, labels, n.starts_at, n.ends_at, n.value],
            )?,
        };
        Ok(())
    }

    /// Alerts of rule `name` that started at `started` and are still open in the history:
    /// (full labels, severity, value).
    pub fn open_history(
        &self,
        name: &str,
        started: f64,
    ) -> Result<Vec<(Labels, String, f64)>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT labels, severity, value FROM alert_history
             WHERE name = ?1 AND started = ?2 AND resolved IS NULL",
        )?;
        let rows = st.query_map(params![name, started], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (labels, severity, value) = row?;
            out.push((serde_json::from_str(&labels)?, severity, value));
        }
        Ok(out)
    }

    /// The newest `limit` history rows.
    pub fn alert_history(&self, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, name, labels, state, started, resolved, acknowledged FROM alert_history ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit], |r| {
            Ok(HistoryRow {
                id: r.get(0)?,
                name: r.get(1)?,
                labels: r.get(2)?,
                state: r.get(3)?,
                started: r.get(4)?,
                resolved: r.get(5)?,
                acknowledged: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rules created through the API, as their JSON bodies.
    pub fn api_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT name, body FROM api_rules ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn save_api_rule(&mut self, name: &str, body: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO api_rules (name, body) VALUES (?1, ?2)",
            params![name, body],
        )?;
        Ok(())
    }

    pub fn delete_api_rule(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM api_rules WHERE name = ?1", params![name])?
            == 1)
    }

    /// Mark a history row acknowledged at `now`; false when there is no such row.
    pub fn acknowledge(&mut self, id: i64, now: f64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE alert_history SET acknowledged = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(n == 1)
    }

    /// Write a notification for `channel` before anything is sent. `key` makes it
    /// idempotent: the same key is stored once. Returns whether it was new.
    pub fn enqueue(
        &mut self,
        key: &str,
        channel: &str,
        n: &Notification,
        now: f64,
    ) -> Result<bool, StoreError> {
        insert(&self.conn, key, channel, n, now)
    }

    /// Write one notification for each (key, channel) in one transaction: all or none.
    pub fn enqueue_all(
        &mut self,
        items: &[(String, String)],
        n: &Notification,
        now: f64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for (key, channel) in items {
            insert(&tx, key, channel, n, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Undelivered rows whose next attempt is due, oldest first; a row waits while an
    /// older one of the same alert and channel is undelivered (a RESOLVED never overtakes
    /// its FIRING). Rows whose payload no longer reads are moved to `outbox_poisoned`.
    pub fn due(&mut self, now: f64, limit: u32) -> Result<Due, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, channel, payload, attempts, created FROM outbox o
             WHERE delivered IS NULL AND expired IS NULL AND in_flight IS NULL
               AND next_attempt <= ?1
               AND NOT EXISTS (SELECT 1 FROM outbox p
                   WHERE p.channel = o.channel AND p.alert = o.alert AND p.id < o.id
                     AND p.delivered IS NULL AND p.expired IS NULL)
             ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![now, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, f64>(4)?,
            ))
        })?;
        let mut out = Due::default();
        let mut bad = Vec::new();
        for row in rows {
            let (id, channel, payload, attempts, created) = row?;
            match serde_json::from_str(&payload) {
                Ok(notification) => out.rows.push(OutboxRow {
                    id,
                    channel,
                    notification,
                    attempts,
                    created,
                }),
                Err(e) => {
                    bad.push((id, e.to_string()));
                    out.poisoned.push(channel);
                }
            }
        }
        drop(st);
        if !bad.is_empty() {
            let tx = self.conn.transaction()?;
            for (id, error) in bad {
                tx.execute(
                    "INSERT INTO outbox_poisoned (id, key, channel, payload, created, moved, error)
                     SELECT id, key, channel, payload, created, ?2, ?3 FROM outbox WHERE id = ?1",
                    params![id, now, error],
                )?;
                tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            }
            tx.commit()?;
        }
        Ok(out)
    }

    /// On `channel`, a firing row followed by a newer row of the same alert says nothing
    /// the newer one does not (Alertmanager takes the latest state): it is not sent, so an
    /// old refresh never re-opens an alert after its resolve. Returns how many.
    pub fn supersede(&mut self, channel: &str, now: f64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE outbox SET expired = ?2, last_error = 'superseded by a newer message for the same alert'
             WHERE channel = ?1 AND status = 'firing' AND delivered IS NULL AND expired IS NULL
               AND in_flight IS NULL
               AND EXISTS (SELECT 1 FROM outbox n
                   WHERE n.channel = outbox.channel AND n.alert = outbox.alert AND n.id > outbox.id
                     AND n.delivered IS NULL AND n.expired IS NULL)",
            params![channel, now],
        )?)
    }

    /// Delete delivered and expired rows older than `before`; how many.
    pub fn prune(&mut self, before: f64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM outbox WHERE delivered < ?1 OR expired < ?1",
            [before],
        )?)
    }

    /// Mark rows as being sent now (a crash before `delivered` means a possible duplicate).
    pub fn start_attempt(&mut self, ids: &[i64], now: f64) -> Result<(), StoreError> {
        for id in ids {
            self.conn.execute(
                "UPDATE outbox SET in_flight = ?2, attempts = attempts + 1 WHERE id = ?1",
                params![id, now],
            )?;
        }
        Ok(())
    }

    pub fn delivered(&mut self, ids: &[i64], now: f64) -> Result<(), StoreError> {
        for id in ids {
            self.conn.execute(
                "UPDATE outbox SET delivered = ?2, in_flight = NULL WHERE id = ?1",
                params![id, now],
            )?;
        }
        Ok(())
    }

    pub fn retry(&mut self, ids: &[i64], next: f64, error: &str) -> Result<(), StoreError> {
        for id in ids {
            self.conn.execute(
                "UPDATE outbox SET next_attempt = ?2, last_error = ?3, in_flight = NULL WHERE id = ?1",
                params![id, next, error],
            )?;
        }
        Ok(())
    }

    pub fn expire(&mut self, ids: &[i64], now: f64) -> Result<(), StoreError> {
        for id in ids {
            self.conn.execute(
                "UPDATE outbox SET expired = ?2, in_flight = NULL WHERE id = ?1",
                params![id, now],
            )?;
        }
        Ok(())
    }

    /// Rows a previous run was sending when it stopped: sent again, maybe twice (the
    /// at-least-once edge). Clears the mark and returns how many.
    pub fn interrupted(&mut self) -> Result<u64, StoreError> {
        let n = self.conn.execute(
            "UPDATE outbox SET in_flight = NULL WHERE in_flight IS NOT NULL AND delivered IS NULL",
            [],
        )?;
        Ok(n as u64)
    }

    /// Channels that still have notifications to deliver.
    pub fn pending_channels(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT channel FROM outbox WHERE delivered IS NULL AND expired IS NULL",
        )?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = std::collections::BTreeSet::new();
        for row in rows {
            out.insert(row?);
        }
        Ok(out)
    }

    /// Notifications not yet delivered or expired.
    pub fn depth(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE delivered IS NULL AND expired IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0) as u64)
    }
}

fn insert(
    conn: &Connection,
    key: &str,
    channel: &str,
    n: &Notification,
    now: f64,
) -> Result<bool, StoreError> {
    let status = match n.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    };
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO outbox (key, channel, payload, created, next_attempt, alert, status)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
        params![
            key,
            channel,
            serde_json::to_string(n)?,
            now,
            serde_json::to_string(&n.labels)?,
            status
        ],
    )?;
    Ok(inserted == 1)
}

/// Columns added since the first release, on an outbox created before them (their rows
/// keep NULL: no ordering among them), and the index that the ordering uses.
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let cols: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('outbox')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for col in ["alert", "status"] {
        if !cols.iter().any(|c| c == col) {
            conn.execute_batch(&format!("ALTER TABLE outbox ADD COLUMN {col} TEXT"))?;
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (channel, alert, id)
         WHERE delivered IS NULL AND expired IS NULL;",
    )
}

#[cfg(test)]
mod tests;
