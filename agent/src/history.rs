//! History in SQLite (`history.db` in the state directory): every alert signal of every
//! tick, kept raw for `raw_retention`, then as 1-minute averages for `minute_retention`.
//! Written by its own thread, one transaction per tick, so a slow disk never stalls a
//! tick; a full queue drops the tick and counts it. A corrupt file is moved aside and a
//! new one started; an unwritable directory turns history off, reported in `/health`.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::{alert::expr::Labels, snapshot::Health};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
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
    #[error("history database: {0}")]
    Sql(#[from] rusqlite::Error),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (metric, labels)
);
CREATE TABLE IF NOT EXISTS points (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    v REAL NOT NULL,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS points_1m (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    v REAL NOT NULL,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// One tick's samples: (metric, labels, value).
pub type Samples = Vec<(&'static str, Labels, f64)>;

/// The database side: write, downsample, expire, query. Times are unix seconds.
pub struct History {
    conn: Connection,
    /// (metric, label hash) → series id: no encoding per sample once a series is known.
    series: HashMap<(&'static str, u64), i64>,
    pub raw_retention: i64,
    pub minute_retention: i64,
}

/// One series of a query answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

fn open_conn(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    // The writer thread and API readers share the file.
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Each tick appends to every series' B-tree range: keep those leaf pages cached
    // (16 MiB; SQLite's default is 2 MiB).
    conn.pragma_update(None, "cache_size", -16384)?;
    let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(ok),
        ));
    }
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

impl History {
    /// Open `dir/history.db`. A file that is not a sound database is renamed to
    /// `history.db.corrupt-<unix time>` and a new one is created; the note says so.
    pub fn open(
        dir: &Path,
        raw_retention: Duration,
        minute_retention: Duration,
    ) -> Result<(History, Option<String>), HistoryError> {
        std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("history.db");
        let mut note = None;
        let conn = match open_conn(&path) {
            Ok(c) => c,
            Err(e) if path.exists() && is_corrupt(&e) => {
                let aside = dir.join(format!(
                    "history.db.corrupt-{}",
                    crate::notify::now_seconds() as u64
                ));
                std::fs::rename(&path, &aside).map_err(|source| HistoryError::Dir {
                    path: aside.clone(),
                    source,
                })?;
                for ext in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("history.db{ext}")));
                }
                note = Some(format!(
                    "{} was not a sound database ({e}); moved to {} and started anew",
                    path.display(),
                    aside.display()
                ));
                open_conn(&path).map_err(|source| HistoryError::Open {
                    path: path.clone(),
                    source,
                })?
            }
            Err(source) => return Err(HistoryError::Open { path, source }),
        };
        Ok((
            History {
                conn,
                series: HashMap::new(),
                raw_retention: raw_retention.as_secs() as i64,
                minute_retention: minute_retention.as_secs() as i64,
            },
            note,
        ))
    }

    fn series_id(&mut self, metric: &'static str, labels: &Labels) -> Result<i64, HistoryError> {
        let key = (metric, crate::alert::expr::label_hash(labels));
        if let Some(id) = self.series.get(&key) {
            return Ok(*id);
        }
        let l = serde_json::to_string(labels).unwrap_or_default();
        self.conn.execute(
            "INSERT OR IGNORE INTO series (metric, labels) VALUES (?1, ?2)",
            params![metric, l],
        )?;
        let id: i64 = self.conn.query_row(
            "SELECT id FROM series WHERE metric = ?1 AND labels = ?2",
            params![metric, l],
            |r| r.get(0),
        )?;
        self.series.insert(key, id);
        Ok(id)
    }

    /// Write one tick's samples at time `t` in one transaction.
    pub fn write(&mut self, t: i64, samples: &Samples) -> Result<(), HistoryError> {
        let mut ids = Vec::with_capacity(samples.len());
        for (m, l, _) in samples {
            ids.push(self.series_id(m, l)?);
        }
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO points (series, t, v) VALUES (?1, ?2, ?3)",
            )?;
            for (id, (_, _, v)) in ids.iter().zip(samples) {
                st.execute(params![id, t, v])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Average the raw points of every complete minute before `now` not yet averaged,
    /// then drop raw points and minute rows past their retention.
    pub fn maintain(&mut self, now: i64) -> Result<(), HistoryError> {
        let done: i64 = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'minutes_done'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        let upto = now - now.rem_euclid(60);
        if upto > done {
            let tx = self.conn.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO points_1m (series, t, v)
                 SELECT series, t - (t % 60), avg(v) FROM points
                 WHERE t >= ?1 AND t < ?2 GROUP BY series, t - (t % 60)",
                params![done, upto],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('minutes_done', ?1)",
                params![upto],
            )?;
            tx.commit()?;
        }
        self.conn.execute(
            "DELETE FROM points WHERE t < ?1",
            params![now - self.raw_retention],
        )?;
        self.conn.execute(
            "DELETE FROM points_1m WHERE t < ?1",
            params![now - self.minute_retention],
        )?;
        Ok(())
    }

    /// Series of `metric` whose labels include `matchers`, between `from` and `to`,
    /// averaged per `step` seconds (buckets aligned to multiples of `step`).
    pub fn query(
        &self,
        metric: &str,
        matchers: &BTreeMap<String, String>,
        from: i64,
        to: i64,
        step: i64,
        now: i64,
    ) -> Result<Vec<Series>, HistoryError> {
        let step = step.max(1);
        let done: i64 = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'minutes_done'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        // Whole-minute steps read the minute averages (60× fewer rows) up to the last
        // averaged minute, and raw points after it; finer steps read raw points while
        // they are kept.
        let sql = if step % 60 == 0 || from < now - self.raw_retention {
            "SELECT t - (t % ?4) AS b, avg(v) FROM (
                 SELECT t, v FROM points_1m WHERE series = ?1 AND t >= ?2 AND t <= ?3 AND t < ?5
                 UNION ALL
                 SELECT t, v FROM points WHERE series = ?1 AND t >= max(?2, ?5) AND t <= ?3)
             GROUP BY b ORDER BY b"
        } else {
            "SELECT t - (t % ?4) AS b, avg(v) FROM points
             WHERE series = ?1 AND t >= ?2 AND t <= ?3 AND ?5 = ?5 GROUP BY b ORDER BY b"
        };
        let mut st = self
            .conn
            .prepare_cached("SELECT id, labels FROM series WHERE metric = ?1 ORDER BY id")?;
        let series: Vec<(i64, String)> = st
            .query_map([metric], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (id, labels) in series {
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&labels).unwrap_or_default();
            if !matchers.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            let mut q = self.conn.prepare_cached(sql)?;
            let points = q
                .query_map(params![id, from, to, step, done], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            out.push(Series { labels, points });
        }
        Ok(out)
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// The agent's handle: a queue to the writer thread, the reader side for queries, and the
/// health to report.
pub struct Recorder {
    tx: mpsc::SyncSender<(i64, Samples)>,
    pub reader: Arc<Mutex<History>>,
    pub dropped: Arc<AtomicU64>,
    pub health: Health,
}

/// Ticks that may wait for the writer before new ones are dropped.
const QUEUE: usize = 64;

impl Recorder {
    /// Open the database and start the writer thread; `Err` is the health to report.
    pub fn start(dir: &Path, raw: Duration, minute: Duration) -> Result<Recorder, Health> {
        // Without the right to write the state directory history is unavailable by
        // design (an unprivileged run), not broken.
        let health = |e: HistoryError| {
            let denied = matches!(&e, HistoryError::Dir { source, .. }
                if matches!(source.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem));
            if denied {
                Health::unsupported(format!("history off: {e}"))
            } else {
                Health::failed(format!("history off: {e}"))
            }
        };
        let (writer, note) = History::open(dir, raw, minute).map_err(health)?;
        let (reader, _) = History::open(dir, raw, minute).map_err(health)?;
        if let Some(n) = &note {
            tracing::error!("{n}");
        }
        let (tx, rx) = mpsc::sync_channel::<(i64, Samples)>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || writer_loop(writer, rx));
        if let Err(e) = spawned {
            return Err(Health::failed(format!("history writer thread: {e}")));
        }
        Ok(Recorder {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            dropped: Arc::default(),
            health: match note {
                Some(n) => Health::failed(n),
                None => Health::active(),
            },
        })
    }

    /// Queue one tick; never blocks.
    pub fn record(&self, t: i64, samples: Samples) {
        if self.tx.try_send((t, samples)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn writer_loop(mut h: History, rx: mpsc::Receiver<(i64, Samples)>) {
    let mut last_maintain = 0;
    while let Ok((t, samples)) = rx.recv() {
        if let Err(e) = h.write(t, &samples) {
            tracing::error!("history: {e}");
        }
        // Downsampling and retention once a minute, on this thread.
        if t - last_maintain >= 60 {
            last_maintain = t;
            if let Err(e) = h.maintain(t) {
                tracing::error!("history maintenance: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
