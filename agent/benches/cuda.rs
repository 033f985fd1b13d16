//! `cargo xtask bench cuda`: cost of the CUDA driver uprobes per call, measured side by
//! side in one run.
//!
//! tests/cuda_app.c makes LOOPS x 170 calls into the stand-in libcuda.so.1 built from
//! tests/fake_cuda.c (functions that return at once), under six configurations,
//! interleaved over several rounds:
//!   none         no probe
//!   floor        an empty uprobe program on every probed entry point, in the calling
//!                process (the trap's cost)
//!   floor+r      that, plus an empty return probe on the allocation calls (15 of the 170
//!                calls per loop), as the agent has: the return trap's cost
//!   file, other  the agent's CUDA programs on the library file (as before they were per
//!                process, and as in host mode), targeting another process
//!   file, traced the same, targeting the calling process
//!   traced       the agent's CUDA programs in the calling process, its target
//! the process that is not a target, BYSTANDER_LOOPS x 170 calls (a hundred times LOOPS:
//! they cost nanoseconds), with no agent and with the agent's programs probing a target
//! process that maps the same library (three pairs per round);
//! and, for the return probes on their own, LOOPS / 10 x 170 cuMemAlloc_v2 calls (cuda_app's
//! `allocs` mode) under floor, floor+r and traced.
//!
//! Usage: cargo bench -p infersight --bench cuda -- [--loops N] [--rounds R]
//!        [--bystander-loops N]
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    num::NonZeroU32,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Instant,
};

use aya::programs::uprobe::UProbeLink;
use infersight::{
    collectors::cuda::{attach_floor, entry_points, Probes},
    config::{TargetRequest, TargetSpec},
    ebpf::{Kernel, Options},
    targets::Targets,
};

/// Driver calls per loop of cuda_app (without synchronize calls).
const CALLS_PER_LOOP: u64 = 170;
/// Of those, allocation calls (10 cuMemAlloc_v2 + 5 cuMemAllocAsync): the return probes'.
const ALLOCS_PER_LOOP: u64 = 15;

/// The agent's CUDA programs, loaded with the targets `targets` and attached to `lib`:
/// in process `pid` only (as the agent does), or with `None` on the library file.
struct AgentProbes {
    // The links first: they are detached before the object goes.
    _links: Vec<UProbeLink>,
    cuda: Probes,
    _kernel: Kernel,
}

fn agent_probes(targets: &Targets, lib: &Path, pid: Option<u32>) -> AgentProbes {
    let mut kernel = Kernel::load(targets, Options::default());
    let mut cuda = Probes::take(&mut kernel).expect("CUDA maps");
    let points = entry_points(lib).expect("CUDA entry points");
    let bpf = kernel.object_mut().expect("loaded");
    let links = cuda
        .attach(bpf, lib, &points, pid.and_then(NonZeroU32::new))
        .expect("CUDA probes");
    AgentProbes {
        _links: links,
        cuda,
        _kernel: kernel,
    }
}

