//! Values as the configuration writes them: addresses and durations, with errors that
//! name where the value came from.
use std::{net::SocketAddr, time::Duration};

use super::ConfigError;

pub fn parse_listen(origin: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| ConfigError::Invalid {
        origin: origin.to_string(),
        value: v.to_string(),
        reason: "expected an IP address and port, such as 127.0.0.1:9464 or [::1]:9464".into(),
    })
}

pub(super) const MIN_TICK: Duration = Duration::from_millis(100);
pub(super) const MAX_TICK: Duration = Duration::from_secs(3600);

pub(super) fn parse_duration(
    origin: &str,
    v: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        origin: origin.to_string(),
        value: v.to_string(),
        reason: reason.to_string(),
    };
    let d = humantime::parse_duration(v).map_err(|e| invalid(&format!("{e} (e.g. \"1s\")")))?;
    if d < min || d > max {
        return Err(invalid(&format!(
            "must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )));
    }
    Ok(d)
}
