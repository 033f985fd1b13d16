//! Target changes while the agent runs: added or removed through the API or a reload,
//! found again (PID files, names, recreated cgroups), and GPU processes that become
//! targets. Each change goes to the kernel maps and to every collector.
use super::Agent;
use crate::{
    base::{Done, Refusal, RefusalKind, Reply},
    config::TargetRequest,
    readings::Readings,
    targets::{Members, TargetError},
};

impl Agent {
    pub(super) fn add_target(&mut self, req: &TargetRequest) -> Reply {
        let t = match self.targets.add(req) {
            Ok(t) => t.clone(),
            Err(
                e @ (TargetError::NoProcess(_)
                | TargetError::Cgroup { .. }
                | TargetError::PidFile { .. }),
            ) => return Err(Refusal::new(RefusalKind::Invalid, e)),
            Err(e) => return Err(Refusal::new(RefusalKind::Conflict, e)),
        };
        if self.kernel.is_loaded() {
            if let Err(e) = self.kernel.add_target(&t, &self.targets) {
                self.targets.remove(&t.name);
                return Err(Refusal::new(
                    RefusalKind::Failed,
                    format!("kernel maps: {e}"),
                ));
            }
        }
        self.registry.target_added(&t);
        tracing::info!("target added: {:?} {:?}", t.name, t.kind);
        Ok((Done::Created, serde_json::to_value(&t).unwrap_or_default()))
    }

    pub(super) fn remove_target(&mut self, name: &str) -> Reply {
        let Some(t) = self.targets.remove(name) else {
            return Err(Refusal::new(
                RefusalKind::NotFound,
                format!("no target {name:?}"),
            ));
        };
        if self.kernel.is_loaded() {
            if let Err(e) = self.kernel.remove_target(&t, &self.targets) {
                tracing::warn!("target {name:?}: clearing the kernel maps: {e}");
            }
        }
        self.registry.target_removed(&t);
        tracing::info!("target removed: {name:?}");
        Ok((Done::Changed, serde_json::json!({ "removed": name })))
    }

    /// PID-file and name targets whose process came back, recreated cgroups: into the
    /// kernel maps. GPU-process targets whose process exited are removed.
    pub(super) fn refresh_targets(&mut self) {
        let changes = self.targets.refresh();
        for c in &changes {
            tracing::info!("target change: {c:?}");
        }
        if !changes.is_empty() && self.kernel.is_loaded() {
            if let Err(e) = self.kernel.apply(&changes) {
                tracing::warn!("updating the kernel target maps: {e}");
            }
        }
        for c in changes {
            let crate::targets::Change::Ended { index } = c else {
                continue;
            };
            if let Some(name) = self.targets.name_of(index).map(str::to_string) {
                let _ = self.remove_target(&name);
            }
        }
    }

    /// With `--gpu-processes`: every GPU process not yet covered by a target becomes one.
    pub(super) fn add_gpu_processes(&mut self, readings: &Readings, members: &Members) {
        let covered: std::collections::HashSet<u32> = members.pids().collect();
        let pids: Vec<u32> = readings
            .gpu
            .gpus
            .iter()
            .flat_map(|g| g.processes.iter().map(|p| p.pid))
            .filter(|pid| !covered.contains(pid))
            .collect();
        for pid in pids {
            if self.untraced.contains(&pid) {
                continue;
            }
            let Some(t) = self.targets.add_process(pid).cloned() else {
                tracing::warn!(
                    "GPU process {pid}: not traced ([agent] max_targets reached, or it exited)"
                );
                self.untraced.insert(pid);
                continue;
            };
            tracing::info!("GPU process {pid} is target {:?}", t.name);
            self.registry.target_added(&t);
            if self.kernel.is_loaded() {
                if let Err(e) = self.kernel.add_process(pid, t.index) {
                    tracing::warn!("GPU process {pid}: {e}");
                }
            }
        }
    }
}
