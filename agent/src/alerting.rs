//! Alerting in the running agent: rules loaded from the configured file, the engine's
//! state restored from and saved to the store, notifications handed to the notifier. A
//! firing notification counts as sent once the outbox holds it; a resolve the outbox could
//! not take is kept and handed again at the next tick. Removing or changing a rule
//! resolves its announced alerts.
use std::sync::{Arc, Mutex};

use crate::{
    alert::{
        engine::{Active, AlertState, AlertView, Engine, Notification, RuleHealth, Status},
        expr::Labels,
        rules,
    },
    base::{now_seconds, signal::SignalSet, Done, Health, Refusal, RefusalKind, Reply},
    config::Alerting as AlertingConfig,
    notify::{Notifier, NotifyStats, ALERTMANAGER_RESEND},
    store::Store,
};

pub struct Alerting {
    engine: Engine,
    /// Rules from the file: the API may not change them.
    file_rules: std::collections::HashSet<String>,
    channels: Vec<String>,
    notifier: Option<Notifier>,
    store: Option<Arc<Mutex<Store>>>,
    health: Health,
    last_refresh: f64,
    /// Resolves to hand to the notifier at the next evaluation: from rules removed or
    /// changed since, and those the outbox could not take.
    queued: Vec<Notification>,
}

/// A rule change asked through the API.
#[derive(Debug)]
pub enum RuleCommand {
    Create(serde_json::Value),
    Put(String, serde_json::Value),
    Delete(String),
}

/// What alerting adds to each Snapshot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AlertingView {
    pub alerts: Vec<AlertView>,
    /// The transitions of this tick (the stream sends them as alert events).
    pub events: Vec<Notification>,
    pub rules: Vec<(String, RuleHealth)>,
    pub notifications: NotifyStats,
}

