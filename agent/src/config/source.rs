//! Where a configuration value came from, for error messages: the file and line of a key
//! (from the TOML document's spans), or the environment variable that set it. Also the
//! `INFERSIGHT_<SECTION>_<KEY>` environment overrides themselves.
use std::{collections::BTreeMap, path::Path};

use super::ConfigError;

/// Sections that environment variables may set, longest first so that
/// `INFERSIGHT_CHANNELS_SLACK_…` finds `channels.slack` before `channels`.
const SECTIONS: &[&str] = &[
    "channels.alertmanager",
    "channels.webhook",
    "channels.email",
    "channels.slack",
    "alerting",
    "targets",
    "history",
    "engines",
    "energy",
    "agent",
    "http",
    "host",
    "push",
    "gpu",
    "api",
];

/// `INFERSIGHT_*` variables that are not configuration keys.
const NOT_KEYS: &[&str] = &[
    "INFERSIGHT_LOG",
    "INFERSIGHT_REQUIRE_BPF",
    "INFERSIGHT_SLACK_WEBHOOK_URL",
    "INFERSIGHT_SMTP_PASSWORD",
];

/// The file's text and path, and which dotted keys the environment set (and by which
/// variable).
pub struct Source<'a> {
    pub path: Option<&'a Path>,
    pub text: &'a str,
    pub env: BTreeMap<String, String>,
}

impl Source<'_> {
    /// `FILE: line N: KEY`, `environment INFERSIGHT_…: KEY`, or the key alone.
    pub fn at(&self, key: &str) -> String {
        if let Some(var) = self.env.get(key) {
            return format!("environment {var}: {key}");
        }
        match self.path {
            Some(p) => match line_of(self.text, key) {
                Some(line) => format!("{}: line {line}: {key}", p.display()),
                None => format!("{}: {key}", p.display()),
            },
            None => key.to_string(),
        }
    }
}

/// The 1-based line of dotted `key` (`a.b`, `targets.pid[1].pid`) in TOML `text`.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        let (k, item) = table.get_key_value(name)?;
        span = k.span().or(item.span()).or(span);
        let item = match (index, item) {
            (Some(n), toml_edit::Item::ArrayOfTables(a)) => {
                let t = a.get(n)?;
                span = t.span().or(span);
                if i + 1 == parts.len() {
                    break;
                }
                table = t;
                continue;
            }
            (_, item) => item,
        };
        if i + 1 == parts.len() {
            break;
        }
        match item {
            toml_edit::Item::Table(t) => table = t,
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => table = t,
            _ => break,
        }
    }
    let start = span?.start.min(text.len());
    Some(text[..start].matches('\n').count() + 1)
}

/// Apply `INFERSIGHT_<SECTION>_<KEY>=value` variables to the parsed file; the dotted keys
/// they set, with the variable's name. A value is read as TOML when it is one (numbers,
/// booleans, arrays), else as a string.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut set = BTreeMap::new();
    for (var, value) in vars {
        let Some(rest) = var.strip_prefix("INFERSIGHT_") else {
            continue;
        };
        if NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        let found = SECTIONS.iter().find_map(|s| {
            let prefix = format!("{}_", s.replace('.', "_").to_uppercase());
            rest.strip_prefix(&prefix)
                .filter(|k| !k.is_empty())
                .map(|k| (*s, k.to_lowercase()))
        });
        let Some((section, key)) = found else {
            return Err(ConfigError::Invalid {
                origin: format!("environment {var}"),
                value,
                reason: format!(
                    "not a configuration key: expected INFERSIGHT_<SECTION>_<KEY> with a section of {}",
                    SECTIONS.join(", ")
                ),
            });
        };
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut t = &mut *table;
        for part in section.split('.') {
            let entry = t
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(ConfigError::Invalid {
                        origin: format!("environment {var}"),
                        value,
                        reason: format!("{section} is not a table in the file"),
                    })
                }
            };
        }
        t.insert(key.clone(), parsed);
        set.insert(format!("{section}.{key}"), var);
    }
    Ok(set)
}
