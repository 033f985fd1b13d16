//! TCP families of the targets.
use super::TcpPart;
use crate::base::family::{series, MetricFamily, MetricType};

pub(super) fn families(part: &TcpPart, out: &mut Vec<MetricFamily>) {
    out.push(series(
        "infersight_tcp_retransmits_total",
        "TCP segments retransmitted on the target's sockets.",
        MetricType::COUNTER,
        &part.tcp,
        |t| vec![("target", t.target.clone())],
        |t| Some(t.retransmits as f64),
    ));
    let changes: Vec<(&str, &str, u64)> = part
        .tcp
        .iter()
        .flat_map(|t| {
            t.state_changes
                .iter()
                .map(move |(s, n)| (t.target.as_str(), *s, *n))
        })
        .collect();
    out.push(series(
        "infersight_tcp_state_changes_total",
        "TCP state transitions of the target's sockets, by new state.",
        MetricType::COUNTER,
        &changes,
        |(t, s, _)| vec![("state", s.to_string()), ("target", t.to_string())],
        |(_, _, n)| Some(*n as f64),
    ));
}
