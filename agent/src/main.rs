//! The `infersight` binary: command line in, agent run, one-line errors out.
use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use infersight::{
    agent,
    config::{Config, Overrides},
};

/// eBPF-backed, low-overhead observability agent for ML inference hosts.
#[derive(Debug, Parser)]
#[command(name = "infersight", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Configuration file (TOML). Default: /etc/infersight/infersight.toml when present.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for /metrics and /health [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Trace this process and its children; repeatable. NAME labels its series.
    #[arg(long = "pid", value_name = "PID[=NAME]")]
    pids: Vec<String>,
    /// Trace every process in this cgroup v2 (and below it); repeatable.
    #[arg(long = "cgroup", value_name = "PATH[=NAME]")]
    cgroups: Vec<String>,
    /// Trace the process whose PID this file holds; read again when that process is gone
    /// (a restarted server is picked up); repeatable.
    #[arg(long = "pid-file", value_name = "PATH[=NAME]")]
    pid_files: Vec<String>,
    /// Trace the process with this name (comm or executable); found again by name when it
    /// restarts; repeatable.
    #[arg(long = "process", value_name = "COMM[=NAME]")]
    processes: Vec<String>,
    /// The listening ports that are the targets' front door; requests on their other
    /// ports (a server calling its own runner over loopback) are counted apart. NAME=
    /// picks the target given that name; without it, every target on the command line.
    /// Default: every port.
    #[arg(long = "ports", value_name = "[NAME=]PORT[,PORT...]")]
    ports: Vec<String>,
    /// Make every process holding a GPU context a target (refreshed each tick).
    #[arg(long)]
    gpu_processes: bool,
    /// Trace the whole host as one target named "host" (the default with no target).
    #[arg(long)]
    all: bool,
    /// Turn the host collector (node_* metrics) off, for hosts that run node_exporter.
    #[arg(long)]
    no_host: bool,
    /// Where alert states, history and the notification outbox live (SQLite)
    /// [default: /var/lib/infersight].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How often collectors are read and a snapshot is published [default: 1s].
    #[arg(long, value_name = "DURATION")]
    tick: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Check a configuration file (default: --config or the system file) and its rules
    /// file; print each problem with its file, line and key. Exit 1 on any problem.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    infersight::base::memory::limit_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INFERSIGHT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let over = Overrides {
        config: cli.config,
        listen: cli.listen,
        tick: cli.tick,
        pids: cli.pids,
        cgroups: cli.cgroups,
        pid_files: cli.pid_files,
        processes: cli.processes,
        ports: cli.ports,
        all: cli.all,
        gpu_processes: cli.gpu_processes,
        no_host: cli.no_host,
        state_dir: cli.state_dir,
    };
    if let Some(Sub::CheckConfig { file }) = cli.command {
        let over = Overrides {
            config: file.or(over.config),
            ..over
        };
        return check_config(&over);
    }
    let config = match Config::load(&over) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("infersight: error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config, over) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infersight: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `infersight check-config`: the config as the agent would load it, then every rule.
fn check_config(over: &Overrides) -> ExitCode {
    let config = match Config::load(over) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("infersight: error: {e}");
            return ExitCode::from(1);
        }
    };
    let file = config
        .source
        .as_ref()
        .map_or("(no config file: defaults)".to_string(), |p| {
            p.display().to_string()
        });
    let Some(rules) = &config.alerting.rules_file else {
        println!("{file}: ok (alerting off: no rules_file)");
        return ExitCode::SUCCESS;
    };
    let loaded = match std::fs::read_to_string(rules) {
        Ok(text) => infersight::alert::rules::parse(rules, &text, &config.alerting.channel_names()),
        Err(e) => {
            eprintln!(
                "infersight: error: {}: cannot read rules: {e}",
                rules.display()
            );
            return ExitCode::from(1);
        }
    };
    for e in &loaded.errors {
        eprintln!("infersight: error: {e}");
    }
    if !loaded.errors.is_empty() {
        return ExitCode::from(1);
    }
    println!(
        "{file}: ok; {}: {} rule(s) ok",
        rules.display(),
        loaded.rules.len()
    );
    ExitCode::SUCCESS
}

fn run(config: Config, over: Overrides) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(agent::run(config, over))?;
    Ok(())
}
