//! What the agent says about itself at start: one line per program and collector in the
//! log, and one summary line.
use super::Agent;
use crate::{base::State, snapshot::Snapshot};

impl Agent {
    /// One line per program and collector: what is attached, what is not, and why.
    pub fn log_summary(&self) {
        for p in self.kernel.program_statuses() {
            match &p.health.reason {
                None => tracing::info!("program {}: attached", p.name),
                Some(r) => tracing::warn!("program {}: {:?}: {r}", p.name, p.health.state),
            }
        }
        if let Some(note) = self.kernel.stats_note() {
            tracing::info!("eBPF self-cost metrics unavailable: {note}");
        }
        for t in self.targets.iter() {
            tracing::info!("target {:?}: {:?}", t.name, t.kind);
        }
    }
}

/// One line: what is attached and working, what is not and why.
pub(super) fn startup(snap: &Snapshot) -> String {
    let attached = snap
        .programs
        .iter()
        .filter(|p| p.health.state == State::Active)
        .count();
    let mut off: Vec<String> = snap
        .programs
        .iter()
        .filter(|p| p.health.state != State::Active)
        .map(|p| {
            format!(
                "program {} ({})",
                p.name,
                p.health.reason.as_deref().unwrap_or("?")
            )
        })
        .collect();
    off.extend(
        snap.collectors
            .iter()
            .filter(|c| c.health.state != State::Active)
            .map(|c| format!("{} ({})", c.name, c.health.reason.as_deref().unwrap_or("?"))),
    );
    let active: Vec<&str> = snap
        .collectors
        .iter()
        .filter(|c| c.health.state == State::Active)
        .map(|c| c.name.as_str())
        .collect();
    let targets: Vec<&str> = snap
        .targets
        .iter()
        .map(|t| t.target.name.as_str())
        .collect();
    let protocols: Vec<String> = snap
        .readings
        .http
        .protocols
        .iter()
        .map(|p| format!("{} ({})", p.target, p.probes.join(", ")))
        .collect();
    format!(
        "started: {attached}/{} eBPF programs attached; working: {}; targets: {}; protocol probes: {}; not working: {}",
        snap.programs.len(),
        active.join(", "),
        targets.join(", "),
        if protocols.is_empty() {
            "none".to_string()
        } else {
            protocols.join("; ")
        },
        if off.is_empty() {
            "none".to_string()
        } else {
            off.join("; ")
        }
    )
}
