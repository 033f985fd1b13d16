//! The inference servers' own view: each target's engine metrics (vLLM, SGLang, TGI,
//! Triton, TensorRT-LLM, llama.cpp), scraped from its own `/metrics` and normalised to
//! one set of names, and its health endpoint, probed. Both run on threads of their own
//! with a timeout and a size bound, so a hung or huge endpoint fails that target only.
//! The endpoints are configured per target or found among the target's listening ports.
//! The agent's requests are marked so the HTTP collector does not count them.
mod client;
mod discover;
mod exposition;
mod metrics;
mod normalise;
mod window;
mod worker;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::Serialize;

pub use normalise::{mapping_table, EngineHistogram, EngineKind, EngineSeries};
pub use window::Window;
pub use worker::{EngineTarget, ProbeStatus, Scraper, Shared, TargetInfo};

use super::{sampler::Sampler, Collected, Collector, Tick};
use crate::{
    base::{
        signal::{Instance, SignalDoc, SignalSet},
        Health,
    },
    config::Config,
    ebpf::Kernel,
    targets::Targets,
};
use worker::Prober;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EnginesPart {
    /// Each target whose engine metrics were found (or configured), as last scraped.
    pub engines: Vec<EngineTarget>,
    /// Each target whose health endpoint was found (or configured), as last probed.
    pub health_probes: Vec<ProbeStatus>,
}

impl EnginesPart {
    /// A target's engine, when its last scrape succeeded and the engine is known.
    pub fn engine_of(&self, target: &str) -> Option<&EngineTarget> {
        self.engines
            .iter()
            .find(|e| e.target == target && e.health.is_active() && e.engine.is_some())
    }

    /// The requests waiting in a target's engine (all its engine indexes), if known.
    pub fn waiting(&self, target: &str) -> Option<f64> {
        let e = self.engine_of(target)?;
        let v: Vec<f64> = e.series.iter().filter_map(|s| s.requests_waiting).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }
}

type Reading<T> = Result<Vec<T>, Health>;
/// A round on its own thread: its latest reading.
type Rounds<T> = Sampler<Reading<T>>;

pub struct Engines {
    /// The scrape and probe threads (or why there are none).
    threads: Result<(Rounds<EngineTarget>, Rounds<ProbeStatus>), Health>,
    targets: Shared,
    started: Instant,
    /// The longer of the two intervals: a round older than three of them is stuck.
    interval: Duration,
}

/// Start a round on its own thread; the round's state is made on the thread.
fn spawn<T: Send + Sync + 'static, R: Send + 'static>(
    name: &'static str,
    interval: Duration,
    make: impl FnOnce() -> Result<R, Health> + Send + 'static,
    mut round: impl FnMut(&mut R) -> Vec<T> + Send + 'static,
) -> Sampler<Reading<T>> {
    let mut make = Some(make);
    let mut state: Option<Result<R, Health>> = None;
    Sampler::spawn(name, interval, move || {
        if state.is_none() {
            state = make.take().map(|f| f());
        }
        match state.as_mut() {
            Some(Ok(s)) => Ok(round(s)),
            Some(Err(h)) => Err(h.clone()),
            None => Err(Health::failed("not started")),
        }
    })
}

/// A round's latest result; a round that failed or is stuck sets `health`.
fn latest<T: Clone + Send + Sync + 'static>(
    sampler: &Sampler<Reading<T>>,
    starting: bool,
    health: &mut Health,
    took: &mut Option<Duration>,
) -> Vec<T> {
    match sampler.latest() {
        Ok((r, t)) => match r.as_ref() {
            Ok(v) => {
                *took = Some(t);
                v.clone()
            }
            Err(h) => {
                *health = h.clone();
                Vec::new()
            }
        },
        Err(h) => {
            if !starting {
                *health = h;
            }
            Vec::new()
        }
    }
}

/// Engine-index figures summed (or the largest) per (target, engine) for the signals.
fn per_engine(
    part: &EnginesPart,
    field: fn(&EngineSeries) -> Option<f64>,
    largest: bool,
) -> Vec<Instance> {
    let mut out: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for e in part.engines.iter().filter(|e| e.health.is_active()) {
        let Some(kind) = e.engine else { continue };
        for v in e.series.iter().filter_map(field) {
            out.entry((e.target.as_str(), kind.label()))
                .and_modify(|x| *x = if largest { x.max(v) } else { *x + v })
                .or_insert(v);
        }
    }
    out.into_iter()
        .map(|((t, k), v)| Instance::labelled(&[("target", t), ("engine", k)], v))
        .collect()
}

