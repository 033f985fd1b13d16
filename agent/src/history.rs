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

use crate::base::{signal::Labels, Health};

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
    #[error("{matched} series match; at most {limit} per answer")]
    TooManySeries { matched: usize, limit: usize },
    #[error("the query ran past its deadline")]
    TimedOut,
}

/// Bounds of one query: most series in the answer, and when SQLite stops it.
#[derive(Debug, Clone, Copy)]
pub struct QueryBounds {
    pub max_series: usize,
    pub deadline: Option<std::time::Instant>,
}

// Raw samples are stored as a TSDB stores them: each tick is one row holding every
// series' value (an append, one page per tick however many series), and once a minute
// those rows are repacked into one chunk row per series and minute, next to the minute
// average. Writing a row per series and tick dirtied one B-tree page per series per tick,
// which capped writes near 60k samples/s.
const SCHEMA: &str = "
DROP TABLE IF EXISTS points;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    metric TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (metric, labels)
);
CREATE TABLE IF NOT EXISTS ticks (t INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS ticks_t ON ticks (t);
CREATE TABLE IF NOT EXISTS chunks (
    series INTEGER NOT NULL,
    t0 INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (series, t0)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS points_1m (
    series INTEGER NOT NULL,
    t INTEGER NOT NULL,
    v REAL NOT NULL,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// A tick row: (series id u32, value f64) pairs, little-endian, sorted by id.
const TICK_ITEM: usize = 12;
/// A chunk row: (second within the minute u8, value f64) pairs, in time order.
const CHUNK_ITEM: usize = 9;

fn encode_tick(pairs: &[(u32, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * TICK_ITEM);
    for (id, v) in pairs {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// One (series id, value) item of a tick row (`c` is TICK_ITEM bytes long).
fn tick_item(c: &[u8]) -> (u32, f64) {
    let (id, v) = c.split_at(4);
    (
        u32::from_le_bytes(id.try_into().unwrap_or_default()),
        f64::from_le_bytes(v.try_into().unwrap_or_default()),
    )
}

fn tick_items(data: &[u8]) -> impl Iterator<Item = (u32, f64)> + '_ {
    data.chunks_exact(TICK_ITEM).map(tick_item)
}

/// The value of series `id` in a tick row (binary search: rows are sorted by id).
fn tick_value(data: &[u8], id: u32) -> Option<f64> {
    let n = data.len() / TICK_ITEM;
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (k, v) = tick_item(&data[mid * TICK_ITEM..(mid + 1) * TICK_ITEM]);
        match k.cmp(&id) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(v),
        }
    }
    None
}

fn encode_chunk(points: &[(u8, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(points.len() * CHUNK_ITEM);
    for (off, v) in points {
        out.push(*off);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn chunk_items(data: &[u8]) -> impl Iterator<Item = (u8, f64)> + '_ {
    data.chunks_exact(CHUNK_ITEM).map(|c| {
        (
            c[0],
            f64::from_le_bytes(c[1..].try_into().unwrap_or_default()),
        )
    })
}

/// Add `(offset, v)` to a minute's points in time order; a second already there keeps
/// the later value (ticks faster than 1 s).
fn put(points: &mut Vec<(u8, f64)>, off: u8, v: f64) {
    match points.binary_search_by_key(&off, |p| p.0) {
        Ok(i) => points[i].1 = v,
        Err(i) => points.insert(i, (off, v)),
    }
}

/// Average `points` (sorted by time) per `step`-second bucket aligned to multiples of
/// `step`.
fn buckets(points: &[(i64, f64)], step: i64) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = Vec::new();
    let mut n = 0.0;
    for &(t, v) in points {
        let b = t - t.rem_euclid(step);
        match out.last_mut() {
            Some((lb, sum)) if *lb == b => {
                *sum += v;
                n += 1.0;
            }
            _ => {
                if let Some((_, sum)) = out.last_mut() {
                    *sum /= n;
                }
                out.push((b, v));
                n = 1.0;
            }
        }
    }
    if let Some((_, sum)) = out.last_mut() {
        *sum /= n;
    }
    out
}

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
    // SQLite's page cache grows to its limit and keeps it: with 16 MiB the agent's RSS
    // crept up for hours. 2 MiB (SQLite's default) holds the pages each tick touches (the
    // end of `ticks`); the minute's repacking reads the rest from the OS's cache.
    conn.pragma_update(None, "cache_size", -2048)?;
    let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(ok),
        ));
    }
    conn.execute_batch(SCHEMA)?;
    // The storage format (2: tick rows and chunks). Also a write at open, so a database
    // this user may not write is found now, not on the first tick.
    conn.pragma_update(None, "user_version", 2)?;
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
                    crate::base::now_seconds() as u64
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
        let key = (metric, crate::base::signal::label_hash(labels));
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

    /// Write one tick's samples at time `t`: one row, one transaction.
    pub fn write(&mut self, t: i64, samples: &Samples) -> Result<(), HistoryError> {
        let mut pairs = Vec::with_capacity(samples.len());
        for (m, l, v) in samples {
            let id = u32::try_from(self.series_id(m, l)?).unwrap_or(u32::MAX);
            pairs.push((id, *v));
        }
        pairs.sort_by_key(|p| p.0);
        self.conn
            .prepare_cached("INSERT INTO ticks (t, data) VALUES (?1, ?2)")?
            .execute(params![t, encode_tick(&pairs)])?;
        Ok(())
    }

    fn minutes_done(&self) -> i64 {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'minutes_done'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0)
    }

    /// Repack the tick rows of every complete minute before `now` into per-series chunks
    /// and minute averages, then drop chunks and minute rows past their retention.
    pub fn maintain(&mut self, now: i64) -> Result<(), HistoryError> {
        let upto = now - now.rem_euclid(60);
        let tx = self.conn.transaction()?;
        let mut minutes: BTreeMap<(i64, i64), Vec<(u8, f64)>> = BTreeMap::new();
        {
            let mut st = tx.prepare("SELECT t, data FROM ticks WHERE t < ?1 ORDER BY t, rowid")?;
            let mut rows = st.query([upto])?;
            while let Some(r) = rows.next()? {
                let t: i64 = r.get(0)?;
                let data: Vec<u8> = r.get(1)?;
                let (t0, off) = (t - t.rem_euclid(60), t.rem_euclid(60) as u8);
                for (id, v) in tick_items(&data) {
                    put(minutes.entry((i64::from(id), t0)).or_default(), off, v);
                }
            }
        }
        if !minutes.is_empty() {
            let mut old = tx.prepare("SELECT data FROM chunks WHERE series = ?1 AND t0 = ?2")?;
            let mut chunk =
                tx.prepare("INSERT OR REPLACE INTO chunks (series, t0, data) VALUES (?1, ?2, ?3)")?;
            let mut avg =
                tx.prepare("INSERT OR REPLACE INTO points_1m (series, t, v) VALUES (?1, ?2, ?3)")?;
            for ((id, t0), mut points) in minutes {
                // A tick that came late for a minute already packed joins its chunk.
                let before: Option<Vec<u8>> = old
                    .query_row(params![id, t0], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                if let Some(before) = before {
                    let mut merged: Vec<(u8, f64)> = chunk_items(&before).collect();
                    for (off, v) in points {
                        put(&mut merged, off, v);
                    }
                    points = merged;
                }
                let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
                chunk.execute(params![id, t0, encode_chunk(&points)])?;
                avg.execute(params![id, t0, mean])?;
            }
        }
        tx.execute("DELETE FROM ticks WHERE t < ?1", [upto])?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('minutes_done', max(?1, coalesce((SELECT value FROM meta WHERE key = 'minutes_done'), 0)))",
            [upto],
        )?;
        // A chunk goes when its last second is past the raw retention.
        tx.execute(
            "DELETE FROM chunks WHERE t0 + 59 < ?1",
            [now - self.raw_retention],
        )?;
        tx.execute(
            "DELETE FROM points_1m WHERE t < ?1",
            [now - self.minute_retention],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The raw points of series `id` between `from` and `to`, in time order.
    fn raw_points(&self, id: i64, from: i64, to: i64) -> Result<Vec<(i64, f64)>, HistoryError> {
        let mut out = Vec::new();
        let mut st = self.conn.prepare_cached(
            "SELECT t0, data FROM chunks WHERE series = ?1 AND t0 > ?2 - 60 AND t0 <= ?3 ORDER BY t0",
        )?;
        let mut rows = st.query(params![id, from, to])?;
        while let Some(r) = rows.next()? {
            let t0: i64 = r.get(0)?;
            let data: Vec<u8> = r.get(1)?;
            out.extend(
                chunk_items(&data)
                    .map(|(off, v)| (t0 + i64::from(off), v))
                    .filter(|(t, _)| (from..=to).contains(t)),
            );
        }
        let key = u32::try_from(id).unwrap_or(u32::MAX);
        let mut st = self.conn.prepare_cached(
            "SELECT t, data FROM ticks WHERE t >= ?1 AND t <= ?2 ORDER BY t, rowid",
        )?;
        let mut rows = st.query(params![from, to])?;
        while let Some(r) = rows.next()? {
            let t: i64 = r.get(0)?;
            let data: Vec<u8> = r.get(1)?;
            if let Some(v) = tick_value(&data, key) {
                match out.last_mut() {
                    // Several ticks in one second: the later value, as in a chunk.
                    Some(last) if last.0 == t => last.1 = v,
                    _ => out.push((t, v)),
                }
            }
        }
        // Only a late tick for a packed minute can be out of order.
        if !out.is_sorted_by_key(|p| p.0) {
            out.sort_by_key(|p| p.0);
            out.dedup_by_key(|p| p.0);
        }
        Ok(out)
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
        self.run_query(metric, matchers, (from, to, step, now), usize::MAX)
    }

    /// `query` within `bounds`: more matching series than allowed is an error before any
    /// point is read; past the deadline SQLite stops the query (`TimedOut`). `span` is
    /// (from, to, step, now).
    pub fn query_bounded(
        &mut self,
        metric: &str,
        matchers: &BTreeMap<String, String>,
        span: (i64, i64, i64, i64),
        bounds: QueryBounds,
    ) -> Result<Vec<Series>, HistoryError> {
        if let Some(deadline) = bounds.deadline {
            // Checked every 10k virtual machine steps: microseconds.
            self.conn
                .progress_handler(10_000, Some(move || std::time::Instant::now() >= deadline))?;
        }
        let out = self.run_query(metric, matchers, span, bounds.max_series);
        if bounds.deadline.is_some() {
            self.conn.progress_handler(0, None::<fn() -> bool>)?;
        }
        out.map_err(|e| match e {
            HistoryError::Sql(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) =>
            {
                HistoryError::TimedOut
            }
            e => e,
        })
    }

    fn run_query(
        &self,
        metric: &str,
        matchers: &BTreeMap<String, String>,
        (from, to, step, now): (i64, i64, i64, i64),
        max_series: usize,
    ) -> Result<Vec<Series>, HistoryError> {
        let step = step.max(1);
        let done = self.minutes_done();
        // Whole-minute steps read the minute averages (60x fewer values) up to the last
        // packed minute, and raw points after it; finer steps read raw points while they
        // are kept.
        let minutes = step % 60 == 0 || from < now - self.raw_retention;
        let mut st = self
            .conn
            .prepare_cached("SELECT id, labels FROM series WHERE metric = ?1 ORDER BY id")?;
        let series: Vec<(i64, String)> = st
            .query_map([metric], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let series: Vec<(i64, BTreeMap<String, String>)> = series
            .into_iter()
            .map(|(id, l)| (id, serde_json::from_str(&l).unwrap_or_default()))
            .filter(|(_, l): &(i64, BTreeMap<String, String>)| {
                matchers.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .collect();
        if series.len() > max_series {
            return Err(HistoryError::TooManySeries {
                matched: series.len(),
                limit: max_series,
            });
        }
        let mut out = Vec::new();
        for (id, labels) in series {
            let points = if minutes {
                let mut q = self.conn.prepare_cached(
                    "SELECT t, v FROM points_1m WHERE series = ?1 AND t >= ?2 AND t <= ?3 AND t < ?4 ORDER BY t",
                )?;
                let mut p: Vec<(i64, f64)> = q
                    .query_map(params![id, from, to, done], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                p.extend(self.raw_points(id, from.max(done), to)?);
                p
            } else {
                self.raw_points(id, from, to)?
            };
            out.push(Series {
                labels,
                points: buckets(&points, step),
            });
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
    /// The health at open; `failing` overrides it while writes fail (a full disk).
    health: Health,
    failing: Arc<Mutex<Option<String>>>,
    /// Ticks that could not be written (the database refused them).
    pub failed: Arc<AtomicU64>,
}

/// Ticks that may wait for the writer before new ones are dropped.
const QUEUE: usize = 64;

impl Recorder {
    /// Open the database and start the writer thread; `Err` is the health to report.
    pub fn start(dir: &Path, raw: Duration, minute: Duration) -> Result<Recorder, Health> {
        // Without the right to write the state directory history is unavailable by
        // design (an unprivileged run), not broken.
        let health = |e: HistoryError| {
            let denied = match &e {
                HistoryError::Dir { source, .. } => matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ),
                // A database another user (root) created, opened by an unprivileged run.
                HistoryError::Open { source, .. } => matches!(
                    source.sqlite_error_code(),
                    Some(
                        rusqlite::ErrorCode::ReadOnly
                            | rusqlite::ErrorCode::CannotOpen
                            | rusqlite::ErrorCode::PermissionDenied
                    )
                ),
                HistoryError::Sql(_)
                | HistoryError::TooManySeries { .. }
                | HistoryError::TimedOut => false,
            };
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
        let failing: Arc<Mutex<Option<String>>> = Arc::default();
        let failed: Arc<AtomicU64> = Arc::default();
        let (f, n) = (failing.clone(), failed.clone());
        let spawned = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || writer_loop(writer, rx, &f, &n));
        if let Err(e) = spawned {
            return Err(Health::failed(format!("history writer thread: {e}")));
        }
        Ok(Recorder {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            dropped: Arc::default(),
            failing,
            failed,
            health: match note {
                Some(n) => Health::failed(n),
                None => Health::active(),
            },
        })
    }

    /// Failed while the last write failed (with why), else the health at open.
    pub fn health(&self) -> Health {
        match self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            Some(e) => Health::failed(format!("history writes failing: {e}")),
            None => self.health.clone(),
        }
    }

    /// Queue one tick; never blocks.
    pub fn record(&self, t: i64, samples: Samples) {
        if self.tx.try_send((t, samples)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn writer_loop(
    mut h: History,
    rx: mpsc::Receiver<(i64, Samples)>,
    failing: &Mutex<Option<String>>,
    failed: &AtomicU64,
) {
    let mut last_maintain = 0;
    while let Ok((t, samples)) = rx.recv() {
        let result = h.write(t, &samples);
        let mut f = failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            // Said once per episode, not once per tick.
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                if f.is_none() {
                    tracing::error!("history: {e}; ticks are not kept until writes succeed");
                }
                *f = Some(e.to_string());
            }
            Ok(()) => {
                if f.take().is_some() {
                    tracing::info!("history: writes succeed again");
                }
            }
        }
        drop(f);
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
