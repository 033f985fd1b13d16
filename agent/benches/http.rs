//! `cargo xtask bench http`: cost of request tracing under load, side by side in one run.
//!
//! A hyper HTTP/1.1 keep-alive server (this binary in `server` mode, one worker thread) is
//! loaded by `wrk` for a fixed time under three configurations per round: untraced; with
//! empty programs on the same syscall hooks (the floor: the mechanism's cost for every
//! syscall on the host, wrk's included); traced by the real release agent
//! (`infersight --pid SERVER`). The agent's own /metrics gives the requests it counted,
//! its programs' run time and ring-buffer drops; /proc gives its CPU time and RSS.
//!
//! Then the agent's CPU and RSS under a fixed rate (`--rate`, default 10 000 req/s), its
//! peak RSS, and the highest rate it traces with no drop.
//!
//! Usage: cargo bench -p infersight --bench http -- [--seconds S] [--rounds R] [--connections C] [--rate N]
mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::Proc;
use infersight::{ebpf::Kernel, targets::Targets};

const AGENT: &str = env!("CARGO_BIN_EXE_infersight");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        return common::serve();
    }
    common::require_root("http");
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is missing (cargo xtask setup installs it)");
        std::process::exit(1);
    }
    run(
        common::flag(&args, "--seconds", 5),
        common::flag(&args, "--rounds", 3) as usize,
        common::flag(&args, "--connections", 32),
        common::flag(&args, "--rate", 10_000),
    );
}

struct Wrk {
    rps: f64,
    p99_ms: f64,
    requests: f64,
}

fn wrk(port: u16, seconds: u64, connections: u64) -> Wrk {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            &format!("http://127.0.0.1:{port}/v1/completions"),
        ])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("wrk output lacks {prefix:?}:\n{text}"))
    };
    let rps: f64 = field("Requests/sec:").parse().expect("rps");
    let p99 = field("99%");
    let p99_ms = if let Some(v) = p99.strip_suffix("us") {
        v.parse::<f64>().expect("p99") / 1000.0
    } else if let Some(v) = p99.strip_suffix("ms") {
        v.parse().expect("p99")
    } else if let Some(v) = p99.strip_suffix('s') {
        v.parse::<f64>().expect("p99") * 1000.0
    } else {
        panic!("p99 {p99}")
    };
    let requests: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.to_string())
        })
        .expect("request count")
        .parse()
        .expect("count");
    Wrk {
        rps,
        p99_ms,
        requests,
    }
}

/// CPU seconds (user + system) and RSS in bytes of a process.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kb * 1024.0)
}

fn start_agent(server_pid: u32) -> (Proc, u16) {
    let mut cmd = Command::new(AGENT);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--pid",
        &format!("{server_pid}=bench"),
    ])
    .env("INFERSIGHT_LOG", "info");
    common::start_agent(cmd)
}

/// wrk with the empty programs attached; returns (result, eBPF ns per request).
fn floor_round(port: u16, seconds: u64, connections: u64) -> (Wrk, f64) {
    let probes = common::floor(&Targets::default());
    let runtime = |p: &Kernel| -> f64 {
        p.program_statuses()
            .iter()
            .filter_map(|s| s.run_time_ns)
            .sum::<u64>() as f64
    };
    let before = runtime(&probes);
    let w = wrk(port, seconds, connections);
    let ns = (runtime(&probes) - before) / w.requests;
    (w, ns)
}