impl Collector for Engines {
    const NAME: &'static str = "engines";
    const SIGNALS: &'static [SignalDoc] = &[
        SignalDoc {
            name: "engine_requests_waiting",
            labels: "target, engine",
            meaning: "requests waiting in the engine's own queue (all its engine indexes)",
        },
        SignalDoc {
            name: "engine_kv_cache_usage_ratio",
            labels: "target, engine",
            meaning: "share of the engine's KV cache that is occupied (the fullest engine index)",
        },
        SignalDoc {
            name: "engine_preemption_rate",
            labels: "target, engine",
            meaning: "requests the engine preempted per second over the window",
        },
        SignalDoc {
            name: "engine_frontend_seconds",
            labels: "target",
            meaning: "merged with http: the kernel-measured mean duration of the target's POST requests minus the engine's own mean end-to-end duration, over the same window (time in the HTTP front end)",
        },
        SignalDoc {
            name: "target_requests_waiting",
            labels: "target",
            meaning: "merged with http: the engine's waiting requests where its metrics are read, else the requests in flight the kernel sees",
        },
        SignalDoc {
            name: "target_health_ok",
            labels: "target",
            meaning: "1 when the target's health endpoint answered 2xx at the last probe, else 0",
        },
    ];
    type Part = EnginesPart;

    fn start(config: &Config, _: &mut Kernel, targets: &Targets) -> Engines {
        let c = &config.engines;
        // Until the first tick gives every target's processes, its root process.
        let shared: Shared = Arc::new(Mutex::new(
            targets
                .iter()
                .map(|t| TargetInfo {
                    name: t.name.clone(),
                    pids: t.pid().into_iter().collect(),
                    endpoints: t.endpoints.clone(),
                })
                .collect(),
        ));
        let threads = if c.enabled {
            let (s, p) = (shared.clone(), shared.clone());
            let (timeout, max, window) = (c.timeout, c.max_response_bytes, config.http.window);
            Ok((
                spawn(
                    "engines",
                    c.interval,
                    move || Scraper::new(s, timeout, max, window),
                    Scraper::round,
                ),
                spawn(
                    "health",
                    c.health_interval,
                    move || Prober::new(p, timeout),
                    Prober::round,
                ),
            ))
        } else {
            Err(Health::unsupported("disabled ([engines] enabled = false)"))
        };
        Engines {
            threads,
            targets: shared,
            started: Instant::now(),
            interval: c.interval.max(c.health_interval),
        }
    }

    fn collect(&mut self, tick: &mut Tick<'_>) -> Collected<EnginesPart> {
        let infos: Vec<TargetInfo> = tick
            .targets
            .iter()
            .map(|t| TargetInfo {
                name: t.name.clone(),
                pids: tick
                    .members
                    .of(t.index)
                    .map(|m| m.pids.clone())
                    .unwrap_or_default(),
                endpoints: t.endpoints.clone(),
            })
            .collect();
        *self.targets.lock().unwrap_or_else(PoisonError::into_inner) = infos;
        let (scraper, prober) = match &self.threads {
            Ok(t) => t,
            Err(h) => return Collected::new(EnginesPart::default(), h.clone()),
        };
        // Before the first round ends there is nothing yet, which is no failure.
        let starting = self.started.elapsed() < self.interval * 3 + Duration::from_secs(1);
        let mut health = Health::active();
        let mut took = None;
        let engines = latest(scraper, starting, &mut health, &mut took);
        let health_probes = latest(prober, starting, &mut health, &mut None);
        let part = EnginesPart {
            engines,
            health_probes,
        };
        Collected { part, health, took }
    }

    fn families(part: &EnginesPart, out: &mut Vec<prometheus::proto::MetricFamily>) {
        metrics::families(part, out);
    }

    fn signals(part: &EnginesPart, out: &mut SignalSet) {
        out.put(
            "engine_requests_waiting",
            per_engine(part, |s| s.requests_waiting, false),
        );
        out.put(
            "engine_kv_cache_usage_ratio",
            per_engine(part, |s| s.kv_cache_usage_ratio, true),
        );
        out.put(
            "engine_preemption_rate",
            per_engine(part, |s| s.preemption_rate, false),
        );
        out.put(
            "target_health_ok",
            part.health_probes
                .iter()
                .map(|p| Instance::labelled(&[("target", &p.target)], if p.ok { 1.0 } else { 0.0 }))
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests;
