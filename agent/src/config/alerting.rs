//! Alerting and notification channels, resolved: the rules file, routing, and each
//! channel's settings with its secrets read (from files, systemd credentials or the
//! environment; never from the command line).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use lettre::message::Mailbox;

use super::{
    file::{AlertingSection, ChannelsSection},
    parse::parse_duration,
    ConfigError, DEFAULT_COOLDOWN, DEFAULT_MAX_AGE,
};

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain SMTP (local relays).
    None,
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

/// The email channel's server, sender and recipients.
#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub credentials: Option<(String, String)>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
}

/// Alerting, resolved: rules file path, routing, and the channels with their secrets read.
#[derive(Debug, Clone, Default)]
pub struct Alerting {
    pub rules_file: Option<PathBuf>,
    pub default_channels: Vec<String>,
    pub severity_channels: BTreeMap<String, Vec<String>>,
    pub cooldown: Duration,
    pub max_age: Duration,
    pub dashboard_url: Option<String>,
    pub slack_url: Option<String>,
    pub email: Option<Smtp>,
    pub webhook_url: Option<String>,
    pub alertmanager_url: Option<String>,
}

impl Alerting {
    /// Names of the configured channels (`log` always).
    pub fn channel_names(&self) -> Vec<String> {
        let mut v = vec!["log".to_string()];
        for (name, on) in [
            ("slack", self.slack_url.is_some()),
            ("email", self.email.is_some()),
            ("webhook", self.webhook_url.is_some()),
            ("alertmanager", self.alertmanager_url.is_some()),
        ] {
            if on {
                v.push(name.to_string());
            }
        }
        v
    }
}

const MAX_SECRET: u64 = 64 * 1024;

/// A secret from a file (trimmed), else a systemd credential named like the variable
/// without `INFERSIGHT_` in lower case (`api_token`), else the environment variable,
/// else the inline value. Secrets are never logged.
pub(super) fn secret(
    origin: &str,
    inline: Option<&String>,
    file: Option<&PathBuf>,
    env: &str,
) -> Result<Option<String>, ConfigError> {
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(env.trim_start_matches("INFERSIGHT_").to_lowercase()));
    let file = file.or(credential.as_ref().filter(|p| p.exists()));
    if let Some(f) = file {
        use std::io::Read;
        let invalid = |reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            value: f.display().to_string(),
            reason,
        };
        // Bounded: a path such as /dev/zero must not hang the agent.
        let mut v = String::new();
        std::fs::File::open(f)
            .and_then(|file| file.take(MAX_SECRET + 1).read_to_string(&mut v))
            .map_err(|e| invalid(format!("cannot read the secret file: {e}")))?;
        if v.len() as u64 > MAX_SECRET {
            return Err(invalid(format!(
                "the secret file is over {MAX_SECRET} bytes"
            )));
        }
        return Ok(Some(v.trim().to_string()));
    }
    if let Ok(v) = std::env::var(env) {
        if !v.trim().is_empty() {
            return Ok(Some(v.trim().to_string()));
        }
    }
    Ok(inline.cloned())
}

pub(super) fn alerting(
    a: &AlertingSection,
    c: &ChannelsSection,
    source: Option<&Path>,
    origin: &dyn Fn(&str) -> String,
) -> Result<Alerting, ConfigError> {
    let base = source.and_then(Path::parent).unwrap_or(Path::new("."));
    let dur = |key: &str, v: &Option<String>, default: Duration| match v {
        Some(v) => parse_duration(
            &origin(key),
            v,
            Duration::ZERO,
            Duration::from_secs(30 * 86400),
        ),
        None => Ok(default),
    };
    let slack_url = match &c.slack {
        Some(s) => secret(
            &origin("channels.slack.webhook_url_file"),
            s.webhook_url.as_ref(),
            s.webhook_url_file.as_ref(),
            "INFERSIGHT_SLACK_WEBHOOK_URL",
        )?,
        None => None,
    };
    // A Slack section without any URL cannot deliver: say so at load.
    if c.slack.is_some() && slack_url.is_none() {
        return Err(ConfigError::Invalid {
            origin: origin("channels.slack"),
            value: String::new(),
            reason: "needs webhook_url, webhook_url_file or INFERSIGHT_SLACK_WEBHOOK_URL".into(),
        });
    }
    let email = match &c.email {
        None => None,
        Some(e) => {
            let mailbox = |key: &str, v: &str| {
                v.parse::<Mailbox>().map_err(|err| ConfigError::Invalid {
                    origin: origin(key),
                    value: v.to_string(),
                    reason: format!("not an email address: {err}"),
                })
            };
            if e.to.is_empty() {
                return Err(ConfigError::Invalid {
                    origin: origin("channels.email.to"),
                    value: "[]".into(),
                    reason: "needs at least one recipient".into(),
                });
            }
            let password = secret(
                &origin("channels.email.password_file"),
                None,
                e.password_file.as_ref(),
                "INFERSIGHT_SMTP_PASSWORD",
            )?;
            let tls = e.tls.unwrap_or(Tls::Starttls);
            Some(Smtp {
                host: e.smtp_host.clone(),
                port: e.smtp_port.unwrap_or(match tls {
                    Tls::None => 25,
                    Tls::Starttls => 587,
                    Tls::Tls => 465,
                }),
                tls,
                credentials: e
                    .username
                    .clone()
                    .map(|u| (u, password.clone().unwrap_or_default())),
                from: mailbox("channels.email.from", &e.from)?,
                to: e
                    .to
                    .iter()
                    .map(|t| mailbox("channels.email.to", t))
                    .collect::<Result<_, _>>()?,
            })
        }
    };
    let out = Alerting {
        rules_file: a.rules_file.as_ref().map(|f| base.join(f)),
        default_channels: a
            .default_channels
            .clone()
            .unwrap_or_else(|| vec!["log".to_string()]),
        severity_channels: a.severity_channels.clone(),
        cooldown: dur("alerting.cooldown", &a.cooldown, DEFAULT_COOLDOWN)?,
        max_age: dur(
            "alerting.notification_max_age",
            &a.notification_max_age,
            DEFAULT_MAX_AGE,
        )?,
        dashboard_url: a.dashboard_url.clone(),
        slack_url,
        email,
        webhook_url: c.webhook.as_ref().map(|w| w.url.clone()),
        alertmanager_url: c.alertmanager.as_ref().map(|w| w.url.clone()),
    };
    let names = out.channel_names();
    let routes = std::iter::once((
        "alerting.default_channels".to_string(),
        &out.default_channels,
    ))
    .chain(
        out.severity_channels
            .iter()
            .map(|(k, v)| (format!("alerting.severity_channels.{k}"), v)),
    );
    for (key, list) in routes {
        if let Some(bad) = list.iter().find(|c| !names.contains(c)) {
            return Err(ConfigError::Invalid {
                origin: origin(&key),
                value: bad.clone(),
                reason: format!(
                    "not a configured channel (configured: {})",
                    names.join(", ")
                ),
            });
        }
    }
    for k in out.severity_channels.keys() {
        if !["info", "warning", "medium", "high", "critical"].contains(&k.as_str()) {
            return Err(ConfigError::Invalid {
                origin: origin("alerting.severity_channels"),
                value: k.clone(),
                reason: "not a severity (info, warning, medium, high, critical)".into(),
            });
        }
    }
    Ok(out)
}
