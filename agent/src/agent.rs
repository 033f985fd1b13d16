//! The agent's runtime: bind, resolve targets, start the probes, then one Snapshot per
//! tick published to the HTTP server through a watch channel.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
    time::MissedTickBehavior,
};

use crate::{
    collect,
    config::Config,
    ebpf::{Probes, SYSCALL_PROGRAMS},
    server,
    snapshot::{CollectorStatus, Health, Snapshot, SyscallSeries, TargetStatus},
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
}

impl Agent {
    pub fn new(targets: Targets) -> Agent {
        let probes = Probes::start(&targets, SYSCALL_PROGRAMS);
        let syscall_health = probes.collector_health();
        Agent {
            targets,
            probes,
            tick: 0,
            syscalls: Vec::new(),
            syscall_health,
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
        match &self.syscall_health.reason {
            None => tracing::info!("collector syscalls: active"),
            Some(r) => tracing::warn!("collector syscalls: {:?}: {r}", self.syscall_health.state),
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
        if base.state == crate::snapshot::State::Active {
            match self.probes.read_syscalls() {
                Ok(samples) => {
                    self.syscalls = collect::syscall_series(&samples, &self.targets);
                    self.syscall_health = base;
                }
                // Keep the last good values: a failed read must not look like zero calls.
                Err(e) => self.syscall_health = Health::failed(e.to_string()),
            }
        } else {
            self.syscall_health = base;
        }
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
            collectors: vec![CollectorStatus {
                name: "syscalls".into(),
                health: self.syscall_health.clone(),
            }],
            programs: self.probes.program_statuses(),
            syscalls: self.syscalls.clone(),
        }
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
    let mut agent = Agent::new(targets);
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
