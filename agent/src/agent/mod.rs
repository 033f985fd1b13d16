//! The agent's run loop: bind, resolve the targets, load the kernel side, start the
//! collectors, then one Snapshot per tick published to the HTTP server, the stream and
//! the history; API commands, reloads and target changes are applied between ticks.
mod reload;
mod summary;
mod targets;
mod tick;

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Instant,
};

use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
    time::MissedTickBehavior,
};

use crate::{
    alerting::Alerting,
    base::{now_seconds, Health},
    config::{Config, Overrides, TargetRequest, TargetSpec},
    control::{Command, Request},
    ebpf::{Kernel, Options},
    history::Recorder,
    push::PushStats,
    readings::Registry,
    server,
    snapshot::ConfigStatus,
    targets::{TargetError, Targets},
};

/// How often the allocator's free memory goes back to the system.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

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

/// The collectors and the agent's own services; builds Snapshots.
pub struct Agent {
    targets: Targets,
    kernel: Kernel,
    registry: Registry,
    tick: u64,
    /// In host mode, the GPU processes of the last tick (where CUDA is to be found).
    gpu_pids: Vec<u32>,
    alerting: Option<Alerting>,
    push: Option<(String, Arc<PushStats>)>,
    history: Result<Recorder, Health>,
    /// The configuration in force, the targets it named (request, resolved name), the
    /// API token the server checks, and how the last reload went.
    config: Config,
    config_targets: Vec<(TargetRequest, String)>,
    api_token: Arc<RwLock<Option<String>>>,
    config_status: ConfigStatus,
    /// GPU processes refused for the target limit (said once each).
    untraced: std::collections::HashSet<u32>,
}

impl Agent {
    pub fn new(targets: Targets, config: &Config) -> Agent {
        let mut kernel = Kernel::load(
            &targets,
            Options {
                bpf_stats: config.agent.bpf_stats,
                record_offsets: crate::readings::RECORD_OFFSETS,
            },
        );
        let registry = Registry::start(config, &mut kernel, &targets);
        let config_targets = match &config.targets {
            TargetSpec::List(reqs) => reqs
                .iter()
                .cloned()
                .zip(targets.iter().map(|t| t.name.clone()))
                .collect(),
            TargetSpec::Host => Vec::new(),
        };
        let alerting = Alerting::start(
            &config.alerting,
            &config.agent.state_dir,
            sysinfo::System::host_name().unwrap_or_default(),
            config
                .alerting
                .dashboard_url
                .clone()
                .unwrap_or_else(|| format!("http://{}/", config.agent.listen)),
        );
        let history = match &config.history {
            Some(h) => {
                Recorder::start(&config.agent.state_dir, h.raw_retention, h.minute_retention)
            }
            None => Err(Health::unsupported("disabled ([history] enabled = false)")),
        };
        Agent {
            targets,
            kernel,
            registry,
            tick: 0,
            gpu_pids: Vec::new(),
            alerting,
            push: None,
            history,
            config_targets,
            config: config.clone(),
            api_token: Arc::new(RwLock::new(config.api.token.clone())),
            config_status: ConfigStatus {
                file: config.source.clone(),
                last_reload_successful: true,
                last_reload_success_timestamp_seconds: now_seconds(),
                last_reload_error: None,
            },
            untraced: Default::default(),
        }
    }

    /// What the API reads besides the Snapshot; writes come back on `commands`.
    pub fn api(&self, commands: Option<tokio::sync::mpsc::Sender<Request>>) -> server::Api {
        server::Api {
            history: self.history.as_ref().ok().map(|r| r.reader.clone()),
            store: self.alerting.as_ref().and_then(|a| a.store()),
            token: self.api_token.clone(),
            commands,
            origins: self.config.api.allowed_origins.clone(),
            history_limits: server::HistoryLimits {
                max_points: self.config.api.history_max_points,
                max_series: self.config.api.history_max_series,
            },
            history_turn: Default::default(),
        }
    }

    /// Start what needs the async runtime: the collectors' tasks and the notification
    /// dispatcher.
    pub fn spawn(&mut self) {
        self.kernel.spawn_log_reader();
        self.registry.spawn(&mut self.kernel);
        if let Some(a) = &self.alerting {
            a.spawn_dispatcher();
        }
    }

    /// Apply a change from the API.
    pub fn command(&mut self, cmd: Command) -> crate::base::Reply {
        use crate::base::{Refusal, RefusalKind};
        match cmd {
            Command::Rule(cmd) => match &mut self.alerting {
                Some(a) => a.command(cmd),
                None => Err(Refusal::new(
                    RefusalKind::Unavailable,
                    "alerting is off (no [alerting] rules_file)",
                )),
            },
            Command::AddTarget(body) => {
                let req = crate::control::target_request(body)?;
                self.add_target(&req)
            }
            Command::RemoveTarget(name) => self.remove_target(&name),
            // Needs the command line: the run loop handles it.
            Command::Reload => Err(Refusal::new(
                RefusalKind::Failed,
                "reload is handled by the run loop",
            )),
        }
    }

    /// Detach the collectors' programs.
    pub fn stop(&mut self) {
        self.registry.stop(&mut self.kernel);
    }
}

/// Run until SIGINT or SIGTERM.
pub async fn run(config: Config, over: Overrides) -> Result<(), AgentError> {
    let listen = config.agent.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: listen,
        source,
    })?;
    // Before anything is served: a SIGHUP (reload) that arrives once the endpoints answer
    // must not find the default action (terminate) in place.
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    let targets = Targets::resolve_limited(&config.targets, config.agent.max_targets)?;
    let mut agent = Agent::new(targets, &config);
    agent.spawn();
    agent.log_summary();

    let (stream_tx, _) = tokio::sync::broadcast::channel(crate::stream::QUEUE);
    if let Some(url) = &config.push.url {
        let stats = Arc::new(PushStats::default());
        tokio::spawn(crate::push::run(
            url.clone(),
            config.push.interval,
            stream_tx.subscribe(),
            stats.clone(),
        ));
        agent.push = Some((url.clone(), stats));
    }
    let first = agent.snapshot();
    tracing::info!("{}", summary::startup(&first));
    let (tx, rx) = watch::channel(Arc::new(first));
    let (commands_tx, mut commands) = tokio::sync::mpsc::channel::<Request>(16);
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
    let mut last_trim = Instant::now();

    let mut ticker = tokio::time::interval(config.agent.tick);
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
                if last_trim.elapsed() >= TRIM_EVERY {
                    crate::base::memory::trim();
                    last_trim = Instant::now();
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
                let _ = agent.reload(Config::load(&over));
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.abort();
    agent.stop();
    Ok(())
}
