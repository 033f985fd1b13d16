//! `cargo xtask bench http`: cost of request tracing under load, side by side in one run.
//!
//! A hyper HTTP/1.1 keep-alive server (this binary in `server` mode, one worker thread) is
//! loaded by `wrk` for a fixed time under three configurations per round: untraced; with
//! empty programs on the same syscall hooks (the floor: the mechanism's cost for every
//! syscall on the host, wrk's included); traced by the real release agent
//! (`infersight --pid SERVER`). The agent's own /metrics gives the requests it counted,
//! its programs' run time and ring-buffer drops; /proc gives its CPU time and RSS.
//!
//! Then each protocol path on one server: nginx (one process, Debian's, OpenSSL linked
//! dynamically) answering a 2-byte body over HTTP/1.1, HTTP/2 without TLS (h2c, prior
//! knowledge) and HTTP/1.1 over TLS, loaded by `h2load` (one stream per connection, so each
//! protocol sees the same request pattern), with the empty programs and traced, interleaved.
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
    for (tool, arg) in [
        ("wrk", "--version"),
        ("h2load", "--version"),
        ("nginx", "-v"),
    ] {
        if Command::new(tool).arg(arg).output().is_err() {
            eprintln!("{tool} is missing (cargo xtask setup installs it)");
            std::process::exit(1);
        }
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
        "| throughput (req/s) | {ru:.0} | {rf:.0} | {rt:.0} | {:.3} | ≥ 0.97 × floor ({:.3}) |",
        rt / ru,
        rt / rf
    );
    println!(
        "| p99 latency (ms) | {pu:.2} | {pf:.2} | {pt:.2} | {:.2} | – |",
        pt / pu
    );
    println!("| eBPF time per request (all programs, every syscall on the host) | – | {nf:.0} ns | {nt:.0} ns | – | – |");
    println!("| eBPF time per request added by tracing (traced − floor) | – | – | {:.0} ns | – | ≤ 1000 ns |", nt - nf);
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
    // The goals are issue 20's: against the floor, whose cost is the kernel's.
    let (ratio, added) = (rt / rf, nt - nf);
    common::goal(
        "traced throughput ÷ empty-program floor (wrk, max rate)",
        format!("{ratio:.3}"),
        "≥ 0.97",
        ratio >= 0.97,
    );
    common::goal(
        "eBPF time per request added by tracing",
        format!("{added:.0} ns"),
        "≤ 1000 ns",
        added <= 1000.0,
    );
    protocols(seconds, rounds, connections);
    fixed_rate(port, server_pid, rate, seconds.max(10));
}

/// The protocol paths nginx serves: (name, h2load arguments before the URL, scheme).
const PROTOCOLS: [(&str, &[&str], &str); 3] = [
    ("HTTP/1.1", &["--h1"], "http"),
    ("HTTP/2 without TLS (h2c)", &[], "http"),
    ("HTTP/1.1 over TLS (OpenSSL)", &["--h1"], "https"),
];

/// nginx in one process (no master: it is the target, and goes with `Proc`), a listener per
/// protocol; its ports in `PROTOCOLS` order.
fn start_nginx(dir: &std::path::Path) -> (Proc, [u16; 3]) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    let ports = [free_port(), free_port(), free_port()];
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n access_log off;\n keepalive_requests 1000000;\n\
             client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n\
             uwsgi_temp_path {d};\n scgi_temp_path {d};\n\
             ssl_certificate {c};\n ssl_certificate_key {k};\n\
             server {{\n  listen 127.0.0.1:{p0};\n  listen 127.0.0.1:{p1} http2;\n  listen 127.0.0.1:{p2} ssl;\n\
             http2_max_requests 1000000;\n  location / {{ return 200 \"ok\"; }}\n }}\n}}\n",
            d = dir.display(),
            c = cert.display(),
            k = key.display(),
            p0 = ports[0],
            p1 = ports[1],
            p2 = ports[2],
        ),
    )
    .expect("nginx.conf");
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("nginx");
    let started = Instant::now();
    while ports
        .iter()
        .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), ports)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// h2load for `seconds`: (requests/s, requests that succeeded).
