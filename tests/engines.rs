//! Engine metrics and health probes against real stand-in servers (tests/engine_server.py
//! serving each engine's page from tests/fixtures/engines), traced as targets with real
//! request traffic: normalised values, discovery on a second port, merged figures, an
//! engine failing, hanging and answering 50 MB, an unknown engine, health probes answering
//! 200, 503 and nothing, and the default rules fired and delivered. The agent's own
//! scrapes and probes never show in the targets' request counts.
//! Needs root (eBPF); see `common::bpf_or_skip`.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{bpf_or_skip, request_count, shipped_rules, Agent, Client, Metrics, PyServer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/engines/{name}"))
}

/// A stand-in engine (tests/engine_server.py); killed on drop.
struct Engine {
    child: Child,
    api: u16,
    metrics: u16,
    control: PathBuf,
}

impl Engine {
    fn start(fixture_name: &str, extra: &[&str]) -> Engine {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/engine_server.py");
        let control = std::env::temp_dir().join(format!(
            "infersight-engine-{}-{}-{}",
            fixture_name,
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&control).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(fixture(fixture_name))
            .arg("--control")
            .arg(&control)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 engine stand-in");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("ports");
        let mut ports = line.split_whitespace().map(|p| p.parse::<u16>().unwrap());
        let (api, metrics) = (ports.next().unwrap(), ports.next().unwrap());
        Engine {
            child,
            api,
            metrics,
            control,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Set a behaviour (`metrics`: ok, 500, hang, big; `health`: 200, 503, hang).
    fn set(&self, what: &str, mode: &str) {
        std::fs::write(self.control.join(what), mode).unwrap();
    }

    fn complete(&self, n: usize) {
        let mut c = Client::connect(self.api);
        for _ in 0..n {
            let r = c.request("POST", "/v1/completions", br#"{"prompt": "hi"}"#);
            assert_eq!(r.status, 200);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.control);
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A directory with the agent's config (`sections`) and state; removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str, sections: &str, rules: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("infersight-engines-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("infersight.toml"), sections).unwrap();
        std::fs::write(d.join("rules.toml"), rules).unwrap();
        Dir(d)
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.0.join("infersight.toml").display().to_string(),
            "--state-dir".into(),
            self.0.join("state").display().to_string(),
        ]
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &Dir, more: &[String]) -> Agent {
    let mut args = dir.args();
    args.extend(more.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&refs)
}

fn target(agent: &Agent, name: &str) -> serde_json::Value {
    let (code, body) = agent.get("/api/v1/targets");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no target {name}: {v}"))
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

fn engine_labels<'a>(target: &'a str, engine: &'a str, index: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("target", target),
        ("engine", engine),
        ("engine_index", index),
    ]
}

/// Every normalised figure of one engine index: waiting, running, KV, preemptions,
/// prompt and generated tokens.
fn figures(m: &Metrics, l: &[(&str, &str)]) -> [Option<f64>; 6] {
    [
        "requests_waiting",
        "requests_running",
        "kv_cache_usage_ratio",
        "preemptions_total",
        "prompt_tokens_total",
        "generation_tokens_total",
    ]
    .map(|f| m.get(&format!("infersight_engine_{f}"), l))
}

#[test]
fn engines_are_found_normalised_and_merged() {
    if !bpf_or_skip("engines_are_found_normalised_and_merged") {
        return;
    }
    // vLLM with its metrics on a second port; each completion adds 16 tokens and 0.1 s
    // to the engine's own end-to-end figures.
    let series = r#"{engine="0",model_name="org/model-{v2}"}"#;
    let live = [
        format!("vllm:generation_tokens_total{series}=16"),
        format!("vllm:e2e_request_latency_seconds_sum{series}=0.1"),
        format!("vllm:e2e_request_latency_seconds_count{series}=1"),
    ];
    let mut vllm_args = vec!["--split"];
    for l in &live {
        vllm_args.extend(["--live", l.as_str()]);
    }
    let vllm = Engine::start("vllm_v1_0_10.prom", &vllm_args);
    let others = [
        ("v0", "vllm_v0.prom"),
        ("dp", "vllm_v1_0_8.prom"),
        ("sgl", "sglang.prom"),
        ("tgi", "tgi.prom"),
        ("trt", "triton_trtllm.prom"),
        ("triton", "triton.prom"),
        ("llama", "llamacpp.prom"),
        ("app", "unknown.prom"),
    ]
    .map(|(name, f)| (name, Engine::start(f, &[])));
    // A plain HTTP server: its /metrics is no exposition, so it is no engine.
    let plain = PyServer::start();
    let dir = Dir::new(
        "found",
        "[engines]\ninterval = \"500ms\"\nhealth_interval = \"500ms\"\ntimeout = \"500ms\"\n",
        "",
    );
    let mut more = vec!["--pid".to_string(), format!("{}=vllm", vllm.pid())];
    for (name, e) in &others {
        more.extend(["--pid".to_string(), format!("{}={name}", e.pid())]);
    }
    more.extend(["--pid".to_string(), format!("{}=plain", plain.pid())]);
    let agent = start(&dir, &more);

    let vl = engine_labels("vllm", "vllm", "0");
    agent.wait_for(Duration::from_secs(30), "every engine", |m| {
        m.get("infersight_engine_requests_waiting", &vl).is_some()
            && m.matching("infersight_engine_requests_running", &[("target", "llama")])
                .len()
                == 1
            && m.matching(
                "infersight_engine_requests_waiting",
                &[("target", "triton")],
            )
            .len()
                == 1
    });
    vllm.complete(10);
    let m = agent.wait_for(Duration::from_secs(30), "the completions", |m| {
        m.get("infersight_engine_generation_tokens_total", &vl) == Some(16384.0 + 160.0)
            && m.get("infersight_engine_frontend_seconds", &[("target", "vllm")])
                .is_some()
            && request_count(m, &[("target", "vllm")]) == 10.0
    });

    // Exact values from the fixtures.
    assert_eq!(
        figures(&m, &vl),
        [
            Some(7.0),
            Some(3.0),
            Some(0.8125),
            Some(11.0),
            Some(4096.0),
            Some(16544.0)
        ]
    );
    let ttft = [("source", "engine"), vl[0], vl[1], vl[2]];
    assert_eq!(
        m.get("gen_ai_server_time_to_first_token_seconds_count", &ttft),
        Some(64.0)
    );
    assert_eq!(
        m.get("gen_ai_server_time_per_output_token_seconds_sum", &ttft),
        Some(2.56)
    );
    assert_eq!(
        figures(&m, &engine_labels("v0", "vllm", "0")),
        [
            Some(2.0),
            Some(4.0),
            Some(0.4375),
            Some(3.0),
            Some(12034.0),
            Some(48211.0)
        ]
    );
    assert_eq!(
        m.get(
            "infersight_engine_prefix_cache_hit_ratio",
            &engine_labels("v0", "vllm", "0")
        ),
        Some(0.25)
    );
    assert_eq!(
        figures(&m, &engine_labels("dp", "vllm", "1")),
        [
            Some(0.0),
            Some(5.0),
            Some(0.5),
            Some(2.0),
            Some(10240.0),
            Some(40960.0)
        ]
    );
    assert_eq!(
        figures(&m, &engine_labels("sgl", "sglang", "1")),
        [
            Some(1.0),
            Some(9.0),
            Some(0.42),
            Some(0.0),
            Some(60000.0),
            Some(200000.0)
        ]
    );
    assert_eq!(
        figures(&m, &engine_labels("tgi", "tgi", "0")),
        [
            Some(6.0),
            Some(8.0),
            None,
            None,
            Some(30400.0),
            Some(51200.0)
        ]
    );
    assert_eq!(
        figures(&m, &engine_labels("trt", "trtllm", "0")),
        [
            None,
            Some(3.0),
            Some(0.25),
            None,
            Some(40960.0),
            Some(131072.0)
        ]
    );
    assert_eq!(
        figures(&m, &engine_labels("triton", "triton", "0")),
        [Some(7.0), None, None, None, None, None]
    );
    assert_eq!(
        figures(&m, &engine_labels("llama", "llamacpp", "0")),
        [
            Some(3.0),
            Some(2.0),
            Some(0.34375),
            None,
            Some(18432.0),
            Some(73728.0)
        ]
    );
    // An unknown application and a plain server: nothing normalised, no error.
    for t in ["app", "plain"] {
        let normalised: Vec<_> = m
            .samples
            .keys()
            .filter(|(n, l)| {
                n.starts_with("infersight_engine_")
                    && l.get("target").map(String::as_str) == Some(t)
            })
            .filter(|(n, _)| !n.starts_with("infersight_engine_scrape_"))
            .collect();
        assert!(normalised.is_empty(), "{t}: {normalised:?}");
    }
    let app = target(&agent, "app");
    assert_eq!(app["engine"]["state"], "active", "{app}");
    assert!(app["engine"].get("engine").is_none(), "{app}");
    assert!(target(&agent, "plain").get("engine").is_none());
    let (code, health) = agent.health();
    assert_eq!(code, 200, "{health}");
    assert_eq!(
        common::health_entry(&health, "collectors", "engines")["state"],
        "active"
    );

    // Found on the second port.
    let v = target(&agent, "vllm");
    assert_eq!(
        v["engine"]["url"],
        format!("http://127.0.0.1:{}/metrics", vllm.metrics),
        "{v}"
    );
    assert_eq!(v["engine"]["engine"], "vllm");
    assert_eq!(
        v["health_probe"]["url"],
        format!("http://127.0.0.1:{}/health", vllm.api)
    );
    assert_eq!(v["health_probe"]["ok"], true);

    // The merged front-end time: the kernel's mean POST duration minus the engine's
    // (0.1 s each), over the same window.
    let post = [("target", "vllm"), ("http_request_method", "POST")];
    let kernel_sum: f64 = m
        .matching("http_server_request_duration_seconds_sum", &post)
        .iter()
        .map(|(_, v)| v)
        .sum();
    let kernel = kernel_sum / 10.0;
    let frontend = m
        .get("infersight_engine_frontend_seconds", &[("target", "vllm")])
        .unwrap();
    assert!(
        (frontend - (kernel - 0.1)).abs() < 1e-6,
        "{frontend} vs {kernel}"
    );
    // The stand-in spends 0.15 s per completion: 0.05 s outside its own figure.
    assert!(frontend >= 0.049, "{frontend}");
    let tps = m
        .get(
            "infersight_engine_generation_tokens_per_second",
            &[("target", "vllm")],
        )
        .unwrap();
    assert!(tps > 0.0, "{tps}");
    // No GPU energy is attributed to a process without a GPU context: no figure.
    assert_eq!(
        m.matching("infersight_engine_tokens_per_joule", &[]),
        vec![]
    );

    // The agent's scrapes and probes are no one's requests: only the 10 completions.
    assert_eq!(request_count(&m, &[("target", "vllm")]), 10.0);
    for (name, _) in &others {
        assert_eq!(request_count(&m, &[("target", name)]), 0.0, "{name}");
    }
    assert_eq!(request_count(&m, &[("target", "plain")]), 0.0);
}

#[test]
fn a_failing_engine_fails_its_target_only() {
    if !bpf_or_skip("a_failing_engine_fails_its_target_only") {
        return;
    }
    let vllm = Engine::start("vllm_v1_0_10.prom", &[]);
    let tgi = Engine::start("tgi.prom", &[]);
    let dir = Dir::new(
        "failing",
        "[engines]\ninterval = \"500ms\"\nhealth_interval = \"500ms\"\ntimeout = \"500ms\"\nmax_response_bytes = 1048576\n[api]\ntoken = \"t0k\"\n",
        "",
    );
    let agent = start(&dir, &["--pid".into(), format!("{}=vllm", vllm.pid())]);
    // The second one comes through the API, its metrics URL given.
    let body = format!(
        r#"{{"pid": {}, "name": "tgi", "metrics_url": "http://127.0.0.1:{}/metrics"}}"#,
        tgi.pid(),
        tgi.metrics
    );
    let (code, answer) = agent.send("POST", "/api/v1/targets", Some("t0k"), &body);
    assert_eq!(code, 201, "{answer}");
    assert_eq!(
        answer["metrics_url"],
        format!("http://127.0.0.1:{}/metrics", tgi.metrics)
    );
    let vl = engine_labels("vllm", "vllm", "0");
    let tl = engine_labels("tgi", "tgi", "0");
    let m = agent.wait_for(Duration::from_secs(30), "both engines", |m| {
        m.get("infersight_engine_requests_waiting", &vl).is_some()
            && m.get("infersight_engine_requests_waiting", &tl).is_some()
    });
    assert_eq!(
        m.get("infersight_engine_scrape_success", &[("target", "vllm")]),
        Some(1.0)
    );
    let rss_before = m.get("process_resident_memory_bytes", &[]).unwrap();

    // Each failure: the target's engine failed with the reason, its series absent (not
    // zeros), the other engine and the agent unaffected.
    let cases = [
        ("500", "500 Internal Server Error".to_string()),
        ("hang", "no answer within 500ms".to_string()),
        ("big", "response larger than 1048576 bytes".to_string()),
    ];
    for (mode, reason) in &cases {
        vllm.set("metrics", mode);
        let want = format!("GET http://127.0.0.1:{}/metrics: {reason}", vllm.metrics);
        wait_until(Duration::from_secs(20), mode, &agent, || {
            let t = target(&agent, "vllm");
            (t["engine"]["state"] == "failed" && t["engine"]["reason"] == want.as_str())
                .then_some(())
        });
        // While the engine fails (hangs, or sends 50 MB), the agent answers at once and
        // keeps ticking.
        let (code, health) = agent.health();
        assert_eq!(code, 200, "{mode}: {health}");
        assert_eq!(
            common::health_entry(&health, "collectors", "engines")["state"],
            "active"
        );
        let tick = |a: &Agent| -> u64 {
            let (_, s) = a.get("/api/v1/snapshot");
            serde_json::from_str::<serde_json::Value>(&s).unwrap()["tick"]
                .as_u64()
                .unwrap()
        };
        let t0 = tick(&agent);
        agent.settle();
        assert!(tick(&agent) > t0, "{mode}: the agent stopped ticking");
        let m = agent.metrics();
        assert_eq!(
            m.matching("infersight_engine_requests_waiting", &[("target", "vllm")]),
            vec![],
            "{mode}"
        );
        assert_eq!(
            m.get("infersight_engine_scrape_success", &[("target", "vllm")]),
            Some(0.0),
            "{mode}"
        );
        assert_eq!(
            m.get("infersight_engine_requests_waiting", &tl),
            Some(6.0),
            "{mode}"
        );
        if *mode == "big" {
            // Several 50 MB answers read: the agent holds no more than the bound.
            std::thread::sleep(Duration::from_secs(1));
            let rss = agent
                .metrics()
                .get("process_resident_memory_bytes", &[])
                .unwrap();
            assert!(
                rss < rss_before + 16.0 * 1048576.0,
                "RSS {rss_before} -> {rss}"
            );
        }
    }
    vllm.set("metrics", "ok");
    agent.wait_for(Duration::from_secs(20), "recovery", |m| {
        m.get("infersight_engine_requests_waiting", &vl) == Some(7.0)
    });
    // No scrape counted as the targets' requests (the hung ones ended unanswered).
    let m = agent.metrics();
    assert_eq!(request_count(&m, &[("target", "vllm")]), 0.0);
    assert_eq!(request_count(&m, &[("target", "tgi")]), 0.0);
}

/// An HTTP server standing in for a webhook receiver: the JSON bodies it was sent.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (mut len, mut line) = (0usize, String::new());
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        seen.lock().unwrap().push(v);
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, bodies }
    }

