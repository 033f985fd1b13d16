//! Energy per target: each GPU's energy since the last reading, shared among the targets
//! using it by their share of its processes' SM utilization (or, where NVML gives no
//! per-process utilization, their share of its process memory).
use std::collections::HashMap;

use serde::Serialize;

use super::reading::{DeviceReading, GpuProcess};

/// Joules attributed to each target since the agent started, and the price to cost them.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct EnergySummary {
    pub targets: Vec<(String, f64)>,
    pub price_per_kwh: Option<f64>,
    pub currency: String,
}

impl EnergySummary {
    /// Cost of `joules` at the configured price (1 kWh = 3.6 MJ).
    pub fn cost(&self, joules: f64) -> Option<f64> {
        self.price_per_kwh.map(|p| joules / 3.6e6 * p)
    }
}

#[derive(Default)]
pub struct EnergyLedger {
    /// Per GPU UUID: the last energy counter reading (mJ).
    last_mj: HashMap<String, u64>,
    per_target: HashMap<String, f64>,
}

impl EnergyLedger {
    /// Attribute each GPU's energy since the last reading; `owner` maps a PID to the target
    /// it belongs to.
    pub fn update(&mut self, gpus: &[DeviceReading], owner: &HashMap<u32, &str>) {
        for g in gpus {
            let Some(now) = g.energy_millijoules else {
                continue;
            };
            let prev = self.last_mj.insert(g.uuid.clone(), now);
            // The first reading and a counter reset (driver reload) attribute nothing.
            let Some(delta) = prev
                .filter(|p| *p <= now)
                .map(|p| (now - p) as f64 / 1000.0)
            else {
                continue;
            };
            for (target, share) in shares(g, owner) {
                *self.per_target.entry(target.to_string()).or_default() += delta * share;
            }
        }
    }

    pub fn summary(&self, price_per_kwh: Option<f64>, currency: &str) -> EnergySummary {
        let mut targets: Vec<(String, f64)> = self
            .per_target
            .iter()
            .map(|(t, j)| (t.clone(), *j))
            .collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        EnergySummary {
            targets,
            price_per_kwh,
            currency: currency.to_string(),
        }
    }
}

/// Each target's share of one GPU.
fn shares<'a>(g: &DeviceReading, owner: &HashMap<u32, &'a str>) -> Vec<(&'a str, f64)> {
    type Weight = fn(&GpuProcess) -> Option<f64>;
    let by_util: Weight = |p| p.sm_util_percent.map(f64::from);
    let by_memory: Weight = |p| p.used_memory_bytes.map(|b| b as f64);
    for weight in [by_util, by_memory] {
        let total: f64 = g.processes.iter().filter_map(weight).sum();
        if total <= 0.0 {
            continue;
        }
        let mut out: Vec<(&str, f64)> = Vec::new();
        for p in &g.processes {
            let (Some(t), Some(w)) = (owner.get(&p.pid), weight(p)) else {
                continue;
            };
            match out.iter_mut().find(|(n, _)| n == t) {
                Some((_, s)) => *s += w / total,
                None => out.push((t, w / total)),
            }
        }
        return out;
    }
    Vec::new()
}

#[cfg(test)]
mod tests;
