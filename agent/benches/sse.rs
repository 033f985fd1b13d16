//! `cargo xtask bench sse`: what tracing costs a realistic streaming server at its
//! saturation, side by side in one run.
//!
//! The server is FastAPI on uvicorn (uvloop, httptools: the HTTP stack of vLLM and SGLang),
//! one process, Debian's packages (tests/servers/fastapi_app.py, `POST /v1/completions`):
//! a stand-in engine hands one token to every running request each decode step (10 ms), and
//! the front end sends each as an OpenAI-style completion chunk built with pydantic, one
//! server-sent event (one write) per token. A closed-loop client in this binary keeps C
//! keep-alive connections streaming and times, per stream, the first `data:` event (time
//! to first token, TTFT) and the end.
//!
//! First the saturating concurrency: C doubles from 1 until the token rate grows by less
//! than 10%; the bench runs at that C, where the server's CPU is the limit (`--connections`
//! skips the search). Then, interleaved over several rounds (the order rotating):
//!   untraced   the server alone
//!   floor      empty programs on the syscall hooks (the mechanism's cost, paid by every
//!              syscall on the host)
//!   traced     the release agent, `infersight --pid SERVER`, every collector on
//! Goals: traced throughput ≥ 0.98 of untraced, p99 TTFT within 1% of untraced (each the
//! median of the rounds' ratios).
//!
//! Usage: cargo bench -p infersight --bench sse -- [--seconds S] [--rounds R]
//!        [--tokens N] [--connections C] [--step-ms MS]
mod common;

use std::{
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::Proc;
use infersight::targets::Targets;

const AGENT: &str = env!("CARGO_BIN_EXE_infersight");
/// Debian's interpreter: the packaged FastAPI, uvicorn, uvloop and httptools are its.
const PYTHON: &str = "/usr/bin/python3";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    common::require_root("sse");
    let probe = Command::new(PYTHON)
        .args(["-c", "import fastapi, uvicorn, uvloop, httptools"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!(
            "{PYTHON} lacks FastAPI, uvicorn, uvloop or httptools (cargo xtask setup installs them)"
        );
        std::process::exit(1);
    }
    run(&Opts {
        seconds: common::flag(&args, "--seconds", 6) as f64,
        rounds: common::flag(&args, "--rounds", 9) as usize,
        tokens: common::flag(&args, "--tokens", 32),
        connections: common::flag(&args, "--connections", 0),
        step_ms: common::flag(&args, "--step-ms", 10),
    });
}

struct Opts {
    seconds: f64,
    rounds: usize,
    tokens: u64,
    connections: u64,
    step_ms: u64,
}

/// The server's CPU and the client's (the agent and everything else go where the
/// scheduler puts them).
const SERVER_CPU: usize = 1;
const CLIENT_CPU: usize = 0;

/// Pin the calling thread to `cpu` (nothing on a machine with fewer CPUs).
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it, and
    // sched_setaffinity only reads it. Async-signal-safe, so usable before exec.
    unsafe {
        if libc::sysconf(libc::_SC_NPROCESSORS_ONLN) > cpu as libc::c_long {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

fn servers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers")
}

/// uvicorn serving the FastAPI app in one process (its defaults: uvloop, httptools).
fn start_server(step_ms: u64) -> (Proc, u32, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-m", "uvicorn", "fastapi_app:app", "--app-dir"])
        .arg(servers())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ])
        .env("BENCH_STEP_MS", step_ms.to_string())
        .stdout(Stdio::null());
    // SAFETY: prctl is async-signal-safe; the closure touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            // Gone with the benchmark, however it ends.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            pin(SERVER_CPU);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start uvicorn");
    let pid = child.id();
    let server = Proc(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "uvicorn not up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, pid, port)
}

/// One load run: streams and tokens completed per second and the TTFT percentiles (ms).
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Streams completed in the whole run, ramp included.
    total: u64,
    rate: f64,
    tokens: f64,
    ttft_p50: f64,
    ttft_p99: f64,
}

/// What a client connection saw of one stream, in seconds from the run's start.
struct Stream {
    sent: f64,
    ttft_ms: f64,
    done: f64,
    tokens: u64,
}

