//! Histograms: fixed-bucket ones with cumulative semantics, as Prometheus exports them, and
//! the kernel's log2 nanosecond buckets (`agent_common::HIST_BUCKETS`), serialised as a
//! plain list.
use agent_common::HIST_BUCKETS;
use serde::Serialize;

/// OpenTelemetry's default HTTP server duration buckets (seconds).
pub const HTTP_DURATION: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Body sizes (bytes): powers of 4 from 64 B to 64 MiB.
pub const BODY_SIZE: &[f64] = &[
    0.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
/// OpenTelemetry GenAI semantic conventions: time to first token (seconds).
pub const TTFT: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// OpenTelemetry GenAI semantic conventions: time per output token (seconds).
pub const TPOT: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// OpenTelemetry GenAI semantic conventions: request duration (seconds).
pub const GEN_AI_DURATION: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Messages per RPC (gRPC streaming calls): powers of 2 up to 4096.
pub const MESSAGES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    #[serde(skip)]
    pub bounds: &'static [f64],
    /// `counts[i]` observations ≤ `bounds[i]` and above the previous bound; the last
    /// element counts those above every bound.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// (upper bound, cumulative count) for every finite bound.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(self.counts.iter().scan(0u64, |acc, c| {
                *acc += c;
                Some(*acc)
            }))
            .map(|(b, c)| (*b, c))
    }
}

/// Upper bound in seconds of log2 bucket `i` (`None` for the open-ended last bucket):
/// bucket `i` counts durations in [2^i, 2^(i+1)) ns.
pub fn log2_upper_seconds(i: usize) -> Option<f64> {
    (i + 1 < HIST_BUCKETS).then(|| (1u64 << (i + 1)) as f64 / 1e9)
}

/// Log2 buckets as a JSON list (serde does not derive arrays this long).
pub fn serialize_log2<S: serde::Serializer>(
    b: &[u64; HIST_BUCKETS],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(b.iter())
}

#[cfg(test)]
mod tests;
