//! Fleet integration with the real Prometheus server (Debian `prometheus` package): it
//! scrapes a running agent on loopback, loads config/prometheus/rules.yml, answers a PromQL
//! query over the traced requests with the exact count, puts a saturated engine's alert
//! in pending, and accepts every query of the Grafana dashboard.
mod common;

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{bpf_or_skip, http_get, Agent, Client, PyServer};

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

fn start_prometheus(agent: SocketAddr) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("infersight-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: infersight\n    static_configs:\n      - targets: [\"{agent}\"]\n",
            repo("config/prometheus/rules.yml")
        ),
    )
    .unwrap();
    let addr = free_addr();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run prometheus (the test command installs the Debian package)");
    Prometheus { child, addr, dir }
}

/// A PromQL instant query: the API's JSON answer.
fn query(p: &Prometheus, promql: &str) -> serde_json::Value {
    let q: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
    let start = Instant::now();
    loop {
        // Prometheus takes a moment to listen.
        if std::net::TcpStream::connect(p.addr).is_ok() {
            let (status, body) = http_get(p.addr, &format!("/api/v1/query?query={q}"));
            if status == 200 || status == 400 || status == 422 {
                return serde_json::from_str(&body).unwrap();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "prometheus not answering"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The single value of an instant query (None while it has no result).
fn value(p: &Prometheus, promql: &str) -> Option<f64> {
    let v = query(p, promql);
    assert_eq!(v["status"], "success", "{promql}: {v}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn wait_value(p: &Prometheus, promql: &str, want: f64) {
    let start = Instant::now();
    loop {
        let got = value(p, promql);
        if got == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{promql}: {got:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn prometheus_scrapes_the_agent_evaluates_the_rules_and_the_dashboard_queries() {
    let out = Command::new("promtool")
        .args(["check", "rules", &repo("config/prometheus/rules.yml")])
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 26 rules found"));
    if !bpf_or_skip("prometheus_scrape") {
        return;
    }
    let server = PyServer::start();
    // A stand-in vLLM whose page says 7 requests wait (tests/engine_server.py).
    let mut engine = Command::new("python3")
        .arg(repo("tests/engine_server.py"))
        .arg(repo("tests/fixtures/engines/vllm_v1_0_10.prom"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the engine stand-in");
    let mut ports = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(engine.stdout.take().unwrap()),
        &mut ports,
    )
    .unwrap();
    let state = std::env::temp_dir().join(format!("infersight-promst-{}", std::process::id()));
    let (pid, st) = (format!("{}=py", server.pid()), state.display().to_string());
    let vllm = format!("{}=vllm", engine.id());
    let agent = Agent::start(&["--pid", &pid, "--pid", &vllm, "--state-dir", &st]);
    let mut c = Client::connect(server.port);
    for _ in 0..7 {
        assert_eq!(c.get("/sleep/1").status, 200);
    }
    let prom = start_prometheus(agent.addr);
    wait_value(&prom, "up{job=\"infersight\"}", 1.0);
    wait_value(
        &prom,
        "sum(http_server_request_duration_seconds_count{job=\"infersight\", target=\"py\", http_route=\"/sleep/{id}\"})",
        7.0,
    );
    // The shipped rules are loaded and evaluate without errors.
    let (_, rules) = http_get(prom.addr, "/api/v1/rules");
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let all: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(all.len(), 26);
    // The engine's queue, normalised, and the saturation rule over it.
    wait_value(
        &prom,
        "sum(infersight_engine_requests_waiting{target=\"vllm\", engine=\"vllm\"})",
        7.0,
    );
    wait_value(
        &prom,
        "count(ALERTS{alertname=\"EngineSaturated\", alertstate=\"pending\", target=\"vllm\"})",
        1.0,
    );
    // Every dashboard query parses and runs against the scraped data.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("config/grafana/infersight.json")).unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$target", ".*");
            let v = query(&prom, &expr);
            assert_eq!(v["status"], "success", "{}: {expr}: {v}", panel["title"]);
            n += 1;
        }
    }
    assert!(n >= 29, "{n} dashboard queries");
    // Requests with 5xx would show in the dashboard's error ratio: here none.
    assert_eq!(
        value(
            &prom,
            "sum(http_server_request_duration_seconds_count{http_response_status_code=~\"5..\"}) or vector(0)"
        ),
        Some(0.0)
    );
    drop(agent);
    let _ = engine.kill();
    let _ = engine.wait();
    let _ = std::fs::remove_dir_all(&state);
}
