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
    collect::{
        self,
        cuda::CudaCollector,
        energy::EnergyLedger,
        gpu::{open_nvml, DeviceReading, GpuReading, GpuSource},
        host::{HostCollector, HostSample},
        http::HttpCollector,
        process::ProcessSample,
        sampler::Sampler,
    },
    config::{Config, Overrides, TargetRequest, TargetSpec},
    control::{self, Command, Reply},
    ebpf::{Options, Probes, SCHED_PROGRAMS, SYSCALL_PROGRAMS, TCP_PROGRAMS},
    server,
    snapshot::{CollectorStatus, Health, Snapshot, State, SyscallSeries, TargetStatus},
    targets::{process_alive, TargetError, TargetKind, Targets},
};

/// How often the host collector reads /proc and statvfs.
const HOST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
    host: Result<Sampler<HostSample>, Health>,
    gpu: Result<Sampler<GpuReading>, Health>,
    gpu_processes: bool,
    cuda: CudaCollector,
    energy: EnergyLedger,
    price_per_kwh: Option<f64>,
    currency: String,
    hostname: String,
    alerting: Option<crate::alert::runtime::Alerting>,
    push: Option<(String, Arc<crate::push::PushStats>)>,
    history: Result<crate::history::Recorder, Health>,
    /// The configuration in force, the targets it named (request, resolved name), the
    /// API token the server checks, and how the last reload went.
    config: Config,
    config_targets: Vec<(TargetRequest, String)>,
    api_token: Arc<std::sync::RwLock<Option<String>>>,
    config_status: crate::snapshot::ConfigStatus,
    /// GPU processes refused for the target limit (said once each).
    untraced: std::collections::HashSet<u32>,
    /// (target index, syscall number) series exported so far, and those refused past
    /// `[agent] max_syscall_series` (admitted ones stay, so series do not flap).
    syscall_admitted: std::collections::HashSet<(u32, u32)>,
    syscall_series_limited: u64,
}