/// The empty programs (with `returns`, the empty return probe too) on `lib`, in process
/// `pid`.
fn floor_probes(targets: &Targets, lib: &Path, returns: bool, pid: u32) -> Kernel {
    let mut kernel = Kernel::load(targets, Options::default());
    let n = attach_floor(&mut kernel, lib, returns, NonZeroU32::new(pid)).expect("floor probes");
    assert!(n >= 15, "floor attached {n} entry points");
    kernel
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let loops = common::flag(&args, "--loops", 20_000);
    let rounds = common::flag(&args, "--rounds", 5) as usize;
    let bystander_loops = common::flag(&args, "--bystander-loops", loops * 100);
    common::require_root("cuda");
    let dir = std::env::temp_dir().join(format!("infersight-bench-cuda-{}", std::process::id()));
    let (lib, app) = build(&dir);
    run(&lib, &app, loops, bystander_loops, rounds);
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

    fn pid(&self) -> u32 {
        self.child.id()
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

/// How many no-agent / agent pairs of the bystander's runs per round.
const BYSTANDER_PAIRS: usize = 3;

fn run(lib: &Path, app: &Path, loops: u64, bystander_loops: u64, rounds: usize) {
    let calls = loops * CALLS_PER_LOOP;
    let bystander_calls = bystander_loops * CALLS_PER_LOOP;
    let alloc_loops = (loops / 10).max(1);
    let alloc_calls = alloc_loops * CALLS_PER_LOOP;
    // none, floor, floor+r, file other, file traced, traced
    let mut results: [Vec<f64>; 6] = Default::default();
    // the process that is not a target: no agent, agent probing a target
    let mut bystander: [Vec<f64>; 2] = Default::default();
    let mut allocs: [Vec<f64>; 3] = Default::default();
    let mut sleeper = Command::new("sleep").arg("3600").spawn().expect("sleep");
    let others = pid_targets(sleeper.id());
    for round in 0..rounds {
        results[0].push(App::loaded(app, lib, loops, false).run(calls));

        for (slot, returns) in [(1, false), (2, true)] {
            let a = App::loaded(app, lib, loops, false);
            let probes = floor_probes(&others, lib, returns, a.pid());
            results[slot].push(a.run(calls));
            drop(probes);
        }

        let a = App::loaded(app, lib, loops, false);
        let probes = agent_probes(&others, lib, None);
        results[3].push(a.run(calls));
        drop(probes);

        for (slot, per_process) in [(4, false), (5, true)] {
            let a = App::loaded(app, lib, loops, false);
            let pid = a.pid();
            let probes = agent_probes(&pid_targets(pid), lib, per_process.then_some(pid));
            results[slot].push(a.run(calls));
            let read = probes
                .cuda
                .read(std::iter::once(1))
                .expect("read CUDA counts");
            let launches: u64 = read.iter().map(|(_, s)| s.kernel_launches).sum();
            assert_eq!(launches, loops * 120, "traced run counted every launch");
            assert!(
                read.iter().all(|(_, s)| s.last_launch_ns > 0),
                "traced run stamped its last launch"
            );
            assert!(
                probes.cuda.errors().expect("read CUDA errors").is_empty(),
                "every allocation succeeded"
            );
        }

        // A process that is not a target, next to a target probed in its own memory.
        for _ in 0..BYSTANDER_PAIRS {
            bystander[0].push(App::loaded(app, lib, bystander_loops, false).run(bystander_calls));
            let target = App::loaded(app, lib, 1, false);
            let probes = agent_probes(&pid_targets(target.pid()), lib, Some(target.pid()));
            let a = App::loaded(app, lib, bystander_loops, false);
            bystander[1].push(a.run(bystander_calls));
            let counted: u64 = probes
                .cuda
                .read(std::iter::once(1))
                .expect("read CUDA counts")
                .iter()
                .map(|(_, s)| s.kernel_launches)
                .sum();
            assert_eq!(counted, 0, "the bystander's calls are nobody's");
            drop(probes);
            drop(target);
        }

        // Allocation calls alone: what the return probe adds to each.
        for (slot, returns) in [(0, false), (1, true)] {
            let a = App::loaded(app, lib, alloc_loops, true);
            let probes = floor_probes(&others, lib, returns, a.pid());
            allocs[slot].push(a.run(alloc_calls));
            drop(probes);
        }
        let a = App::loaded(app, lib, alloc_loops, true);
        let pid = a.pid();
        let probes = agent_probes(&pid_targets(pid), lib, Some(pid));
        allocs[2].push(a.run(alloc_calls));
        let counted: u64 = probes
            .cuda
            .read(std::iter::once(1))
            .expect("read CUDA counts")
            .iter()
            .map(|(_, s)| s.allocs)
            .sum();
        assert_eq!(counted, alloc_calls, "traced run counted every allocation");
        drop(probes);
        let pairs = BYSTANDER_PAIRS * round..BYSTANDER_PAIRS * (round + 1);
        eprintln!(
            "round {}: none {:.1} floor {:.0} floor+ret {:.0} file/other {:.0} file/traced {:.0} \
             traced {:.0} ns/call; not a target: no agent {:.3?} agent {:.3?} ns/call; \
             allocations: floor {:.0} floor+ret {:.0} traced {:.0} ns/call",
            round + 1,
            results[0][round],
            results[1][round],
            results[2][round],
            results[3][round],
            results[4][round],
            results[5][round],
            &bystander[0][pairs.clone()],
            &bystander[1][pairs],
            allocs[0][round],
            allocs[1][round],
            allocs[2][round]
        );
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let [n, f, fr, o, tf, t] = results.map(|mut v| common::median(&mut v));
    let [bn, ba] = bystander.map(|mut v| common::median(&mut v));
    let [af, afr, at] = allocs.map(|mut v| common::median(&mut v));
    println!(
        "\ncuda benchmark: {calls} driver calls per run ({} allocations), median of {rounds} interleaved rounds\n",
        loops * ALLOCS_PER_LOOP
    );
    println!("| configuration | ns/call | added vs none | ratio to floor | ratio to floor + return probes |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("| none (no probe) | {n:.1} | – | – | – |");
    println!(
        "| floor (empty uprobe, in this process) | {f:.0} | +{:.0} | 1.00 | – |",
        f - n
    );
    println!(
        "| floor + empty return probe on the allocations | {fr:.0} | +{:.0} | {:.2} | 1.00 |",
        fr - n,
        fr / f
    );
    println!(
        "| agent, probes on the library file, other PID targeted (before) | {o:.0} | +{:.0} | {:.2} | {:.2} |",
        o - n,
        o / f,
        o / fr
    );
    println!(
        "| agent, probes on the library file, this PID targeted (before; host mode) | {tf:.0} | +{:.0} | {:.2} | {:.2} |",
        tf - n,
        tf / f,
        tf / fr
    );
    println!(
        "| agent, probes in this process, its target | {t:.0} | +{:.0} | {:.2} | {:.2} |",
        t - n,
        t / f,
        t / fr
    );
    println!(
        "\nour programs' own cost per traced call: {:.0} ns over the traps; the target's cost \
         with the probes in its own memory ÷ on the library file: {:.2}",
        t - fr,
        t / tf
    );
    println!(
        "\na process that is not a target: {bystander_calls} driver calls per run, median of \
         {} runs each\n",
        rounds * BYSTANDER_PAIRS
    );
    println!("| configuration | ns/call | ratio to no agent |");
    println!("| --- | ---: | ---: |");
    println!("| no agent | {bn:.2} | 1.00 |");
    println!(
        "| agent probing a target process that maps the same library | {ba:.2} | {:.3} |",
        ba / bn
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
    common::goal(
        "CUDA calls of a process not targeted, agent ÷ no agent",
        format!("{:.3}", ba / bn),
        "≤ 1.02",
        ba / bn <= 1.02,
    );
}
