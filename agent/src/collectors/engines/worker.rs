//! The two rounds that run on the collector's own threads: scraping each target's engine
//! metrics (`[engines] interval`) and probing its health endpoint (`health_interval`).
//! Each target's endpoint is the configured one, or found among its listening ports; a
//! port that gives no usable answer is not an engine (no error) and is tried again later.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde::Serialize;

use super::{
    client::{status_text, Answer, Client, FetchError},
    discover::{base_url, listening, Listener},
    exposition,
    normalise::{self, EngineKind, EngineSeries},
    window::Window,
};
use crate::{
    base::{now_millis, Health},
    config::Endpoints,
};

/// A port whose answer says it has no such endpoint (404, not exposition text, not HTTP)
/// is tried again after this long; one that timed out or answered 5xx (a server busy or
/// still loading: llama.cpp answers 503 while it loads) at the next round.
const RETRY: Duration = Duration::from_secs(60);
/// Health endpoints tried on each port when none is configured (vLLM, SGLang, TGI and
/// llama.cpp serve `/health`; Triton `/v2/health/ready`).
const HEALTH_PATHS: &[&str] = &["/health", "/v2/health/ready"];
/// A health answer's body is not needed; a longer one is cut.
const PROBE_BODY: usize = 64 * 1024;

/// What the rounds need to know of a target (updated by the collector every tick).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInfo {
    pub name: String,
    pub pids: Vec<u32>,
    pub endpoints: Endpoints,
}

pub type Shared = Arc<Mutex<Vec<TargetInfo>>>;

fn current(shared: &Shared) -> Vec<TargetInfo> {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// One target's engine as last scraped: where, which engine, and its normalised series
/// (none when the scrape failed: absent, never zeros).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineTarget {
    pub target: String,
    /// Where its metrics are read (absent when they cannot be reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The engine its metric names are those of (absent: none we know).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKind>,
    /// The last scrape: active, or failed with the reason.
    #[serde(flatten)]
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    pub series: Vec<EngineSeries>,
}

/// One target's last health probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeStatus {
    pub target: String,
    pub url: String,
    pub ok: bool,
    /// The answer's status code (absent: no answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_seconds: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it started (Unix milliseconds).
    pub at_ms: u64,
}

/// Ports of a target not to try again before a time.
#[derive(Default)]
struct Skip(HashMap<Listener, Instant>);

impl Skip {
    fn wanted(&mut self, all: Vec<Listener>, now: Instant) -> Vec<Listener> {
        self.0.retain(|l, until| *until > now && all.contains(l));
        all.into_iter()
            .filter(|l| !self.0.contains_key(l))
            .collect()
    }

    /// Try `l` again after `RETRY` if `answer` says it has no such endpoint.
    fn after(&mut self, l: Listener, answer: &Result<Answer, FetchError>, now: Instant) {
        let transient = match answer {
            Ok(a) => a.status >= 500,
            Err(e) => matches!(e, FetchError::Timeout(_) | FetchError::Connect(_)),
        };
        if !transient {
            self.0.insert(l, now + RETRY);
        }
    }
}

#[derive(Default)]
struct ScrapeState {
    /// The metrics URL found among the target's ports, and whether to look again (it
    /// refused the last connection: the server may have restarted on another port).
    found: Option<String>,
    stale: bool,
    skip: Skip,
    /// Per engine index: preemptions, prefix-cache hits, prefix-cache queries.
    windows: HashMap<String, [Window; 3]>,
}

/// The scrape round and what it keeps between rounds.
pub struct Scraper {
    rt: tokio::runtime::Runtime,
    client: Client,
    targets: Shared,
    state: HashMap<String, ScrapeState>,
    max_bytes: usize,
    window: Duration,
}

fn runtime() -> Result<tokio::runtime::Runtime, Health> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Health::failed(format!("cannot start the HTTP client: {e}")))
}

impl Scraper {
    pub fn new(
        targets: Shared,
        timeout: Duration,
        max_bytes: usize,
        window: Duration,
    ) -> Result<Scraper, Health> {
        Ok(Scraper {
            rt: runtime()?,
            client: Client::new(timeout),
            targets,
            state: HashMap::new(),
            max_bytes,
            window,
        })
    }

    /// Scrape every target at once (a hung one delays only itself, up to the timeout).
    pub fn round(&mut self) -> Vec<EngineTarget> {
        let targets = current(&self.targets);
        let mut states: Vec<(TargetInfo, ScrapeState)> = targets
            .into_iter()
            .map(|t| {
                let s = self.state.remove(&t.name).unwrap_or_default();
                (t, s)
            })
            .collect();
        let (client, max, window) = (&self.client, self.max_bytes, self.window);
        let results = self.rt.block_on(join_all(
            states
                .iter_mut()
                .map(|(t, s)| scrape(client, t, s, max, window)),
        ));
        // Targets gone since the last round lose their state here.
        self.state = states.into_iter().map(|(t, s)| (t.name, s)).collect();
        results.into_iter().flatten().collect()
    }
}

