//! `cargo xtask bench memory`: the agent's memory with every collector on and ten targets
//! under load.
//!
//! Ten hyper servers (this binary in `server` mode) are the targets of one release agent
//! run with the shipped configuration (config/infersight.toml: host, GPU, HTTP, syscalls,
//! scheduler, TCP, failures, engines, alerting with the shipped rules, history), each
//! server loaded at a fixed rate while /metrics is scraped every 5 s and the snapshot API
//! read every 15 s, as a Prometheus server and a dashboard would. The agent's RSS is read
//! every second: steady = the median after a warm-up, peak = VmHWM at the end.
//!
//! Usage: cargo bench -p infersight --bench memory -- [--seconds S] [--warmup S]
//!        [--rate N] [--targets T]
mod common;

use std::{
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const AGENT: &str = env!("CARGO_BIN_EXE_infersight");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        return common::serve();
    }
    common::require_root("memory");
    run(
        common::flag(&args, "--seconds", 240),
        common::flag(&args, "--warmup", 60),
        common::flag(&args, "--rate", 500),
        common::flag(&args, "--targets", 10) as usize,
    );
}

/// `key:` of a /proc/PID file with `kB` values, in MiB.
fn kb_field(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn run(seconds: u64, warmup: u64, rate: u64, targets: usize) {
    let servers: Vec<_> = (0..targets).map(|_| common::start_server()).collect();
    let state =
        std::env::temp_dir().join(format!("infersight-bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&state).expect("state dir");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/infersight.toml");
    let mut cmd = Command::new(AGENT);
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .env("INFERSIGHT_LOG", "info");
    for (i, (_, pid, _)) in servers.iter().enumerate() {
        cmd.arg("--pid").arg(format!("{pid}=server{i}"));
    }
    let (agent, aport) = common::start_agent(cmd);
    let pid = agent.0.id();
    let (startup_peak, startup) = common::rss_mib(pid);

    let start = Instant::now();
    let loads: Vec<_> = servers
        .iter()
        .map(|&(_, _, port)| std::thread::spawn(move || common::load(port, rate, seconds, 2)))
        .collect();
    // Consumers: a Prometheus scrape every 5 s, a dashboard's snapshot read every 15 s.
    let stop = Arc::new(AtomicBool::new(false));
    let consumers = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                common::get(aport, "/metrics");
                if n.is_multiple_of(3) {
                    common::get(aport, "/api/v1/snapshot");
                }
                n += 1;
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };
    let mut steady = Vec::new();
    let mut steady_max: f64 = 0.0;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let (_, rss) = common::rss_mib(pid);
        if start.elapsed() >= Duration::from_secs(warmup) {
            steady.push(rss);
            steady_max = steady_max.max(rss);
        }
    }
    let sent: u64 = loads.into_iter().map(|h| h.join().expect("load")).sum();
    stop.store(true, Ordering::Relaxed);
    let _ = consumers.join();
    std::thread::sleep(Duration::from_millis(1500));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let metrics = common::scrape(aport);
    let counted = common::sum(&metrics, "http_server_request_duration_seconds_count{");
    let (peak, end) = common::rss_mib(pid);
    let up: Vec<String> = metrics
        .iter()
        .filter(|(k, v)| k.starts_with("infersight_collector_up{") && **v == 1.0)
        .filter_map(|(k, _)| k.split('"').nth(1).map(str::to_string))
        .collect();
    drop(agent);
    drop(servers);
    let _ = std::fs::remove_dir_all(&state);
    let median = common::median(&mut steady);

    println!(
        "\nmemory benchmark: release agent, shipped configuration, {targets} targets (hyper servers) at {rate} req/s each for {seconds} s ({sent} requests sent, {counted} counted), /metrics every 5 s, /api/v1/snapshot every 15 s\n"
    );
    let mut up = up;
    up.sort();
    println!("collectors up: {}\n", up.join(", "));
    println!("| measure | MiB | goal |");
    println!("| --- | ---: | --- |");
    println!("| RSS after startup (before load) | {startup:.1} | – |");
    println!("| peak RSS during startup | {startup_peak:.1} | – |");
    println!("| RSS, steady (median after {warmup} s of warm-up) | {median:.1} | ≤ 20 |");
    println!("| RSS, steady (highest after warm-up) | {steady_max:.1} | – |");
    println!("| RSS at the end | {end:.1} | – |");
    println!("| peak RSS (VmHWM) | {peak:.1} | ≤ 32 |");
    println!(
        "| of the end RSS: anonymous, file-backed, shared memory | {:.1}, {:.1}, {:.1} | – |",
        kb_field(&status, "RssAnon:"),
        kb_field(&status, "RssFile:"),
        kb_field(&status, "RssShmem:")
    );
    println!(
        "| private (smaps_rollup: Private_Clean + Private_Dirty), shared | {:.1}, {:.1} | – |",
        kb_field(&rollup, "Private_Clean:") + kb_field(&rollup, "Private_Dirty:"),
        kb_field(&rollup, "Shared_Clean:") + kb_field(&rollup, "Shared_Dirty:")
    );
    println!("| threads | {threads} | – |");
    common::goal(
        "agent RSS, steady, every collector on, 10 targets under load",
        format!("{median:.1} MiB"),
        "≤ 20 MiB",
        median <= 20.0,
    );
    common::goal(
        "agent peak RSS (VmHWM), same run",
        format!("{peak:.1} MiB"),
        "≤ 32 MiB",
        peak <= 32.0,
    );
}
