//! Throttling time: how long NVML's performance policies held the clocks down since the
//! driver loaded, per cause (the counters behind the throttle reason bits).
use nvml_wrapper::{enum_wrappers::device::PerformancePolicy, Device};
use serde::Serialize;

/// Nanoseconds each policy limited the clocks; absent where the GPU does not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Violations {
    pub power_ns: Option<u64>,
    pub thermal_ns: Option<u64>,
    pub sync_boost_ns: Option<u64>,
    pub board_limit_ns: Option<u64>,
    pub low_util_ns: Option<u64>,
    pub reliability_ns: Option<u64>,
}

impl Violations {
    /// (reason label, nanoseconds) of each cause.
    pub fn by_reason(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("power", self.power_ns),
            ("thermal", self.thermal_ns),
            ("sync_boost", self.sync_boost_ns),
            ("board_limit", self.board_limit_ns),
            ("low_utilization", self.low_util_ns),
            ("reliability", self.reliability_ns),
        ]
    }
}

pub fn read(dev: &Device<'_>) -> Violations {
    let ns = |p| dev.violation_status(p).ok().map(|v| v.violation_time);
    Violations {
        power_ns: ns(PerformancePolicy::Power),
        thermal_ns: ns(PerformancePolicy::Thermal),
        sync_boost_ns: ns(PerformancePolicy::SyncBoost),
        board_limit_ns: ns(PerformancePolicy::BoardLimit),
        low_util_ns: ns(PerformancePolicy::LowUtilization),
        reliability_ns: ns(PerformancePolicy::Reliability),
    }
}
