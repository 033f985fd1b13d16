//! Failure families of the targets.
use super::FailuresPart;
use crate::base::family::{series, MetricFamily, MetricType};

pub(super) fn families(part: &FailuresPart, out: &mut Vec<MetricFamily>) {
    let f = &part.failures;
    let target = |t: &super::FailureSeries| vec![("target", t.target.clone())];
    out.push(series(
        "infersight_target_oom_kills_total",
        "Processes of the target the kernel's OOM killer chose.",
        MetricType::COUNTER,
        f,
        target,
        |t| Some(t.oom_kills as f64),
    ));
    out.push(series(
        "infersight_target_oom_events_total",
        "Times a cgroup target hit its memory limit and the OOM killer ran (memory.events oom).",
        MetricType::COUNTER,
        f,
        target,
        |t| t.oom_events.map(|n| n as f64),
    ));
    let by = |pick: fn(&super::FailureSeries) -> &Vec<(&'static str, u64)>| {
        f.iter()
            .flat_map(move |t| {
                pick(t)
                    .iter()
                    .map(move |(k, n)| (t.target.as_str(), *k, *n))
            })
            .collect::<Vec<_>>()
    };
    out.push(series(
        "infersight_target_signals_total",
        "Fatal signals delivered to the target's tasks.",
        MetricType::COUNTER,
        &by(|t| &t.signals),
        |(t, s, _)| vec![("signal", s.to_string()), ("target", t.to_string())],
        |(_, _, n)| Some(*n as f64),
    ));
    out.push(series(
        "infersight_target_exits_total",
        "Processes of the target that ended, by how: exit status 0, another status, or a signal.",
        MetricType::COUNTER,
        &by(|t| &t.exits),
        |(t, k, _)| vec![("kind", k.to_string()), ("target", t.to_string())],
        |(_, _, n)| Some(*n as f64),
    ));
    out.push(series(
        "infersight_target_restarts_total",
        "Times all of the target's processes were replaced (a new root process, or a cgroup recreated or refilled).",
        MetricType::COUNTER,
        f,
        target,
        |t| Some(t.restarts as f64),
    ));
}