/// `conns` keep-alive connections, each streaming completions back to back, driven by one
/// client thread (an event loop, as a load generator should be: the server's CPU is not
/// shared with hundreds of client threads). Their starts are spread over one stream's
/// length and each asks for between half and 1.5 times `tokens` (the same sequence in every
/// run), so that the streams do not march in step. Measured: the `seconds` after a
/// one-second ramp (streams completed in it, first tokens of the streams sent in it).
fn drive(port: u16, conns: u64, seconds: f64, o: &Opts) -> Load {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let (tokens, step_ms) = (o.tokens, o.step_ms);
    let start = Instant::now();
    let (from, to) = (1.0, 1.0 + seconds);
    let spread = Duration::from_millis(tokens * step_ms);
    // The client on its own CPU, the server on the other: they do not take turns on one.
    pin(CLIENT_CPU);
    let seen: Vec<Stream> = rt.block_on(async move {
        let tasks: Vec<_> = (0..conns)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::time::sleep(spread.mul_f64(i as f64 / conns as f64)).await;
                    client(port, i, tokens, start, to).await
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.extend(t.await.expect("client task"));
        }
        seen
    });
    let done: Vec<&Stream> = seen
        .iter()
        .filter(|s| s.done >= from && s.done < to)
        .collect();
    let mut ttft: Vec<f64> = seen
        .iter()
        .filter(|s| s.sent >= from && s.sent < to)
        .map(|s| s.ttft_ms)
        .collect();
    ttft.sort_by(f64::total_cmp);
    let pct = |p: f64| ttft[((ttft.len() as f64 * p) as usize).min(ttft.len() - 1)];
    Load {
        total: seen.len() as u64,
        rate: done.len() as f64 / seconds,
        tokens: done.iter().map(|s| s.tokens as f64).sum::<f64>() / seconds,
        ttft_p50: pct(0.50),
        ttft_p99: pct(0.99),
    }
}

