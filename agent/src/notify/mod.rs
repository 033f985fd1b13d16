//! Notifications: routed to channels, written to the SQLite outbox before anything is
//! sent, delivered with exponential backoff and jitter until delivered or expired. Alerts
//! of the same dispatch go out as one message per channel; one alert's messages go out in
//! order per channel. A dispatcher task starts one delivery task per channel, so a slow or
//! hanging receiver delays only its own channel. Delivered and expired rows are deleted
//! after `OUTBOX_RETENTION`; a row that no longer reads is moved aside and counted.
pub mod format;
pub mod send;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::Notify;

use crate::base::now_seconds;
use crate::{
    alert::engine::{Notification, Status},
    config::Alerting,
    store::{OutboxRow, Store},
};

/// First retry after this; doubles per attempt up to `MAX_BACKOFF`, ±50 % jitter.
const BASE_BACKOFF: f64 = 1.0;
const MAX_BACKOFF: f64 = 300.0;
/// How often firing alerts are sent to Alertmanager again, and for how long each sending
/// keeps them firing there (as Prometheus does: a silent agent's alerts resolve).
pub const ALERTMANAGER_RESEND: f64 = 60.0;
const ALERTMANAGER_VALIDITY: f64 = 4.0 * ALERTMANAGER_RESEND;
/// Delivered and expired outbox rows are kept this long (to look into), then deleted;
/// checked at most once per `PRUNE_EVERY`.
pub const OUTBOX_RETENTION: f64 = 24.0 * 3600.0;
const PRUNE_EVERY: f64 = 3600.0;

/// Delivery counts by (channel, result) and the outbox depth, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NotifyStats {
    pub counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub outbox_depth: Option<u64>,
    /// Channels whose latest attempt failed, with its error; cleared by a delivery, or
    /// once the channel has nothing left to deliver (its rows expired, say after the
    /// channel was removed by a reload).
    pub failing: BTreeMap<String, String>,
}

impl NotifyStats {
    /// Failed while a channel's latest attempt failed; it names each such channel.
    pub fn health(&self) -> crate::base::Health {
        if self.failing.is_empty() {
            return crate::base::Health::active();
        }
        let failing: Vec<String> = self
            .failing
            .iter()
            .map(|(c, e)| format!("{c}: {e}"))
            .collect();
        crate::base::Health::failed(format!(
            "delivery failing, retrying with backoff: {}",
            failing.join("; ")
        ))
    }