/// A metrics page as parsed: its engine and normalised series.
fn read_page(body: &[u8]) -> Result<(Option<&'static normalise::Spec>, Vec<EngineSeries>), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let samples = exposition::parse(text, normalise::relevant).map_err(|e| e.to_string())?;
    let spec = normalise::recognise(&samples);
    let series = spec
        .map(|s| normalise::normalise(s, &samples))
        .unwrap_or_default();
    Ok((spec, series))
}

/// Probe `GET /metrics` on each port not to be skipped: the lowest port serving a known
/// engine's page, else the lowest serving any page. Ports without a page are skipped for
/// a while.
async fn discover_metrics(
    client: &Client,
    skip: &mut Skip,
    listeners: Vec<Listener>,
    max_bytes: usize,
    now: Instant,
) -> Option<(String, Result<Answer, FetchError>)> {
    let ports = skip.wanted(listeners, now);
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("{}/metrics", base_url(p.addr)))
        .collect();
    let answers = join_all(urls.iter().map(|u| client.get(u, max_bytes, false))).await;
    let mut best: Option<(usize, bool)> = None;
    for (i, a) in answers.iter().enumerate() {
        let page = match a {
            Ok(a) if a.status == 200 => read_page(&a.body).ok(),
            _ => None,
        };
        let Some((spec, _)) = page else {
            skip.after(ports[i], a, now);
            continue;
        };
        let known = spec.is_some();
        if best.is_none_or(|(_, k)| known && !k) {
            best = Some((i, known));
        }
    }
    let (i, _) = best?;
    let answer = answers.into_iter().nth(i)?;
    Some((urls.into_iter().nth(i)?, answer))
}

async fn scrape(
    client: &Client,
    t: &TargetInfo,
    state: &mut ScrapeState,
    max_bytes: usize,
    window: Duration,
) -> Option<EngineTarget> {
    let start = Instant::now();
    let known = t
        .endpoints
        .metrics_url
        .clone()
        .or(state.found.clone().filter(|_| !state.stale));
    let (url, answer) = match known {
        Some(url) => {
            let answer = client.get(&url, max_bytes, false).await;
            (url, answer)
        }
        None => {
            let l = listening(&t.pids);
            if l.listeners.is_empty() && l.elsewhere {
                return Some(EngineTarget {
                    target: t.name.clone(),
                    url: None,
                    engine: None,
                    health: Health::unsupported(
                        "its processes are in another network namespace: give the target a metrics_url",
                    ),
                    duration_seconds: None,
                    series: Vec::new(),
                });
            }
            match discover_metrics(client, &mut state.skip, l.listeners, max_bytes, start).await {
                Some((url, answer)) => {
                    if state.found.as_ref() != Some(&url) {
                        tracing::info!("target {:?}: engine metrics at {url}", t.name);
                    }
                    state.found = Some(url.clone());
                    state.stale = false;
                    (url, answer)
                }
                // Nothing new: the old endpoint, if any, is still the one (and failing).
                None => {
                    let url = state.found.clone()?;
                    let answer = client.get(&url, max_bytes, false).await;
                    (url, answer)
                }
            }
        }
    };
    let took = Some(start.elapsed().as_secs_f64());
    let failed = |reason: String| EngineTarget {
        target: t.name.clone(),
        url: Some(url.clone()),
        engine: None,
        health: Health::failed(format!("GET {url}: {reason}")),
        duration_seconds: took,
        series: Vec::new(),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            // A port that refuses connections may be gone (the server restarted on
            // another port): look again next round.
            state.stale |= matches!(e, FetchError::Connect(_));
            return Some(failed(e.to_string()));
        }
    };
    if answer.status != 200 {
        return Some(failed(status_text(answer.status)));
    }
    let (spec, mut series) = match read_page(&answer.body) {
        Ok(p) => p,
        Err(e) => return Some(failed(e)),
    };
    let now = Instant::now();
    state
        .windows
        .retain(|index, _| series.iter().any(|s| s.engine_index == *index));
    for s in &mut series {
        let w = state.windows.entry(s.engine_index.clone()).or_default();
        if let Some(p) = s.preemptions_total {
            s.preemption_rate = w[0].rate(now, p, window);
        }
        if let (Some(h), Some(q)) = (s.prefix_cache_hits_total, s.prefix_cache_queries_total) {
            let hits = w[1].push(now, h, window);
            let queries = w[2].push(now, q, window);
            if let (Some((dh, _)), Some((dq, _))) = (hits, queries) {
                s.prefix_cache_hit_ratio = (dq > 0.0).then(|| (dh / dq).clamp(0.0, 1.0));
            }
        }
    }
    Some(EngineTarget {
        target: t.name.clone(),
        url: Some(url),
        engine: spec.map(|s| s.kind),
        health: Health::active(),
        duration_seconds: took,
        series,
    })
}

