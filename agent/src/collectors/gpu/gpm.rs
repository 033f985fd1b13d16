//! Saturation from NVML's GPU Performance Monitoring (Hopper and later): SM activity,
//! occupancy, tensor pipe, DRAM and graphics engine, as dcgm-exporter's 0–1 ratios. GPM
//! metrics compare two samples, so each reading compares with the previous one taken on
//! the GPU thread one interval earlier; the first reading has none.
use std::collections::HashMap;

use nvml_wrapper::{enums::gpm::GpmMetricId, gpm::gpm_metrics_get, Device, GpmSample, Nvml};
use serde::Serialize;

/// Each ratio over the last interval; absent where the GPU has no GPM or the metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Saturation {
    pub sm_active: Option<f64>,
    pub sm_occupancy: Option<f64>,
    pub tensor_active: Option<f64>,
    pub dram_active: Option<f64>,
    pub gr_engine_active: Option<f64>,
}

type Slot = fn(&mut Saturation) -> &mut Option<f64>;

/// NVML's metric (a percentage) for each DCGM profiling field.
const METRICS: [(GpmMetricId, Slot); 5] = [
    (GpmMetricId::SmUtil, |s| &mut s.sm_active),
    (GpmMetricId::SmOccupancy, |s| &mut s.sm_occupancy),
    (GpmMetricId::AnyTensorUtil, |s| &mut s.tensor_active),
    (GpmMetricId::DramBwUtil, |s| &mut s.dram_active),
    (GpmMetricId::GraphicsUtil, |s| &mut s.gr_engine_active),
];

/// A whole GPU, or one MIG GPU instance of it.
type Key = (u32, Option<u32>);

pub struct Gpm {
    nvml: &'static Nvml,
    /// Per GPU index: whether NVML says it supports GPM (asked once).
    supported: HashMap<u32, bool>,
    previous: HashMap<Key, GpmSample<'static>>,
}

impl Gpm {
    pub fn new(nvml: &'static Nvml) -> Gpm {
        Gpm {
            nvml,
            supported: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// Sample GPU `index` (or its GPU instance `instance`) and compare with the last
    /// sample; `None` without GPM or without a previous sample.
    pub fn read(
        &mut self,
        index: u32,
        dev: &Device<'static>,
        instance: Option<u32>,
    ) -> Option<Saturation> {
        let supported = *self
            .supported
            .entry(index)
            .or_insert_with(|| dev.gpm_support().unwrap_or(false));
        if !supported {
            return None;
        }
        let key = (index, instance);
        let sample = match instance {
            Some(gi) => dev.gpm_mig_sample(gi),
            None => dev.gpm_sample(),
        };
        let Ok(sample) = sample else {
            self.previous.remove(&key);
            return None;
        };
        let previous = self.previous.insert(key, sample)?;
        let current = self.previous.get(&key)?;
        let ids: Vec<GpmMetricId> = METRICS.iter().map(|(id, _)| *id).collect();
        let results = gpm_metrics_get(self.nvml, &previous, current, &ids).ok()?;
        let mut out = Saturation::default();
        for r in results.into_iter().flatten() {
            if let Some((_, slot)) = METRICS.iter().find(|(id, _)| *id == r.metric_id) {
                *slot(&mut out) = Some(r.value / 100.0);
            }
        }
        Some(out)
    }
}
