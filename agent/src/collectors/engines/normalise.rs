//! Engines recognised by their metric names, and each engine's names (per version) mapped
//! to the normalised figures. The table is data (`SPECS`): the README's mapping table is
//! made from it, so the two cannot disagree.
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::exposition::Sample;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Vllm,
    Sglang,
    Tgi,
    Trtllm,
    Triton,
    Llamacpp,
}

impl EngineKind {
    /// The `engine` label value.
    pub fn label(self) -> &'static str {
        match self {
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
            EngineKind::Tgi => "tgi",
            EngineKind::Trtllm => "trtllm",
            EngineKind::Triton => "triton",
            EngineKind::Llamacpp => "llamacpp",
        }
    }
}

/// A histogram as the engine publishes it: (upper bound, cumulative count) pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// The normalised figures of one engine (one `engine_index`). A figure the engine does
/// not publish is absent. Counters are the engine's own running totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineSeries {
    pub engine_index: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_waiting: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_running: Option<f64>,
    /// 0–1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preemptions_total: Option<f64>,
    /// Preemptions per second over the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preemption_rate: Option<f64>,
    /// 0–1: the engine's own figure, or its hits over its queries within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hit_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hits_total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache_queries_total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_tokens_total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft: Option<EngineHistogram>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpot: Option<EngineHistogram>,
    /// The engine's own end-to-end request durations: running sum (s) and count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_seconds_sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_count: Option<f64>,
}

/// Where a figure comes from: a metric (the sample name; for a histogram its base name),
/// optionally only its samples with one label value, and which versions publish it.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub name: &'static str,
    pub filter: Option<(&'static str, &'static str)>,
    pub note: &'static str,
}

const fn src(name: &'static str) -> Source {
    Source {
        name,
        filter: None,
        note: "",
    }
}

const fn since(name: &'static str, note: &'static str) -> Source {
    Source {
        name,
        filter: None,
        note,
    }
}

const fn with(name: &'static str, label: &'static str, value: &'static str) -> Source {
    Source {
        name,
        filter: Some((label, value)),
        note: "",
    }
}

/// One engine's names. Each list is in order of preference: the first one the page has
/// is used (the newest name first, so a version that publishes both is read once).
pub struct Spec {
    pub kind: EngineKind,
    pub title: &'static str,
    /// Metric-name prefixes that identify the engine.
    pub prefixes: &'static [&'static str],
    /// The engine's own label that tells its engines (data-parallel ranks) apart.
    pub index_label: Option<&'static str>,
    /// Only samples with this label value (or without the label) count: the engine
    /// repeats the same figures on every tensor-parallel rank.
    pub leader: Option<(&'static str, &'static str)>,
    pub waiting: &'static [Source],
    pub running: &'static [Source],
    pub kv_ratio: &'static [Source],
    /// KV usage as used / max blocks, where no ratio is published.
    pub kv_blocks: Option<(Source, Source)>,
    pub preemptions: &'static [Source],
    pub prefix_ratio: &'static [Source],
    /// (hits, queries) counters, where no ratio is published.
    pub prefix_counters: &'static [(Source, Source)],
    pub prompt_tokens: &'static [Source],
    pub generation_tokens: &'static [Source],
    pub ttft: &'static [Source],
    pub tpot: &'static [Source],
    /// A histogram (or summary) of end-to-end request seconds; its `_sum` and `_count`.
    pub e2e: &'static [Source],
}

