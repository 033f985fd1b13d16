//! Reload: a newly loaded configuration put in force, or refused as a whole with the old
//! one kept. Targets, rules, channels, the energy price and the API token change at once;
//! settings that need a restart (each section names its own) are named in the answer.
use super::Agent;
use crate::{
    base::{now_seconds, Done, Refusal, RefusalKind, Reply},
    config::{Config, ConfigError, TargetRequest, TargetSpec},
    targets::{TargetError, Targets},
};

impl Agent {
    /// Put a newly loaded configuration in force, or keep the old one and say why.
    pub fn reload(&mut self, new: Result<Config, ConfigError>) -> Reply {
        let outcome = new
            .map_err(|e| vec![e.to_string()])
            .and_then(|c| self.apply_config(c));
        let status = &mut self.config_status;
        match outcome {
            Ok(answer) => {
                status.last_reload_successful = true;
                status.last_reload_success_timestamp_seconds = now_seconds();
                status.last_reload_error = None;
                tracing::info!("configuration reloaded: {answer}");
                Ok((Done::Changed, answer))
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!("reload refused, the old configuration stays: {e}");
                }
                status.last_reload_successful = false;
                status.last_reload_error = Some(errors.join("; "));
                Err(Refusal::listed(RefusalKind::Invalid, errors))
            }
        }
    }

    fn apply_config(&mut self, mut new: Config) -> Result<serde_json::Value, Vec<String>> {
        let mut errors = Vec::new();
        let mut restart = Vec::new();
        // Checked before anything changes: the targets to add must resolve now.
        let (remove, add): (Vec<String>, Vec<TargetRequest>) =
            match (&self.config.targets, &new.targets) {
                (TargetSpec::List(_), TargetSpec::List(reqs)) => {
                    let remove: Vec<String> = self
                        .config_targets
                        .iter()
                        .filter(|(r, _)| !reqs.contains(r))
                        .map(|(_, n)| n.clone())
                        .collect();
                    let add: Vec<TargetRequest> = reqs
                        .iter()
                        .filter(|r| !self.config_targets.iter().any(|(o, _)| o == *r))
                        .cloned()
                        .collect();
                    for r in &add {
                        match Targets::check(r) {
                            Ok(t)
                                if self
                                    .targets
                                    .iter()
                                    .any(|x| x.name == t.name && !remove.contains(&x.name)) =>
                            {
                                errors.push(TargetError::DuplicateName(t.name).to_string())
                            }
                            Ok(_) => {}
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                    (remove, add)
                }
                (a, b) if a == b => (Vec::new(), Vec::new()),
                _ => {
                    restart.push("targets.all");
                    (Vec::new(), Vec::new())
                }
            };
        if !errors.is_empty() {
            return Err(errors);
        }
        let rules = match &mut self.alerting {
            Some(a) => Some(a.reload(&new.alerting)?),
            None => {
                if new.alerting.rules_file.is_some() {
                    restart.push("alerting.rules_file");
                }
                None
            }
        };
        for name in &remove {
            let _ = self.remove_target(name);
        }
        self.config_targets.retain(|(_, n)| !remove.contains(n));
        for req in &add {
            match self.add_target(req) {
                Ok((_, t)) => {
                    let name = t["name"].as_str().unwrap_or_default().to_string();
                    self.config_targets.push((req.clone(), name));
                }
                Err(e) => tracing::warn!("reload: target {req:?}: {e}"),
            }
        }
        *self
            .api_token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new.api.token.clone();
        // Settings that take effect only at a restart stay as they run (so the next reload
        // compares against what is really in force); the ones that differ are named.
        restart.extend(self.config.keep_restart_only(&mut new));
        self.registry.reconfigure(&new);
        for key in &restart {
            tracing::warn!("reload: {key} changed; it takes effect at the next restart");
        }
        let answer = serde_json::json!({
            "file": new.source,
            "rules": rules,
            "targets_added": add.len(),
            "targets_removed": remove,
            "restart_needed": restart,
        });
        if restart.contains(&"targets.all") {
            new.targets = self.config.targets.clone();
        }
        if self.alerting.is_none() {
            new.alerting = self.config.alerting.clone();
        }
        self.config = new;
        self.config_status.file = self.config.source.clone();
        Ok(answer)
    }
}