#[derive(Default)]
struct ProbeState {
    /// As `ScrapeState`'s.
    found: Option<String>,
    stale: bool,
    skip: Skip,
}

/// The health-probe round and what it keeps between rounds.
pub struct Prober {
    rt: tokio::runtime::Runtime,
    client: Client,
    targets: Shared,
    state: HashMap<String, ProbeState>,
}

impl Prober {
    pub fn new(targets: Shared, timeout: Duration) -> Result<Prober, Health> {
        Ok(Prober {
            rt: runtime()?,
            client: Client::new(timeout),
            targets,
            state: HashMap::new(),
        })
    }

    pub fn round(&mut self) -> Vec<ProbeStatus> {
        let targets = current(&self.targets);
        let mut states: Vec<(TargetInfo, ProbeState)> = targets
            .into_iter()
            .map(|t| {
                let s = self.state.remove(&t.name).unwrap_or_default();
                (t, s)
            })
            .collect();
        let client = &self.client;
        let results = self.rt.block_on(join_all(
            states.iter_mut().map(|(t, s)| probe(client, t, s)),
        ));
        self.state = states.into_iter().map(|(t, s)| (t.name, s)).collect();
        results.into_iter().flatten().collect()
    }
}

/// A health endpoint answers anything but "no such path".
fn is_endpoint(answer: &Result<Answer, FetchError>) -> bool {
    matches!(answer, Ok(a) if a.status != 404 && a.status != 405)
}

/// Try `health_path` (or the usual paths) on each port not to be skipped: the first
/// (lowest port, then path order) that is an endpoint. Ports without one are skipped for
/// a while.
async fn discover_health(
    client: &Client,
    skip: &mut Skip,
    listeners: Vec<Listener>,
    health_path: Option<&str>,
    now: Instant,
) -> Option<(String, Result<Answer, FetchError>)> {
    let ports = skip.wanted(listeners, now);
    let paths: Vec<&str> = health_path.map_or_else(|| HEALTH_PATHS.to_vec(), |p| vec![p]);
    let urls: Vec<(usize, String)> = ports
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            paths
                .iter()
                .map(move |path| (i, format!("{}{path}", base_url(p.addr))))
        })
        .collect();
    let answers = join_all(urls.iter().map(|(_, u)| client.get(u, PROBE_BODY, true))).await;
    for (i, port) in ports.iter().enumerate() {
        let mine = || urls.iter().zip(&answers).filter(move |((p, _), _)| *p == i);
        if !mine().any(|(_, a)| is_endpoint(a)) {
            // Its first path's answer says whether to look again soon.
            if let Some((_, a)) = mine().next() {
                skip.after(*port, a, now);
            }
        }
    }
    let i = answers.iter().position(is_endpoint)?;
    let answer = answers.into_iter().nth(i)?;
    Some((urls.into_iter().nth(i)?.1, answer))
}

async fn probe(client: &Client, t: &TargetInfo, state: &mut ProbeState) -> Option<ProbeStatus> {
    let start = Instant::now();
    let at_ms = now_millis();
    let known = t
        .endpoints
        .health_url
        .clone()
        .or(state.found.clone().filter(|_| !state.stale));
    let (url, answer) = match known {
        Some(url) => {
            let answer = client.get(&url, PROBE_BODY, true).await;
            (url, answer)
        }
        None => {
            let listeners = listening(&t.pids).listeners;
            let path = t.endpoints.health_path.as_deref();
            match discover_health(client, &mut state.skip, listeners, path, start).await {
                Some((url, answer)) => {
                    if state.found.as_ref() != Some(&url) {
                        tracing::info!("target {:?}: health endpoint {url}", t.name);
                    }
                    state.found = Some(url.clone());
                    state.stale = false;
                    (url, answer)
                }
                // A server that is down keeps failing its old endpoint (0, not absent).
                None => {
                    let url = state.found.clone()?;
                    let answer = client.get(&url, PROBE_BODY, true).await;
                    (url, answer)
                }
            }
        }
    };
    let duration_seconds = start.elapsed().as_secs_f64();
    let (ok, status, reason) = match answer {
        Ok(a) if (200..300).contains(&a.status) => (true, Some(a.status), None),
        Ok(a) => (false, Some(a.status), Some(status_text(a.status))),
        Err(e) => {
            state.stale |= matches!(e, FetchError::Connect(_));
            (false, None, Some(e.to_string()))
        }
    };
    Some(ProbeStatus {
        target: t.name.clone(),
        reason: reason.map(|r| format!("GET {url}: {r}")),
        url,
        ok,
        status,
        duration_seconds,
        at_ms,
    })
}
