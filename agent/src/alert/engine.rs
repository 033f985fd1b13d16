//! The alert state machine. Each (rule, label set) is an instance: inactive → pending (while
//! `for` runs) → firing → resolved, with `keep_firing_for`, hysteresis (`resolve_expr`, for
//! firing instances only),
//! `repeat_interval` and a cooldown after a resolve. A rule whose signals have no data
//! keeps its instances as they are and says so; it never resolves them silently. Time is
//! passed in (unix seconds), so tests drive the clock. Each evaluation first records the
//! samples that the rules' range functions read (`expr::History`).
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{
    expr::{eval, History, Labels, Signals},
    rules::{Rule, Severity},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Firing,
}

/// One active instance of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Active {
    pub state: AlertState,
    pub active_since: f64,
    pub value: f64,
    /// When a firing notification was last handed out (none yet: not notified).
    pub last_sent: Option<f64>,
    /// Since when the expression no longer holds (keep_firing_for runs).
    pub cleared_since: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// What a channel is asked to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub rule: String,
    pub status: Status,
    pub severity: Severity,
    /// alertname, severity, the rule's labels and the instance's.
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub starts_at: f64,
    pub ends_at: Option<f64>,
    /// The rule's channels (empty: the severity's defaults).
    pub channels: Vec<String>,
    /// Why a resolve happened other than by its expression (the rule was removed or
    /// changed); absent in rows written by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An active alert as `/metrics` (ALERTS) and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub rule: String,
    pub labels: Labels,
    pub state: AlertState,
    pub active_since: f64,
    pub value: f64,
    /// The rule's annotations, filled in (the dashboard shows `summary`).
    pub annotations: BTreeMap<String, String>,
}

/// A rule's last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleHealth {
    Ok,
    /// A signal it reads has no data (its collector is not working).
    Nodata,
}

/// Instances are identified by the 64-bit hash of their labels, as Prometheus identifies
/// series by fingerprint (a collision between two label sets of one rule is ~n²/2⁶⁵).
type Slot = (std::sync::Arc<Labels>, Active);

pub struct Engine {
    rules: Vec<Rule>,
    /// Per rule (same index): its active instances.
    active: Vec<BTreeMap<u64, Slot>>,
    /// Per rule: when each instance's last announced resolve happened (cooldown).
    resolved_at: Vec<HashMap<u64, f64>>,
    /// Whether a state worth saving changed since `take_dirty`.
    dirty: bool,
    /// Per rule: its last evaluation.
    health: Vec<RuleHealth>,
    cooldown: f64,
    /// The samples of the signals that range functions read, over their longest windows.
    history: History,
}

impl Engine {
    pub fn new(rules: Vec<Rule>, cooldown_seconds: f64) -> Engine {
        let mut e = Engine {
            active: vec![BTreeMap::new(); rules.len()],
            resolved_at: vec![HashMap::new(); rules.len()],
            health: vec![RuleHealth::Ok; rules.len()],
            rules,
            cooldown: cooldown_seconds,
            dirty: false,
            history: History::default(),
        };
        e.retrack();
        e
    }

    /// Keep samples for exactly the signals the rules' range functions read.
    fn retrack(&mut self) {
        self.history.track(self.rules.iter().flat_map(|r| {
            let mut v = r.expr.ranges();
            v.extend(r.resolve.iter().flat_map(|e| e.ranges()));
            v
        }));
    }

    /// Whether instances appeared, changed state or went away since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Add a rule, or replace the rule of the same name: its alerts start over, and those
    /// that were announced are resolved (returned).
    pub fn upsert(&mut self, rule: Rule, now: f64) -> Vec<Notification> {
        let out = self
            .remove(&rule.name, now, "the rule was replaced")
            .unwrap_or_default();
        self.rules.push(rule);
        self.active.push(BTreeMap::new());
        self.resolved_at.push(HashMap::new());
        self.health.push(RuleHealth::Ok);
        self.dirty = true;
        self.retrack();
        out
    }

    /// Replace the rule of the same name keeping its alerts (a reloaded file: the next
    /// evaluation judges them by the new definition), or add it. When the change alters
    /// what its notifications carry (labels, severity, channels), a resolve under the old
    /// definition could never match: the alerts are resolved (returned) and start over.
    pub fn replace(&mut self, rule: Rule, now: f64) -> Vec<Notification> {
        match self.rules.iter().position(|r| r.name == rule.name) {
            Some(i) => {
                let old = &self.rules[i];
                if old.labels != rule.labels
                    || old.severity != rule.severity
                    || old.channels != rule.channels
                {
                    let out = resolve_all(old, &mut self.active[i], now, "the rule was changed");
                    self.resolved_at[i].clear();
                    self.rules[i] = rule;
                    self.dirty = true;
                    self.retrack();
                    return out;
                }
                self.rules[i] = rule;
                self.dirty = true;
                self.retrack();
                Vec::new()
            }
            None => self.upsert(rule, now),
        }
    }