/// Every engine, in the order they are recognised (TensorRT-LLM before Triton: its pages
/// carry Triton's names too).
pub const SPECS: &[Spec] = &[
    Spec {
        kind: EngineKind::Vllm,
        title: "vLLM",
        prefixes: &["vllm:"],
        index_label: Some("engine"),
        leader: None,
        waiting: &[src("vllm:num_requests_waiting")],
        running: &[src("vllm:num_requests_running")],
        kv_ratio: &[
            since("vllm:kv_cache_usage_perc", "V1 engine, 0.9 and later"),
            since(
                "vllm:gpu_cache_usage_perc",
                "V0 engine; V1 before 0.9, deprecated there",
            ),
        ],
        kv_blocks: None,
        preemptions: &[src("vllm:num_preemptions_total")],
        prefix_ratio: &[since("vllm:gpu_prefix_cache_hit_rate", "V0 engine")],
        prefix_counters: &[
            (
                since("vllm:prefix_cache_hits_total", "V1, 0.9 and later"),
                src("vllm:prefix_cache_queries_total"),
            ),
            (
                since("vllm:gpu_prefix_cache_hits_total", "V1 before 0.9"),
                src("vllm:gpu_prefix_cache_queries_total"),
            ),
        ],
        prompt_tokens: &[src("vllm:prompt_tokens_total")],
        generation_tokens: &[src("vllm:generation_tokens_total")],
        ttft: &[src("vllm:time_to_first_token_seconds")],
        tpot: &[
            since(
                "vllm:request_time_per_output_token_seconds",
                "per request, newer V1",
            ),
            since(
                "vllm:time_per_output_token_seconds",
                "per decode step; deprecated in newer V1",
            ),
            since(
                "vllm:inter_token_latency_seconds",
                "per decode step, newer V1",
            ),
        ],
        e2e: &[src("vllm:e2e_request_latency_seconds")],
    },
    Spec {
        kind: EngineKind::Sglang,
        title: "SGLang",
        prefixes: &["sglang:"],
        index_label: Some("dp_rank"),
        leader: Some(("tp_rank", "0")),
        waiting: &[src("sglang:num_queue_reqs")],
        running: &[src("sglang:num_running_reqs")],
        kv_ratio: &[src("sglang:token_usage")],
        kv_blocks: None,
        preemptions: &[since(
            "sglang:num_retracted_requests_total",
            "retractions, newer releases; older ones have only a gauge",
        )],
        prefix_ratio: &[src("sglang:cache_hit_rate")],
        prefix_counters: &[],
        prompt_tokens: &[src("sglang:prompt_tokens_total")],
        generation_tokens: &[src("sglang:generation_tokens_total")],
        ttft: &[src("sglang:time_to_first_token_seconds")],
        tpot: &[
            since("sglang:inter_token_latency_seconds", "newer releases"),
            since("sglang:time_per_output_token_seconds", "older releases"),
        ],
        e2e: &[src("sglang:e2e_request_latency_seconds")],
    },
    Spec {
        kind: EngineKind::Tgi,
        title: "TGI",
        prefixes: &["tgi_"],
        index_label: None,
        leader: None,
        waiting: &[src("tgi_queue_size")],
        running: &[src("tgi_batch_current_size")],
        kv_ratio: &[],
        kv_blocks: None,
        preemptions: &[],
        prefix_ratio: &[],
        prefix_counters: &[],
        prompt_tokens: &[since(
            "tgi_request_input_length_sum",
            "sum of the per-request histogram",
        )],
        generation_tokens: &[since(
            "tgi_request_generated_tokens_sum",
            "sum of the per-request histogram",
        )],
        ttft: &[],
        tpot: &[since(
            "tgi_request_mean_time_per_token_duration",
            "per request; includes prefill",
        )],
        e2e: &[src("tgi_request_duration")],
    },
    Spec {
        kind: EngineKind::Trtllm,
        title: "TensorRT-LLM (Triton backend)",
        prefixes: &["nv_trt_llm_", "nv_llm_"],
        index_label: None,
        leader: None,
        waiting: &[Source {
            name: "nv_trt_llm_request_metrics",
            filter: Some(("request_type", "waiting")),
            note: "newer backends",
        }],
        running: &[with(
            "nv_trt_llm_request_metrics",
            "request_type",
            "scheduled",
        )],
        kv_ratio: &[Source {
            name: "nv_trt_llm_kv_cache_block_metrics",
            filter: Some(("kv_cache_block_type", "fraction")),
            note: "newer backends",
        }],
        kv_blocks: Some((
            with(
                "nv_trt_llm_kv_cache_block_metrics",
                "kv_cache_block_type",
                "used",
            ),
            with(
                "nv_trt_llm_kv_cache_block_metrics",
                "kv_cache_block_type",
                "max",
            ),
        )),
        preemptions: &[],
        prefix_ratio: &[],
        prefix_counters: &[],
        prompt_tokens: &[since(
            "nv_llm_input_token_len_sum",
            "sum of the ensemble's histogram",
        )],
        generation_tokens: &[since(
            "nv_llm_output_token_len_sum",
            "sum of the ensemble's histogram",
        )],
        ttft: &[],
        tpot: &[],
        e2e: &[],
    },
    Spec {
        kind: EngineKind::Triton,
        title: "Triton",
        prefixes: &["nv_inference_"],
        index_label: None,
        leader: None,
        waiting: &[since(
            "nv_inference_pending_request_count",
            "summed over models",
        )],
        running: &[],
        kv_ratio: &[],
        kv_blocks: None,
        preemptions: &[],
        prefix_ratio: &[],
        prefix_counters: &[],
        prompt_tokens: &[],
        generation_tokens: &[],
        ttft: &[],
        tpot: &[],
        e2e: &[],
    },
    Spec {
        kind: EngineKind::Llamacpp,
        title: "llama.cpp server",
        prefixes: &["llamacpp:"],
        index_label: None,
        leader: None,
        waiting: &[src("llamacpp:requests_deferred")],
        running: &[src("llamacpp:requests_processing")],
        kv_ratio: &[since("llamacpp:kv_cache_usage_ratio", "older releases")],
        kv_blocks: None,
        preemptions: &[],
        prefix_ratio: &[],
        prefix_counters: &[],
        prompt_tokens: &[src("llamacpp:prompt_tokens_total")],
        generation_tokens: &[src("llamacpp:tokens_predicted_total")],
        ttft: &[],
        tpot: &[],
        e2e: &[],
    },
];