impl Alerting {
    /// `None` when no rules file is configured.
    pub fn start(
        config: &AlertingConfig,
        state_dir: &std::path::Path,
        host: String,
        url: String,
    ) -> Option<Alerting> {
        let path = config.rules_file.as_ref()?;
        let mut problems = Vec::new();
        let loaded = match std::fs::read_to_string(path) {
            Ok(text) => rules::parse(path, &text, &config.channel_names()),
            Err(e) => rules::Loaded {
                rules: Vec::new(),
                errors: vec![format!("{}: cannot read rules: {e}", path.display())],
            },
        };
        for e in &loaded.errors {
            tracing::error!("{e}");
        }
        problems.extend(loaded.errors);
        tracing::info!(
            "alerting: {} rule(s) from {}",
            loaded.rules.len(),
            path.display()
        );
        let file_rules = loaded.rules.iter().map(|r| r.name.clone()).collect();
        let mut queued = Vec::new();
        let mut engine = Engine::new(loaded.rules, config.cooldown.as_secs_f64());
        let store = match Store::open(state_dir) {
            Ok(s) => Some(Arc::new(Mutex::new(s))),
            Err(e) => {
                let msg = format!("state store unavailable, notifications are only logged: {e}");
                tracing::error!("{msg}");
                problems.push(msg);
                None
            }
        };
        // Rules created through the API before, then the saved alert states.
        if let Some(s) = &store {
            let saved = s.lock().map(|s| s.api_rules());
            if let Ok(Ok(list)) = saved {
                for (name, body) in list {
                    let rule = serde_json::from_str(&body)
                        .map_err(|e| e.to_string())
                        .and_then(|v| rules::from_json(v, &config.channel_names()));
                    match rule {
                        Ok(r) if !engine.rules().iter().any(|x| x.name == r.name) => {
                            engine.upsert(r, now_seconds());
                        }
                        Ok(_) => {
                            problems.push(format!("API rule {name:?}: a file rule has that name"))
                        }
                        Err(e) => problems.push(format!("API rule {name:?}: {e}")),
                    }
                }
            }
            match s.lock().map(|s| s.load_alerts()) {
                Ok(Ok(list)) => {
                    for (rule, labels, a) in list {
                        if !engine.restore(&rule, labels.clone(), a.clone()) {
                            queued.extend(removed_while_down(s, &rule, &labels, &a));
                        }
                    }
                }
                Ok(Err(e)) => problems.push(format!("restoring alert states: {e}")),
                Err(_) => problems.push("restoring alert states: store lock poisoned".into()),
            }
        }
        let notifier = store
            .as_ref()
            .map(|s| Notifier::new(s.clone(), config.clone(), host, url));
        Some(Alerting {
            engine,
            file_rules,
            channels: config.channel_names(),
            notifier,
            store,
            health: if problems.is_empty() {
                Health::active()
            } else {
                Health::failed(problems.join("; "))
            },
            last_refresh: 0.0,
            queued,
        })
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Whether notifications are delivered (there is an outbox to send them from).
    pub fn notifies(&self) -> bool {
        self.notifier.is_some()
    }

    /// Apply a reloaded configuration: the rules file read again and the channels. The
    /// alerts of rules that stay are kept; on any problem nothing changes and the
    /// problems are returned.
    pub fn reload(&mut self, config: &AlertingConfig) -> Result<usize, Vec<String>> {
        let channels = config.channel_names();
        let loaded = match &config.rules_file {
            None => rules::Loaded::default(),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => rules::parse(path, &text, &channels),
                Err(e) => return Err(vec![format!("{}: cannot read rules: {e}", path.display())]),
            },
        };
        let mut errors = loaded.errors;
        let api_rules: Vec<String> = self
            .engine
            .rules()
            .iter()
            .map(|r| r.name.clone())
            .filter(|n| !self.file_rules.contains(n))
            .collect();
        for r in &loaded.rules {
            if api_rules.contains(&r.name) {
                errors.push(format!(
                    "rule {:?}: also a rule created through the API; delete that one first",
                    r.name
                ));
            }
        }
        // A rule created through the API that routes to a channel the new file removed.
        for r in self
            .engine
            .rules()
            .iter()
            .filter(|r| api_rules.contains(&r.name))
        {
            if let Some(c) = r.channels.iter().find(|c| !channels.contains(c)) {
                errors.push(format!(
                    "rule {:?} sends to channel {c:?}, which the new configuration removes",
                    r.name
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let new: std::collections::HashSet<String> =
            loaded.rules.iter().map(|r| r.name.clone()).collect();
        let now = now_seconds();
        for gone in self.file_rules.difference(&new) {
            let resolves = self.engine.remove(gone, now, "the rule was removed");
            self.queued.extend(resolves.unwrap_or_default());
        }
        let n = loaded.rules.len();
        for r in loaded.rules {
            let resolves = self.engine.replace(r, now);
            self.queued.extend(resolves);
        }
        self.file_rules = new;
        self.channels = channels;
        if let Some(n) = &self.notifier {
            n.set_config(config.clone());
        }
        self.health = Health::active();
        Ok(n)
    }

    /// Create, replace or delete a rule through the API.
    pub fn command(&mut self, cmd: RuleCommand) -> Reply {
        use serde_json::json;
        let name = match &cmd {
            RuleCommand::Put(name, _) | RuleCommand::Delete(name) => name.clone(),
            RuleCommand::Create(v) => v
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string(),
        };
        if self.file_rules.contains(&name) {
            return Err(Refusal::new(
                RefusalKind::Conflict,
                format!("rule {name:?} is defined in the rules file; change it there"),
            ));
        }
        let exists = self.engine.rules().iter().any(|r| r.name == name);
        let body = match cmd {
            RuleCommand::Delete(_) => {
                let Some(resolves) =
                    self.engine
                        .remove(&name, now_seconds(), "the rule was removed")
                else {
                    return Err(Refusal::new(
                        RefusalKind::NotFound,
                        format!("no rule {name:?}"),
                    ));
                };
                self.queued.extend(resolves);
                if let Some(s) = &self.store {
                    if let Ok(mut s) = s.lock() {
                        let _ = s.delete_api_rule(&name);
                    }
                }
                return Ok((Done::Changed, json!({ "deleted": name })));
            }
            RuleCommand::Create(_) if exists => {
                return Err(Refusal::new(
                    RefusalKind::Conflict,
                    format!("rule {name:?} exists; PUT /api/v1/rules/{name} replaces it"),
                ))
            }
            RuleCommand::Create(v) => v,
            RuleCommand::Put(path_name, v) => {
                if v.get("name").and_then(|n| n.as_str()) != Some(path_name.as_str()) {
                    return Err(Refusal::new(
                        RefusalKind::Invalid,
                        format!("name: must be {path_name:?}, as in the path"),
                    ));
                }
                v
            }
        };
        let rule = rules::from_json(body.clone(), &self.channels)
            .map_err(|e| Refusal::new(RefusalKind::Invalid, e))?;
        if let Some(s) = &self.store {
            s.lock()
                .map_err(|_| "store lock poisoned".to_string())
                .and_then(|mut s| {
                    s.save_api_rule(&name, &body.to_string())
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| Refusal::new(RefusalKind::Failed, format!("rule not saved: {e}")))?;
        }
        let resolves = self.engine.upsert(rule, now_seconds());
        self.queued.extend(resolves);
        let done = if exists { Done::Changed } else { Done::Created };
        Ok((done, json!({ "rule": name })))
    }

    /// The state store (alert history for the API).
    pub fn store(&self) -> Option<Arc<Mutex<Store>>> {
        self.store.clone()
    }

    /// The dispatcher task (needs a tokio runtime).
    pub fn spawn_dispatcher(&self) {
        if let Some(n) = &self.notifier {
            tokio::spawn(n.clone().run());
        }
    }

    /// Evaluate the rules on `snap`, hand out notifications, save changed states. The
    /// tick's events are the notifications handed out.
    pub fn evaluate(&mut self, signals: &SignalSet) -> AlertingView {
        let now = now_seconds();
        let mut notes = std::mem::take(&mut self.queued);
        notes.extend(self.engine.evaluate_unsent(signals, now));
        let notes = match &self.notifier {
            Some(n) => {
                let written = n.submit(&notes, now);
                let (ok, failed): (Vec<_>, Vec<_>) = notes
                    .into_iter()
                    .zip(written)
                    .partition(|(_, written)| *written);
                let ok: Vec<Notification> = ok.into_iter().map(|(n, _)| n).collect();
                self.engine.mark_sent(&ok, now);
                // A firing one not written is due again by itself; a resolve is kept.
                self.queued = failed
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| n.status == Status::Resolved)
                    .collect();
                if now - self.last_refresh >= ALERTMANAGER_RESEND {
                    self.last_refresh = now;
                    n.refresh_alertmanager(&self.engine.firing(), now);
                }
                ok
            }
            None => {
                for n in &notes {
                    tracing::warn!(
                        "alert {:?} {} (not delivered: no state store)",
                        n.status,
                        n.rule
                    );
                }
                self.engine.mark_sent(&notes, now);
                notes
            }
        };
        // Saved on transitions (a new, promoted, announced or ended instance); values
        // alone changing is not worth a write per tick.
        if self.engine.take_dirty() {
            if let Some(s) = &self.store {
                let instances = self.engine.instances();
                let r = s
                    .lock()
                    .map_err(|_| "store lock poisoned".to_string())
                    .and_then(|mut s| s.save_alerts(&instances).map_err(|e| e.to_string()));
                if let Err(e) = r {
                    tracing::error!("saving alert states: {e}");
                }
            }
        }
        AlertingView {
            events: notes,
            alerts: self.engine.alerts(),
            rules: self
                .engine
                .health()
                .map(|(name, h)| (name.to_string(), h))
                .collect(),
            notifications: self
                .notifier
                .as_ref()
                .map(Notifier::stats)
                .unwrap_or_default(),
        }
    }
}

/// The resolve of an announced alert whose rule was removed while the agent was stopped,
/// from its open row in the alert history (which holds its labels and severity); routed by
/// severity, as the rule's own channels are gone with it.
fn removed_while_down(
    store: &Mutex<Store>,
    rule: &str,
    labels: &Labels,
    a: &Active,
) -> Vec<Notification> {
    if a.state != AlertState::Firing || a.last_sent.is_none() {
        return Vec::new();
    }
    let Ok(rows) = store.lock().map(|s| s.open_history(rule, a.active_since)) else {
        return Vec::new();
    };
    let rows = rows.unwrap_or_else(|e| {
        tracing::error!("alert history: {e}");
        Vec::new()
    });
    rows.into_iter()
        .filter(|(full, _, _)| labels.iter().all(|(k, v)| full.get(k) == Some(v)))
        .filter_map(|(full, severity, value)| {
            Some(Notification {
                rule: rule.to_string(),
                status: Status::Resolved,
                severity: serde_json::from_value(serde_json::Value::String(severity)).ok()?,
                labels: full,
                annotations: Default::default(),
                value,
                starts_at: a.active_since,
                ends_at: Some(now_seconds()),
                channels: Vec::new(),
                reason: Some("the rule was removed".into()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
