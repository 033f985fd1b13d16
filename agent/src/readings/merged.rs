//! Figures only this agent can give, merged here from several collectors' parts where
//! both are visible (collectors never read each other): the time a target's requests
//! spend in its HTTP front end (the kernel-measured duration minus the engine's own),
//! generated tokens per second, per joule of the GPU energy attributed to the target and
//! their energy cost, and the requests waiting (the engine's queue where its metrics are
//! read, else the requests in flight the kernel sees). Rates are over `[http] window`.
use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use prometheus::proto::MetricFamily;
use serde::Serialize;

use super::Readings;
use crate::{
    base::{
        family::{series, MetricType},
        signal::{Instance, SignalSet},
    },
    collectors::{engines::Window, http::HttpPart},
};

/// One target's merged figures; a figure one of its parts cannot give is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetFigures {
    pub target: String,
    /// Mean kernel-measured duration of its POST requests minus the engine's mean
    /// end-to-end duration, over the same window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontend_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_tokens_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_joule: Option<f64>,
    /// Energy cost of a million generated tokens at `[energy] price_per_kwh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_million_tokens: Option<f64>,
    pub currency: String,
    /// The engine's waiting requests, else the requests in flight (kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_waiting: Option<f64>,
}

#[derive(Default)]
struct Windows {
    kernel_sum: Window,
    kernel_count: Window,
    engine_sum: Window,
    engine_count: Window,
    tokens: Window,
    joules: Window,
}

/// The windows of every target's running totals, kept between ticks.
pub struct Merger {
    window: Duration,
    per_target: HashMap<String, Windows>,
}

/// (sum, count) of the kernel-measured durations of a target's POST requests: the
/// generation calls (health checks and scrapes by others are GETs).
fn kernel_posts(http: &HttpPart, target: &str) -> (f64, f64) {
    let posts = http
        .http
        .iter()
        .filter(|s| s.target == target && s.method == "POST");
    let (sum, count) = posts.fold((0.0, 0u64), |(s, c), x| {
        (s + x.duration.sum, c + x.duration.count)
    });
    (sum, count as f64)
}

/// Mean over the window of a (sum, count) pair of running totals.
fn mean(sum: Option<(f64, f64)>, count: Option<(f64, f64)>) -> Option<f64> {
    let ((ds, _), (dc, _)) = (sum?, count?);
    (dc > 0.0).then(|| ds / dc)
}

impl Merger {
    pub fn new(window: Duration) -> Merger {
        Merger {
            window,
            per_target: HashMap::new(),
        }
    }

    /// This tick's figures for every target the http or engines part knows.
    pub fn update(&mut self, r: &Readings, now: Instant) -> Vec<TargetFigures> {
        let names: BTreeSet<&str> = r
            .http
            .requests
            .iter()
            .map(|s| s.target.as_str())
            .chain(r.engines.engines.iter().map(|e| e.target.as_str()))
            .collect();
        self.per_target.retain(|t, _| names.contains(t.as_str()));
        let span = self.window;
        let energy = &r.gpu.energy;
        let mut out = Vec::new();
        for target in names {
            let w = self.per_target.entry(target.to_string()).or_default();
            let engine = r.engines.engine_of(target);
            let total = |f: fn(&crate::collectors::engines::EngineSeries) -> Option<f64>| {
                let v: Vec<f64> = engine?.series.iter().filter_map(f).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>())
            };
            let mut f = TargetFigures {
                target: target.to_string(),
                currency: energy.currency.clone(),
                ..TargetFigures::default()
            };
            if let (Some(es), Some(ec)) = (total(|s| s.e2e_seconds_sum), total(|s| s.e2e_count)) {
                let (ks, kc) = kernel_posts(&r.http, target);
                let kernel = mean(
                    w.kernel_sum.push(now, ks, span),
                    w.kernel_count.push(now, kc, span),
                );
                let engine = mean(
                    w.engine_sum.push(now, es, span),
                    w.engine_count.push(now, ec, span),
                );
                f.frontend_seconds = kernel.zip(engine).map(|(k, e)| k - e);
            }
            let tokens =
                total(|s| s.generation_tokens_total).and_then(|t| w.tokens.push(now, t, span));
            let joules = energy
                .targets
                .iter()
                .find(|(t, _)| t == target)
                .and_then(|(_, j)| w.joules.push(now, *j, span));
            if let Some((dt, secs)) = tokens {
                f.generation_tokens_per_second = Some(dt / secs);
                if let Some((dj, _)) = joules.filter(|(dj, _)| *dj > 0.0) {
                    f.tokens_per_joule = Some(dt / dj);
                    if dt > 0.0 {
                        f.cost_per_million_tokens = energy.cost(dj).map(|c| c / dt * 1e6);
                    }
                }
            }
            f.requests_waiting = r.engines.waiting(target).or_else(|| {
                r.http
                    .requests
                    .iter()
                    .find(|s| s.target == target)
                    .and_then(|s| s.active)
                    .map(|a| a as f64)
            });
            out.push(f);
        }
        out
    }
}

/// The merged figures' families.
pub fn families(figures: &[TargetFigures], out: &mut Vec<MetricFamily>) {
    type Field = fn(&TargetFigures) -> Option<f64>;
    let fields: [(&str, &str, Field); 3] = [
        (
            "infersight_engine_frontend_seconds",
            "Time a request spends in the target's HTTP front end: the kernel-measured mean duration of its POST requests minus the engine's own mean end-to-end duration, over the same window.",
            |f| f.frontend_seconds,
        ),
        (
            "infersight_engine_generation_tokens_per_second",
            "Tokens the target's engine generated per second over the window.",
            |f| f.generation_tokens_per_second,
        ),
        (
            "infersight_engine_tokens_per_joule",
            "Tokens generated per joule of GPU energy attributed to the target, over the window.",
            |f| f.tokens_per_joule,
        ),
    ];
    for (name, help, value) in fields {
        out.push(series(
            name,
            help,
            MetricType::GAUGE,
            figures,
            |f| vec![("target", f.target.clone())],
            value,
        ));
    }
    out.push(series(
        "infersight_engine_cost_per_million_tokens",
        "Energy cost of a million generated tokens at the configured price per kWh, over the window.",
        MetricType::GAUGE,
        figures,
        |f| vec![("currency", f.currency.clone()), ("target", f.target.clone())],
        |f| f.cost_per_million_tokens,
    ));
}

/// The merged signals. `engine_frontend_seconds` needs both parts working;
/// `target_requests_waiting` either (it falls back to the kernel's in-flight count).
pub fn signals(figures: &[TargetFigures], http: bool, engines: bool, out: &mut SignalSet) {
    let each = |value: fn(&TargetFigures) -> Option<f64>| -> Vec<Instance> {
        figures
            .iter()
            .filter_map(|f| Some(Instance::labelled(&[("target", &f.target)], value(f)?)))
            .collect()
    };
    if http && engines {
        out.put("engine_frontend_seconds", each(|f| f.frontend_seconds));
    } else {
        out.no_data("engine_frontend_seconds");
    }
    if http || engines {
        out.put("target_requests_waiting", each(|f| f.requests_waiting));
    } else {
        out.no_data("target_requests_waiting");
    }
}