    /// Remove a rule and its alerts; the resolves of those that were announced, saying
    /// `why`. `None` when there is no such rule.
    pub fn remove(&mut self, name: &str, now: f64, why: &str) -> Option<Vec<Notification>> {
        let i = self.rules.iter().position(|r| r.name == name)?;
        let rule = self.rules.remove(i);
        let mut active = self.active.remove(i);
        self.resolved_at.remove(i);
        self.health.remove(i);
        self.dirty = true;
        self.retrack();
        Some(resolve_all(&rule, &mut active, now, why))
    }

    /// Restore an instance saved before a restart; false when its rule no longer exists.
    pub fn restore(&mut self, rule: &str, labels: Labels, a: Active) -> bool {
        let Some(i) = self.rules.iter().position(|r| r.name == rule) else {
            return false;
        };
        self.active[i].insert(super::expr::label_hash(&labels), (labels.into(), a));
        true
    }

    /// Every active instance, for saving, in a stable order.
    pub fn instances(&self) -> Vec<(String, Labels, Active)> {
        let mut out = Vec::new();
        for (r, m) in self.rules.iter().zip(&self.active) {
            for (l, a) in m.values() {
                out.push((r.name.clone(), Labels::clone(l), a.clone()));
            }
        }
        out
    }

    /// Each rule's name and last evaluation.
    pub fn health(&self) -> impl Iterator<Item = (&str, RuleHealth)> {
        self.rules
            .iter()
            .map(|r| r.name.as_str())
            .zip(self.health.iter().copied())
    }

    pub fn alerts(&self) -> Vec<AlertView> {
        let mut out = Vec::new();
        for (r, m) in self.rules.iter().zip(&self.active) {
            for (l, a) in m.values() {
                let labels = full_labels(r, l);
                out.push(AlertView {
                    rule: r.name.clone(),
                    annotations: r
                        .annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), render(v, &labels, a.value)))
                        .collect(),
                    labels,
                    state: a.state,
                    active_since: a.active_since,
                    value: a.value,
                });
            }
        }
        out
    }

    /// A firing notification for every firing instance (Alertmanager's periodic resend).
    pub fn firing(&self) -> Vec<Notification> {
        let mut out = Vec::new();
        for (r, m) in self.rules.iter().zip(&self.active) {
            for (l, a) in m.values() {
                if a.state == AlertState::Firing {
                    out.push(notification(r, l, a, Status::Firing, None));
                }
            }
        }
        out
    }

    /// Evaluate every rule at `now`; returns the notifications due, counting the firing
    /// ones as sent.
    pub fn evaluate(&mut self, signals: &dyn Signals, now: f64) -> Vec<Notification> {
        let out = self.evaluate_unsent(signals, now);
        self.mark_sent(&out, now);
        out
    }

    /// Count these firing notifications as handed out at `now` (written to the outbox).
    /// One that is not is due again at the next evaluation.
    pub fn mark_sent(&mut self, notes: &[Notification], now: f64) {
        for n in notes.iter().filter(|n| n.status == Status::Firing) {
            let Some(i) = self.rules.iter().position(|r| r.name == n.rule) else {
                continue;
            };
            let rule = &self.rules[i];
            for (l, a) in self.active[i].values_mut() {
                if a.state == AlertState::Firing
                    && a.active_since == n.starts_at
                    && full_labels(rule, l) == n.labels
                {
                    a.last_sent = Some(now);
                    self.dirty = true;
                }
            }
        }
    }

    /// Evaluate every rule at `now`; returns the notifications due. Firing ones are not
    /// counted as sent until `mark_sent` says so.
    pub fn evaluate_unsent(&mut self, signals: &dyn Signals, now: f64) -> Vec<Notification> {
        let mut out = Vec::new();
        self.history.record(signals, now);
        let history = &self.history;
        for (i, rule) in self.rules.iter().enumerate() {
            let Some(matches) = eval(&rule.expr, signals, history) else {
                self.health[i] = RuleHealth::Nodata;
                continue;
            };
            self.health[i] = RuleHealth::Ok;
            let insts = &mut self.active[i];
            let resolved_at = &mut self.resolved_at[i];
            let mut matched: Vec<u64> = matches.iter().map(|m| m.id).collect();
            matched.sort_unstable();
            // Hysteresis: a firing instance ends only once resolve_expr holds for it (no
            // data for resolve_expr: it stays). A pending one ends as soon as the expression
            // stops holding, as in Prometheus.
            let resolve: Option<Vec<u64>> = rule.resolve.as_ref().map(|e| {
                let mut ids: Vec<u64> = eval(e, signals, history)
                    .unwrap_or_default()
                    .iter()
                    .map(|i| i.id)
                    .collect();
                ids.sort_unstable();
                ids
            });
            for m in &matches {
                match insts.get_mut(&m.id) {
                    Some((_, a)) => {
                        a.value = m.value;
                        a.cleared_since = None;
                    }
                    None => {
                        self.dirty = true;
                        insts.insert(
                            m.id,
                            (
                                m.labels.clone(),
                                Active {
                                    state: AlertState::Pending,
                                    active_since: now,
                                    value: m.value,
                                    last_sent: None,
                                    cleared_since: None,
                                },
                            ),
                        );
                    }
                }
            }
            let mut gone = Vec::new();
            for (id, (_, a)) in insts.iter_mut() {
                let held = a.state == AlertState::Firing
                    && resolve
                        .as_ref()
                        .is_some_and(|r| r.binary_search(id).is_err());
                if held || matched.binary_search(id).is_ok() {
                    continue;
                }
                match a.state {
                    AlertState::Pending => gone.push((*id, false)),
                    AlertState::Firing => {
                        let since = *a.cleared_since.get_or_insert(now);
                        if now - since >= rule.keep_firing_for.as_secs_f64() {
                            gone.push((*id, a.last_sent.is_some()));
                        }
                    }
                }
            }
            for (id, notified) in gone {
                let Some((labels, a)) = insts.remove(&id) else {
                    continue;
                };
                self.dirty = true;
                if notified {
                    // The cooldown runs from the last resolve people were told about.
                    resolved_at.insert(id, now);
                    out.push(notification(rule, &labels, &a, Status::Resolved, Some(now)));
                }
            }
            for (id, (labels, a)) in insts.iter_mut() {
                if a.state == AlertState::Pending && now - a.active_since >= rule.for_.as_secs_f64()
                {
                    a.state = AlertState::Firing;
                    self.dirty = true;
                }
                if a.state != AlertState::Firing {
                    continue;
                }
                let due = match a.last_sent {
                    // A re-fire soon after a resolve waits out the cooldown (no flood).
                    None => resolved_at.get(id).is_none_or(|t| now - t >= self.cooldown),
                    Some(t) => now - t >= rule.repeat_interval.as_secs_f64(),
                };
                if due {
                    out.push(notification(rule, labels, a, Status::Firing, None));
                }
            }
        }
        out
    }
}

