//! Failures of real processes, seen by the real kernel programs: an OOM kill in a
//! memory-limited cgroup (paged by email through a real SMTP server), crashes by signal
//! and by exit status, a PID-file target restarted in a loop, and stalled requests and
//! streams. Untargeted processes fail alongside and must not be counted.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::{
    bpf_or_skip, email_section, free_port, mails, shipped_rules, smtpd, wait_mails, Agent, Client,
    Metrics, TestCgroup,
};

const WAIT: Duration = Duration::from_secs(20);

/// A Python process that prints "ready", waits for a line on stdin, then runs `action`.
struct Poised {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Poised {
    fn start(action: &str) -> Poised {
        let script = format!(
            "import resource, sys\n\
             resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n\
             print('ready', flush=True)\n\
             sys.stdin.readline()\n\
             {action}\n"
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let stdin = child.stdin.take();
        Poised { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Poised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A memory limit: cgroup v1's memory controller where it is mounted (a hybrid host),
/// else `memory.max` of the cgroup v2 itself.
enum MemoryLimit {
    V1(PathBuf),
    V2,
}

impl MemoryLimit {
    fn on(cg: &TestCgroup, tag: &str, bytes: u64) -> MemoryLimit {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(format!("infersight-test-{tag}-{}", std::process::id()));
            let _ = std::fs::create_dir(&dir);
            std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string()).unwrap();
            let _ = std::fs::write(dir.join("memory.swappiness"), "0");
            return MemoryLimit::V1(dir);
        }
        let parent = cg.path.parent().unwrap();
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
        std::fs::write(cg.path.join("memory.max"), bytes.to_string())
            .expect("memory.max: the memory controller on cgroup v2");
        let _ = std::fs::write(cg.path.join("memory.swap.max"), "0");
        MemoryLimit::V2
    }

    fn add(&self, pid: u32) {
        if let MemoryLimit::V1(dir) = self {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        }
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let MemoryLimit::V1(dir) = self {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Allocates (and touches) 1 MiB after 1 MiB until it is killed.
const HOG: &str = "b = []\nwhile True:\n    b.append(b'x' * (1 << 20))";

fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels).unwrap_or(-1.0)
}

/// Every failure counter of `target`: OOM kills, signals by name, exits by kind.
fn failures(m: &Metrics, target: &str) -> Vec<(String, f64)> {
    let t = ("target", target);
    let mut out = vec![(
        "oom".to_string(),
        value(m, "infersight_target_oom_kills_total", &[t]),
    )];
    for s in [
        "SIGKILL", "SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE",
    ] {
        out.push((
            s.to_string(),
            value(m, "infersight_target_signals_total", &[t, ("signal", s)]),
        ));
    }
    for k in ["exit_0", "exit_nonzero", "signal"] {
        out.push((
            k.to_string(),
            value(m, "infersight_target_exits_total", &[t, ("kind", k)]),
        ));
    }
    out
}

/// `failures` as expected: the named counters at their values, every other one 0.
fn expect(nonzero: &[(&str, f64)]) -> Vec<(String, f64)> {
    let names = [
        "oom",
        "SIGKILL",
        "SIGSEGV",
        "SIGABRT",
        "SIGBUS",
        "SIGILL",
        "SIGFPE",
        "exit_0",
        "exit_nonzero",
        "signal",
    ];
    names
        .iter()
        .map(|n| {
            let v = nonzero
                .iter()
                .find(|(k, _)| k == n)
                .map_or(0.0, |(_, v)| *v);
            (n.to_string(), v)
        })
        .collect()
}

fn alerts(agent: &Agent) -> Vec<serde_json::Value> {
    let (_, body) = agent.get("/api/v1/alerts");
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn firing(agent: &Agent, rule: &str) -> Option<serde_json::Value> {
    alerts(agent)
        .into_iter()
        .find(|a| a["rule"] == rule && a["state"] == "firing")
}

fn wait_until<T>(limit: Duration, what: &str, agent: &Agent, f: impl Fn() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory with the agent's config, rules and state; removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str, config: &str, rules: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("infersight-fail-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("infersight.toml"),
            format!("[alerting]\nrules_file = \"rules.toml\"\n{config}"),
        )
        .unwrap();
        std::fs::write(d.join("rules.toml"), rules).unwrap();
        Dir(d)
    }

    fn agent(&self, args: &[&str]) -> Agent {
        let config = self.0.join("infersight.toml").display().to_string();
        let state = self.0.join("state").display().to_string();
        let mut all = vec!["--config", &config, "--state-dir", &state, "--no-host"];
        all.extend_from_slice(args);
        Agent::start(&all)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_oom_kill_in_a_target_cgroup_is_counted_once_and_paged_by_email() {
    if !bpf_or_skip("an_oom_kill_in_a_target_cgroup_is_counted_once_and_paged_by_email") {
        return;
    }
    let port = free_port();
    let maildir = std::env::temp_dir().join(format!("infersight-oom-mail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&maildir);
    let mut smtp = smtpd(port, &maildir);
    let dir = Dir::new(
        "oom",
        &email_section(port),
        &shipped_rules(&["TargetOOMKilled"], "email", &[]),
    );
    let cg = TestCgroup::create("oom");
    let other_cg = TestCgroup::create("oom-other");
    let target = format!("{}=llm", cg.path.display());
    let agent = dir.agent(&["--cgroup", &target]);

    // The target's worker, and an untargeted process, each past a 48 MiB limit.
    let mut hog = Poised::start(HOG);
    let mut other = Poised::start(HOG);
    cg.add(hog.pid());
    other_cg.add(other.pid());
    let limit = MemoryLimit::on(&cg, "oom", 48 << 20);
    let other_limit = MemoryLimit::on(&other_cg, "oom-other", 48 << 20);
    limit.add(hog.pid());
    other_limit.add(other.pid());
    let victim = hog.pid();
    hog.go();
    other.go();
    assert_eq!(hog.wait().signal(), Some(9), "the OOM killer ends it");
    assert_eq!(other.wait().signal(), Some(9));

    let m = agent.wait_for(WAIT, "the OOM kill", |m| {
        value(
            m,
            "infersight_target_exits_total",
            &[("target", "llm"), ("kind", "signal")],
        ) == 1.0
    });
    assert_eq!(
        failures(&m, "llm"),
        expect(&[("oom", 1.0), ("SIGKILL", 1.0), ("signal", 1.0)])
    );
    let mail = wait_mails(&maildir, 1, WAIT, &agent).remove(0);
    assert!(mail.contains("TargetOOMKilled"), "{mail}");
    assert!(mail.contains("llm"), "{mail}");
    assert!(mail.contains(&format!("PID {victim}")), "{mail}");
    let alert = firing(&agent, "TargetOOMKilled").expect("firing");
    assert_eq!(alert["labels"]["pid"], victim.to_string(), "{alert}");
    assert_eq!(alert["labels"]["target"], "llm", "{alert}");

    // Still exactly one, and one mail, a while later.
    std::thread::sleep(Duration::from_secs(2));
    let m = agent.metrics();
    assert_eq!(
        value(
            &m,
            "infersight_target_oom_kills_total",
            &[("target", "llm")]
        ),
        1.0
    );
    assert_eq!(mails(&maildir).len(), 1);
    let _ = smtp.kill();
    let _ = smtp.wait();
    let _ = std::fs::remove_dir_all(&maildir);
}

#[test]
fn crashes_and_exits_are_counted_by_kind_for_targets_only() {
    if !bpf_or_skip("crashes_and_exits_are_counted_by_kind_for_targets_only") {
        return;
    }
    let mut segv = Poised::start("import ctypes\nctypes.string_at(0)");
    let mut abort = Poised::start("import os\nos.abort()");
    let mut killed = Poised::start("import time\ntime.sleep(600)");
    let mut three = Poised::start("sys.exit(3)");
    let mut clean = Poised::start("sys.exit(0)");
    // A cgroup target's process killed from outside: the signal is mapped to the target
    // only when the process exits (in its own context).
    let cg = TestCgroup::create("crash");
    let mut in_cgroup = Poised::start("import time\ntime.sleep(600)");
    cg.add(in_cgroup.pid());
    // Untargeted: they crash the same ways.
    let mut stray_segv = Poised::start("import ctypes\nctypes.string_at(0)");
    let mut stray_killed = Poised::start("import time\ntime.sleep(600)");

    let arg = |p: &Poised, name: &str| format!("{}={name}", p.pid());
    let cgroup = format!("{}=cg", cg.path.display());
    let agent = Agent::start(&[
        "--no-host",
        "--pid",
        &arg(&segv, "segv"),
        "--pid",
        &arg(&abort, "abort"),
        "--pid",
        &arg(&killed, "killed"),
        "--pid",
        &arg(&three, "three"),
        "--pid",
        &arg(&clean, "clean"),
        "--cgroup",
        &cgroup,
    ]);
    agent.settle();
    for p in [
        &mut segv,
        &mut abort,
        &mut three,
        &mut clean,
        &mut stray_segv,
    ] {
        p.go();
    }
    for p in [&mut killed, &mut in_cgroup, &mut stray_killed] {
        p.child.kill().unwrap();
    }
    assert_eq!(segv.wait().signal(), Some(11));
    assert_eq!(abort.wait().signal(), Some(6));
    assert_eq!(three.wait().code(), Some(3));
    assert_eq!(clean.wait().code(), Some(0));
    for p in [
        &mut killed,
        &mut in_cgroup,
        &mut stray_killed,
        &mut stray_segv,
    ] {
        p.wait();
    }

    let m = agent.wait_for(WAIT, "every end", |m| {
        ["segv", "abort", "killed", "three", "clean", "cg"]
            .iter()
            .all(|t| {
                ["exit_0", "exit_nonzero", "signal"].iter().any(|k| {
                    value(
                        m,
                        "infersight_target_exits_total",
                        &[("target", t), ("kind", k)],
                    ) > 0.0
                })
            })
    });
    // Let anything counted twice arrive.
    std::thread::sleep(Duration::from_millis(500));
    let later = agent.metrics();
    assert_eq!(
        ["segv", "abort", "killed", "three", "clean", "cg"].map(|t| failures(&m, t)),
        ["segv", "abort", "killed", "three", "clean", "cg"].map(|t| failures(&later, t)),
    );
    assert_eq!(
        failures(&m, "segv"),
        expect(&[("SIGSEGV", 1.0), ("signal", 1.0)])
    );
    assert_eq!(
        failures(&m, "abort"),
        expect(&[("SIGABRT", 1.0), ("signal", 1.0)])
    );
    assert_eq!(
        failures(&m, "killed"),
        expect(&[("SIGKILL", 1.0), ("signal", 1.0)])
    );
    assert_eq!(failures(&m, "three"), expect(&[("exit_nonzero", 1.0)]));
    assert_eq!(failures(&m, "clean"), expect(&[("exit_0", 1.0)]));
    assert_eq!(
        failures(&m, "cg"),
        expect(&[("SIGKILL", 1.0), ("signal", 1.0)])
    );
}

#[test]
fn a_pid_file_target_restarted_three_times_is_crash_looping() {
    if !bpf_or_skip("a_pid_file_target_restarted_three_times_is_crash_looping") {
        return;
    }
    let dir = Dir::new(
        "restart",
        "",
        &shipped_rules(&["TargetCrashLooping"], "log", &[]),
    );
    let pid_file = dir.0.join("svc.pid");
    let mut server = Poised::start("");
    std::fs::write(&pid_file, format!("{}\n", server.pid())).unwrap();
    let arg = format!("{}=svc", pid_file.display());
    let agent = dir.agent(&["--pid-file", &arg]);
    agent.settle();
    let restarts = |m: &Metrics| value(m, "infersight_target_restarts_total", &[("target", "svc")]);
    assert_eq!(restarts(&agent.metrics()), 0.0);
    assert!(firing(&agent, "TargetCrashLooping").is_none());
    for n in 1..=3 {
        // The server dies; its supervisor starts a new one, which writes the PID file.
        server.child.kill().unwrap();
        server.wait();
        server = Poised::start("");
        std::fs::write(&pid_file, format!("{}\n", server.pid())).unwrap();
        agent.wait_for(WAIT, "the restart", |m| restarts(m) == n as f64);
    }
    let alert = wait_until(WAIT, "TargetCrashLooping firing", &agent, || {
        firing(&agent, "TargetCrashLooping")
    });
    assert_eq!(alert["labels"]["target"], "svc", "{alert}");
    assert_eq!(alert["value"], 3.0, "{alert}");
    let m = agent.metrics();
    assert_eq!(
        failures(&m, "svc"),
        expect(&[("SIGKILL", 3.0), ("signal", 3.0)])
    );
}

/// The stall server (tests/servers/stall_app.py) and its control line.
struct StallServer {
    child: Child,
    port: u16,
}

impl StallServer {
    fn start() -> StallServer {
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/stall_app.py");
        let mut child = Command::new("python3")
            .arg(app)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        StallServer {
            port: line.trim().parse().unwrap(),
            child,
        }
    }

    /// Every request waiting now goes on.
    fn release(&mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "go").unwrap();
    }
}

impl Drop for StallServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sample `metric` of the target "stall" for `span` once it is there: each value is
/// within 1 s of the wall time since `since`, and it grows.
fn grows_with_wall_time(agent: &Agent, metric: &str, since: Instant, span: Duration) {
    agent.wait_for(WAIT, metric, |m| {
        m.get(metric, &[("target", "stall")]).is_some()
    });
    let start = Instant::now();
    let mut last = 0.0;
    while start.elapsed() < span {
        let m = agent.metrics();
        let wall = since.elapsed().as_secs_f64();
        let v = value(&m, metric, &[("target", "stall")]);
        assert!((v - wall).abs() <= 1.0, "{metric} {v}, wall {wall}");
        assert!(v >= last, "{metric} went back from {last} to {v}");
        last = v;
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_stalled_stream_and_an_unanswered_request_page_until_they_go_on() {
    if !bpf_or_skip("a_stalled_stream_and_an_unanswered_request_page_until_they_go_on") {
        return;
    }
    let dir = Dir::new(
        "stall",
        "",
        &shipped_rules(
            &["RequestStalled"],
            "log",
            &[
                (
                    "http_oldest_active_request_seconds > 120s",
                    "http_oldest_active_request_seconds > 2s",
                ),
                (
                    "http_stream_idle_seconds > 30s",
                    "http_stream_idle_seconds > 2s",
                ),
            ],
        ),
    );
    let mut server = StallServer::start();
    let arg = format!("{}=stall", server.child.id());
    let agent = dir.agent(&["--pid", &arg]);
    agent.settle();
    let idle = "infersight_http_stream_idle_seconds";
    let oldest = "infersight_http_oldest_active_request_seconds";
    let absent = |m: &Metrics, name: &str| m.get(name, &[("target", "stall")]).is_none();
    assert!(absent(&agent.metrics(), idle) && absent(&agent.metrics(), oldest));

    // A stream that wrote its first event, then nothing.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(stream, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("data:") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let silent_since = Instant::now();
    grows_with_wall_time(&agent, idle, silent_since, Duration::from_secs(3));
    let alert = wait_until(WAIT, "RequestStalled firing", &agent, || {
        firing(&agent, "RequestStalled")
    });
    assert_eq!(alert["labels"]["target"], "stall", "{alert}");
    assert!(absent(&agent.metrics(), oldest), "the stream was answered");

    // It goes on and ends: the signal is gone and the alert resolves.
    server.release();
    let mut rest = String::new();
    while !rest.ends_with("0\r\n\r\n") {
        let mut l = String::new();
        assert!(reader.read_line(&mut l).unwrap() > 0);
        rest += &l;
    }
    agent.wait_for(WAIT, "no stream open", |m| absent(m, idle));
    wait_until(WAIT, "RequestStalled resolved", &agent, || {
        firing(&agent, "RequestStalled").is_none().then_some(())
    });

    // A request read and not answered.
    let mut held = Client::connect(server.port);
    let sent = Instant::now();
    let answer = std::thread::spawn(move || held.get("/hold").status);
    grows_with_wall_time(&agent, oldest, sent, Duration::from_secs(3));
    wait_until(WAIT, "RequestStalled firing again", &agent, || {
        firing(&agent, "RequestStalled")
    });
    server.release();
    assert_eq!(answer.join().unwrap(), 200);
    agent.wait_for(WAIT, "no request open", |m| absent(m, oldest));
    wait_until(WAIT, "RequestStalled resolved again", &agent, || {
        firing(&agent, "RequestStalled").is_none().then_some(())
    });
}
