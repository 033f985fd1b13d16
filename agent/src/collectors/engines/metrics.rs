//! The engines' normalised families (labels `target`, `engine`, `engine_index`), their
//! own TTFT/TPOT histograms under the GenAI names with `source="engine"`, and the scrape
//! and health-probe outcome per target.
use super::{
    normalise::{EngineHistogram, EngineSeries},
    EngineTarget, EnginesPart,
};
use crate::base::family::{family, gauge, histogram, series, MetricFamily, MetricType};

type Field = fn(&EngineSeries) -> Option<f64>;

/// (name, help, type, value) of each normalised family.
const FIELDS: &[(&str, &str, MetricType, Field)] = &[
    (
        "infersight_engine_requests_waiting",
        "Requests waiting in the engine's queue (its own figure).",
        MetricType::GAUGE,
        |s| s.requests_waiting,
    ),
    (
        "infersight_engine_requests_running",
        "Requests the engine is running (in its batch).",
        MetricType::GAUGE,
        |s| s.requests_running,
    ),
    (
        "infersight_engine_kv_cache_usage_ratio",
        "Share of the engine's KV cache that is occupied (0-1).",
        MetricType::GAUGE,
        |s| s.kv_cache_usage_ratio,
    ),
    (
        "infersight_engine_preemptions_total",
        "Requests the engine preempted (the engine's running total).",
        MetricType::COUNTER,
        |s| s.preemptions_total,
    ),
    (
        "infersight_engine_prefix_cache_hit_ratio",
        "Share of prompt tokens found in the engine's prefix cache (0-1).",
        MetricType::GAUGE,
        |s| s.prefix_cache_hit_ratio,
    ),
    (
        "infersight_engine_prompt_tokens_total",
        "Prompt (prefill) tokens the engine processed (its running total).",
        MetricType::COUNTER,
        |s| s.prompt_tokens_total,
    ),
    (
        "infersight_engine_generation_tokens_total",
        "Tokens the engine generated (its running total).",
        MetricType::COUNTER,
        |s| s.generation_tokens_total,
    ),
];

type Hist = fn(&EngineSeries) -> Option<&EngineHistogram>;

const HISTOGRAMS: &[(&str, &str, Hist)] = &[
    (
        "gen_ai_server_time_to_first_token_seconds",
        "Time to first token. Without source: measured by the kernel on the target's SSE/chunked responses; source=\"engine\": the engine's own histogram.",
        |s| s.ttft.as_ref(),
    ),
    (
        "gen_ai_server_time_per_output_token_seconds",
        "Time per output token. Without source: the mean gap between the target's response chunks, measured by the kernel; source=\"engine\": the engine's own histogram.",
        |s| s.tpot.as_ref(),
    ),
];

fn ok_engines(part: &EnginesPart) -> Vec<(&EngineTarget, &'static str, &EngineSeries)> {
    part.engines
        .iter()
        .filter(|e| e.health.is_active())
        .filter_map(|e| Some((e, e.engine?.label())))
        .flat_map(|(e, kind)| e.series.iter().map(move |s| (e, kind, s)))
        .collect()
}

pub(super) fn families(part: &EnginesPart, out: &mut Vec<MetricFamily>) {
    let rows = ok_engines(part);
    let labels = |(e, kind, s): &(&EngineTarget, &str, &EngineSeries)| {
        vec![
            ("target", e.target.clone()),
            ("engine", kind.to_string()),
            ("engine_index", s.engine_index.clone()),
        ]
    };
    for (name, help, kind, value) in FIELDS {
        out.push(series(name, help, *kind, &rows, labels, |(_, _, s)| {
            value(s)
        }));
    }
    for (name, help, get) in HISTOGRAMS {
        let metrics = rows
            .iter()
            .filter_map(|(e, kind, s)| {
                let h = get(s)?;
                Some(histogram(
                    &[
                        ("target", &e.target),
                        ("engine", kind),
                        ("engine_index", &s.engine_index),
                        ("source", "engine"),
                    ],
                    h.buckets.iter().copied(),
                    h.count,
                    h.sum,
                ))
            })
            .collect();
        out.push(family(name, help, MetricType::HISTOGRAM, metrics));
    }
    // Targets with an endpoint only: 1 when the last scrape read a page, else 0.
    let reached: Vec<&EngineTarget> = part.engines.iter().filter(|e| e.url.is_some()).collect();
    out.push(family(
        "infersight_engine_scrape_success",
        "Whether the last scrape of the target's engine metrics succeeded (1) or failed (0; see /health).",
        MetricType::GAUGE,
        reached
            .iter()
            .map(|e| {
                gauge(
                    &[("target", &e.target)],
                    if e.health.is_active() { 1.0 } else { 0.0 },
                )
            })
            .collect(),
    ));
    out.push(series(
        "infersight_engine_scrape_duration_seconds",
        "How long the last scrape of the target's engine metrics took.",
        MetricType::GAUGE,
        &reached,
        |e| vec![("target", e.target.clone())],
        |e| e.duration_seconds,
    ));
    out.push(series(
        "infersight_target_health_probe_success",
        "Whether the target's health endpoint answered 2xx at the last probe (1) or not (0).",
        MetricType::GAUGE,
        &part.health_probes,
        |p| vec![("target", p.target.clone())],
        |p| Some(if p.ok { 1.0 } else { 0.0 }),
    ));
    out.push(series(
        "infersight_target_health_probe_duration_seconds",
        "How long the target's last health probe took.",
        MetricType::GAUGE,
        &part.health_probes,
        |p| vec![("target", p.target.clone())],
        |p| Some(p.duration_seconds),
    ));
}