/// Whether a metric name may matter to some engine (what the parser keeps).
pub fn relevant(name: &str) -> bool {
    SPECS
        .iter()
        .flat_map(|s| s.prefixes)
        .any(|p| name.starts_with(p))
}

/// The engine whose names the page carries, if any.
pub fn recognise(samples: &[Sample]) -> Option<&'static Spec> {
    SPECS.iter().find(|spec| {
        samples
            .iter()
            .any(|s| spec.prefixes.iter().any(|p| s.name.starts_with(p)))
    })
}

/// Samples by name.
type ByName<'s, 'a> = HashMap<&'a str, Vec<&'s Sample<'a>>>;

/// How the samples of one engine index combine.
#[derive(Clone, Copy)]
enum Agg {
    Sum,
    Max,
}

/// The normalised figures of each engine index on the page.
pub fn normalise(spec: &Spec, samples: &[Sample]) -> Vec<EngineSeries> {
    let mut by_name: ByName = HashMap::new();
    for s in samples {
        let led = spec
            .leader
            .is_none_or(|(l, v)| s.label(l).is_none_or(|x| x == v));
        if led {
            by_name.entry(s.name).or_default().push(s);
        }
    }
    let index_of = |s: &Sample| -> String {
        spec.index_label
            .and_then(|l| s.label(l))
            .unwrap_or("0")
            .to_string()
    };
    let mut out: Indexed = BTreeMap::new();
    type Set = fn(&mut EngineSeries, f64);
    let scalars: [(&[Source], Agg, Set); 7] = [
        (spec.waiting, Agg::Sum, |e, v| e.requests_waiting = Some(v)),
        (spec.running, Agg::Sum, |e, v| e.requests_running = Some(v)),
        (spec.kv_ratio, Agg::Max, |e, v| {
            e.kv_cache_usage_ratio = ratio(v)
        }),
        (spec.preemptions, Agg::Sum, |e, v| {
            e.preemptions_total = Some(v)
        }),
        (spec.prefix_ratio, Agg::Max, |e, v| {
            e.prefix_cache_hit_ratio = ratio(v)
        }),
        (spec.prompt_tokens, Agg::Sum, |e, v| {
            e.prompt_tokens_total = Some(v)
        }),
        (spec.generation_tokens, Agg::Sum, |e, v| {
            e.generation_tokens_total = Some(v)
        }),
    ];
    for (sources, agg, set) in &scalars {
        if let Some(values) = first_present(&by_name, sources) {
            for (index, v) in per_index(&values, *agg, index_of) {
                set(entry(&mut out, index), v);
            }
        }
    }
    if let Some((used, max)) = &spec.kv_blocks {
        let has_ratio = first_present(&by_name, spec.kv_ratio).is_some();
        if let (false, Some(u), Some(m)) = (
            has_ratio,
            first_present(&by_name, std::slice::from_ref(used)),
            first_present(&by_name, std::slice::from_ref(max)),
        ) {
            let m: HashMap<String, f64> = per_index(&m, Agg::Sum, index_of).into_iter().collect();
            for (index, u) in per_index(&u, Agg::Sum, index_of) {
                if let Some(m) = m.get(&index).filter(|m| **m > 0.0) {
                    entry(&mut out, index).kv_cache_usage_ratio = ratio(u / m);
                }
            }
        }
    }
    for (hits, queries) in spec.prefix_counters {
        let (Some(h), Some(q)) = (
            first_present(&by_name, std::slice::from_ref(hits)),
            first_present(&by_name, std::slice::from_ref(queries)),
        ) else {
            continue;
        };
        for (index, v) in per_index(&h, Agg::Sum, index_of) {
            entry(&mut out, index).prefix_cache_hits_total = Some(v);
        }
        for (index, v) in per_index(&q, Agg::Sum, index_of) {
            entry(&mut out, index).prefix_cache_queries_total = Some(v);
        }
        break;
    }
    for source in spec.e2e {
        let sum = by_name.get(format!("{}_sum", source.name).as_str());
        let count = by_name.get(format!("{}_count", source.name).as_str());
        if let (Some(sum), Some(count)) = (sum, count) {
            for (index, v) in per_index(sum, Agg::Sum, index_of) {
                entry(&mut out, index).e2e_seconds_sum = Some(v);
            }
            for (index, v) in per_index(count, Agg::Sum, index_of) {
                entry(&mut out, index).e2e_count = Some(v);
            }
            break;
        }
    }
    type SetHist = fn(&mut EngineSeries, EngineHistogram);
    let hists: [(&[Source], SetHist); 2] = [
        (spec.ttft, |e, h| e.ttft = Some(h)),
        (spec.tpot, |e, h| e.tpot = Some(h)),
    ];
    for (sources, set) in hists {
        for source in sources {
            let found = histograms(&by_name, source.name, index_of);
            if found.is_empty() {
                continue;
            }
            for (index, h) in found {
                set(entry(&mut out, index), h);
            }
            break;
        }
    }
    out.into_values().collect()
}

