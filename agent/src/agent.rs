//! The agent's runtime: bind, resolve targets, start the probes, then one Snapshot per
//! tick published to the HTTP server through a watch channel.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
    time::MissedTickBehavior,
};

use crate::{
    collect::{self, http::HttpCollector},
    config::Config,
    ebpf::{Options, Probes, SYSCALL_PROGRAMS},
    server,
    snapshot::{CollectorStatus, Health, Snapshot, State, SyscallSeries, TargetStatus},
    targets::{process_alive, TargetError, TargetKind, Targets},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--listen {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// Collectors and their last readings; builds Snapshots.
pub struct Agent {
    targets: Targets,
    probes: Probes,
    tick: u64,
    syscalls: Vec<SyscallSeries>,
    syscall_health: Health,
    http: Arc<Mutex<HttpCollector>>,
    http_health: Health,
}

/// The collector behind the lock, even if a reader panicked while holding it (its data
/// is still consistent: each event is recorded in one call).
fn locked(m: &Mutex<HttpCollector>) -> MutexGuard<'_, HttpCollector> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Agent {
    pub fn new(targets: Targets, config: &Config) -> Agent {
        let options = Options {
            http: config.http,
            bpf_stats: config.bpf_stats,
        };
        let probes = Probes::start_with(&targets, SYSCALL_PROGRAMS, options);
        let syscall_health = probes.collector_health();
        let http = HttpCollector::new(&targets, config.route_limit, config.window);
        Agent {
            targets,
            http_health: if config.http {
                syscall_health.clone()
            } else {
                Health::unsupported("disabled in the configuration ([http] enabled = false)")
            },
            probes,
            tick: 0,
            syscalls: Vec::new(),
            syscall_health,
            http: Arc::new(Mutex::new(http)),
        }
    }

    /// Start the task that drains completed-request events (needs a tokio runtime).
    pub fn spawn_event_reader(&mut self) {
        if self.http_health.state != State::Active {
            return;
        }
        let Some(ring) = self.probes.take_http_events() else {
            self.http_health = Health::failed("ring buffer unavailable");
            return;
        };
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long
        // as the AsyncFd owns the RingBuf.
        match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
            Ok(fd) => {
                tokio::spawn(read_events(fd, self.http.clone()));
            }
            Err(e) => self.http_health = Health::failed(format!("ring buffer: {e}")),
        }
    }

    /// One line per program and collector: what is attached, what is not, and why.
    pub fn log_summary(&self) {
        for p in self.probes.program_statuses() {
            match &p.health.reason {
                None => tracing::info!("program {}: attached", p.name),
                Some(r) => tracing::warn!("program {}: {:?}: {r}", p.name, p.health.state),
            }
        }
        for (name, h) in [
            ("syscalls", &self.syscall_health),
            ("http", &self.http_health),
        ] {
            match &h.reason {
                None => tracing::info!("collector {name}: active"),
                Some(r) => tracing::warn!("collector {name}: {:?}: {r}", h.state),
            }
        }
        if let Some(note) = self.probes.stats_note() {
            tracing::info!("eBPF self-cost metrics unavailable: {note}");
        }
        for t in self.targets.iter() {
            tracing::info!("target {:?}: {:?}", t.name, t.kind);
        }
    }

    pub fn snapshot(&mut self) -> Snapshot {
        self.tick += 1;
        let base = self.probes.collector_health();
        if base.state == State::Active {
            match self.probes.read_syscalls() {
                Ok(samples) => {
                    self.syscalls = collect::syscalls::syscall_series(&samples, &self.targets);
                    self.syscall_health = base;
                }
                // Keep the last good values: a failed read must not look like zero calls.
                Err(e) => self.syscall_health = Health::failed(e.to_string()),
            }
        } else {
            self.syscall_health = base;
        }
        let indexes = self.targets.iter().map(|t| t.index);
        let counters = if self.http_health.state == State::Active {
            self.probes.read_http_counters(indexes).ok()
        } else {
            None
        };
        let ringbuf_dropped = counters
            .as_ref()
            .map(|c| c.iter().map(|(_, k)| k.dropped).sum());
        let counters: HashMap<u32, _> = counters.into_iter().flatten().collect();
        let (http, streams, requests, http_events_discarded) = {
            let mut h = locked(&self.http);
            let (http, streams) = h.series();
            let discarded = h.malformed + h.discarded;
            (
                http,
                streams,
                h.summaries(Instant::now(), &counters),
                discarded,
            )
        };
        Snapshot {
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            tick: self.tick,
            targets: self
                .targets
                .iter()
                .map(|t| TargetStatus {
                    target: t.clone(),
                    alive: match t.kind {
                        TargetKind::Pid { pid } => Some(process_alive(pid)),
                        _ => None,
                    },
                })
                .collect(),
            collectors: vec![
                CollectorStatus {
                    name: "syscalls".into(),
                    health: self.syscall_health.clone(),
                },
                CollectorStatus {
                    name: "http".into(),
                    health: self.http_health.clone(),
                },
            ],
            programs: self.probes.program_statuses(),
            syscalls: self.syscalls.clone(),
            http,
            streams,
            requests,
            ringbuf_dropped,
            http_events_discarded,
        }
    }
}

/// How often the event reader drains the ring buffer; the kernel wakes it earlier only
/// when a quarter of the ring is in use (it sends no wake-up per event).
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Drain completed-request events on a timer, or sooner when the kernel signals.
async fn read_events(mut fd: AsyncFd<RingBuf<MapData>>, http: Arc<Mutex<HttpCollector>>) {
    let mut timer = tokio::time::interval(DRAIN_INTERVAL);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => drain(fd.get_mut(), &http),
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    drain(guard.get_inner_mut(), &http);
                    guard.clear_ready();
                }
                Err(e) => {
                    tracing::error!("HTTP event reader stopped: {e}");
                    return;
                }
            },
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, http: &Mutex<HttpCollector>) {
    let now = Instant::now();
    let mut h = locked(http);
    while let Some(item) = ring.next() {
        h.record_bytes(&item, now);
    }
}

/// Run until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), AgentError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: config.listen,
        source,
    })?;
    let targets = Targets::resolve(&config.targets)?;
    let mut agent = Agent::new(targets, &config);
    agent.spawn_event_reader();
    agent.log_summary();

    let (tx, rx) = watch::channel(Arc::new(agent.snapshot()));
    let server = tokio::spawn(server::serve(listener, rx));
    tracing::info!("listening on http://{local}");

    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut ticker = tokio::time::interval(config.tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => { tx.send_replace(Arc::new(agent.snapshot())); }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    server.abort();
    Ok(())
}
