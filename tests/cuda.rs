//! CUDA driver uprobes without a GPU: a stand-in libcuda.so.1 built from tests/fake_cuda.c
//! exports the probed entry points; tests/cuda_app.c loads it lazily and calls them known
//! numbers of times with known sizes. The counts and bytes must be exact, and only the
//! target's calls count.
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
    fn start(app: &std::path::Path, lib: &std::path::Path) -> App {
        let mut child = Command::new(app)
            .arg(lib)
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

#[test]
fn driver_calls_of_a_lazily_loaded_libcuda_are_counted_exactly() {
    if !bpf_or_skip("cuda_driver_calls") {
        return;
    }
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda-{}", std::process::id()));
    let (lib, app) = build(&dir);
    let mut target = App::start(&app, &lib);
    let mut other = App::start(&app, &lib);
    let arg = format!("{}=app", target.child.id());
    let agent = Agent::start(&["--pid", &arg]);
    // Before the library is loaded there is nothing to attach to.
    agent.settle();
    let m = agent.metrics();
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "cuda")]),
        Some(0.0)
    );
    assert_eq!(cuda(&m, "infersight_cuda_kernel_launches_total", &[]), None);

    target.step("loaded");
    other.step("loaded");
    agent.wait_for(Duration::from_secs(10), "CUDA probes attached", |m| {
        m.get("infersight_collector_up", &[("collector", "cuda")]) == Some(1.0)
    });
    target.step("done");
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
    // The other process ran the same calls through the same library: not a target.
    let targets: std::collections::BTreeSet<String> = m
        .matching("infersight_cuda_kernel_launches_total", &[])
        .into_iter()
        .map(|(l, _)| l["target"].clone())
        .collect();
    assert_eq!(
        targets.into_iter().collect::<Vec<_>>(),
        vec!["app".to_string()]
    );
    assert!(
        agent.log_text().contains("entry points attached"),
        "{}",
        agent.log_text()
    );
    drop(other);
    let _ = std::fs::remove_dir_all(&dir);
}
