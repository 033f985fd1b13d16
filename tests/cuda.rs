//! CUDA driver uprobes without a GPU: a stand-in libcuda.so.1 built from tests/fake_cuda.c
//! exports the probed entry points; tests/cuda_app.c loads it lazily and calls them known
//! numbers of times with known sizes. The counts and bytes must be exact, the allocation
//! errors the stand-in returns are counted once each by call and CUresult name, the last
//! launch's time is the wall-clock time of the calls, and only the targets' calls count.
//! The probes are in the target processes alone: a process that is not a target runs
//! the CUDA programs not once (their BPF run counts), a target's child that loads the
//! library later is probed, and a target removed through the API is probed no more.
mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use common::{bpf_or_skip, health_entry, Agent, Metrics, AGENT};

/// A directory of this test's own (the tests of this file run at the same time).
fn test_dir(tag: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda-{}-{tag}", std::process::id()))
}

fn build(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests");
    std::fs::create_dir_all(dir).unwrap();
    let lib = dir.join("libcuda.so.1");
    let app = dir.join("cuda-app");
    for (out, args) in [(&lib, vec!["-shared", "-fPIC", "-O1"]), (&app, vec!["-O1"])] {
        let file = if out == &lib {
            "fake_cuda.c"
        } else {
            "cuda_app.c"
        };
        let st = Command::new("cc")
            .args(&args)
            .arg("-o")
            .arg(out)
            .arg(src.join(file))
            .arg("-ldl")
            .status()
            .unwrap();
        assert!(st.success(), "cc {file}");
    }
    (lib, app)
}

struct App {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl App {
    /// `cuda_app LIB ARGS…`, waiting at its first gate.
    fn start(app: &std::path::Path, lib: &std::path::Path, args: &[&str]) -> App {
        let mut child = Command::new(app)
            .arg(lib)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut a = App {
            child,
            stdin,
            stdout,
        };
        a.expect("ready");
        a
    }

