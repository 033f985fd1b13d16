//! CUDA driver uprobes without a GPU: a stand-in libcuda.so.1 built from tests/fake_cuda.c
//! exports the probed entry points; tests/cuda_app.c loads it lazily and calls them known
//! numbers of times with known sizes. The counts and bytes must be exact, the allocation
//! errors the stand-in returns are counted once each by call and CUresult name, the last
//! launch's time is the wall-clock time of the calls, and only the targets' calls count.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use common::{bpf_or_skip, Agent, Metrics};

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
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), word);
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
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda-{}", std::process::id()));
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
    agent.wait_for(Duration::from_secs(10), "CUDA probes attached", |m| {
        m.get("infersight_collector_up", &[("collector", "cuda")]) == Some(1.0)
    });
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
