//! TCP figures of the targets' sockets: retransmits and state changes, from
//! `tcp_retransmit_skb` and `inet_sock_set_state`, aggregated per target in a per-CPU
//! array.
mod metrics;

use agent_common::{TcpStats, TCP_STATES};
use aya::maps::{MapData, PerCpuArray};
use serde::Serialize;

use super::{Collected, Collector, Tick};
use crate::{
    base::Health,
    config::Config,
    ebpf::{sum_per_target, EbpfError, Hook, Kernel, ProgramSpec, RecordOffset},
    targets::Targets,
};

const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "tcp_retransmit_skb",
        hook: Hook::Tracepoint("tcp", "tcp_retransmit_skb"),
        essential: true,
    },
    ProgramSpec {
        name: "inet_sock_set_state",
        hook: Hook::Tracepoint("sock", "inet_sock_set_state"),
        essential: true,
    },
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpSeries {
    pub target: String,
    pub retransmits: u64,
    /// Transitions into each state seen (states with none are left out).
    pub state_changes: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TcpPart {
    pub tcp: Vec<TcpSeries>,
}

pub struct Tcp {
    stats: Result<PerCpuArray<MapData, TcpStats>, Health>,
}

impl Collector for Tcp {
    const NAME: &'static str = "tcp";
    const RECORD_OFFSETS: &'static [RecordOffset] = &[
        RecordOffset::new(
            "RETRANS_SKADDR_OFFSET",
            "tcp",
            "tcp_retransmit_skb",
            "skaddr",
        ),
        RecordOffset::new("RETRANS_SPORT_OFFSET", "tcp", "tcp_retransmit_skb", "sport"),
        RecordOffset::new(
            "STATE_SKADDR_OFFSET",
            "sock",
            "inet_sock_set_state",
            "skaddr",
        ),
        RecordOffset::new(
            "STATE_NEWSTATE_OFFSET",
            "sock",
            "inet_sock_set_state",
            "newstate",
        ),
        RecordOffset::new("STATE_SPORT_OFFSET", "sock", "inet_sock_set_state", "sport"),
        RecordOffset::new(
            "STATE_PROTOCOL_OFFSET",
            "sock",
            "inet_sock_set_state",
            "protocol",
        ),
    ];
    type Part = TcpPart;

    fn start(_: &Config, kernel: &mut Kernel, _: &Targets) -> Tcp {
        kernel.follow_processes();
        let health = kernel.attach(PROGRAMS);
        let stats = if health.is_active() {
            kernel
                .take_map("TCP_STATS", PerCpuArray::try_from)
                .map_err(|e| Health::failed(e.to_string()))
        } else {
            Err(kernel.programs_health(PROGRAMS))
        };
        Tcp { stats }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<TcpPart> {
        let map = match &self.stats {
            Ok(m) => m,
            Err(h) => return Collected::new(TcpPart::default(), h.clone()),
        };
        match read(map, tick.targets) {
            Ok(tcp) => Collected::new(TcpPart { tcp }, Health::active()),
            Err(e) => Collected::new(TcpPart::default(), Health::failed(e.to_string())),
        }
    }

    fn families(part: &TcpPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn stop(&mut self, kernel: &mut Kernel) {
        kernel.detach(PROGRAMS);
    }
}

fn read(
    map: &PerCpuArray<MapData, TcpStats>,
    targets: &Targets,
) -> Result<Vec<TcpSeries>, EbpfError> {
    let read = sum_per_target(
        map,
        "TCP_STATS",
        targets.iter().map(|t| t.index),
        TcpStats::ZERO,
        |sum, c| {
            sum.retransmits += c.retransmits;
            for (s, n) in sum.state_changes.iter_mut().zip(c.state_changes.iter()) {
                *s += n;
            }
        },
    )?;
    Ok(read
        .into_iter()
        .filter_map(|(i, s)| {
            Some(TcpSeries {
                target: targets.name_of(i)?.to_string(),
                retransmits: s.retransmits,
                state_changes: TCP_STATES
                    .iter()
                    .zip(s.state_changes.iter())
                    .filter(|(_, n)| **n > 0)
                    .map(|(name, n)| (*name, *n))
                    .collect(),
            })
        })
        .collect())
}