fn h2load(args: &[&str], url: &str, seconds: u64, connections: u64) -> (f64, f64) {
    let out = Command::new("h2load")
        .args([
            "-t1",
            "-m1",
            &format!("-c{connections}"),
            &format!("-D{seconds}"),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse().ok())
        .unwrap_or_else(|| panic!("h2load output lacks its rate:\n{text}"));
    let succeeded = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .and_then(|l| l.split(", ").find_map(|f| f.strip_suffix(" succeeded")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("h2load output lacks its request count:\n{text}"));
    (rps, succeeded)
}

/// Per protocol, the floor's and the traced runs' figures, a value per round.
#[derive(Default)]
struct Path {
    rps: [Vec<f64>; 2],
    ns: [Vec<f64>; 2],
    counted: Vec<f64>,
}

/// The eBPF cost of each protocol path on nginx, empty programs against the agent.
fn protocols(seconds: u64, rounds: usize, connections: u64) {
    let dir = std::env::temp_dir().join(format!("infersight-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let (nginx, ports) = start_nginx(&dir);
    let url = |i: usize| format!("{}://127.0.0.1:{}/v1/completions", PROTOCOLS[i].2, ports[i]);
    let mut paths: [Path; 3] = Default::default();
    for round in 0..rounds {
        {
            let probes = common::floor(&Targets::default());
            let runtime = || -> f64 {
                probes
                    .program_statuses()
                    .iter()
                    .filter_map(|s| s.run_time_ns)
                    .sum::<u64>() as f64
            };
            for (i, path) in paths.iter_mut().enumerate() {
                let before = runtime();
                let (rps, done) = h2load(PROTOCOLS[i].1, &url(i), seconds, connections);
                path.rps[0].push(rps);
                path.ns[0].push((runtime() - before) / done);
            }
        }
        let (agent, aport) = start_agent(nginx.0.id());
        // The OpenSSL probes attach on a tick after the agent sees libssl in nginx.
        std::thread::sleep(Duration::from_millis(3000));
        for (i, path) in paths.iter_mut().enumerate() {
            let before = common::scrape(aport);
            let (rps, done) = h2load(PROTOCOLS[i].1, &url(i), seconds, connections);
            std::thread::sleep(Duration::from_millis(1500)); // two ticks
            let after = common::scrape(aport);
            let delta = |key: &str| common::sum(&after, key) - common::sum(&before, key);
            path.rps[1].push(rps);
            path.ns[1].push(delta("infersight_ebpf_program_run_time_seconds_total") * 1e9 / done);
            path.counted
                .push(delta("http_server_request_duration_seconds_count{") / done);
            eprintln!(
                "round {}, {}: floor {:.0} req/s, {:.0} ns eBPF/req | traced {rps:.0} req/s, {:.0} ns eBPF/req, counted {:.4} of {done}",
                round + 1,
                PROTOCOLS[i].0,
                path.rps[0][round],
                path.ns[0][round],
                path.ns[1][round],
                path.counted[round],
            );
        }
        drop(agent);
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\nprotocol paths: nginx (one process) answering a 2-byte body, h2load -t1 -c{connections} -m1 -D{seconds}, median of {rounds} interleaved rounds\n"
    );
    println!("| protocol | throughput, floor (req/s) | traced (req/s) | traced ÷ floor | eBPF per request, floor | traced | added by tracing | requests counted ÷ completed |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, path) in paths.iter_mut().enumerate() {
        let (rf, rt) = (
            common::median(&mut path.rps[0]),
            common::median(&mut path.rps[1]),
        );
        let (nf, nt) = (
            common::median(&mut path.ns[0]),
            common::median(&mut path.ns[1]),
        );
        let name = PROTOCOLS[i].0;
        let counted = common::median(&mut path.counted);
        println!(
            "| {name} | {rf:.0} | {rt:.0} | {:.3} | {nf:.0} ns | {nt:.0} ns | {:.0} ns | {counted:.4} |",
            rt / rf,
            nt - nf,
        );
        common::goal(
            &format!("nginx, {name}: eBPF time added per request; traced ÷ floor throughput; counted ÷ completed"),
            format!("{:.0} ns; {:.3}; {counted:.4}", nt - nf, rt / rf),
            "counted ÷ completed 1.000",
            (counted - 1.0).abs() < 0.001,
        );
    }
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
