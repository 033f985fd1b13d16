//! Helpers shared by the integration tests: the agent as a child process, the C workload,
//! a minimal HTTP client and a Prometheus exposition parser.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{mpsc, Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

pub const AGENT: &str = env!("CARGO_BIN_EXE_infersight");

/// Whether eBPF tests can run here; with INFERSIGHT_REQUIRE_BPF=1 a host that cannot run
/// them fails the test instead of skipping it.
pub fn bpf_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("INFERSIGHT_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("{test}: needs root to load eBPF, and INFERSIGHT_REQUIRE_BPF=1 is set");
    }
    eprintln!("skipping {test}: needs root to load eBPF");
    false
}

/// A running agent; killed on drop.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Start the agent with `args` (plus a free port and a 100 ms tick) and wait until it
    /// serves HTTP.
    pub fn start(args: &[&str]) -> Agent {
        Self::start_with(Command::new(AGENT), args)
    }

    pub fn start_with(mut cmd: Command, args: &[&str]) -> Agent {
        cmd.args(["--listen", "127.0.0.1:0", "--tick", "100ms"])
            .args(args)
            .env("INFERSIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn agent");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim().parse::<SocketAddr>().expect("address"));
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "agent did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Agent { child, addr, log }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Wait for two more ticks so that what happened before is in the snapshot.
    pub fn settle(&self) {
        std::thread::sleep(Duration::from_millis(350));
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over HTTP/1.0 (the connection closes after the body): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// Samples of a Prometheus text exposition, keyed by metric name and sorted labels.
pub struct Metrics {
    pub samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Metrics {
    /// Parse with the prometheus-parse crate; panics on anything it cannot read.
    pub fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
        let mut samples = BTreeMap::new();
        for s in scrape.samples {
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => {
                    samples.insert((s.metric, labels), v);
                }
                prometheus_parse::Value::Histogram(buckets) => {
                    for b in buckets {
                        let mut l = labels.clone();
                        l.insert("le".into(), format_le(b.less_than));
                        samples.insert((format!("{}_bucket", s.metric), l), b.count);
                    }
                }
                prometheus_parse::Value::Summary(_) => {}
            }
        }
        Metrics { samples }
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), want)).copied()
    }

    /// Every sample of `name` whose labels include `labels`.
    pub fn matching(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }
}

fn format_le(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

/// The compiled C workload (built once per test binary with the system C compiler).
pub fn workload_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("infersight-workload-{}", std::process::id()));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workload.c");
        let status = Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(status.success(), "compiling {}", src.display());
        out
    })
}

/// A workload process waiting at its gate.
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    pub fn spawn(getppid: u32, nanosleep: u32, sleep_us: u32, fork: bool) -> Workload {
        let mut cmd = Command::new(workload_bin());
        cmd.args([
            getppid.to_string(),
            nanosleep.to_string(),
            sleep_us.to_string(),
        ]);
        if fork {
            cmd.arg("fork");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("workload ready");
        assert_eq!(line.trim(), "ready");
        Workload {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn release(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            s.write_all(b"g").expect("release workload");
        }
    }

    /// Wait for "done" and the exit (at most `limit`).
    pub fn finish(mut self, limit: Duration) {
        let start = Instant::now();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("workload output");
        assert_eq!(line.trim(), "done");
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                assert!(st.success(), "workload exit {st:?}");
                return;
            }
            assert!(start.elapsed() < limit, "workload did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