    fn expect(&mut self, word: &str) {
        assert_eq!(self.line(), word);
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// Open the gate, then wait for `word`.
    fn step(&mut self, word: &str) {
        self.stdin.write_all(b"g").unwrap();
        self.expect(word);
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cuda(m: &Metrics, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut l = vec![("target", "app")];
    l.extend_from_slice(extra);
    m.get(name, &l)
}

/// The cuda collector's health reason.
fn cuda_reason(agent: &Agent) -> String {
    let (_, h) = agent.health();
    health_entry(&h, "collectors", "cuda")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Wait until the cuda collector says `reason`.
fn wait_reason(agent: &Agent, reason: &str) {
    let start = Instant::now();
    loop {
        let now = cuda_reason(agent);
        if now == reason {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "cuda health {now:?}, waited for {reason:?}; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The CUDA programs and how many times each runs for one loop of cuda_app (no errors):
/// 100 + 20 launches, 7 graph launches, 10 + 5 allocations (10 cuMemAlloc_v2 return
/// probes, 5 cuMemAllocAsync ones), 10 + 5 frees, copies 5 htod, 4 dtoh, 1 dtod, 3 any,
/// 10 synchronize calls (entry and return).
const ONE_LOOP: [(&str, f64); 14] = [
    ("cuda_alloc", 15.0),
    ("cuda_alloc_async_ret", 5.0),
    ("cuda_alloc_managed_ret", 0.0),
    ("cuda_alloc_ret", 10.0),
    ("cuda_free", 15.0),
    ("cuda_graph_launch", 7.0),
    ("cuda_launch", 120.0),
    ("cuda_mem_create_ret", 0.0),
    ("cuda_memcpy_any", 3.0),
    ("cuda_memcpy_dtod", 1.0),
    ("cuda_memcpy_dtoh", 4.0),
    ("cuda_memcpy_htod", 5.0),
    ("cuda_sync_enter", 10.0),
    ("cuda_sync_exit", 10.0),
];

/// Every CUDA program's BPF run count (`infersight_ebpf_program_run_count_total`).
fn runs(m: &Metrics) -> BTreeMap<String, f64> {
    m.matching("infersight_ebpf_program_run_count_total", &[])
        .into_iter()
        .filter(|(l, _)| l["program"].starts_with("cuda_"))
        .map(|(l, v)| (l["program"].clone(), v))
        .collect()
}

/// The run counts of `loops` loops of cuda_app.
fn loops(n: f64) -> BTreeMap<String, f64> {
    ONE_LOOP
        .iter()
        .map(|(p, v)| (p.to_string(), v * n))
        .collect()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn driver_calls_of_a_lazily_loaded_libcuda_are_counted_exactly() {
    if !bpf_or_skip("cuda_driver_calls") {
        return;
    }
    let dir = test_dir("counts");
    let (lib, app) = build(&dir);
    let mut target = App::start(&app, &lib, &[]);
    // Only the allocations that fail (and some that do not): no launch, no loop.
    let mut oom = App::start(&app, &lib, &["0", "errors"]);
    // Not a target: every call, the failing ones too.
    let mut other = App::start(&app, &lib, &["1", "errors"]);
    let arg = format!("{}=app", target.child.id());
    let oom_arg = format!("{}=oom", oom.child.id());
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"CudaIdle\"\nexpr = \"cuda_launch_idle_seconds > 1\"\n\
         severity = \"warning\"\n\n\
         [[rule]]\nname = \"CudaOutOfMemory\"\n\
         expr = \"cuda_errors_total{error=\\\"CUDA_ERROR_OUT_OF_MEMORY\\\"} > 0\"\n\
         severity = \"high\"\n",
    )
    .unwrap();
    let config = dir.join("infersight.toml");
    std::fs::write(
        &config,
        format!("[alerting]\nrules_file = \"{}\"\n", rules.display()),
    )
    .unwrap();
    let state = dir.join("state");
    let agent = Agent::start(&[
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--pid",
        &arg,
        "--pid",
        &oom_arg,
    ]);
    // Before the library is loaded there is nothing to attach to.
    agent.settle();
    let m = agent.metrics();
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "cuda")]),
        Some(0.0)
    );
    assert_eq!(cuda(&m, "infersight_cuda_kernel_launches_total", &[]), None);

    target.step("loaded");
    oom.step("loaded");
    other.step("loaded");
    // Each target process is probed on its own (within a rescan, 2 s).
    wait_reason(&agent, "processes probed: app 1, oom 1");
    let m = agent.metrics();
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "cuda")]),
        Some(1.0)
    );
    let before = now();
    target.step("done");
    let after = now();
    oom.step("done");
    other.step("done");
    agent.settle();
    let m = agent.metrics();

    assert_eq!(
        cuda(&m, "infersight_cuda_kernel_launches_total", &[]),
        Some(120.0)
    );
    assert_eq!(
        cuda(&m, "infersight_cuda_graph_launches_total", &[]),
        Some(7.0)
    );
    assert_eq!(
        cuda(&m, "infersight_cuda_memory_allocations_total", &[]),
        Some(15.0)
    );
    assert_eq!(
        cuda(&m, "infersight_cuda_memory_allocated_bytes_total", &[]),
        Some((10 * (1 << 20) + 5 * 4096) as f64)
    );
    assert_eq!(
        cuda(&m, "infersight_cuda_memory_frees_total", &[]),
        Some(15.0)
    );
    for (kind, calls, bytes) in [
        ("htod", 5.0, 4000.0),
        ("dtoh", 4.0, 1024.0),
        ("dtod", 1.0, 8.0),
        ("any", 3.0, 250.0),
    ] {
        let k = [("kind", kind)];
        assert_eq!(
            cuda(&m, "infersight_cuda_memcpy_total", &k),
            Some(calls),
            "{kind}"
        );
        assert_eq!(
            cuda(&m, "infersight_cuda_memcpy_bytes_total", &k),
            Some(bytes),
            "{kind}"
        );
    }
    // 10 synchronize calls of 3 ms each: none under 2^21 ns, all under 2^23 ns unless
    // woken over 5 ms late.
    let sync = |le: &str| {
        cuda(
            &m,
            "infersight_cuda_sync_duration_seconds_bucket",
            &[("le", le)],
        )
    };
    assert_eq!(
        cuda(&m, "infersight_cuda_sync_duration_seconds_count", &[]),
        Some(10.0)
    );
    assert_eq!(sync("0.002097152"), Some(0.0));
    assert_eq!(sync("0.008388608"), Some(10.0));
    let sum = cuda(&m, "infersight_cuda_sync_duration_seconds_sum", &[]).unwrap();
    assert!((0.030..0.060).contains(&sum), "{sum}");
    // The other process ran the same calls through the same library: not a target. The
    // oom target launched nothing.
    let launches: Vec<(String, f64)> = m
        .matching("infersight_cuda_kernel_launches_total", &[])
        .into_iter()
        .map(|(l, v)| (l["target"].clone(), v))
        .collect();
    assert_eq!(
        launches,
        vec![("app".to_string(), 120.0), ("oom".to_string(), 0.0)]
    );
    assert!(
        agent.log_text().contains("entry points attached"),
        "{}",
        agent.log_text()
    );

