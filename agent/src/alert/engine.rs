//! The alert state machine. Each (rule, label set) is an instance: inactive → pending (while
//! `for` runs) → firing → resolved, with `keep_firing_for`, hysteresis (`resolve_expr`),
//! `repeat_interval` and a cooldown after a resolve. A rule whose signals have no data
//! keeps its instances as they are and says so; it never resolves them silently. Time is
//! passed in (unix seconds), so tests drive the clock.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{
    expr::{eval, Instance, Labels, Signals},
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
}

/// An active alert as `/metrics` (ALERTS) and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub rule: String,
    pub labels: Labels,
    pub state: AlertState,
    pub active_since: f64,
    pub value: f64,
}

/// A rule's last evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleHealth {
    Ok,
    /// A signal it reads has no data (its collector is not working).
    Nodata,
}

pub struct Engine {
    rules: Vec<Rule>,
    active: HashMap<String, BTreeMap<Labels, Active>>,
    resolved_at: HashMap<(String, Labels), f64>,
    health: BTreeMap<String, RuleHealth>,
    cooldown: f64,
}

impl Engine {
    pub fn new(rules: Vec<Rule>, cooldown_seconds: f64) -> Engine {
        Engine {
            rules,
            active: HashMap::new(),
            resolved_at: HashMap::new(),
            health: BTreeMap::new(),
            cooldown: cooldown_seconds,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Restore instances saved before a restart (rules that no longer exist are dropped).
    pub fn restore(&mut self, rule: &str, labels: Labels, a: Active) {
        if self.rules.iter().any(|r| r.name == rule) {
            self.active
                .entry(rule.to_string())
                .or_default()
                .insert(labels, a);
        }
    }

    /// Every active instance, for saving.
    pub fn instances(&self) -> Vec<(String, Labels, Active)> {
        let mut out = Vec::new();
        for (rule, m) in &self.active {
            for (l, a) in m {
                out.push((rule.clone(), l.clone(), a.clone()));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    pub fn health(&self) -> &BTreeMap<String, RuleHealth> {
        &self.health
    }

    pub fn alerts(&self) -> Vec<AlertView> {
        let mut out = Vec::new();
        for r in &self.rules {
            for (l, a) in self.active.get(&r.name).into_iter().flatten() {
                out.push(AlertView {
                    rule: r.name.clone(),
                    labels: full_labels(r, l),
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
        for r in &self.rules {
            for (l, a) in self.active.get(&r.name).into_iter().flatten() {
                if a.state == AlertState::Firing {
                    out.push(notification(r, l, a, Status::Firing, None));
                }
            }
        }
        out
    }

    /// Evaluate every rule at `now`; returns the notifications due.
    pub fn evaluate(&mut self, signals: &dyn Signals, now: f64) -> Vec<Notification> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let Some(matches) = eval(&rule.expr, signals) else {
                self.health.insert(rule.name.clone(), RuleHealth::Nodata);
                continue;
            };
            self.health.insert(rule.name.clone(), RuleHealth::Ok);
            let resolve: Option<Option<Vec<Instance>>> =
                rule.resolve.as_ref().map(|e| eval(e, signals));
            let insts = self.active.entry(rule.name.clone()).or_default();
            for m in &matches {
                let a = insts.entry(m.labels.clone()).or_insert(Active {
                    state: AlertState::Pending,
                    active_since: now,
                    value: m.value,
                    last_sent: None,
                    cleared_since: None,
                });
                a.value = m.value;
                a.cleared_since = None;
            }
            let mut gone = Vec::new();
            for (labels, a) in insts.iter_mut() {
                if matches.iter().any(|m| &m.labels == labels) {
                    continue;
                }
                // Hysteresis: an active instance ends only once resolve_expr holds for it
                // (no data for resolve_expr: it stays).
                if let Some(res) = &resolve {
                    let resolved = res
                        .as_ref()
                        .is_some_and(|r| r.iter().any(|i| &i.labels == labels));
                    if !resolved {
                        continue;
                    }
                }
                match a.state {
                    AlertState::Pending => gone.push((labels.clone(), false)),
                    AlertState::Firing => {
                        let since = *a.cleared_since.get_or_insert(now);
                        if now - since >= rule.keep_firing_for.as_secs_f64() {
                            gone.push((labels.clone(), a.last_sent.is_some()));
                        }
                    }
                }
            }
            for (labels, notified) in gone {
                let Some(a) = insts.remove(&labels) else {
                    continue;
                };
                if notified {
                    // The cooldown runs from the last resolve people were told about.
                    self.resolved_at
                        .insert((rule.name.clone(), labels.clone()), now);
                    out.push(notification(rule, &labels, &a, Status::Resolved, Some(now)));
                }
            }
            for (labels, a) in insts.iter_mut() {
                if a.state == AlertState::Pending && now - a.active_since >= rule.for_.as_secs_f64()
                {
                    a.state = AlertState::Firing;
                }
                if a.state != AlertState::Firing {
                    continue;
                }
                let due = match a.last_sent {
                    // A re-fire soon after a resolve waits out the cooldown (no flood).
                    None => self
                        .resolved_at
                        .get(&(rule.name.clone(), labels.clone()))
                        .is_none_or(|t| now - t >= self.cooldown),
                    Some(t) => now - t >= rule.repeat_interval.as_secs_f64(),
                };
                if due {
                    a.last_sent = Some(now);
                    out.push(notification(rule, labels, a, Status::Firing, None));
                }
            }
        }
        out
    }
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
