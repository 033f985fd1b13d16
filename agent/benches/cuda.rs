//! `cargo xtask bench cuda`: cost of the CUDA driver uprobes per call, measured side by
//! side in one run.
//!
//! tests/cuda_app.c makes LOOPS x 170 calls into the stand-in libcuda.so.1 built from
//! tests/fake_cuda.c (functions that return at once), under five configurations,
//! interleaved over several rounds:
//!   none     no probe
//!   floor    an empty uprobe program on every probed entry point (the trap's cost)
//!   floor+r  that, plus an empty return probe on the allocation calls (15 of the 170
//!            calls per loop), as the agent has: the return trap's cost
//!   other    the agent's CUDA programs, targeting another process
//!   traced   the agent's CUDA programs, targeting the calling process
//! and, for the return probes on their own, LOOPS / 10 x 170 cuMemAlloc_v2 calls (cuda_app's
//! `allocs` mode) under floor, floor+r and traced.
//!
//! Usage: cargo bench -p infersight --bench cuda -- [--loops N] [--rounds R]
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Instant,
};

use infersight::{
    collectors::cuda::{attach_floor, Probes},
    config::{TargetRequest, TargetSpec},
    ebpf::{Kernel, Options},
    targets::Targets,
};

/// Driver calls per loop of cuda_app (without synchronize calls).
const CALLS_PER_LOOP: u64 = 170;
/// Of those, allocation calls (10 cuMemAlloc_v2 + 5 cuMemAllocAsync): the return probes'.
const ALLOCS_PER_LOOP: u64 = 15;

/// Load the agent's CUDA programs targeting `targets` and attach them to `lib`.
fn agent_probes(targets: &Targets, lib: &Path) -> (Kernel, Probes) {
    let mut kernel = Kernel::load(targets, Options::default());
    let mut cuda = Probes::take(&mut kernel).expect("CUDA maps");
    let bpf = kernel.object_mut().expect("loaded");
    cuda.attach(bpf, lib).expect("CUDA probes");
    (kernel, cuda)
}

/// The empty programs (with `returns`, the empty return probe too) on `lib`.
fn floor_probes(targets: &Targets, lib: &Path, returns: bool) -> Kernel {
    let mut kernel = Kernel::load(targets, Options::default());
    let n = attach_floor(&mut kernel, lib, returns).expect("floor probes");
    assert!(n >= 15, "floor attached {n} entry points");
    kernel
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let loops = common::flag(&args, "--loops", 20_000);
    let rounds = common::flag(&args, "--rounds", 5) as usize;
    common::require_root("cuda");
    let dir = std::env::temp_dir().join(format!("infersight-bench-cuda-{}", std::process::id()));
    let (lib, app) = build(&dir);
    run(&lib, &app, loops, rounds);
    let _ = std::fs::remove_dir_all(&dir);
}

fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
    std::fs::create_dir_all(dir).expect("bench dir");
    let lib = dir.join("libcuda.so.1");
    let app = dir.join("cuda-app");
    let cc = |args: &[&str], out: &Path, file: &str| {
        let st = Command::new("cc")
            .args(args)
            .arg("-o")
            .arg(out)
            .arg(src.join(file))
            .arg("-ldl")
            .status()
            .expect("run cc");
        assert!(st.success(), "cc {file}");
    };
    cc(&["-shared", "-fPIC", "-O1"], &lib, "fake_cuda.c");
    cc(&["-O1"], &app, "cuda_app.c");
    (lib, app)
}