/// Series by engine index, in numeric order ("2" before "10").
type Indexed = BTreeMap<(usize, String), EngineSeries>;

fn entry(out: &mut Indexed, index: String) -> &mut EngineSeries {
    out.entry((index.len(), index.clone()))
        .or_insert_with(|| EngineSeries {
            engine_index: index,
            ..EngineSeries::default()
        })
}

/// A 0–1 value; anything else is not a ratio (absent rather than misread).
fn ratio(v: f64) -> Option<f64> {
    (0.0..=1.0).contains(&v).then_some(v)
}

/// The samples of the first source the page has (with its label filter applied).
fn first_present<'s, 'a>(
    by_name: &ByName<'s, 'a>,
    sources: &[Source],
) -> Option<Vec<&'s Sample<'a>>> {
    sources.iter().find_map(|src| {
        let found: Vec<&Sample> = by_name
            .get(src.name)?
            .iter()
            .copied()
            .filter(|s| src.filter.is_none_or(|(l, v)| s.label(l) == Some(v)))
            .collect();
        (!found.is_empty()).then_some(found)
    })
}

/// Values combined per engine index, in order of first appearance.
fn per_index(
    samples: &[&Sample],
    agg: Agg,
    index_of: impl Fn(&Sample) -> String,
) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for s in samples {
        let i = index_of(s);
        match out.iter_mut().find(|(x, _)| *x == i) {
            Some((_, v)) => {
                *v = match agg {
                    Agg::Sum => *v + s.value,
                    Agg::Max => v.max(s.value),
                }
            }
            None => out.push((i, s.value)),
        }
    }
    out
}

/// The labels of a sample other than `le`.
type SeriesKey = Vec<(String, String)>;
/// (upper bound, cumulative count) pairs.
type Buckets = Vec<(f64, u64)>;

/// The labels of a sample other than `le`, as a key.
fn series_key(s: &Sample) -> SeriesKey {
    let mut k: Vec<(String, String)> = s
        .labels
        .iter()
        .filter(|(n, _)| *n != "le")
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    k.sort();
    k
}

