//! What each channel receives for a group of notifications (one message per channel per
//! dispatch): Alertmanager's webhook v4 payload, a Slack message, an email, Alertmanager
//! v2 API alerts.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::alert::{
    engine::{format_value, Notification, Status},
    rules::Severity,
};

/// RFC 3339 of unix seconds (Alertmanager's zero time for "none").
pub fn rfc3339(t: Option<f64>) -> String {
    match t {
        Some(t) if t > 0.0 => humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t),
        )
        .to_string(),
        _ => "0001-01-01T00:00:00Z".into(),
    }
}

/// A stable fingerprint of a label set (FNV-1a 64 over `name=value` pairs, as hex).
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn common<'a>(
    notes: &'a [Notification],
    field: impl Fn(&'a Notification) -> &'a BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let Some(first) = notes.first() else {
        return BTreeMap::new();
    };
    field(first)
        .iter()
        .filter(|(k, v)| notes.iter().all(|n| field(n).get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `[FIRING:2] HighCpu, LowDisk host-1` (resolved-only groups say RESOLVED).
pub fn title(notes: &[Notification], host: &str) -> String {
    let firing = notes.iter().filter(|n| n.status == Status::Firing).count();
    let (word, n) = if firing > 0 {
        ("FIRING", firing)
    } else {
        ("RESOLVED", notes.len())
    };
    let mut names: Vec<&str> = notes.iter().map(|n| n.rule.as_str()).collect();
    names.dedup();
    format!("[{word}:{n}] {} {host}", names.join(", "))
}

fn status_word(n: &Notification) -> &'static str {
    match n.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

/// The annotations sent: the rule's, plus `resolve_reason` when a resolve came from the
/// rule being removed or changed.
fn annotations(n: &Notification) -> BTreeMap<String, String> {
    let mut a = n.annotations.clone();
    if let Some(r) = &n.reason {
        a.insert("resolve_reason".into(), r.clone());
    }
    a
}

fn alert_json(n: &Notification, url: &str) -> Value {
    json!({
        "status": status_word(n),
        "labels": n.labels,
        "annotations": annotations(n),
        "startsAt": rfc3339(Some(n.starts_at)),
        "endsAt": rfc3339(n.ends_at),
        "generatorURL": url,
        "fingerprint": fingerprint(&n.labels),
    })
}

/// Alertmanager's webhook payload, version 4.
pub fn webhook(notes: &[Notification], receiver: &str, url: &str) -> Value {
    let firing = notes.iter().any(|n| n.status == Status::Firing);
    let common_labels = common(notes, |n| &n.labels);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{}", serde_json::to_string(&common_labels).unwrap_or_default()),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": common_labels,
        "commonAnnotations": common(notes, |n| &n.annotations),
        "externalURL": url,
        "alerts": notes.iter().map(|n| alert_json(n, url)).collect::<Vec<_>>(),
    })
}

fn colour(notes: &[Notification]) -> &'static str {
    match notes
        .iter()
        .filter(|n| n.status == Status::Firing)
        .map(|n| n.severity)
        .max()
    {
        None => "#2eb886",
        Some(Severity::Critical) => "#d00000",
        Some(Severity::High) => "#ff6a00",
        Some(Severity::Medium | Severity::Warning) => "#f2c744",
        Some(Severity::Info) => "#439fe0",
    }
}

fn line(n: &Notification) -> String {
    let summary = n
        .annotations
        .get("summary")
        .cloned()
        .unwrap_or_else(|| n.rule.clone());
    let labels: Vec<String> = n
        .labels
        .iter()
        .filter(|(k, _)| *k != "alertname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let reason = n
        .reason
        .as_deref()
        .map(|r| format!(" — resolved because {r}"))
        .unwrap_or_default();
    format!(
        "{} {summary} (value {}; {}){reason}",
        if n.status == Status::Firing {
            "🔥"
        } else {
            "✅"
        },
        format_value(n.value),
        labels.join(", ")
    )
}

/// A Slack incoming-webhook message: one attachment coloured by the worst severity. Text
/// is escaped as Slack asks (`&`, `<`, `>`), so a label value cannot become a link or a
/// mention.
pub fn slack(notes: &[Notification], host: &str, url: &str) -> Value {
    let title = slack_escape(&title(notes, host));
    let text: Vec<String> = notes.iter().map(|n| slack_escape(&line(n))).collect();
    json!({
        "text": title,
        "attachments": [{
            "color": colour(notes),
            "title": title,
            "title_link": url,
            "text": text.join("\n"),
            "footer": slack_escape(&format!("infersight on {host}")),
        }],
    })
}

/// Slack's control characters in message text (api.slack.com, "Escaping text").
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Plain-text and HTML bodies of an email.
pub fn email(notes: &[Notification], host: &str, url: &str) -> (String, String) {
    let mut text = format!("{}\n\n", title(notes, host));
    let mut html = format!(
        "<h3>{}</h3><table border=\"1\" cellpadding=\"4\"><tr><th>status</th><th>alert</th><th>summary</th><th>value</th><th>labels</th><th>since</th></tr>",
        escape(&title(notes, host))
    );
    for n in notes {
        text.push_str(&line(n));
        text.push('\n');
        if let Some(d) = n.annotations.get("description") {
            text.push_str(&format!("    {d}\n"));
        }
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            status_word(n),
            escape(&n.rule),
            escape(&format!(
                "{}{}",
                n.annotations
                    .get("summary")
                    .map(String::as_str)
                    .unwrap_or(""),
                n.reason
                    .as_deref()
                    .map(|r| format!(" (resolved because {r})"))
                    .unwrap_or_default()
            )),
            format_value(n.value),
            escape(&labels.join(", ")),
            rfc3339(Some(n.starts_at)),
        ));
    }
    text.push_str(&format!("\nDashboard: {url}\n"));
    html.push_str(&format!(
        "</table><p><a href=\"{}\">Dashboard</a></p>",
        escape(url)
    ));
    (text, html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Alertmanager API v2 `POST /api/v2/alerts` body. `ends_at` of a firing alert is when
/// Alertmanager should consider it resolved unless it hears again.
/// Alertmanager's `/api/v2/alerts` body. Each alert carries `instance` (this host, unless
/// the rule set one), so the same rule firing on many hosts stays many alerts.
pub fn alertmanager(notes: &[Notification], url: &str, firing_ends_at: f64, host: &str) -> Value {
    Value::Array(
        notes
            .iter()
            .map(|n| {
                let mut labels = n.labels.clone();
                labels
                    .entry("instance".to_string())
                    .or_insert_with(|| host.to_string());
                json!({
                    "labels": labels,
                    "annotations": annotations(n),
                    "startsAt": rfc3339(Some(n.starts_at)),
                    "endsAt": rfc3339(Some(n.ends_at.unwrap_or(firing_ends_at))),
                    "generatorURL": url,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