    // Allocation errors: the oom target's three refused calls, once each, by call and
    // CUresult name; its granted calls, the app's calls and the other process's refused
    // calls are not errors of a target.
    let mut errors: Vec<(String, String, String, f64)> = m
        .matching("infersight_cuda_errors_total", &[])
        .into_iter()
        .map(|(l, v)| {
            (
                l["target"].clone(),
                l["call"].clone(),
                l["error"].clone(),
                v,
            )
        })
        .collect();
    errors.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let e = |call: &str, error: &str| ("oom".to_string(), call.to_string(), error.to_string(), 1.0);
    assert_eq!(
        errors,
        vec![
            e("cuMemAllocAsync", "CUDA_ERROR_OUT_OF_MEMORY"),
            e("cuMemAlloc_v2", "CUDA_ERROR_OUT_OF_MEMORY"),
            e("cuMemCreate", "CUDA_ERROR_INVALID_VALUE"),
        ]
    );
    // A refused allocation is still a call of the entry probe, with the bytes it asked for.
    assert_eq!(
        m.get(
            "infersight_cuda_memory_allocations_total",
            &[("target", "oom")]
        ),
        Some(2.0)
    );

    // The last launch: the app's, when its calls ran (the wall clock may be stepped by
    // NTP between the two clock reads: a little slack); the oom target never launched:
    // absent.
    let last = cuda(
        &m,
        "infersight_cuda_last_kernel_launch_timestamp_seconds",
        &[],
    )
    .unwrap();
    assert!(
        (before - 0.05..=after + 0.05).contains(&last),
        "{before} ≤ {last} ≤ {after}"
    );
    assert_eq!(
        m.get(
            "infersight_cuda_last_kernel_launch_timestamp_seconds",
            &[("target", "oom")]
        ),
        None
    );
    // The idle signal as a rule: the app is idle over 1 s after its last launch; the oom
    // target, never having launched, has no instance. The out-of-memory rule fires for
    // the oom target only.
    let firing = |m: &Metrics, alert: &str, target: &str| {
        !m.matching(
            "ALERTS",
            &[
                ("alertname", alert),
                ("alertstate", "firing"),
                ("target", target),
            ],
        )
        .is_empty()
    };
    assert!(firing(&m, "CudaOutOfMemory", "oom"));
    assert!(!firing(&m, "CudaOutOfMemory", "app"));
    let m = agent.wait_for(Duration::from_secs(10), "CudaIdle firing", |m| {
        firing(m, "CudaIdle", "app")
    });
    assert!(now() - last > 1.0);
    assert!(!firing(&m, "CudaIdle", "oom"));
    drop(other);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_process_that_is_not_a_target_takes_no_trap() {
    if !bpf_or_skip("cuda_untargeted") {
        return;
    }
    let dir = test_dir("untargeted");
    let (lib, app) = build(&dir);
    let mut target = App::start(&app, &lib, &[]);
    // The same library and the same calls (and the refused allocations), not a target.
    let mut other = App::start(&app, &lib, &["1", "errors"]);
    let arg = format!("{}=app", target.child.id());
    let agent = Agent::start(&["--pid", &arg]);
    target.step("loaded");
    other.step("loaded");
    wait_reason(&agent, "processes probed: app 1");
    // Loaded and probed in the target; nothing ran yet.
    assert_eq!(runs(&agent.metrics()), loops(0.0));

    // 176 driver calls of a process that maps the probed library: not one program run.
    other.step("done");
    agent.settle();
    assert_eq!(runs(&agent.metrics()), loops(0.0));

    // The target's calls: each program ran once per call of its entry points.
    target.step("done");
    agent.settle();
    let m = agent.metrics();
    assert_eq!(runs(&m), loops(1.0));
    assert_eq!(
        cuda(&m, "infersight_cuda_kernel_launches_total", &[]),
        Some(120.0)
    );
    assert!(m.matching("infersight_cuda_errors_total", &[]).is_empty());
    drop(other);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_targets_child_that_loads_libcuda_later_is_probed() {
    if !bpf_or_skip("cuda_child") {
        return;
    }
    let dir = test_dir("child");
    let (lib, app) = build(&dir);
    // The target never maps the library: its child, forked after the agent started,
    // loads it later.
    let mut parent = App::start(&app, &lib, &["1", "child"]);
    let mut other = App::start(&app, &lib, &[]);
    let arg = format!("{}=app", parent.child.id());
    let agent = Agent::start(&["--pid", &arg]);
    agent.settle();
    parent.stdin.write_all(b"g").unwrap();
    let line = parent.line();
    let child: u32 = line
        .strip_prefix("child ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    // Seen without the library: nothing to probe.
    agent.settle();
    assert_eq!(
        cuda_reason(&agent),
        "no target process has libcuda.so mapped yet"
    );
    parent.step("loaded");
    other.step("loaded");
    wait_reason(&agent, "processes probed: app 1");
    assert!(
        agent
            .log_text()
            .contains(&format!("entry points attached in process {child} in ")),
        "{}",
        agent.log_text()
    );
    other.step("done");
    parent.step("done");
    agent.settle();
    let m = agent.metrics();
    assert_eq!(runs(&m), loops(1.0));
    assert_eq!(
        cuda(&m, "infersight_cuda_kernel_launches_total", &[]),
        Some(120.0)
    );
    assert_eq!(
        cuda(&m, "infersight_cuda_memory_allocated_bytes_total", &[]),
        Some((10 * (1 << 20) + 5 * 4096) as f64)
    );
    // The child exited: its probes are gone, the collector stays up.
    let _ = parent.child.wait();
    wait_reason(&agent, "processes probed: app 0");
    drop(other);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_target_removed_through_the_api_is_probed_no_more() {
    if !bpf_or_skip("cuda_removed") {
        return;
    }
    let dir = test_dir("removed");
    let (lib, app) = build(&dir);
    let mut gone = App::start(&app, &lib, &["1", "again"]);
    let mut kept = App::start(&app, &lib, &["1", "again"]);
    let gone_arg = format!("{}=app", gone.child.id());
    let kept_arg = format!("{}=keep", kept.child.id());
    let mut cmd = Command::new(AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", "tok");
    let agent = Agent::start_with(cmd, &["--pid", &gone_arg, "--pid", &kept_arg]);
    gone.step("loaded");
    kept.step("loaded");
    wait_reason(&agent, "processes probed: app 1, keep 1");
    gone.step("done");
    agent.settle();
    let m = agent.metrics();
    assert_eq!(runs(&m), loops(1.0));
    assert_eq!(
        cuda(&m, "infersight_cuda_kernel_launches_total", &[]),
        Some(120.0)
    );

    let (code, body) = agent.send("DELETE", "/api/v1/targets/app", Some("tok"), "");
    assert_eq!(code, 200, "{body}");
    wait_reason(&agent, "processes probed: keep 1");
    // The removed target's second round of calls runs no program.
    gone.step("done");
    agent.settle();
    assert_eq!(runs(&agent.metrics()), loops(1.0));
    // The target that stays is probed as before.
    kept.step("done");
    agent.settle();
    let m = agent.metrics();
    assert_eq!(runs(&m), loops(2.0));
    assert_eq!(
        m.get(
            "infersight_cuda_kernel_launches_total",
            &[("target", "keep")]
        ),
        Some(120.0)
    );
    assert_eq!(cuda(&m, "infersight_cuda_kernel_launches_total", &[]), None);
    let _ = std::fs::remove_dir_all(&dir);
}
