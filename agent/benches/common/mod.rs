//! Helpers shared by the benchmark harnesses.
#![allow(dead_code)]

use std::io::{Read, Write};

/// `--name VALUE` from the command line, or `default`.
pub fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Exit with a message unless running as root (the benchmarks load eBPF programs).
pub fn require_root(bench: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the {bench} benchmark loads eBPF programs: run it as root");
        std::process::exit(1);
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One goal line for `cargo xtask bench`'s summary table (tab-separated on stdout):
/// measure, our figure, the goal, and whether it is met.
pub fn goal(measure: &str, figure: String, goal: &str, met: bool) {
    println!(
        "GOAL\t{measure}\t{figure}\t{goal}\t{}",
        if met { "pass" } else { "short" }
    );
}

/// GET `path` from 127.0.0.1:`port`: (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: b\r\n\r\n").expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// The `/metrics` samples of the agent on `port`, by series.
pub fn scrape(port: u16) -> std::collections::HashMap<String, f64> {
    let (_, text) = get(port, "/metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn sum(m: &std::collections::HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// The benchmarks' HTTP server (`BENCH server`): a hyper HTTP/1.1 keep-alive server on one
/// worker thread answering every request with a small JSON body; prints its port.
async fn handle(
    _req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<hyper::body::Bytes>>, std::convert::Infallible> {
    Ok(hyper::Response::new(http_body_util::Full::new(
        hyper::body::Bytes::from_static(b"{\"ok\":true}"),
    )))
}

pub fn serve() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(handle),
                    )
                    .await;
            });
        }
    });
}

/// A closed-loop load generator at a fixed rate: `conns` keep-alive connections, each
/// sending on its own schedule (late requests go at once, none are skipped). Returns the
/// requests completed.
pub fn load(port: u16, rate: u64, seconds: u64, conns: u64) -> u64 {
    let per_conn = std::time::Duration::from_secs_f64(conns as f64 / rate as f64);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                // Spread the connections over one interval.
                let mut next =
                    std::time::Instant::now() + per_conn.mul_f64(i as f64 / conns as f64);
                let mut done = 0u64;
                let mut buf = [0u8; 4096];
                while next < end {
                    if let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    s.write_all(b"GET /v1/completions HTTP/1.1\r\nHost: b\r\n\r\n")
                        .expect("send");
                    let mut got = Vec::new();
                    while !got.ends_with(b"{\"ok\":true}") {
                        let n = s.read(&mut buf).expect("read");
                        assert!(n > 0, "server closed");
                        got.extend_from_slice(&buf[..n]);
                    }
                    done += 1;
                    next += per_conn;
                }
                done
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .sum()
}

/// Peak and current RSS (VmHWM, VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kb("VmHWM:"), kb("VmRSS:"))
}

/// A child process killed and reaped on drop.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the agent as `cmd` describes and wait until it listens; its port. Its log is
/// drained on a thread.
pub fn start_agent(mut cmd: std::process::Command) -> (Proc, u16) {
    use std::io::BufRead;
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agent");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let port = loop {
        let line = lines.next().expect("agent exited").expect("read");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .trim()
                .rsplit_once(':')
                .expect("addr")
                .1
                .parse()
                .expect("port");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), port)
}

/// Start this benchmark binary again in `server` mode (see `serve`): the process, its PID
/// and its port.
pub fn start_server() -> (Proc, u32, u16) {
    use std::io::BufRead;
    let exe = std::env::current_exe().expect("own path");
    let mut server = std::process::Command::new(exe)
        .arg("server")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("server");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let pid = server.id();
    (Proc(server), pid, line.trim().parse().expect("port"))
}

/// The agent's kernel programs as the agent runs them: every collector started (host and
/// GPU sampling off: they are not what is measured) for `targets`.
pub struct Traced {
    pub kernel: infersight::ebpf::Kernel,
    registry: infersight::readings::Registry,
    targets: infersight::targets::Targets,
}

impl Traced {
    pub fn start(targets: infersight::targets::Targets) -> Traced {
        let config = infersight::config::Config::from_text(
            None,
            "[host]\nenabled = false\n[gpu]\nenabled = false\n",
            &infersight::config::Overrides::default(),
            std::iter::empty(),
        )
        .expect("bench config");
        let mut kernel = infersight::ebpf::Kernel::load(&targets, options());
        let registry = infersight::readings::Registry::start(&config, &mut kernel, &targets);
        let h = kernel.programs_health(infersight::ebpf::SYSCALL_HOOKS);
        assert!(h.reason.is_none(), "programs did not attach: {h:?}");
        Traced {
            kernel,
            registry,
            targets,
        }
    }

    /// One tick's readings.
    pub fn read(&mut self) -> infersight::readings::Readings {
        let members = infersight::targets::Members::read(&self.targets);
        let mut readings = infersight::readings::Readings::default();
        let mut tick = infersight::collectors::Tick {
            targets: &self.targets,
            members: &members,
            gpu_pids: &[],
            kernel: &mut self.kernel,
        };
        self.registry.collect(&mut tick, &mut readings);
        readings
    }
}

/// Only the empty programs on the syscall hooks (the cost floor), for `targets`.
pub fn floor(targets: &infersight::targets::Targets) -> infersight::ebpf::Kernel {
    let mut kernel = infersight::ebpf::Kernel::load(targets, options());
    let h = kernel.attach(infersight::ebpf::FLOOR_PROGRAMS);
    assert!(h.reason.is_none(), "empty programs did not attach: {h:?}");
    kernel
}

/// The agent's load options, with every collector's record offsets.
pub fn options() -> infersight::ebpf::Options {
    infersight::ebpf::Options {
        record_offsets: infersight::readings::RECORD_OFFSETS,
        ..Default::default()
    }
}

/// eBPF (run time in ns, runs) between two readings of the program statuses, summed over
/// the programs `pick` selects.
pub fn cost(
    before: &[infersight::base::ProgramStatus],
    after: &[infersight::base::ProgramStatus],
    pick: impl Fn(&str) -> bool,
) -> (u64, u64) {
    before
        .iter()
        .zip(after)
        .filter(|(_, a)| pick(&a.name))
        .map(|(b, a)| {
            (
                a.run_time_ns.unwrap_or(0) - b.run_time_ns.unwrap_or(0),
                a.run_count.unwrap_or(0) - b.run_count.unwrap_or(0),
            )
        })
        .fold((0, 0), |s, c| (s.0 + c.0, s.1 + c.1))
}

/// ns per run of a (run time, runs) pair; NaN when nothing ran.
pub fn per_run(c: (u64, u64)) -> f64 {
    if c.1 == 0 {
        f64::NAN
    } else {
        c.0 as f64 / c.1 as f64
    }
}
