//! Front-door ports (`ports`): a server that calls its own runner over HTTP on 127.0.0.1
//! (Ollama's shape, `tests/hop_server.py`) is one target listening on two ports. With
//! `ports = [FRONT]` each client request counts once, and the runner's requests are
//! counted apart in `infersight_http_internal_requests_total`; without it they count
//! twice. The setting from the file, the command line and the API; bad values named.
//! The traced tests need root (eBPF); see `common::bpf_or_skip`.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{bpf_or_skip, request_count, Agent, Client, Metrics, AGENT};

const WAIT: Duration = Duration::from_secs(15);
/// Client requests per test.
const N: usize = 25;

/// The front server and its runner (a child process); killed on drop.
struct HopServer {
    child: Child,
    front: u16,
    runner: u16,
}

impl HopServer {
    fn start() -> HopServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hop_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 hop server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("server ports");
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().expect("port"))
            .collect();
        HopServer {
            child,
            front: ports[0],
            runner: ports[1],
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `N` client requests on one keep-alive connection, each answered with the runner's
    /// body (so each made one runner request).
    fn load(&self) {
        let mut c = Client::connect(self.front);
        for i in 0..N {
            let r = c.get(&format!("/api/generate/{i}"));
            assert_eq!((r.status, r.body.as_slice()), (200, &b"tokens"[..]));
        }
    }
}

impl Drop for HopServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn internal(m: &Metrics, target: &str) -> Vec<(String, f64)> {
    m.matching(
        "infersight_http_internal_requests_total",
        &[("target", target)],
    )
    .into_iter()
    .map(|(l, v)| (l["port"].clone(), v))
    .collect()
}

/// The routes counted for `target`, with their request counts.
fn routes(m: &Metrics, target: &str) -> Vec<(String, f64)> {
    m.matching(
        "http_server_request_duration_seconds_count",
        &[("target", target)],
    )
    .into_iter()
    .map(|(l, v)| (l["http_route"].clone(), v))
    .collect()
}

/// A config file in a fresh directory, removed on drop.
struct ConfigFile {
    dir: PathBuf,
}