    /// The firing alerts delivered so far, by name and target.
    fn firing(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for b in self.bodies.lock().unwrap().iter() {
            for a in b["alerts"].as_array().into_iter().flatten() {
                if a["status"] == "firing" {
                    out.push((
                        a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                        a["labels"]["target"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
        }
        out
    }
}

#[test]
fn health_probes_and_the_engine_rules() {
    if !bpf_or_skip("health_probes_and_the_engine_rules") {
        return;
    }
    let receiver = Receiver::start();
    // vLLM's 0.10 page: 7 requests waiting, KV cache 81% full: saturated.
    let vllm = Engine::start("vllm_v1_0_10.prom", &["--health-path", "/ready"]);
    let dir = Dir::new(
        "health",
        &format!(
            "[engines]\ninterval = \"500ms\"\nhealth_interval = \"500ms\"\ntimeout = \"500ms\"\n\
             [alerting]\nrules_file = \"rules.toml\"\n\
             [channels.webhook]\nurl = \"http://127.0.0.1:{}/hook\"\n\
             [[targets.pid]]\npid = {}\nname = \"vllm\"\nhealth_path = \"/ready\"\n",
            receiver.port,
            vllm.pid()
        ),
        &shipped_rules(&["EngineSaturated", "TargetUnhealthy"], "webhook", &[]),
    );
    let agent = start(&dir, &["--no-host".into()]);
    let ok = [("target", "vllm")];
    let probe = |agent: &Agent| target(agent, "vllm")["health_probe"].clone();

    let m = agent.wait_for(Duration::from_secs(30), "a good probe", |m| {
        m.get("infersight_target_health_probe_success", &ok) == Some(1.0)
    });
    assert!(m
        .get("infersight_target_health_probe_duration_seconds", &ok)
        .is_some());
    let p = probe(&agent);
    assert_eq!(
        p["url"],
        format!("http://127.0.0.1:{}/ready", vllm.api),
        "{p}"
    );
    assert_eq!(
        (p["ok"].clone(), p["status"].clone()),
        (true.into(), 200.into())
    );

    let url = format!("http://127.0.0.1:{}/ready", vllm.api);
    for (mode, status, reason) in [
        (
            "503",
            Some(503),
            format!("GET {url}: 503 Service Unavailable"),
        ),
        ("hang", None, format!("GET {url}: no answer within 500ms")),
    ] {
        vllm.set("health", mode);
        let p = wait_until(Duration::from_secs(20), mode, &agent, || {
            let p = probe(&agent);
            (p["reason"] == reason.as_str()).then_some(p)
        });
        assert_eq!(p["ok"], false);
        assert_eq!(p["status"].as_u64(), status, "{p}");
        let m = agent.metrics();
        assert_eq!(
            m.get("infersight_target_health_probe_success", &ok),
            Some(0.0)
        );
        // The reason in /health, under the target.
        let (_, health) = agent.health();
        let t = health["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "vllm")
            .cloned()
            .unwrap();
        assert_eq!(t["health_probe"]["reason"], reason.as_str(), "{health}");
    }

    // Both rules fire and reach the webhook.
    wait_until(
        Duration::from_secs(30),
        "both alerts delivered",
        &agent,
        || {
            let f = receiver.firing();
            let has = |n: &str| f.contains(&(n.to_string(), "vllm".to_string()));
            (has("EngineSaturated") && has("TargetUnhealthy")).then_some(())
        },
    );
    let (_, alerts) = agent.get("/api/v1/alerts");
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    let saturated = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "EngineSaturated")
        .cloned()
        .unwrap_or_else(|| panic!("{alerts}"));
    assert_eq!(saturated["labels"]["engine"], "vllm", "{saturated}");

    // No probe or scrape is one of the target's requests.
    assert_eq!(request_count(&agent.metrics(), &[("target", "vllm")]), 0.0);
}
