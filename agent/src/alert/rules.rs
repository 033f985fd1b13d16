//! Rules from TOML. Each rule is checked on its own: a bad rule is reported with the file,
//! its line and name, the field and what is wrong, and the other rules still load.
use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

use super::expr::{self, Expr};
use crate::readings::known_signal;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Info,
            Severity::Warning,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

pub const DEFAULT_REPEAT: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub expr: Expr,
    pub source: String,
    pub resolve: Option<Expr>,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Empty: the severity's default channels.
    pub channels: Vec<String>,
    pub repeat_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    name: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    resolve_expr: Option<String>,
    severity: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    channels: Vec<String>,
    repeat_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<toml::Value>>,
}

/// The rules that loaded, and one line per problem.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rules: Vec<Rule>,
    pub errors: Vec<String>,
}

/// Parse `text` (read from `path`); `channels` are the configured channel names.
pub fn parse(path: &Path, text: &str, channels: &[String]) -> Loaded {
    let mut out = Loaded::default();
    let file: RulesFile = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            out.errors.push(format!(
                "{}: {}",
                path.display(),
                e.to_string()
                    .split('\n')
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && *l != "|")
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            return out;
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (i, spanned) in file.rule.into_iter().enumerate() {
        let line = text[..spanned.span().start.min(text.len())]
            .matches('\n')
            .count()
            + 1;
        let value = spanned.into_inner();
        let name = value
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{}", i + 1));
        let at = format!("{}: line {line}: rule {name:?}", path.display());
        match build(value, channels) {
            Ok(rule) if !seen.insert(rule.name.clone()) => out
                .errors
                .push(format!("{at}: name: used by an earlier rule")),
            Ok(rule) => out.rules.push(rule),
            Err(e) => out.errors.push(format!("{at}: {e}")),
        }
    }
    out
}

fn duration(field: &str, v: Option<&str>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| format!("{field}: invalid duration {s:?}: {e} (e.g. \"5m\")")),
    }
}

fn expression(field: &str, src: &str) -> Result<Expr, String> {
    let e = expr::parse(src).map_err(|e| format!("{field}: {e}"))?;
    if let Some((name, column)) = e.signals().into_iter().find(|(n, _)| !known_signal(n)) {
        return Err(format!(
            "{field}: column {column}: unknown signal {name:?} (the README lists them)"
        ));
    }
    Ok(e)
}

/// A rule given as JSON (the API), with the same fields and checks as in the file.
pub fn from_json(value: serde_json::Value, channels: &[String]) -> Result<Rule, String> {
    let value: toml::Value =
        serde_json::from_value(value).map_err(|e| format!("not a rule: {e}"))?;
    build(value, channels)
}

fn build(value: toml::Value, channels: &[String]) -> Result<Rule, String> {
    let e: RuleEntry = value
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    if e.name.trim().is_empty() {
        return Err("name: must not be empty".into());
    }
    let severity = Severity::parse(&e.severity).ok_or_else(|| {
        format!(
            "severity: {:?} is not one of info, warning, medium, high, critical",
            e.severity
        )
    })?;
    let valid = |k: &str| {
        k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with("__")
    };
    if let Some(k) = e.labels.keys().find(|k| !valid(k)) {
        return Err(format!(
            "labels: {k:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if let Some(c) = e.channels.iter().find(|c| !channels.contains(c)) {
        return Err(format!(
            "channels: {c:?} is not a configured channel (configured: {})",
            channels.join(", ")
        ));
    }
    Ok(Rule {
        expr: expression("expr", &e.expr)?,
        resolve: e
            .resolve_expr
            .as_deref()
            .map(|s| expression("resolve_expr", s))
            .transpose()?,
        source: e.expr,
        for_: duration("for", e.for_.as_deref(), Duration::ZERO)?,
        keep_firing_for: duration(
            "keep_firing_for",
            e.keep_firing_for.as_deref(),
            Duration::ZERO,
        )?,
        repeat_interval: duration(
            "repeat_interval",
            e.repeat_interval.as_deref(),
            DEFAULT_REPEAT,
        )?,
        name: e.name,
        severity,
        labels: e.labels,
        annotations: e.annotations,
        channels: e.channels,
    })
}

#[cfg(test)]
mod tests;
