//! Scheduler figures of the targets: run-queue latency (runnable to running), on-CPU and
//! off-CPU time, from `sched_switch` and the wake-up tracepoints, aggregated per target in
//! a per-CPU array.
mod metrics;

use agent_common::{SchedStats, HIST_BUCKETS};
use aya::maps::{MapData, PerCpuArray};
use serde::Serialize;

use super::{Collected, Collector, Tick};
use crate::{
    base::{histogram::serialize_log2, Health},
    config::Config,
    ebpf::{sum_per_target, EbpfError, Hook, Kernel, ProgramSpec, RecordOffset},
    targets::Targets,
};

/// The scheduler programs (public for the scheduler benchmark).
pub const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "sched_switch",
        hook: Hook::Tracepoint("sched", "sched_switch"),
        essential: true,
    },
    ProgramSpec {
        name: "sched_wakeup",
        hook: Hook::Tracepoint("sched", "sched_wakeup"),
        essential: true,
    },
    ProgramSpec {
        name: "sched_wakeup_new",
        hook: Hook::Tracepoint("sched", "sched_wakeup_new"),
        essential: true,
    },
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedSeries {
    pub target: String,
    pub on_cpu_seconds: f64,
    pub off_cpu_seconds: f64,
    pub runq_sum_seconds: f64,
    /// Run-queue latency, log2 nanosecond buckets.
    #[serde(serialize_with = "serialize_log2")]
    pub runq_buckets: [u64; HIST_BUCKETS],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SchedPart {
    pub sched: Vec<SchedSeries>,
}

pub struct Sched {
    stats: Result<PerCpuArray<MapData, SchedStats>, Health>,
}

impl Collector for Sched {
    const NAME: &'static str = "sched";
    const RECORD_OFFSETS: &'static [RecordOffset] = &[
        RecordOffset::new(
            "SWITCH_PREV_PID_OFFSET",
            "sched",
            "sched_switch",
            "prev_pid",
        ),
        RecordOffset::new(
            "SWITCH_PREV_STATE_OFFSET",
            "sched",
            "sched_switch",
            "prev_state",
        ),
        RecordOffset::new(
            "SWITCH_NEXT_PID_OFFSET",
            "sched",
            "sched_switch",
            "next_pid",
        ),
        RecordOffset::new("WAKEUP_PID_OFFSET", "sched", "sched_wakeup", "pid"),
    ];
    type Part = SchedPart;

    fn start(_: &Config, kernel: &mut Kernel, _: &Targets) -> Sched {
        kernel.follow_processes();
        let health = kernel.attach(PROGRAMS);
        let stats = if health.is_active() {
            kernel
                .take_map("SCHED_STATS", PerCpuArray::try_from)
                .map_err(|e| Health::failed(e.to_string()))
        } else {
            Err(kernel.programs_health(PROGRAMS))
        };
        Sched { stats }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<SchedPart> {
        let map = match &self.stats {
            Ok(m) => m,
            Err(h) => return Collected::new(SchedPart::default(), h.clone()),
        };
        match read(map, tick.targets) {
            Ok(sched) => Collected::new(SchedPart { sched }, Health::active()),
            Err(e) => Collected::new(SchedPart::default(), Health::failed(e.to_string())),
        }
    }

    fn families(part: &SchedPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn stop(&mut self, kernel: &mut Kernel) {
        kernel.detach(PROGRAMS);
    }
}

fn read(
    map: &PerCpuArray<MapData, SchedStats>,
    targets: &Targets,
) -> Result<Vec<SchedSeries>, EbpfError> {
    let read = sum_per_target(
        map,
        "SCHED_STATS",
        targets.iter().map(|t| t.index),
        SchedStats::ZERO,
        |sum, c| {
            sum.on_cpu_ns += c.on_cpu_ns;
            sum.off_cpu_ns += c.off_cpu_ns;
            sum.runq_count += c.runq_count;
            sum.runq_sum_ns += c.runq_sum_ns;
            for (s, b) in sum.runq_buckets.iter_mut().zip(c.runq_buckets.iter()) {
                *s += b;
            }
        },
    )?;
    Ok(read
        .into_iter()
        .filter_map(|(i, s)| {
            Some(SchedSeries {
                target: targets.name_of(i)?.to_string(),
                on_cpu_seconds: s.on_cpu_ns as f64 / 1e9,
                off_cpu_seconds: s.off_cpu_ns as f64 / 1e9,
                runq_sum_seconds: s.runq_sum_ns as f64 / 1e9,
                runq_buckets: s.runq_buckets,
            })
        })
        .collect())
}