struct App {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl App {
    /// Started, and past dlopen: the library is mapped and waiting for the second gate.
    /// `allocs`: only allocation calls.
    fn loaded(app: &Path, lib: &Path, loops: u64, allocs: bool) -> App {
        let mut child = Command::new(app)
            .arg(lib)
            .arg(loops.to_string())
            .args(allocs.then_some("allocs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cuda-app");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut a = App {
            child,
            stdin,
            stdout,
        };
        a.expect("ready");
        a.gate();
        a.expect("loaded");
        a
    }

    fn gate(&mut self) {
        self.stdin.write_all(b"g").expect("gate");
    }

    fn expect(&mut self, word: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("cuda-app output");
        assert_eq!(line.trim(), word);
    }

    /// Open the last gate and time the calls: ns per call.
    fn run(mut self, calls: u64) -> f64 {
        let start = Instant::now();
        self.gate();
        self.expect("done");
        let ns = start.elapsed().as_nanos() as f64 / calls as f64;
        let _ = self.child.wait();
        ns
    }
}

fn pid_targets(pid: u32) -> Targets {
    Targets::resolve(&TargetSpec::List(vec![TargetRequest::Pid {
        pid,
        name: Some("bench".into()),
        endpoints: Default::default(),
    }]))
    .expect("resolve target")
}

fn run(lib: &Path, app: &Path, loops: u64, rounds: usize) {
    let calls = loops * CALLS_PER_LOOP;
    let alloc_loops = (loops / 10).max(1);
    let alloc_calls = alloc_loops * CALLS_PER_LOOP;
    let mut results: [Vec<f64>; 5] = Default::default();
    let mut allocs: [Vec<f64>; 3] = Default::default();
    let mut bystander = Command::new("sleep").arg("3600").spawn().expect("sleep");
    let others = pid_targets(bystander.id());
    for round in 0..rounds {
        results[0].push(App::loaded(app, lib, loops, false).run(calls));

        for (slot, returns) in [(1, false), (2, true)] {
            let a = App::loaded(app, lib, loops, false);
            let probes = floor_probes(&others, lib, returns);
            results[slot].push(a.run(calls));
            drop(probes);
        }

        let a = App::loaded(app, lib, loops, false);
        let probes = agent_probes(&others, lib);
        results[3].push(a.run(calls));
        drop(probes);

        let a = App::loaded(app, lib, loops, false);
        let (kernel, cuda) = agent_probes(&pid_targets(a.child.id()), lib);
        results[4].push(a.run(calls));
        let read = cuda.read(std::iter::once(1)).expect("read CUDA counts");
        let launches: u64 = read.iter().map(|(_, s)| s.kernel_launches).sum();
        assert_eq!(launches, loops * 120, "traced run counted every launch");
        assert!(
            read.iter().all(|(_, s)| s.last_launch_ns > 0),
            "traced run stamped its last launch"
        );
        assert!(
            cuda.errors().expect("read CUDA errors").is_empty(),
            "every allocation succeeded"
        );
        drop(kernel);

        // Allocation calls alone: what the return probe adds to each.
        for (slot, returns) in [(0, false), (1, true)] {
            let a = App::loaded(app, lib, alloc_loops, true);
            let probes = floor_probes(&others, lib, returns);
            allocs[slot].push(a.run(alloc_calls));
            drop(probes);
        }
        let a = App::loaded(app, lib, alloc_loops, true);
        let (kernel, cuda) = agent_probes(&pid_targets(a.child.id()), lib);
        allocs[2].push(a.run(alloc_calls));
        let counted: u64 = cuda
            .read(std::iter::once(1))
            .expect("read CUDA counts")
            .iter()
            .map(|(_, s)| s.allocs)
            .sum();
        assert_eq!(counted, alloc_calls, "traced run counted every allocation");
        drop(kernel);
        eprintln!(
            "round {}: none {:.0} floor {:.0} floor+ret {:.0} other {:.0} traced {:.0} ns/call; \
             allocations: floor {:.0} floor+ret {:.0} traced {:.0} ns/call",
            round + 1,
            results[0][round],
            results[1][round],
            results[2][round],
            results[3][round],
            results[4][round],
            allocs[0][round],
            allocs[1][round],
            allocs[2][round]
        );
    }
    let _ = bystander.kill();
    let _ = bystander.wait();
    let [n, f, fr, o, t] = results.map(|mut v| common::median(&mut v));
    let [af, afr, at] = allocs.map(|mut v| common::median(&mut v));
    println!(
        "\ncuda benchmark: {calls} driver calls per run ({} allocations), median of {rounds} interleaved rounds\n",
        loops * ALLOCS_PER_LOOP
    );
    println!("| configuration | ns/call | added vs none | ratio to floor | ratio to floor + return probes |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("| none (no probe) | {n:.1} | – | – | – |");
    println!(
        "| floor (empty uprobe) | {f:.0} | +{:.0} | 1.00 | – |",
        f - n
    );
    println!(
        "| floor + empty return probe on the allocations | {fr:.0} | +{:.0} | {:.2} | 1.00 |",
        fr - n,
        fr / f
    );
    println!(
        "| agent, other PID targeted | {o:.0} | +{:.0} | {:.2} | {:.2} |",
        o - n,
        o / f,
        o / fr
    );
    println!(
        "| agent, this PID targeted | {t:.0} | +{:.0} | {:.2} | {:.2} |",
        t - n,
        t / f,
        t / fr
    );
    println!(
        "\nour programs' own cost per traced call: {:.0} ns over the traps",
        t - fr
    );
    println!("\nallocation calls only: {alloc_calls} cuMemAlloc_v2 per run\n");
    println!("| configuration | ns/call | ratio to floor + return probe |");
    println!("| --- | ---: | ---: |");
    println!("| floor (empty uprobe) | {af:.0} | {:.2} |", af / afr);
    println!("| floor + empty return probe | {afr:.0} | 1.00 |");
    println!(
        "| agent, this PID targeted (entry + return program) | {at:.0} | {:.2} |",
        at / afr
    );
    println!(
        "\nthe return probe per allocation call: trap {:.0} ns, our return and entry programs {:.0} ns over the traps",
        afr - af,
        at - afr
    );
    common::goal(
        "CUDA uprobe, traced ÷ empty uprobe",
        format!("{:.2}", t / fr),
        "≤ 1.20",
        t / fr <= 1.2,
    );
    common::goal(
        "CUDA allocation with return probe, traced ÷ empty probes",
        format!("{:.2}", at / afr),
        "≤ 1.20",
        at / afr <= 1.2,
    );
}
