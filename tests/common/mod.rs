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

    /// `/health`: its status code and parsed body.
    pub fn health(&self) -> (u16, serde_json::Value) {
        let (code, body) = self.get("/health");
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (code, v)
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

/// The entry called `name` of a `/health` list (`collectors` or `programs`).
pub fn health_entry(health: &serde_json::Value, list: &str, name: &str) -> serde_json::Value {
    health[list]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {list}: {health}"))
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
    /// Parse the text exposition format strictly: every sample line must be
    /// `name{label="value",...} value`, with the format's escapes in label values.
    /// (The prometheus-parse crate cuts label values at the first `}`, which breaks on
    /// routes such as `/items/{id}`.)
    pub fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for (no, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) =
                parse_line(line).unwrap_or_else(|e| panic!("line {}: {e}: {line:?}", no + 1));
            assert!(
                samples.insert(key, value).is_none(),
                "line {}: duplicate sample {line:?}",
                no + 1
            );
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

type Key = (String, BTreeMap<String, String>);

fn parse_line(line: &str) -> Result<(Key, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            let (start, c) = chars.next().ok_or("unterminated labels")?;
            if c == '}' {
                rest = &r[start + 1..];
                break;
            }
            let eq = r[start..].find('=').ok_or("label without =")? + start;
            let lname = r[start..eq].trim_start_matches(',').to_string();
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '\\' => match chars.next().ok_or("bad escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            if labels.insert(lname.clone(), value).is_some() {
                return Err(format!("duplicate label {lname}"));
            }
            if chars.peek().map(|(_, c)| *c) == Some(',') {
                chars.next();
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let v = fields.next().ok_or("no value")?;
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(((name.to_string(), labels), value))
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
        Self::spawn_bin(workload_bin(), getppid, nanosleep, sleep_us, fork)
    }

    /// A workload that calls `n` distinct syscall numbers no kernel has (1000, 1001, …).
    pub fn spawn_invalid(n: u32) -> Workload {
        Self::start(Command::new(workload_bin()).args([
            "0".to_string(),
            "0".into(),
            "0".into(),
            format!("invalid={n}"),
        ]))
    }

    /// The workload from another copy of its binary (a process name of its own).
    pub fn spawn_bin(
        bin: &Path,
        getppid: u32,
        nanosleep: u32,
        sleep_us: u32,
        fork: bool,
    ) -> Workload {
        let mut cmd = Command::new(bin);
        cmd.args([
            getppid.to_string(),
            nanosleep.to_string(),
            sleep_us.to_string(),
        ]);
        if fork {
            cmd.arg("fork");
        }
        Self::start(&mut cmd)
    }

    fn start(cmd: &mut Command) -> Workload {
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

/// The Python test server (tests/http_server.py); killed on drop.
pub struct PyServer {
    pub child: Child,
    pub port: u16,
}

impl PyServer {
    pub fn start() -> PyServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/http_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("server port");
        let port = line.trim().parse().expect("port number");
        PyServer { child, port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 client connection (test side only).
pub struct Client {
    stream: BufReader<TcpStream>,
}

pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::from_stream(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    /// A client on a connection that already carries something (what a test wrote raw).
    pub fn from_stream(s: TcpStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            stream: BufReader::new(s),
        }
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[])
    }

    /// Send one request and read the whole response (Content-Length or chunked).
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        let start = Instant::now();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        self.read_reply(start)
    }

    /// Read one whole response (Content-Length or chunked).
    pub fn read_reply(&mut self, start: Instant) -> Reply {
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
            if l == "transfer-encoding: chunked" {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.stream.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.stream.read_exact(&mut body).unwrap();
        }
        Reply {
            status,
            body,
            elapsed: start.elapsed(),
        }
    }
}

/// Sum of `_count` over every `http_server_request_duration_seconds` series matching.
pub fn request_count(m: &Metrics, labels: &[(&str, &str)]) -> f64 {
    m.matching("http_server_request_duration_seconds_count", labels)
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// 200 GET requests over two keep-alive connections, with per 20: one /sleep/100, two
/// /sleep/30, one /missing (404), one /error (500) and fifteen `{items}/N`. Checks each
/// status and returns the client-measured durations of the sleeping requests.
pub fn request_mix(port: u16, items: &str) -> Vec<f64> {
    let mut clients = [Client::connect(port), Client::connect(port)];
    let mut slow = Vec::new();
    for i in 0..200usize {
        let (path, want) = match i % 20 {
            0 => ("/sleep/100".to_string(), 200),
            1 | 2 => ("/sleep/30".to_string(), 200),
            3 => ("/missing".to_string(), 404),
            4 => ("/error".to_string(), 500),
            _ => (format!("{items}/{i}?page={i}"), 200),
        };
        let r = clients[i % 2].get(&path);
        assert_eq!(r.status, want, "{path}");
        if path.starts_with("/sleep/") {
            slow.push(r.elapsed.as_secs_f64());
        }
    }
    slow
}

/// The kernel measures from the server's read of a request to its write of the response,
/// an interval inside the one the client sees: its mean is a little lower, never higher.
pub fn assert_within_client(kernel_mean: f64, client: &[f64]) {
    let client_mean = client.iter().sum::<f64>() / client.len() as f64;
    let gap = client_mean - kernel_mean;
    assert!(
        (0.0..0.005).contains(&gap),
        "kernel mean {kernel_mean}, client mean {client_mean}"
    );
}

/// A fresh cgroup v2 child, removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create(tag: &str) -> TestCgroup {
        let mount = infersight::targets::cgroup2_mount().expect("a cgroup v2 hierarchy");
        let path = mount.join(format!("infersight-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&path).expect("create cgroup");
        TestCgroup { path }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).expect("move process");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

impl Agent {
    /// One request with an optional bearer token and body: the status and the JSON body
    /// (`Null` when it is not JSON).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        // An agent that stopped answering fails the test instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Scrape until `ok` holds for the metrics (at most `limit`); the last scrape.
    pub fn wait_for(&self, limit: Duration, what: &str, ok: impl Fn(&Metrics) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            if ok(&m) {
                return m;
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A temporary agent setup for alerting tests: a config naming `rules.toml`, the rules,
/// a PID file for a target `svc`, and a state directory; removed on drop.
pub struct AlertDir {
    pub dir: PathBuf,
}

impl AlertDir {
    /// `rules` is the rules file's text, `sections` more config, `pid` the PID-file's line.
    pub fn new(tag: &str, rules: &str, sections: &str, pid: &str) -> AlertDir {
        let dir =
            std::env::temp_dir().join(format!("infersight-alert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rules.toml"), rules).unwrap();
        std::fs::write(
            dir.join("infersight.toml"),
            format!("[alerting]\nrules_file = \"rules.toml\"\n\n{sections}"),
        )
        .unwrap();
        std::fs::write(dir.join("svc.pid"), format!("{pid}\n")).unwrap();
        AlertDir { dir }
    }

    /// `--config`, `--state-dir` and `--pid-file PATH=svc` for the agent.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.dir.join("infersight.toml").display().to_string(),
            "--state-dir".into(),
            self.dir.join("state").display().to_string(),
            "--pid-file".into(),
            format!("{}=svc", self.dir.join("svc.pid").display()),
        ]
    }

    /// Point the PID file at another process.
    pub fn set_pid(&self, pid: u32) {
        std::fs::write(self.dir.join("svc.pid"), format!("{pid}\n")).unwrap();
    }
}

impl Drop for AlertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Set the next PID the kernel hands out in this namespace (root): ns_last_pid.
pub fn next_pid(pid: u32) {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("write ns_last_pid");
}

/// A workload (as `Workload::spawn`) that gets PID `pid`, a PID another process had;
/// tried again until it lands (another process may take it first).
pub fn workload_with_pid(pid: u32, getppid: u32) -> Workload {
    let mut holder = String::from("a process that was quicker");
    for _ in 0..50 {
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            holder = comm.trim().to_string();
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next_pid(pid);
        let w = Workload::spawn(getppid, 0, 0, false);
        if w.pid() == pid {
            return w;
        }
    }
    panic!("PID {pid} never came round again: taken by {holder}");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Messages in an aiosmtpd Mailbox (maildir) directory.
pub fn mails(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            for e in entries.flatten() {
                out.push(std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out.sort();
    out
}

/// A real SMTP server (aiosmtpd) storing mail in a maildir.
pub fn smtpd(port: u16, maildir: &Path) -> Child {
    Command::new("/usr/bin/python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aiosmtpd (python3-aiosmtpd; the test command installs it)")
}

pub fn email_section(port: u16) -> String {
    format!("[channels.email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\nfrom = \"infersight@test.local\"\nto = [\"oncall@test.local\", \"lead@test.local\"]\n")
}

/// Wait until the maildir holds `n` mails (at most `limit`).
pub fn wait_mails(maildir: &Path, n: usize, limit: Duration, agent: &Agent) -> Vec<String> {
    let start = Instant::now();
    while mails(maildir).len() < n {
        assert!(
            start.elapsed() < limit,
            "{} of {n} mails; log:\n{}",
            mails(maildir).len(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    mails(maildir)
}

/// The shipped rules (config/rules.toml) named, sent to `channel`, with `for` cut to 1 s
/// and each `(from, to)` of `edits` replaced in their text (thresholds a test can reach).
pub fn shipped_rules(names: &[&str], channel: &str, edits: &[(&str, &str)]) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml"))
            .unwrap();
    let mut out = String::new();
    for block in text.split("[[rule]]").skip(1) {
        if !names
            .iter()
            .any(|n| block.contains(&format!("name = \"{n}\"")))
        {
            continue;
        }
        let mut lines: Vec<String> = Vec::new();
        for l in block.lines() {
            if l.starts_with("for = ") {
                lines.push("for = \"1s\"".into());
            } else {
                lines.push(l.to_string());
            }
            if l.starts_with("name = ") {
                lines.push(format!("channels = [\"{channel}\"]"));
            }
        }
        out += &format!("[[rule]]{}\n", lines.join("\n"));
    }
    for (from, to) in edits {
        assert!(out.contains(from), "{from:?} is not in the rules:\n{out}");
        out = out.replace(from, to);
    }
    assert_eq!(out.matches("[[rule]]").count(), names.len(), "{out}");
    out
}

/// Tests that must not overlap take turns: millisecond comparisons that need the
/// machine's two CPUs, and tests that hand a freed PID out again through ns_last_pid
/// (one rewinding the counter lets any thread of another take the PID it waits for).
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A server process started as a process-group leader (with what it started), ended with
/// its group on drop.
pub struct ServerGroup {
    pub child: Child,
    pub port: u16,
}

impl Drop for ServerGroup {
    fn drop(&mut self) {
        // The group by its (negative) id, through libc: procps-ng 4.0.2's `kill -TERM
        // -PGID` signals every process (kill(-1)), this test runner's own included.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            if pgid > 1 {
                // SAFETY: kill has no memory preconditions; a negative id names the
                // server's own process group (it was started as a group leader).
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cmd` in a process group of its own; it prints its port first on stdout.
pub fn spawn_printing_port(mut cmd: Command) -> ServerGroup {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port = line.trim().parse().expect("a port number");
    ServerGroup { child, port }
}

/// Start `cmd`, told to listen on `port`, in a process group of its own.
pub fn spawn_on_port(mut cmd: Command, port: u16) -> ServerGroup {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start server");
    ServerGroup { child, port }
}

/// A histogram's mean: its `_sum` over its `_count`.
pub fn mean(m: &Metrics, name: &str, l: &[(&str, &str)]) -> f64 {
    m.get(&format!("{name}_sum"), l).expect("sum")
        / m.get(&format!("{name}_count"), l).expect("count")
}

/// The kernel's interval lies inside the client's, by less than a millisecond.
pub fn within_1ms(what: &str, kernel: f64, client: f64) {
    let gap = client - kernel;
    assert!(
        (0.0..0.001).contains(&gap),
        "{what}: kernel {kernel}, client {client}"
    );
}

/// The request and response body-size sums of one request series.
pub fn assert_body_sums(m: &Metrics, labels: &[(&str, &str)], request: f64, response: f64) {
    assert_eq!(
        m.get("http_server_request_body_size_bytes_sum", labels),
        Some(request),
        "request bytes of {labels:?}"
    );
    assert_eq!(
        m.get("http_server_response_body_size_bytes_sum", labels),
        Some(response),
        "response bytes of {labels:?}"
    );
}

/// `tests/servers/NAME.go` built once per test binary (Debian's golang-go, no modules).
pub fn go_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("infersight-{name}"));
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/servers")
            .join(format!("{name}.go"));
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(src)
            .env("GO111MODULE", "off")
            .status()
            .expect("run go build (Debian package golang-go)");
        assert!(status.success(), "go build {name}");
        built.push(name.to_string());
    }
    out
}