/// The resolves of a rule's announced instances, which are all dropped.
fn resolve_all(
    rule: &Rule,
    active: &mut BTreeMap<u64, Slot>,
    now: f64,
    why: &str,
) -> Vec<Notification> {
    std::mem::take(active)
        .into_values()
        .filter(|(_, a)| a.state == AlertState::Firing && a.last_sent.is_some())
        .map(|(l, a)| {
            let mut n = notification(rule, &l, &a, Status::Resolved, Some(now));
            n.reason = Some(why.to_string());
            n
        })
        .collect()
}

fn full_labels(rule: &Rule, instance: &Labels) -> Labels {
    let mut l = instance.clone();
    l.extend(rule.labels.clone());
    l.insert("alertname".into(), rule.name.clone());
    l.insert("severity".into(), rule.severity.as_str().into());
    l
}

fn notification(
    rule: &Rule,
    labels: &Labels,
    a: &Active,
    status: Status,
    ends_at: Option<f64>,
) -> Notification {
    let labels = full_labels(rule, labels);
    Notification {
        rule: rule.name.clone(),
        status,
        severity: rule.severity,
        annotations: rule
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), render(v, &labels, a.value)))
            .collect(),
        labels,
        value: a.value,
        starts_at: a.active_since,
        ends_at,
        channels: rule.channels.clone(),
        reason: None,
    }
}

/// A value as people read it: no trailing zeros, at most 3 decimals.
pub fn format_value(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `{{ $value }}` and `{{ $labels.NAME }}` in an annotation (an unknown label is empty).
pub fn render(template: &str, labels: &Labels, value: f64) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = rest[start + 2..start + end].trim();
        if inner == "$value" {
            out.push_str(&format_value(value));
        } else if let Some(name) = inner.strip_prefix("$labels.") {
            out.push_str(labels.get(name).map(String::as_str).unwrap_or(""));
        } else {
            out.push_str(&rest[start..start + end + 2]);
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
