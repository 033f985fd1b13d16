//! One tick: every collector read into the readings, then the agent's own services
//! (configuration, alerting, notifications, history, push) added, into one Snapshot.
use super::Agent;
use crate::{
    base::{now_millis, CollectorStatus, Health},
    collectors::Tick,
    readings::{Readings, TargetStatus},
    snapshot::Snapshot,
    targets::{Members, TargetKind},
};

impl Agent {
    pub fn snapshot(&mut self) -> Snapshot {
        let readings = self.collect();
        let mut snap = Snapshot {
            readings,
            push: self.push.as_ref().map(|(url, s)| s.view(url)),
            config: self.config_status.clone(),
            ..Snapshot::default()
        };
        let statuses = &mut snap.readings.collectors;
        // A refused reload: the file on disk is not what runs.
        let config_health = match &self.config_status.last_reload_error {
            None => Health::active(),
            Some(e) => Health::failed(format!(
                "last reload refused, the previous configuration stays in force: {e}"
            )),
        };
        statuses.push(CollectorStatus::new("config", config_health, None));
        let signals = snap.readings.signals();
        if let Some(a) = &mut self.alerting {
            snap.alerting = a.evaluate(&signals);
            let statuses = &mut snap.readings.collectors;
            statuses.push(CollectorStatus::new("alerting", a.health(), None));
            if a.notifies() {
                let h = snap.alerting.notifications.health();
                statuses.push(CollectorStatus::new("notifications", h, None));
            }
        }
        let statuses = &mut snap.readings.collectors;
        match &self.history {
            Ok(r) => {
                r.record(
                    (snap.readings.timestamp_ms / 1000) as i64,
                    signals.samples(),
                );
                snap.history_dropped = Some(r.dropped.load(std::sync::atomic::Ordering::Relaxed));
                snap.history_failed = Some(r.failed.load(std::sync::atomic::Ordering::Relaxed));
                statuses.push(CollectorStatus::new("history", r.health(), None));
            }
            Err(h) => statuses.push(CollectorStatus::new("history", h.clone(), None)),
        }
        snap
    }

    /// Refresh the targets, read every collector, then look for new GPU processes (with
    /// `--gpu-processes`) among what the GPU collector saw.
    fn collect(&mut self) -> Readings {
        self.tick += 1;
        self.refresh_targets();
        let members = Members::read(&self.targets);
        let mut readings = Readings {
            timestamp_ms: now_millis(),
            tick: self.tick,
            ..Readings::default()
        };
        let mut tick = Tick {
            targets: &self.targets,
            members: &members,
            gpu_pids: &self.gpu_pids,
            kernel: &mut self.kernel,
        };
        self.registry.collect(&mut tick, &mut readings);
        readings.targets = TargetStatus::of(&self.targets, &readings.engines);
        readings.programs = self.kernel.program_statuses();
        // In host mode the GPU processes are where libcuda.so is to be found.
        let gpu_pids = readings
            .gpu
            .gpus
            .iter()
            .flat_map(|g| g.processes.iter().map(|p| p.pid));
        self.gpu_pids = if self.targets.iter().any(|t| t.kind == TargetKind::Host) {
            gpu_pids.collect()
        } else {
            Vec::new()
        };
        if self.config.gpu.processes {
            self.add_gpu_processes(&readings, &members);
        }
        readings
    }
}