/// Connection `i`: completions back to back until `to` seconds after `start`.
async fn client(port: u16, i: u64, tokens: u64, start: Instant, to: f64) -> Vec<Stream> {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut rng = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while start.elapsed().as_secs_f64() < to {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = tokens / 2 + rng % (tokens + 1);
        let body = format!(
            r#"{{"model":"bench","prompt":"Say something.","max_tokens":{n},"stream":true}}"#
        );
        let request = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = start.elapsed();
        let mut out = request.as_bytes();
        while !out.is_empty() {
            s.writable().await.expect("writable");
            match s.try_write(out) {
                Ok(k) => out = &out[k..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("send: {e}"),
            }
        }
        let mut got: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut first = None;
        // The chunked body ends with the zero-length chunk.
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            s.readable().await.expect("readable");
            match s.try_read(&mut buf) {
                Ok(0) => panic!("server closed the connection"),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("read: {e}"),
            }
            if first.is_none() && contains(&got, b"data: ") {
                first = Some(start.elapsed() - sent);
            }
        }
        seen.push(Stream {
            sent: sent.as_secs_f64(),
            ttft_ms: first.expect("a data: event").as_secs_f64() * 1000.0,
            done: start.elapsed().as_secs_f64(),
            tokens: n,
        });
    }
    seen
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The saturating concurrency: doubling from 1, the first that adds less than 10% to the
/// token rate of the one before (the server's CPU is the limit there), with the rate at
/// each step tried.
fn saturation(port: u16, o: &Opts) -> (u64, Vec<(u64, f64)>) {
    let mut steps = Vec::new();
    let mut c = 1;
    let mut best = drive(port, c, 3.0, o).tokens;
    steps.push((c, best));
    while c < 1024 {
        c *= 2;
        let next = drive(port, c, 3.0, o).tokens;
        steps.push((c, next));
        if next < best * 1.10 {
            break;
        }
        best = next;
    }
    (c, steps)
}

fn start_agent(server_pid: u32, state: &Path) -> (Proc, u16) {
    let mut cmd = Command::new(AGENT);
    cmd.args(["--listen", "127.0.0.1:0", "--pid"])
        .arg(format!("{server_pid}=sse"))
        .arg("--state-dir")
        .arg(state)
        .env("INFERSIGHT_LOG", "info");
    // SAFETY: sched_setaffinity is async-signal-safe and reads only the set built here.
    unsafe {
        cmd.pre_exec(|| {
            // Not the client's pinning: the agent goes where the scheduler puts it.
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in 0..libc::CPU_SETSIZE as usize {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
    common::start_agent(cmd)
}

fn run(o: &Opts) {
    let (_server, server_pid, port) = start_server(o.step_ms);
    // Warm up (imports, the first requests' allocations).
    drive(port, 4, 1.0, o);
    let (conns, steps) = if o.connections > 0 {
        (o.connections, Vec::new())
    } else {
        saturation(port, o)
    };
    for (c, r) in &steps {
        eprintln!("saturation search: {c} connections, {r:.0} tokens/s");
    }
    let state = std::env::temp_dir().join(format!("infersight-bench-sse-{}", std::process::id()));
    std::fs::create_dir_all(&state).expect("state dir");
    let (mut untraced, mut floor, mut traced) = (vec![], vec![], vec![]);
    let (mut counted, mut ttft_agent) = (vec![], vec![]);
    for round in 0..o.rounds {
        let (mut u, mut f, mut t) = (None, None, None);
        // The order rotates from round to round, so that no configuration always follows
        // the same one.
        for k in 0..3 {
            match (round + k) % 3 {
                0 => u = Some(drive(port, conns, o.seconds, o)),
                1 => {
                    let _probes = common::floor(&Targets::default());
                    f = Some(drive(port, conns, o.seconds, o));
                }
                _ => {
                    let (agent, aport) = start_agent(server_pid, &state);
                    std::thread::sleep(Duration::from_millis(1500));
                    let before = common::scrape(aport);
                    let run = drive(port, conns, o.seconds, o);
                    std::thread::sleep(Duration::from_millis(1500)); // two ticks
                    let after = common::scrape(aport);
                    drop(agent);
                    let delta = |k: &str| common::sum(&after, k) - common::sum(&before, k);
                    let reqs = delta("http_server_request_duration_seconds_count{");
                    let ttft_n = delta("gen_ai_server_time_to_first_token_seconds_count{");
                    let ttft_s = delta("gen_ai_server_time_to_first_token_seconds_sum{");
                    counted.push(reqs / run.total as f64);
                    ttft_agent.push(if ttft_n > 0.0 {
                        ttft_s / ttft_n * 1000.0
                    } else {
                        f64::NAN
                    });
                    t = Some(run);
                }
            }
        }
        let (u, f, t) = (
            u.expect("untraced run"),
            f.expect("floor run"),
            t.expect("traced run"),
        );
        eprintln!(
            "round {}: tokens/s, TTFT p50 and p99 (ms): untraced {:.0} {:.2} {:.2} | floor {:.0} {:.2} {:.2} | traced {:.0} {:.2} {:.2}; agent counted {:.4} of the streams, its mean TTFT {:.2} ms",
            round + 1, u.tokens, u.ttft_p50, u.ttft_p99, f.tokens, f.ttft_p50, f.ttft_p99,
            t.tokens, t.ttft_p50, t.ttft_p99, counted.last().copied().unwrap_or(f64::NAN),
            ttft_agent.last().copied().unwrap_or(f64::NAN)
        );
        untraced.push(u);
        floor.push(f);
        traced.push(t);
    }
    let _ = std::fs::remove_dir_all(&state);
    let med =
        |v: &[Load], f: fn(&Load) -> f64| common::median(&mut v.iter().map(f).collect::<Vec<_>>());
    // Ratios per round (its configurations ran back to back), then their median.
    let ratio = |of: &[Load], f: fn(&Load) -> f64| {
        common::median(
            &mut untraced
                .iter()
                .zip(of)
                .map(|(u, t)| f(t) / f(u))
                .collect::<Vec<_>>(),
        )
    };
    let tokens = |l: &Load| l.tokens;
    let rate = |l: &Load| l.rate;
    let p50 = |l: &Load| l.ttft_p50;
    let p99 = |l: &Load| l.ttft_p99;
    let (tok_ratio, p99_ratio) = (ratio(&traced, tokens), ratio(&traced, p99));
    println!(
        "\nsse benchmark: FastAPI on uvicorn (1 process), {}–{} tokens per stream, one every {} ms per stream, {conns} keep-alive connections, {} s per configuration, median of {} interleaved rounds\n",
        o.tokens / 2,
        o.tokens / 2 + o.tokens,
        o.step_ms,
        o.seconds,
        o.rounds
    );
    if !steps.is_empty() {
        println!(
            "saturation search (untraced, 3 s each, tokens/s): {}\n",
            steps
                .iter()
                .map(|(c, r)| format!("{c} → {r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("| measure | untraced | floor (empty programs) | traced | floor ÷ untraced | traced ÷ untraced | goal |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let row = |name: &str, f: fn(&Load) -> f64, digits: usize, goal: &str| {
        println!(
            "| {name} | {:.digits$} | {:.digits$} | {:.digits$} | {:.3} | {:.3} | {goal} |",
            med(&untraced, f),
            med(&floor, f),
            med(&traced, f),
            ratio(&floor, f),
            ratio(&traced, f),
        );
    };
    row("throughput (tokens/s)", tokens, 0, "≥ 0.98");
    row("throughput (streams/s)", rate, 1, "–");
    row("TTFT p50, client (ms)", p50, 2, "–");
    row("TTFT p99, client (ms)", p99, 2, "≤ 1.01");
    println!(
        "| streams counted by the agent ÷ completed | – | – | {:.4} | – | – | 1.0 |",
        common::median(&mut counted)
    );
    println!(
        "| agent's mean TTFT (server side, ms) | – | – | {:.2} | – | – | – |",
        common::median(&mut ttft_agent)
    );
    common::goal(
        "FastAPI SSE at saturation: traced tokens/s ÷ untraced",
        format!("{tok_ratio:.3}"),
        "≥ 0.98",
        tok_ratio >= 0.98,
    );
    common::goal(
        "FastAPI SSE at saturation: traced p99 TTFT ÷ untraced",
        format!("{p99_ratio:.3}"),
        "≤ 1.01",
        p99_ratio <= 1.01,
    );
}