fn run(seconds: u64, rounds: usize, connections: u64, rate: u64) {
    let (_server, server_pid, port) = common::start_server();

    let (mut rps_u, mut rps_t, mut p99_u, mut p99_t) = (vec![], vec![], vec![], vec![]);
    let (mut rps_f, mut p99_f, mut ns_floor) = (vec![], vec![], vec![]);
    let (mut ns_req, mut cpu_m, mut rss, mut counted, mut dropped) =
        (vec![], vec![], vec![], vec![], vec![]);
    // Per program: eBPF ns per request in each round.
    let mut per_program: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for round in 0..rounds {
        let u = wrk(port, seconds, connections);
        let (f, f_ns) = floor_round(port, seconds, connections);
        rps_f.push(f.rps);
        p99_f.push(f.p99_ms);
        ns_floor.push(f_ns);
        let (agent, aport) = start_agent(server_pid);
        std::thread::sleep(Duration::from_millis(1500));
        let before = common::scrape(aport);
        let (cpu0, _) = usage(agent.0.id());
        let start = Instant::now();
        let t = wrk(port, seconds, connections);
        let elapsed = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(1500)); // two ticks
        let (cpu1, rss_now) = usage(agent.0.id());
        let after = common::scrape(aport);
        drop(agent);
        let runtime = common::sum(&after, "infersight_ebpf_program_run_time_seconds_total")
            - common::sum(&before, "infersight_ebpf_program_run_time_seconds_total");
        let reqs = common::sum(&after, "http_server_request_duration_seconds_count{")
            - common::sum(&before, "http_server_request_duration_seconds_count{");
        rps_u.push(u.rps);
        rps_t.push(t.rps);
        p99_u.push(u.p99_ms);
        p99_t.push(t.p99_ms);
        ns_req.push(runtime * 1e9 / t.requests);
        for key in after.keys() {
            let Some(p) = key
                .strip_prefix("infersight_ebpf_program_run_time_seconds_total{program=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            else {
                continue;
            };
            let ns = (common::sum(&after, key) - common::sum(&before, key)) * 1e9 / t.requests;
            per_program.entry(p.to_string()).or_default().push(ns);
        }
        cpu_m.push((cpu1 - cpu0) / (elapsed + 1.5) * 1000.0);
        rss.push(rss_now / 1048576.0);
        counted.push(reqs / t.requests);
        dropped.push(common::sum(
            &after,
            "infersight_ringbuf_dropped_events_total",
        ));
        let ignored = common::sum(&after, "infersight_http_connections_ignored_total");
        let accepted = common::sum(&after, "infersight_http_connections_accepted_total");
        let discarded = common::sum(&after, "infersight_http_events_discarded_total");
        let unanswered = common::sum(&after, "infersight_http_requests_unanswered_total");
        eprintln!(
            "round {}: untraced {:.0} req/s p99 {:.2} ms | floor {:.0} req/s, {:.0} ns eBPF/req | traced {:.0} req/s p99 {:.2} ms, {:.0} ns eBPF/req, counted {}/{} requests, {} dropped, {accepted} accepted and {ignored} ignored connections, {unanswered} unanswered, {discarded} discarded, agent {:.0} mCPU {:.1} MiB",
            round + 1, u.rps, u.p99_ms, f.rps, f_ns, t.rps, t.p99_ms, ns_req[round], reqs, t.requests,
            dropped[round], cpu_m[round], rss[round]
        );
    }
    let (ru, rf, rt) = (
        common::median(&mut rps_u),
        common::median(&mut rps_f),
        common::median(&mut rps_t),
    );
    let (pu, pf, pt) = (
        common::median(&mut p99_u),
        common::median(&mut p99_f),
        common::median(&mut p99_t),
    );
    let (nf, nt) = (common::median(&mut ns_floor), common::median(&mut ns_req));
    println!(
        "\nhttp benchmark: wrk -t1 -c{connections} -d{seconds}s against a hyper keep-alive server (1 worker), median of {rounds} interleaved rounds\n"
    );
    println!("| measure | untraced | floor (empty programs) | traced | traced ÷ untraced | goal |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    println!(
        "| throughput (req/s) | {ru:.0} | {rf:.0} | {rt:.0} | {:.3} | ≥ 0.95 |",
        rt / ru
    );
    println!(
        "| p99 latency (ms) | {pu:.2} | {pf:.2} | {pt:.2} | {:.2} | – |",
        pt / pu
    );
    println!("| eBPF time per request (all programs, every syscall on the host) | – | {nf:.0} ns | {nt:.0} ns | – | – |");
    println!("| eBPF time per request added by tracing (traced − floor) | – | – | {:.0} ns | – | ≤ 300 ns |", nt - nf);
    println!(
        "| requests counted ÷ completed by wrk | – | – | {:.4} | – | 1.0 |",
        common::median(&mut counted)
    );
    println!(
        "| ring-buffer drops | – | – | {:.0} | – | 0 |",
        common::median(&mut dropped)
    );
    println!(
        "| agent CPU while loaded | – | – | {:.0} mCPU | – | – |",
        common::median(&mut cpu_m)
    );
    println!(
        "| agent RSS | – | – | {:.1} MiB | – | – |",
        common::median(&mut rss)
    );
    println!("\neBPF time per request by program (traced runs, median):\n");
    println!("| program | ns per request |");
    println!("| --- | ---: |");
    for (p, v) in &mut per_program {
        let ns = common::median(v);
        if ns >= 0.5 {
            println!("| {p} | {ns:.0} |");
        }
    }
    let (ratio, added) = (rt / ru, nt - nf);
    common::goal(
        "traced throughput ÷ untraced (wrk, max rate)",
        format!("{ratio:.3}"),
        "≥ 0.95",
        ratio >= 0.95,
    );
    common::goal(
        "eBPF time per request added by tracing",
        format!("{added:.0} ns"),
        "≤ 300 ns",
        added <= 300.0,
    );
    fixed_rate(port, server_pid, rate, seconds.max(10));
}

