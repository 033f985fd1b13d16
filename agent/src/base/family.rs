//! Builders of Prometheus metric families (the prometheus crate's data model), shared by
//! each collector's exposition and the agent's own families. Writing the text format is
//! the exposition layer's job.
use prometheus::proto::{Bucket, Counter, Gauge, Histogram as Hist, LabelPair, Metric};
pub use prometheus::proto::{MetricFamily, MetricType};

use super::histogram::{log2_upper_seconds, Histogram};

pub fn label_pairs(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

pub fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

pub fn gauge(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(label_pairs(pairs));
    m.set_gauge(g);
    m
}

pub fn counter(pairs: &[(&str, &str)], v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(label_pairs(pairs));
    m.set_counter(c);
    m
}

/// A histogram sample from (upper bound, cumulative count) pairs.
pub fn histogram(
    pairs: &[(&str, &str)],
    cumulative: impl Iterator<Item = (f64, u64)>,
    count: u64,
    sum: f64,
) -> Metric {
    let buckets = cumulative
        .map(|(upper, c)| {
            let mut b = Bucket::default();
            b.set_upper_bound(upper);
            b.set_cumulative_count(c);
            b
        })
        .collect();
    let mut h = Hist::default();
    h.set_sample_count(count);
    h.set_sample_sum(sum);
    h.set_bucket(buckets);
    let mut m = Metric::from_label(label_pairs(pairs));
    m.set_histogram(h);
    m
}

/// A gauge or counter sample.
pub fn sample(kind: MetricType, pairs: &[(&str, &str)], v: f64) -> Metric {
    if kind == MetricType::COUNTER {
        counter(pairs, v)
    } else {
        gauge(pairs, v)
    }
}

/// A family of one sample without labels.
pub fn single(name: &str, help: &str, kind: MetricType, v: f64) -> MetricFamily {
    family(name, help, kind, vec![sample(kind, &[], v)])
}

/// One family with a sample per item that has a value.
pub fn series<T, K: AsRef<str>>(
    name: &str,
    help: &str,
    kind: MetricType,
    items: &[T],
    labels: impl Fn(&T) -> Vec<(K, String)>,
    value: impl Fn(&T) -> Option<f64>,
) -> MetricFamily {
    let metrics = items
        .iter()
        .filter_map(|item| {
            let v = value(item)?;
            let owned = labels(item);
            let pairs: Vec<(&str, &str)> = owned
                .iter()
                .map(|(n, v)| (n.as_ref(), v.as_str()))
                .collect();
            Some(sample(kind, &pairs, v))
        })
        .collect();
    family(name, help, kind, metrics)
}

/// The first exported log2 bucket bound: 2^10 ns.
const FIRST_LOG2_BUCKET_SECONDS: f64 = 1.024e-6;

/// A histogram from non-cumulative log2 nanosecond buckets (see `histogram::log2_upper_seconds`).
pub fn log2_histogram(pairs: &[(&str, &str)], buckets: &[u64], sum_seconds: f64) -> Metric {
    let cumulative: Vec<(f64, u64)> = buckets
        .iter()
        .scan(0u64, |acc, n| {
            *acc += n;
            Some(*acc)
        })
        .enumerate()
        .filter_map(|(i, c)| log2_upper_seconds(i).map(|u| (u, c)))
        // Nothing the kernel times finishes in under a microsecond but the cheapest
        // syscalls: the buckets below 2^10 ns fold into the first one (a quarter fewer
        // lines for /metrics to render).
        .filter(|(u, _)| *u >= FIRST_LOG2_BUCKET_SECONDS)
        .collect();
    let count = buckets.iter().sum();
    histogram(pairs, cumulative.into_iter(), count, sum_seconds)
}

/// A fixed-bucket histogram sample.
pub fn fixed_histogram(pairs: &[(&str, &str)], h: &Histogram) -> Metric {
    histogram(pairs, h.cumulative(), h.count, h.sum)
}

/// A family of one gauge per item: 1 when `up`, else 0.
pub fn up_gauges<'a>(
    name: &str,
    help: &str,
    label: &str,
    items: impl Iterator<Item = (&'a str, bool)>,
) -> MetricFamily {
    family(
        name,
        help,
        MetricType::GAUGE,
        items
            .map(|(v, up)| gauge(&[(label, v)], if up { 1.0 } else { 0.0 }))
            .collect(),
    )
}