/// Start the GPU sampler on `open`'s source (NVML in the agent, recorded values in tests).
pub fn gpu_sampler<S: GpuSource + 'static>(
    interval: std::time::Duration,
    open: impl FnOnce() -> Result<S, Health> + Send + 'static,
) -> Sampler<GpuReading> {
    let mut open = Some(open);
    let mut source: Option<Result<S, Health>> = None;
    Sampler::spawn("gpu", interval, move || {
        if source.is_none() {
            source = open.take().map(|f| f());
        }
        match source.as_mut() {
            Some(Ok(s)) => s.read(),
            Some(Err(h)) => Err(h.clone()),
            None => Err(Health::failed("GPU source not opened")),
        }
    })
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
        let host = if config.host {
            let mut c = HostCollector::default();
            Ok(Sampler::spawn("host", HOST_INTERVAL, move || c.sample()))
        } else {
            Err(Health::unsupported(
                "disabled (--no-host or [host] enabled = false)",
            ))
        };
        let gpu = if config.gpu {
            Ok(gpu_sampler(config.gpu_interval, open_nvml))
        } else {
            Err(Health::unsupported("disabled ([gpu] enabled = false)"))
        };
        // The first snapshot should already hold host and GPU values.
        let first = std::time::Duration::from_secs(2);
        if let Ok(s) = &host {
            s.wait_first(first);
        }
        if let Ok(s) = &gpu {
            s.wait_first(first);
        }
        let config_targets = match &config.targets {
            TargetSpec::List(reqs) => reqs
                .iter()
                .cloned()
                .zip(targets.iter().map(|t| t.name.clone()))
                .collect(),
            TargetSpec::Host => Vec::new(),
        };
        Agent {
            untraced: Default::default(),
            syscall_admitted: Default::default(),
            syscall_series_limited: 0,
            config_targets,
            config: config.clone(),
            api_token: Arc::new(std::sync::RwLock::new(config.api_token.clone())),
            config_status: crate::snapshot::ConfigStatus {
                file: config.source.clone(),
                last_reload_successful: true,
                last_reload_success_timestamp_seconds: crate::notify::now_seconds(),
                last_reload_error: None,
            },
            host,
            gpu,
            gpu_processes: config.gpu_processes,
            cuda: CudaCollector::default(),
            energy: EnergyLedger::default(),
            price_per_kwh: config.energy_price_per_kwh,
            currency: config.energy_currency.clone(),
            alerting: crate::alert::runtime::Alerting::start(
                &config.alerting,
                &config.state_dir,
                sysinfo::System::host_name().unwrap_or_default(),
                config
                    .alerting
                    .dashboard_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}/", config.listen)),
            ),
            push: None,
            history: match config.history {
                Some((raw, minute)) => {
                    crate::history::Recorder::start(&config.state_dir, raw, minute)
                }
                None => Err(Health::unsupported("disabled ([history] enabled = false)")),
            },
            hostname: sysinfo::System::host_name().unwrap_or_default(),
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

    /// What the API reads besides the Snapshot; writes come back on `commands`.
    pub fn api(
        &self,
        commands: Option<tokio::sync::mpsc::Sender<crate::control::Request>>,
    ) -> crate::server::Api {
        crate::server::Api {
            history: self.history.as_ref().ok().map(|r| r.reader.clone()),
            store: self.alerting.as_ref().and_then(|a| a.store()),
            token: self.api_token.clone(),
            commands,
        }
    }

    /// Put a newly loaded configuration in force, or keep the old one and say why.
    /// Targets, rules, channels, energy price and API token change at once; settings
    /// that need a restart are named in the answer.
    pub fn reload(&mut self, new: Result<Config, crate::config::ConfigError>) -> Reply {
        let outcome = new
            .map_err(|e| vec![e.to_string()])
            .and_then(|c| self.apply_config(c));
        let status = &mut self.config_status;
        match outcome {
            Ok(answer) => {
                status.last_reload_successful = true;
                status.last_reload_success_timestamp_seconds = crate::notify::now_seconds();
                status.last_reload_error = None;
                tracing::info!("configuration reloaded: {answer}");
                (200, answer)
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!("reload refused, the old configuration stays: {e}");
                }
                status.last_reload_successful = false;
                status.last_reload_error = Some(errors.join("; "));
                (
                    422,
                    serde_json::json!({ "error": errors.join("; "), "errors": errors }),
                )
            }
        }
    }

    fn apply_config(&mut self, new: Config) -> Result<serde_json::Value, Vec<String>> {
        let old = &self.config;
        let mut errors = Vec::new();
        let mut restart = Vec::new();
        // Checked before anything changes: the targets to add must resolve now.
        let (remove, add): (Vec<String>, Vec<TargetRequest>) = match (&old.targets, &new.targets) {
            (TargetSpec::List(_), TargetSpec::List(reqs)) => {
                let remove: Vec<String> = self
                    .config_targets
                    .iter()
                    .filter(|(r, _)| !reqs.contains(r))
                    .map(|(_, n)| n.clone())
                    .collect();
                let add: Vec<TargetRequest> = reqs
                    .iter()
                    .filter(|r| !self.config_targets.iter().any(|(o, _)| o == *r))
                    .cloned()
                    .collect();
                for r in &add {
                    match Targets::check(r) {
                        Ok(t)
                            if self
                                .targets
                                .iter()
                                .any(|x| x.name == t.name && !remove.contains(&x.name)) =>
                        {
                            errors.push(TargetError::DuplicateName(t.name).to_string())
                        }
                        Ok(_) => {}
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (remove, add)
            }
            (a, b) if a == b => (Vec::new(), Vec::new()),
            _ => {
                restart.push("targets.all");
                (Vec::new(), Vec::new())
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let rules = match &mut self.alerting {
            Some(a) => Some(a.reload(&new.alerting)?),
            None => {
                if new.alerting.rules_file.is_some() {
                    restart.push("alerting.rules_file");
                }
                None
            }
        };
        for name in &remove {
            let _ = self.remove_target(name);
        }
        self.config_targets.retain(|(_, n)| !remove.contains(n));
        for req in &add {
            match self.add_target(req) {
                (201, t) => {
                    let name = t["name"].as_str().unwrap_or_default().to_string();
                    self.config_targets.push((req.clone(), name));
                }
                (_, e) => tracing::warn!("reload: target {req:?}: {e}"),
            }
        }
        self.price_per_kwh = new.energy_price_per_kwh;
        self.currency = new.energy_currency.clone();
        *self
            .api_token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new.api_token.clone();
        // Settings that take effect only at a restart stay as they run (so the next reload
        // compares against what is really in force); the ones that differ are named.
        let old = &self.config;
        let mut new = new;
        for (key, changed) in [
            ("agent.listen", keep(&old.listen, &mut new.listen)),
            ("agent.tick", keep(&old.tick, &mut new.tick)),
            ("agent.bpf_stats", keep(&old.bpf_stats, &mut new.bpf_stats)),
            (
                "agent.max_targets",
                keep(&old.max_targets, &mut new.max_targets),
            ),
            ("--state-dir", keep(&old.state_dir, &mut new.state_dir)),
            (
                "http",
                keep(&old.http, &mut new.http)
                    | keep(&old.route_limit, &mut new.route_limit)
                    | keep(&old.window, &mut new.window),
            ),
            ("host.enabled", keep(&old.host, &mut new.host)),
            (
                "gpu",
                keep(&old.gpu, &mut new.gpu)
                    | keep(&old.gpu_interval, &mut new.gpu_interval)
                    | keep(&old.gpu_processes, &mut new.gpu_processes),
            ),
            (
                "push",
                keep(&old.push_url, &mut new.push_url)
                    | keep(&old.push_interval, &mut new.push_interval),
            ),
            ("history", keep(&old.history, &mut new.history)),
        ] {
            if changed {
                restart.push(key);
            }
        }
        for key in &restart {
            tracing::warn!("reload: {key} changed; it takes effect at the next restart");
        }
        let answer = serde_json::json!({
            "file": new.source,
            "rules": rules,
            "targets_added": add.len(),
            "targets_removed": remove,
            "restart_needed": restart,
        });
        if restart.contains(&"targets.all") {
            new.targets = old.targets.clone();
        }
        if self.alerting.is_none() {
            new.alerting = old.alerting.clone();
        }
        self.config = new;
        self.config_status.file = self.config.source.clone();
        Ok(answer)
    }

    /// Apply a change from the API.
    pub fn command(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::Rule(cmd) => match &mut self.alerting {
                Some(a) => a.command(cmd),
                None => control::error(503, "alerting is off (no [alerting] rules_file)"),
            },
            Command::AddTarget(body) => match control::target_request(body) {
                Ok(req) => self.add_target(&req),
                Err(reply) => reply,
            },
            Command::RemoveTarget(name) => self.remove_target(&name),
            // Needs the command line: the run loop handles it.
            Command::Reload => control::error(500, "reload is handled by the run loop"),
        }
    }

    fn add_target(&mut self, req: &TargetRequest) -> Reply {
        let t = match self.targets.add(req) {
            Ok(t) => t.clone(),
            Err(e @ (TargetError::NoProcess(_) | TargetError::Cgroup { .. })) => {
                return control::error(422, e)
            }
            Err(e) => return control::error(409, e),
        };
        if self.probes.is_loaded() {
            if let Err(e) = self.probes.add_target(&t, &self.targets) {
                self.targets.remove(&t.name);
                return control::error(500, format!("kernel maps: {e}"));
            }
        }
        locked(&self.http).add_target(t.index, &t.name);
        tracing::info!("target added: {:?} {:?}", t.name, t.kind);
        (201, serde_json::to_value(&t).unwrap_or_default())
    }

    fn remove_target(&mut self, name: &str) -> Reply {
        let Some(t) = self.targets.remove(name) else {
            return control::error(404, format!("no target {name:?}"));
        };
        if self.probes.is_loaded() {
            if let Err(e) = self.probes.remove_target(&t, &self.targets) {
                tracing::warn!("target {name:?}: clearing the kernel maps: {e}");
            }
        }
        locked(&self.http).remove_target(t.index);
        tracing::info!("target removed: {name:?}");
        (200, serde_json::json!({ "removed": name }))
    }

    /// Start the notification dispatcher (needs a tokio runtime).
    pub fn spawn_dispatcher(&self) {
        if let Some(a) = &self.alerting {
            a.spawn_dispatcher();
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

    /// PID-file and name targets whose process came back, recreated cgroups, and (with
    /// `--gpu-processes`) new GPU processes: into the kernel maps and the collectors.
    fn refresh_targets(&mut self, gpus: &[DeviceReading], procs: &[ProcessSample]) {
        let changes = self.targets.refresh();
        for c in &changes {
            tracing::info!("target change: {c:?}");
        }
        if !changes.is_empty() && self.probes.is_loaded() {
            if let Err(e) = self.probes.apply(&changes) {
                tracing::warn!("updating the kernel target maps: {e}");
            }
        }
        if !self.gpu_processes {
            return;
        }
        let covered: std::collections::HashSet<u32> =
            procs.iter().flat_map(|p| p.pids.iter().copied()).collect();
        let pids: Vec<u32> = gpus
            .iter()
            .flat_map(|g| g.processes.iter().map(|p| p.pid))
            .filter(|pid| !covered.contains(pid))
            .collect();
        for pid in pids {
            if self.untraced.contains(&pid) {
                continue;
            }
            let Some(t) = self.targets.add_process(pid) else {
                tracing::warn!(
                    "GPU process {pid}: not traced ([agent] max_targets reached, or it exited)"
                );
                self.untraced.insert(pid);
                continue;
            };
            let (index, name) = (t.index, t.name.clone());
            tracing::info!("GPU process {pid} is target {name:?}");
            locked(&self.http).add_target(index, &name);
            if self.probes.is_loaded() {
                if let Err(e) = self.probes.add_process(pid, index) {
                    tracing::warn!("GPU process {pid}: {e}");
                }
            }
        }
    }

    pub fn snapshot(&mut self) -> Snapshot {
        let mut snap = self.collect();
        snap.push = self.push.as_ref().map(|(url, s)| s.view(url));
        // A refused reload: the file on disk is not what runs.
        let config_health = match &self.config_status.last_reload_error {
            None => Health::active(),
            Some(e) => Health::failed(format!(
                "last reload refused, the previous configuration stays in force: {e}"
            )),
        };
        snap.collectors.push(status("config", config_health, None));
        let signals = crate::alert::signals::SignalSet::from_snapshot(&snap);
        if let Some(a) = &mut self.alerting {
            snap.alerting = a.evaluate(&signals);
            snap.collectors.push(status("alerting", a.health(), None));
            if a.notifies() {
                let h = snap.alerting.notifications.health();
                snap.collectors.push(status("notifications", h, None));
            }
        }
        match &self.history {
            Ok(r) => {
                r.record((snap.timestamp_ms / 1000) as i64, signals.samples());
                snap.history_dropped = Some(r.dropped.load(std::sync::atomic::Ordering::Relaxed));
                snap.history_failed = Some(r.failed.load(std::sync::atomic::Ordering::Relaxed));
                snap.collectors.push(status("history", r.health(), None));
            }
            Err(h) => snap.collectors.push(status("history", h.clone(), None)),
        }
        snap
    }

    fn collect(&mut self) -> Snapshot {
        self.tick += 1;
        let (gpus, gpu_status) = match self
            .gpu
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|s| s.latest())
        {
            Ok((reading, took)) => match reading.as_ref() {
                Ok(devices) => (devices.clone(), status("gpu", Health::active(), Some(took))),
                Err(h) => (Vec::new(), status("gpu", h.clone(), Some(took))),
            },
            Err(h) => (Vec::new(), status("gpu", h, None)),
        };
        let processes = collect::process::sample(&self.targets);
        self.refresh_targets(&gpus, &processes);
        self.energy.update(&gpus, &processes);
        // In host mode the GPU processes are where libcuda.so is to be found.
        let host_mode = self.targets.iter().any(|t| t.kind == TargetKind::Host);
        let gpu_pids: Vec<u32> = if host_mode {
            gpus.iter()
                .flat_map(|g| g.processes.iter().map(|p| p.pid))
                .collect()
        } else {
            Vec::new()
        };
        self.cuda.scan(&mut self.probes, &processes, &gpu_pids);
        let cuda = self.cuda.series(&self.probes, &self.targets);
        let (sched, sched_health) = self.secondary(SCHED_PROGRAMS, collect::sched::sched_series);
        let (tcp, tcp_health) = self.secondary(TCP_PROGRAMS, collect::sched::tcp_series);
        let (host, host_status) = match self
            .host
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|s| s.latest())
        {
            Ok((h, took)) => {
                let health = if h.errors.is_empty() {
                    Health::active()
                } else {
                    Health::failed(h.errors.join("; "))
                };
                (Some(h.as_ref().clone()), status("host", health, Some(took)))
            }
            Err(h) => (None, status("host", h, None)),
        };
        let process_health = if self.targets.iter().any(|t| t.kind != TargetKind::Host) {
            Health::active()
        } else {
            Health::unsupported("no process or cgroup target (the host is the target)")
        };
        let base = self.probes.collector_health();
        if base.state == State::Active {
            match self.probes.read_syscalls() {
                Ok(samples) => {
                    let (limit, admitted) =
                        (self.config.max_syscall_series, &mut self.syscall_admitted);
                    let mut refused = 0;
                    let samples: Vec<_> = samples
                        .into_iter()
                        .filter(|s| {
                            let key = (s.target, s.nr);
                            let keep = admitted.contains(&key)
                                || (admitted.len() < limit && admitted.insert(key));
                            refused += u64::from(!keep);
                            keep
                        })
                        .collect();
                    self.syscall_series_limited = refused;
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
                        TargetKind::Host | TargetKind::Cgroup { .. } => None,
                        _ => Some(t.pid().is_some_and(process_alive)),
                    },
                })
                .collect(),
            collectors: vec![
                status("syscalls", self.syscall_health.clone(), None),
                status("http", self.http_health.clone(), None),
                host_status,
                status("process", process_health, None),
                gpu_status,
                status("cuda", self.cuda.health(), None),
                status("sched", sched_health, None),
                status("tcp", tcp_health, None),
            ],
            programs: self.probes.program_statuses(),
            syscalls: self.syscalls.clone(),
            http,
            streams,
            requests,
            ringbuf_dropped,
            http_events_discarded,
            hostname: self.hostname.clone(),
            host,
            processes,
            gpus,
            energy: self.energy.summary(self.price_per_kwh, &self.currency),
            cuda,
            sched,
            tcp,
            alerting: Default::default(),
            push: None,
            history_dropped: None,
            history_failed: None,
            config: self.config_status.clone(),
            syscall_series_limited: self.syscall_series_limited,
        }
    }

    /// A collector over extra programs: its series when they are attached.
    fn secondary<T>(
        &self,
        programs: &[&str],
        read: fn(&Probes, &Targets) -> Result<Vec<T>, String>,
    ) -> (Vec<T>, Health) {
        let health = self.probes.programs_health(programs);
        if health.state != State::Active {
            return (Vec::new(), health);
        }
        match read(&self.probes, &self.targets) {
            Ok(v) => (v, health),
            Err(e) => (Vec::new(), Health::failed(e)),
        }
    }
}

/// One line: what is attached and working, what is not and why.
fn startup_summary(snap: &Snapshot) -> String {
    let attached = snap
        .programs
        .iter()
        .filter(|p| p.health.state == State::Active)
        .count();
    let mut off: Vec<String> = snap
        .programs
        .iter()
        .filter(|p| p.health.state != State::Active)
        .map(|p| {
            format!(
                "program {} ({})",
                p.name,
                p.health.reason.as_deref().unwrap_or("?")
            )
        })
        .collect();
    off.extend(
        snap.collectors
            .iter()
            .filter(|c| c.health.state != State::Active)
            .map(|c| format!("{} ({})", c.name, c.health.reason.as_deref().unwrap_or("?"))),
    );
    let active: Vec<&str> = snap
        .collectors
        .iter()
        .filter(|c| c.health.state == State::Active)
        .map(|c| c.name.as_str())
        .collect();
    let targets: Vec<&str> = snap
        .targets
        .iter()
        .map(|t| t.target.name.as_str())
        .collect();
    format!(
        "started: {attached}/{} eBPF programs attached; working: {}; targets: {}; not working: {}",
        snap.programs.len(),
        active.join(", "),
        targets.join(", "),
        if off.is_empty() {
            "none".to_string()
        } else {
            off.join("; ")
        }
    )
}

/// Put `old` back into `new`; whether they differed (`|`, not `||`: every field is kept).
fn keep<T: PartialEq + Clone>(old: &T, new: &mut T) -> bool {
    let changed = old != new;
    *new = old.clone();
    changed
}

fn status(name: &str, health: Health, took: Option<std::time::Duration>) -> CollectorStatus {
    CollectorStatus {
        name: name.into(),
        health,
        duration_seconds: took.map(|d| d.as_secs_f64()),
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
pub async fn run(config: Config, over: Overrides) -> Result<(), AgentError> {
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
    let targets = Targets::resolve_limited(&config.targets, config.max_targets)?;
    let mut agent = Agent::new(targets, &config);
    agent.spawn_event_reader();
    agent.spawn_dispatcher();
    agent.log_summary();

    let (stream_tx, _) = tokio::sync::broadcast::channel(crate::stream::QUEUE);
    if let Some(url) = &config.push_url {
        let stats = Arc::new(crate::push::PushStats::default());
        tokio::spawn(crate::push::run(
            url.clone(),
            config.push_interval,
            stream_tx.subscribe(),
            stats.clone(),
        ));
        agent.push = Some((url.clone(), stats));
    }
    let first = agent.snapshot();
    tracing::info!("{}", startup_summary(&first));
    let (tx, rx) = watch::channel(Arc::new(first));
    let (commands_tx, mut commands) = tokio::sync::mpsc::channel::<control::Request>(16);
    let api = Arc::new(agent.api(Some(commands_tx)));
    let server = tokio::spawn(server::serve(listener, rx, stream_tx.clone(), api));
    tracing::info!("listening on http://{local}");
    // systemd (Type=notify): ready now; watchdog pings come from the tick loop, so a stuck
    // loop gets the agent restarted. Without NOTIFY_SOCKET these do nothing.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| std::time::Duration::from_micros(watchdog_usec / 2));
    let mut last_ping = Instant::now();

    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    let mut ticker = tokio::time::interval(config.tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let snap = Arc::new(agent.snapshot());
                crate::stream::publish(&stream_tx, &snap);
                tx.send_replace(snap);
                if watchdog.is_some_and(|every| last_ping.elapsed() >= every) {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    last_ping = Instant::now();
                }
            }
            Some((cmd, reply)) = commands.recv() => {
                let answer = match cmd {
                    Command::Reload => agent.reload(Config::load(&over)),
                    cmd => agent.command(cmd),
                };
                let _ = reply.send(answer);
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                agent.reload(Config::load(&over));
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.abort();
    Ok(())
}