/// The histograms called `base` per engine index: series of one index with the same
/// buckets are added up (several models), others after the first are left out.
fn histograms(
    by_name: &ByName,
    base: &str,
    index_of: impl Fn(&Sample) -> String,
) -> Vec<(String, EngineHistogram)> {
    let Some(buckets) = by_name.get(format!("{base}_bucket").as_str()) else {
        return Vec::new();
    };
    let pick = |suffix: &str| -> HashMap<SeriesKey, f64> {
        by_name
            .get(format!("{base}{suffix}").as_str())
            .map(|v| v.iter().map(|s| (series_key(s), s.value)).collect())
            .unwrap_or_default()
    };
    let (sums, counts) = (pick("_sum"), pick("_count"));
    // Series in order of first appearance: (key, index, buckets).
    let mut series: Vec<(SeriesKey, String, Buckets)> = Vec::new();
    for s in buckets {
        let Some(le) = s.label("le").and_then(|l| {
            let l = if l == "+Inf" { "inf" } else { l };
            l.parse::<f64>().ok()
        }) else {
            continue;
        };
        let key = series_key(s);
        let count = s.value.max(0.0).round() as u64;
        match series.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, b)) => b.push((le, count)),
            None => series.push((key, index_of(s), vec![(le, count)])),
        }
    }
    let mut out: Vec<(String, EngineHistogram)> = Vec::new();
    for (key, index, mut b) in series {
        let (Some(sum), Some(count)) = (sums.get(&key), counts.get(&key)) else {
            continue;
        };
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        let h = EngineHistogram {
            buckets: b,
            count: count.max(0.0).round() as u64,
            sum: *sum,
        };
        match out.iter_mut().find(|(i, _)| *i == index) {
            Some((_, acc)) => {
                let same = acc.buckets.len() == h.buckets.len()
                    && acc.buckets.iter().zip(&h.buckets).all(|(a, b)| a.0 == b.0);
                if same {
                    for (a, b) in acc.buckets.iter_mut().zip(&h.buckets) {
                        a.1 += b.1;
                    }
                    acc.count += h.count;
                    acc.sum += h.sum;
                }
            }
            None => out.push((index, h)),
        }
    }
    out
}

/// A table cell: the sources in order of preference.
fn cell(sources: &[Source]) -> String {
    if sources.is_empty() {
        return "–".into();
    }
    sources
        .iter()
        .map(|s| {
            let mut t = format!("`{}", s.name);
            if let Some((l, v)) = s.filter {
                t += &format!("{{{l}=\"{v}\"}}");
            }
            t.push('`');
            if !s.note.is_empty() {
                t += &format!(" ({})", s.note);
            }
            t
        })
        .collect::<Vec<_>>()
        .join(", else ")
}

/// The README's mapping table: per normalised figure, each engine's names in order of
/// preference, with the versions that publish them.
pub fn mapping_table() -> String {
    let mut out = String::from("| normalised |");
    for s in SPECS {
        out += &format!(" {} |", s.title);
    }
    out += "\n| --- |";
    out += &" --- |".repeat(SPECS.len());
    out.push('\n');
    type Column = fn(&Spec) -> String;
    let rows: [(&str, Column); 11] = [
        ("`engine_index` from the label", |s| {
            s.index_label.map_or("– (0)".into(), |l| format!("`{l}`"))
        }),
        ("`_requests_waiting`", |s| cell(s.waiting)),
        ("`_requests_running`", |s| cell(s.running)),
        ("`_kv_cache_usage_ratio`", |s| {
            let mut c = cell(s.kv_ratio);
            if let Some((u, m)) = &s.kv_blocks {
                let blocks = format!("{} / {}", cell(&[*u]), cell(&[*m]));
                c = if s.kv_ratio.is_empty() {
                    blocks
                } else {
                    format!("{c}, else {blocks}")
                };
            }
            c
        }),
        ("`_preemptions_total`", |s| cell(s.preemptions)),
        ("`_prefix_cache_hit_ratio`", |s| {
            let mut parts: Vec<String> = Vec::new();
            if !s.prefix_ratio.is_empty() {
                parts.push(cell(s.prefix_ratio));
            }
            for (h, q) in s.prefix_counters {
                parts.push(format!("{} / {} over the window", cell(&[*h]), cell(&[*q])));
            }
            if parts.is_empty() {
                "–".into()
            } else {
                parts.join(", else ")
            }
        }),
        ("`_prompt_tokens_total`", |s| cell(s.prompt_tokens)),
        ("`_generation_tokens_total`", |s| cell(s.generation_tokens)),
        ("TTFT histogram", |s| cell(s.ttft)),
        ("TPOT histogram", |s| cell(s.tpot)),
        ("end-to-end (for `frontend_seconds`)", |s| cell(s.e2e)),
    ];
    for (name, col) in rows {
        out += &format!("| {name} |");
        for s in SPECS {
            out += &format!(" {} |", col(s));
        }
        out.push('\n');
    }
    out
}