    fn add(&mut self, channel: &str, result: &'static str, n: u64) {
        *self
            .counts
            .entry(channel.to_string())
            .or_default()
            .entry(result)
            .or_default() += n;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
pub struct Notifier {
    store: Arc<Mutex<Store>>,
    /// Swapped whole on a reload; readers take the current one.
    config: Arc<std::sync::RwLock<Arc<Alerting>>>,
    stats: Arc<Mutex<NotifyStats>>,
    wake: Arc<Notify>,
    /// Channels with a delivery in flight: their new rows wait for it (keeps per-channel
    /// order and batching).
    busy: Arc<Mutex<BTreeSet<String>>>,
    http: Arc<send::Http>,
    host: String,
    url: String,
    /// When delivered and expired rows were last pruned.
    pruned: Arc<Mutex<f64>>,
}

impl Notifier {
    pub fn new(store: Arc<Mutex<Store>>, config: Alerting, host: String, url: String) -> Notifier {
        let n = Notifier {
            store,
            config: Arc::new(std::sync::RwLock::new(Arc::new(config))),
            stats: Arc::default(),
            wake: Arc::default(),
            busy: Arc::default(),
            http: Arc::new(send::Http::new()),
            host,
            url,
            pruned: Arc::default(),
        };
        // Rows a crashed run was sending are sent again: the counted at-least-once edge.
        match lock(&n.store).interrupted() {
            Ok(0) => {}
            Ok(k) => {
                tracing::warn!(
                    "{k} notification(s) were being sent when the agent stopped; sending again"
                );
                lock(&n.stats).add("all", "redelivered", k);
            }
            Err(e) => tracing::error!("outbox: {e}"),
        }
        n
    }

    pub fn stats(&self) -> NotifyStats {
        let mut s = lock(&self.stats).clone();
        s.outbox_depth = lock(&self.store).depth().ok();
        s
    }

    fn config(&self) -> Arc<Alerting> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Channels and routing from a reloaded configuration; rows already in the outbox
    /// keep their channel.
    pub fn set_config(&self, config: Alerting) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }

    /// The channels a notification goes to.
    fn route(&self, n: &Notification) -> Vec<String> {
        if !n.channels.is_empty() {
            return n.channels.clone();
        }
        let c = self.config();
        c.severity_channels
            .get(n.severity.as_str())
            .unwrap_or(&c.default_channels)
            .clone()
    }

    /// Record history and write each notification to the outbox for each of its
    /// channels (one transaction per notification); then wake the dispatcher. Returns,
    /// per notification, whether it was written: one that was not (a full disk) is to be
    /// submitted again.
    pub fn submit(&self, notes: &[Notification], now: f64) -> Vec<bool> {
        if notes.is_empty() {
            return Vec::new();
        }
        let mut store = lock(&self.store);
        let mut written = Vec::with_capacity(notes.len());
        for n in notes {
            if let Err(e) = store.record_history(n) {
                tracing::error!("alert history: {e}");
            }
            let labels = serde_json::to_string(&n.labels).unwrap_or_default();
            let at = match n.status {
                Status::Firing => now,
                Status::Resolved => n.ends_at.unwrap_or(now),
            };
            let items: Vec<(String, String)> = self
                .route(n)
                .into_iter()
                .map(|ch| {
                    let key = format!(
                        "{ch}|{}|{labels}|{:?}|{}|{at}",
                        n.rule, n.status, n.starts_at
                    );
                    (key, ch)
                })
                .collect();
            let r = store.enqueue_all(&items, n, now);
            if let Err(e) = &r {
                tracing::error!(
                    "outbox: cannot store the {:?} notification of {}, trying again next tick: {e}",
                    n.status,
                    n.rule
                );
            }
            written.push(r.is_ok());
        }
        drop(store);
        self.wake.notify_one();
        written
    }

    /// Send firing alerts routed to Alertmanager again (call every ALERTMANAGER_RESEND).
    pub fn refresh_alertmanager(&self, firing: &[Notification], now: f64) {
        if self.config().alertmanager_url.is_none() {
            return;
        }
        let slot = (now / ALERTMANAGER_RESEND).floor();
        let mut store = lock(&self.store);
        for n in firing {
            if !self.route(n).iter().any(|c| c == "alertmanager") {
                continue;
            }
            let key = format!(
                "alertmanager|refresh|{}|{slot}",
                format::fingerprint(&n.labels)
            );
            if let Err(e) = store.enqueue(&key, "alertmanager", n, now) {
                tracing::error!("outbox: {e}");
            }
        }
        drop(store);
        self.wake.notify_one();
    }

    /// Deliver due rows forever.
    pub async fn run(self) {
        loop {
            self.dispatch_once();
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One pass over the outbox: prune, expire what is too old, then start one delivery
    /// task per channel that has due rows and none in flight.
    pub fn dispatch_once(&self) {
        let now = now_seconds();
        self.prune(now);
        if self.config().alertmanager_url.is_some() {
            if let Err(e) = lock(&self.store).supersede("alertmanager", now) {
                tracing::error!("outbox: {e}");
            }
        }
        let due = match lock(&self.store).due(now, 500) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("outbox: {e}");
                return;
            }
        };
        for channel in &due.poisoned {
            tracing::error!(
                "outbox: a notification to {channel} no longer reads (written by another version?); moved to outbox_poisoned"
            );
            lock(&self.stats).add(channel, "poisoned", 1);
        }
        let due = due.rows;
        let max_age = self.config().max_age.as_secs_f64();
        let mut groups: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
        for row in due {
            if now - row.created > max_age {
                let r = lock(&self.store).expire(&[row.id], now);
                if let Err(e) = r {
                    tracing::error!("outbox: {e}");
                }
                tracing::error!(
                    "notification to {} expired undelivered: {}",
                    row.channel,
                    row.notification.rule
                );
                lock(&self.stats).add(&row.channel, "expired", 1);
                continue;
            }
            groups.entry(row.channel.clone()).or_default().push(row);
        }
        // Only while something is failing: no query per pass in the usual case.
        if !lock(&self.stats).failing.is_empty() {
            match lock(&self.store).pending_channels() {
                Ok(pending) => lock(&self.stats).failing.retain(|c, _| pending.contains(c)),
                Err(e) => tracing::error!("outbox: {e}"),
            }
        }
        for (channel, rows) in groups {
            if !lock(&self.busy).insert(channel.clone()) {
                continue;
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            if let Err(e) = lock(&self.store).start_attempt(&ids, now) {
                tracing::error!("outbox: {e}");
                lock(&self.busy).remove(&channel);
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.attempt(&channel, rows, now).await;
                lock(&this.busy).remove(&channel);
                // Rows that arrived meanwhile go out now, not at the next timer pass.
                this.wake.notify_one();
            });
        }
    }

    /// Delete delivered and expired rows past the retention, at most once per PRUNE_EVERY.
    fn prune(&self, now: f64) {
        {
            let mut last = lock(&self.pruned);
            if now - *last < PRUNE_EVERY {
                return;
            }
            *last = now;
        }
        match lock(&self.store).prune(now - OUTBOX_RETENTION) {
            Ok(0) => {}
            Ok(n) => tracing::debug!("outbox: pruned {n} delivered or expired row(s)"),
            Err(e) => tracing::error!("outbox: pruning: {e}"),
        }
    }

    /// Send one channel's batch and record the outcome.
    async fn attempt(&self, channel: &str, rows: Vec<OutboxRow>, now: f64) {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let notes: Vec<Notification> = rows.iter().map(|r| r.notification.clone()).collect();
        let result = self.deliver(channel, &notes, now).await;
        let mut store = lock(&self.store);
        let mut stats = lock(&self.stats);
        match result {
            Ok(()) => {
                if let Err(e) = store.delivered(&ids, now_seconds()) {
                    tracing::error!("outbox: {e}");
                }
                stats.add(channel, "delivered", ids.len() as u64);
                stats.failing.remove(channel);
            }
            Err(e) => {
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
                let backoff = (BASE_BACKOFF * 2f64.powi(attempts.min(20) as i32)).min(MAX_BACKOFF)
                    * (0.5 + fastrand::f64());
                tracing::warn!(
                    "{channel}: delivery failed (attempt {}), retrying in {backoff:.1} s: {e}",
                    attempts + 1
                );
                // From now: a hanging receiver's attempt may have taken the whole timeout.
                if let Err(e) = store.retry(&ids, now_seconds() + backoff, &e) {
                    tracing::error!("outbox: {e}");
                }
                stats.add(channel, "failed", ids.len() as u64);
                stats.failing.insert(channel.to_string(), e);
            }
        }
    }

    async fn deliver(&self, channel: &str, notes: &[Notification], now: f64) -> Result<(), String> {
        let c = self.config();
        match channel {
            "log" => {
                for n in notes {
                    tracing::warn!(
                        "alert {:?} {}: {} (value {}){}",
                        n.status,
                        n.rule,
                        n.annotations
                            .get("summary")
                            .map(String::as_str)
                            .unwrap_or(""),
                        crate::alert::engine::format_value(n.value),
                        n.reason
                            .as_deref()
                            .map(|r| format!(": resolved because {r}"))
                            .unwrap_or_default()
                    );
                }
                Ok(())
            }
            "slack" => match &c.slack_url {
                Some(url) => {
                    self.http
                        .post_json(url, &format::slack(notes, &self.host, &self.url))
                        .await
                }
                None => Err("slack is not configured".into()),
            },
            "webhook" => match &c.webhook_url {
                Some(url) => {
                    self.http
                        .post_json(url, &format::webhook(notes, "webhook", &self.url))
                        .await
                }
                None => Err("webhook is not configured".into()),
            },
            "alertmanager" => match &c.alertmanager_url {
                Some(base) => {
                    let url = alertmanager_api(base);
                    let body = format::alertmanager(
                        notes,
                        &self.url,
                        now + ALERTMANAGER_VALIDITY,
                        &self.host,
                    );
                    self.http.post_json(&url, &body).await
                }
                None => Err("alertmanager is not configured".into()),
            },
            "email" => match &c.email {
                Some(smtp) => {
                    let (text, html) = format::email(notes, &self.host, &self.url);
                    smtp.send(&format::title(notes, &self.host), text, html)
                        .await
                }
                None => Err("email is not configured".into()),
            },
            other => Err(format!("unknown channel {other:?}")),
        }
    }
}

/// Alertmanager's `/api/v2/alerts` under the configured base URL (which may have a path
/// prefix, userinfo or a query of its own).
fn alertmanager_api(base: &str) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            let path = format!("{}/api/v2/alerts", u.path().trim_end_matches('/'));
            u.set_path(&path);
            u.to_string()
        }
        // Sent as written: the error then says the URL is invalid.
        Err(_) => base.to_string(),
    }
}

#[cfg(test)]
mod tests;
