//! Alerting in the running agent: rules loaded from the configured file, the engine's
//! state restored from and saved to the store, notifications handed to the notifier.
use std::sync::{Arc, Mutex};

use super::{
    engine::{AlertView, Engine, RuleHealth},
    rules,
    signals::SignalSet,
};
use crate::{
    config::Alerting as AlertingConfig,
    notify::{now_seconds, Notifier, NotifyStats, ALERTMANAGER_RESEND},
    snapshot::Health,
    store::Store,
};

pub struct Alerting {
    engine: Engine,
    notifier: Option<Notifier>,
    store: Option<Arc<Mutex<Store>>>,
    health: Health,
    last_refresh: f64,
}

/// What alerting adds to each Snapshot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AlertingView {
    pub alerts: Vec<AlertView>,
    /// The transitions of this tick (the stream sends them as alert events).
    pub events: Vec<super::engine::Notification>,
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
        if let Some(s) = &store {
            match s.lock().map(|s| s.load_alerts()) {
                Ok(Ok(list)) => {
                    for (rule, labels, a) in list {
                        engine.restore(&rule, labels, a);
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
            notifier,
            store,
            health: if problems.is_empty() {
                Health::active()
            } else {
                Health::failed(problems.join("; "))
            },
            last_refresh: 0.0,
        })
    }

    pub fn health(&self) -> Health {
        self.health.clone()
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

    /// Evaluate the rules on `snap`, hand out notifications, save changed states.
    pub fn evaluate(&mut self, signals: &SignalSet) -> AlertingView {
        let now = now_seconds();
        let notes = self.engine.evaluate(signals, now);
        match &self.notifier {
            Some(n) => {
                n.submit(&notes, now);
                if now - self.last_refresh >= ALERTMANAGER_RESEND {
                    self.last_refresh = now;
                    n.refresh_alertmanager(&self.engine.firing(), now);
                }
            }
            None => {
                for n in &notes {
                    tracing::warn!(
                        "alert {:?} {} (not delivered: no state store)",
                        n.status,
                        n.rule
                    );
                }
            }
        }
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