impl ConfigFile {
    fn new(tag: &str, text: &str) -> ConfigFile {
        let dir =
            std::env::temp_dir().join(format!("infersight-ports-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("infersight.toml"), text).unwrap();
        ConfigFile { dir }
    }

    fn path(&self) -> String {
        self.dir.join("infersight.toml").display().to_string()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// After the load: exactly `N` requests of `target`, all on the front route, and `N` on
/// the runner's port counted apart.
fn assert_front_door_only(agent: &Agent, target: &str, runner: u16) {
    let runner = runner.to_string();
    agent.wait_for(WAIT, "the requests and the runner's hops", |m| {
        request_count(m, &[("target", target)]) >= N as f64
            && internal(m, target).iter().map(|(_, v)| v).sum::<f64>() >= N as f64
    });
    // Late events would show here: nothing more arrives.
    agent.settle();
    let m = agent.metrics();
    assert_eq!(
        routes(&m, target),
        vec![("/api/generate/{id}".to_string(), N as f64)],
        "{target}: only the front door's requests"
    );
    assert_eq!(internal(&m, target), vec![(runner, N as f64)], "{target}");
    assert_eq!(
        m.get("infersight_ringbuf_dropped_events_total", &[]),
        Some(0.0)
    );
}

/// The target named `name` in a JSON list of targets.
fn target_in<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no target {name} in {list}"))
}

#[test]
fn with_front_door_ports_from_the_file_each_request_counts_once() {
    if !bpf_or_skip("front_door_file") {
        return;
    }
    let server = HopServer::start();
    let config = ConfigFile::new(
        "file",
        &format!(
            "[[targets.pid]]\npid = {}\nname = \"ollama\"\nports = [{}]\n",
            server.pid(),
            server.front
        ),
    );
    let agent = Agent::start(&["--config", &config.path()]);
    server.load();
    assert_front_door_only(&agent, "ollama", server.runner);

    // The target says which ports are its front door, where targets are described.
    let (code, list) = agent.send("GET", "/api/v1/targets", None, "");
    assert_eq!(code, 200);
    assert_eq!(
        target_in(&list, "ollama")["ports"],
        serde_json::json!([server.front])
    );
    let (_, health) = agent.health();
    assert_eq!(
        target_in(&health["targets"], "ollama")["ports"],
        serde_json::json!([server.front])
    );
}

#[test]
fn without_front_door_ports_a_loopback_hop_counts_twice() {
    if !bpf_or_skip("front_door_default") {
        return;
    }
    let server = HopServer::start();
    let arg = format!("{}=ollama", server.pid());
    let agent = Agent::start(&["--pid", &arg]);
    server.load();
    agent.wait_for(WAIT, "both hops of each request", |m| {
        request_count(m, &[("target", "ollama")]) >= 2.0 * N as f64
    });
    agent.settle();
    let m = agent.metrics();
    // Today's default, and the double count the setting is for: every port is the
    // front door.
    assert_eq!(
        routes(&m, "ollama"),
        vec![
            ("/api/generate/{id}".to_string(), N as f64),
            ("/completion".to_string(), N as f64),
        ]
    );
    assert!(internal(&m, "ollama").is_empty());
    let (_, list) = agent.send("GET", "/api/v1/targets", None, "");
    assert!(target_in(&list, "ollama").get("ports").is_none(), "{list}");
}

#[test]
fn front_door_ports_from_the_command_line_and_the_api() {
    if !bpf_or_skip("front_door_cli_api") {
        return;
    }
    let cli_server = HopServer::start();
    let api_server = HopServer::start();
    let mut cmd = Command::new(AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", "tok");
    let state = std::env::temp_dir().join(format!("infersight-ports-api-{}", std::process::id()));
    let pid_arg = format!("{}=cli", cli_server.pid());
    let ports_arg = format!("cli={}", cli_server.front);
    let state_arg = state.display().to_string();
    let agent = Agent::start_with(
        cmd,
        &[
            "--pid",
            &pid_arg,
            "--ports",
            &ports_arg,
            "--state-dir",
            &state_arg,
        ],
    );
    let tok = Some("tok");

    // A bad port is refused with the field named, before anything changes.
    let pid = api_server.pid();
    for (ports, shown) in [
        ("[0]", "\"0\""),
        ("[65536]", "\"65536\""),
        ("[\"80\"]", "\"\\\"80\\\"\""),
        ("[80.5]", "\"80.5\""),
    ] {
        let body = format!(r#"{{"pid": {pid}, "name": "api", "ports": {ports}}}"#);
        let (code, err) = agent.send("POST", "/api/v1/targets", tok, &body);
        assert_eq!(code, 422, "{ports}: {err}");
        assert_eq!(
            err["error"].as_str(),
            Some(format!("ports: {shown}: expected a TCP port from 1 to 65535").as_str()),
            "{ports}"
        );
    }
    let body = format!(
        r#"{{"pid": {pid}, "name": "api", "ports": [{}]}}"#,
        api_server.front
    );
    let (code, t) = agent.send("POST", "/api/v1/targets", tok, &body);
    assert_eq!(code, 201, "{t}");
    assert_eq!(t["ports"], serde_json::json!([api_server.front]));
    // The list is the snapshot's: the next tick has it.
    agent.settle();
    let (_, list) = agent.send("GET", "/api/v1/targets", None, "");
    assert_eq!(
        target_in(&list, "api")["ports"],
        serde_json::json!([api_server.front])
    );
    assert_eq!(
        target_in(&list, "cli")["ports"],
        serde_json::json!([cli_server.front])
    );

    cli_server.load();
    api_server.load();
    assert_front_door_only(&agent, "cli", cli_server.runner);
    assert_front_door_only(&agent, "api", api_server.runner);
    let _ = std::fs::remove_dir_all(&state);
}

/// Run the agent with `args`; it must exit non-zero with one line on stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(AGENT)
        .args(args)
        .env("INFERSIGHT_LOG", "info")
        .output()
        .expect("run agent");
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "one line for {args:?}, got:\n{err}");
    err
}

#[test]
fn bad_front_door_ports_name_their_place() {
    for (value, shown, reason) in [
        ("[0]", "0", "expected a TCP port from 1 to 65535"),
        (
            "[8080, 70000]",
            "70000",
            "expected a TCP port from 1 to 65535",
        ),
        (
            "[\"http\"]",
            "\\\"http\\\"",
            "expected a TCP port from 1 to 65535",
        ),
        (
            "11434",
            "11434",
            "expected a list of ports, such as [11434]",
        ),
    ] {
        let config = ConfigFile::new(
            "bad",
            &format!("[[targets.process]]\ncomm = \"ollama\"\nports = {value}\n"),
        );
        let file = config.path();
        let want = format!(
            "infersight: error: {file}: line 3: targets.process[0].ports: invalid value \"{shown}\": {reason}"
        );
        assert_eq!(fails(&["--config", &file]), want, "{value}");
        // check-config says the same.
        let out = Command::new(AGENT)
            .args(["check-config", &file])
            .output()
            .expect("run check-config");
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), want);
    }
    assert_eq!(
        fails(&["--process", "ollama", "--ports", "11434,0"]),
        "infersight: error: --ports: invalid value \"11434,0\": \"0\": expected a TCP port from 1 to 65535"
    );
    assert_eq!(
        fails(&["--process", "ollama", "--ports", "x"]),
        "infersight: error: --ports: invalid value \"x\": \"x\": expected a TCP port from 1 to 65535"
    );
    assert_eq!(
        fails(&["--ports", "11434"]),
        "infersight: error: --ports: applies to targets given with --pid, --cgroup, --pid-file or --process"
    );
}
