//! The agent's own services: Prometheus's `ALERTS` and `ALERTS_FOR_STATE`, rule health,
//! notification delivery, the push client, the history writer and the configuration.
use prometheus::proto::{MetricFamily, MetricType};

use crate::{
    alert::engine::{AlertState, RuleHealth},
    base::family::{series, single},
    snapshot::Snapshot,
};

pub(super) fn families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
    alert_families(snap, out);
    push_families(snap, out);
    history_families(snap, out);
    config_families(snap, out);
}

fn alert_families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
    let a = &snap.alerting;
    let state = |s: AlertState| match s {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
    };
    out.push(series(
        "ALERTS",
        "Active alerts (pending or firing), as Prometheus exports them.",
        MetricType::GAUGE,
        &a.alerts,
        |v| {
            let mut l: Vec<(String, String)> = v
                .labels
                .iter()
                .map(|(k, val)| (k.clone(), val.clone()))
                .collect();
            l.push(("alertstate".into(), state(v.state).to_string()));
            l
        },
        |_| Some(1.0),
    ));
    out.push(series(
        "ALERTS_FOR_STATE",
        "Unix time each active alert became active.",
        MetricType::GAUGE,
        &a.alerts,
        |v| {
            v.labels
                .iter()
                .map(|(k, val)| (k.clone(), val.clone()))
                .collect()
        },
        |v| Some(v.active_since),
    ));
    out.push(series(
        "infersight_alert_rule_nodata",
        "1 while a rule cannot be evaluated because a signal it reads has no data.",
        MetricType::GAUGE,
        &a.rules,
        |(r, _)| vec![("rule", r.clone())],
        |(_, h)| Some(f64::from(u8::from(*h == RuleHealth::Nodata))),
    ));
    let counts: Vec<(&str, &str, u64)> = a
        .notifications
        .counts
        .iter()
        .flat_map(|(c, m)| m.iter().map(move |(r, n)| (c.as_str(), *r, *n)))
        .collect();
    out.push(series(
        "infersight_notifications_total",
        "Notification deliveries by channel and result (delivered, failed attempt, expired, redelivered after a restart).",
        MetricType::COUNTER,
        &counts,
        |(c, r, _)| vec![("channel", c.to_string()), ("result", r.to_string())],
        |(_, _, n)| Some(*n as f64),
    ));
    if let Some(d) = a.notifications.outbox_depth {
        out.push(series(
            "infersight_notification_outbox_depth",
            "Notifications written and not yet delivered or expired.",
            MetricType::GAUGE,
            &[d],
            |_| Vec::<(&str, String)>::new(),
            |d| Some(*d as f64),
        ));
    }
}

/// The push client's families, when one is configured.
fn push_families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
    let Some(p) = &snap.push else { return };
    out.push(single(
        "infersight_push_connected",
        "Whether the push client is connected to its WebSocket URL.",
        MetricType::GAUGE,
        f64::from(u8::from(p.connected)),
    ));
    out.push(series(
        "infersight_push_messages_total",
        "Stream messages the push client sent, and dropped (buffer full or fell behind).",
        MetricType::COUNTER,
        &[("sent", p.sent), ("dropped", p.dropped)],
        |(r, _)| vec![("result", r.to_string())],
        |(_, n)| Some(*n as f64),
    ));
    out.push(single(
        "infersight_push_connects_total",
        "Successful connections of the push client (reconnects after the first).",
        MetricType::COUNTER,
        p.connects as f64,
    ));
}

/// Ticks the history did not keep, by why, when history is on.
fn history_families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
    let lost: Vec<(&str, u64)> = [
        ("queue_full", snap.history_dropped),
        ("write_failed", snap.history_failed),
    ]
    .into_iter()
    .filter_map(|(r, n)| Some((r, n?)))
    .collect();
    out.push(series(
        "infersight_history_dropped_ticks_total",
        "Ticks not kept in the history: the writer fell behind (queue_full) or the database refused them (write_failed, e.g. a full disk).",
        MetricType::COUNTER,
        &lost,
        |(r, _)| vec![("reason", r.to_string())],
        |(_, n)| Some(*n as f64),
    ));
}

/// The configuration reload state (as Prometheus exports its own) and what the limits
/// held back.
fn config_families(snap: &Snapshot, out: &mut Vec<MetricFamily>) {
    let c = &snap.config;
    out.push(single(
        "infersight_config_last_reload_successful",
        "Whether the last configuration reload succeeded (1) or was refused (0).",
        MetricType::GAUGE,
        if c.last_reload_successful { 1.0 } else { 0.0 },
    ));
    out.push(single(
        "infersight_config_last_reload_success_timestamp_seconds",
        "When the configuration in force was loaded (start or the last successful reload).",
        MetricType::GAUGE,
        c.last_reload_success_timestamp_seconds,
    ));
}