/// The agent's cost at a fixed request rate, its startup peak RSS, and the highest rate
/// (doubling from `rate`) it traces with every request counted and no drop.
fn fixed_rate(port: u16, server_pid: u32, rate: u64, seconds: u64) {
    let (agent, aport) = start_agent(server_pid);
    std::thread::sleep(Duration::from_millis(2000));
    let (startup_peak, _) = common::rss_mib(agent.0.id());
    let before = common::scrape(aport);
    let (cpu0, _) = usage(agent.0.id());
    let start = Instant::now();
    let sent = common::load(port, rate, seconds, 16);
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu1, _) = usage(agent.0.id());
    let (peak, steady) = common::rss_mib(agent.0.id());
    let after = common::scrape(aport);
    let counted = common::sum(&after, "http_server_request_duration_seconds_count{")
        - common::sum(&before, "http_server_request_duration_seconds_count{");
    let mcpu = (cpu1 - cpu0) / (elapsed + 1.5) * 1000.0;
    let achieved = sent as f64 / elapsed;
    // The highest rate traced exactly: double while every request is counted, nothing is
    // dropped and the generator keeps up.
    let mut best = 0.0;
    let mut r = rate;
    while r <= 320_000 {
        let b = common::scrape(aport);
        let t = Instant::now();
        let sent = common::load(port, r, 3, 64) as f64;
        let got_rate = sent / t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(1500));
        let a = common::scrape(aport);
        let counted = common::sum(&a, "http_server_request_duration_seconds_count{")
            - common::sum(&b, "http_server_request_duration_seconds_count{");
        let dropped = common::sum(&a, "infersight_ringbuf_dropped_events_total")
            - common::sum(&b, "infersight_ringbuf_dropped_events_total");
        eprintln!(
            "rate {r}/s: sent {sent} ({got_rate:.0}/s), counted {counted}, dropped {dropped}"
        );
        if counted != sent || dropped > 0.0 {
            break;
        }
        best = got_rate;
        // The generator and server cannot go faster: this is as far as it can be shown.
        if got_rate < 0.95 * r as f64 {
            break;
        }
        r *= 2;
    }
    drop(agent);
    println!("\nfixed rate: {rate} req/s for {seconds} s over 16 keep-alive connections (achieved {achieved:.0} req/s)\n");
    println!("| measure | result | goal |");
    println!("| --- | ---: | --- |");
    println!("| agent CPU at {rate} req/s | {mcpu:.1} mCPU | ≤ 20 mCPU |");
    println!("| agent RSS at {rate} req/s (steady) | {steady:.1} MiB | ≤ 25 MiB |");
    println!("| agent peak RSS (startup, then under load) | {startup_peak:.1} MiB, {peak:.1} MiB | ≤ 40 MiB |");
    println!(
        "| requests counted ÷ sent | {:.4} | 1.0 |",
        counted / sent as f64
    );
    println!("| highest rate traced exactly (no drop, all counted), doubling from {rate} until the load generator and server top out | {best:.0} req/s | – |");
    common::goal(
        &format!("agent CPU at {rate} req/s"),
        format!("{mcpu:.1} mCPU"),
        "≤ 20 mCPU",
        mcpu <= 20.0,
    );
    common::goal(
        "agent RSS, steady under load",
        format!("{steady:.1} MiB"),
        "≤ 25 MiB",
        steady <= 25.0,
    );
    common::goal(
        "agent peak RSS",
        format!("{:.1} MiB", peak.max(startup_peak)),
        "≤ 40 MiB",
        peak.max(startup_peak) <= 40.0,
    );
    common::goal(
        "highest request rate traced without drops",
        format!("{best:.0} req/s"),
        "–",
        true,
    );
}
