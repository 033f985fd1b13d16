//! `cargo xtask bench syscalls`: cost of syscall tracing, measured side by side in one run.
//!
//! A child process makes N getppid calls in a tight loop and reports ns per call, under
//! four configurations, interleaved over several rounds (this VM's noise moves whole runs
//! by ±30%, so only ratios within a run mean anything):
//!   none     no program attached
//!   floor    empty programs on raw_syscalls sys_enter/sys_exit (the mechanism's cost)
//!   other    the agent's programs, targeting another process
//!   traced   the agent's programs, targeting the loop process
//!
//! Usage: cargo bench -p infersight --bench syscalls -- [--calls N] [--rounds R]
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::Instant,
};

use infersight::{
    base::ProgramStatus,
    config::{TargetRequest, TargetSpec},
    ebpf::Kernel,
    targets::Targets,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("loop") {
        let n = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000u64);
        return child_loop(n);
    }
    let calls = common::flag(&args, "--calls", 2_000_000);
    let rounds = common::flag(&args, "--rounds", 5) as usize;
    common::require_root("syscalls");
    run(calls, rounds);
}

/// Wait for the gate byte, then time `n` getppid calls and print ns per call.
fn child_loop(n: u64) {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{ns}");
}

struct LoopChild {
    child: Child,
}

impl LoopChild {
    fn spawn(calls: u64) -> LoopChild {
        let exe = std::env::current_exe().expect("own path");
        let child = Command::new(exe)
            .args(["loop", &calls.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn loop");
        LoopChild { child }
    }

    fn run(mut self) -> f64 {
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("gate");
        drop(stdin);
        let mut out = String::new();
        BufReader::new(self.child.stdout.take().expect("stdout"))
            .read_line(&mut out)
            .expect("result");
        let _ = self.child.wait();
        out.trim().parse().expect("ns per call")
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

/// Run the loop under `probes`; adds the programs' (run time, run count) to `cost` and
/// returns ns per call.
fn measure(child: LoopChild, kernel: &Kernel, cost: &mut (u64, u64)) -> f64 {
    let before = kernel.program_statuses();
    let ns = child.run();
    if let Some((t, n)) = program_cost(&before, &kernel.program_statuses()) {
        cost.0 += t;
        cost.1 += n;
    }
    ns
}

/// Sum of (run time, run count) over the sys_enter/sys_exit programs.
fn program_cost(before: &[ProgramStatus], after: &[ProgramStatus]) -> Option<(u64, u64)> {
    let mut t = 0;
    let mut c = 0;
    for (b, a) in before.iter().zip(after) {
        if a.name.contains("sys_") {
            t += a.run_time_ns? - b.run_time_ns?;
            c += a.run_count? - b.run_count?;
        }
    }
    Some((t, c))
}

fn run(calls: u64, rounds: usize) {
    let mut none = Vec::new();
    let mut floor = Vec::new();
    let mut other = Vec::new();
    let mut traced = Vec::new();
    let mut floor_cost = (0u64, 0u64);
    let mut other_cost = (0u64, 0u64);
    let mut traced_cost = (0u64, 0u64);
    let mut bystander = Command::new("sleep").arg("3600").spawn().expect("sleep");
    let bystander_targets = pid_targets(bystander.id());
    for round in 0..rounds {
        none.push(LoopChild::spawn(calls).run());

        floor.push(measure(
            LoopChild::spawn(calls),
            &common::floor(&bystander_targets),
            &mut floor_cost,
        ));
        other.push(measure(
            LoopChild::spawn(calls),
            &common::Traced::start(bystander_targets.clone()).kernel,
            &mut other_cost,
        ));
        let child = LoopChild::spawn(calls);
        let mut probes = common::Traced::start(pid_targets(child.child.id()));
        traced.push(measure(child, &probes.kernel, &mut traced_cost));
        let counted: u64 = probes
            .read()
            .syscalls
            .syscalls
            .iter()
            .filter(|s| s.syscall == "getppid")
            .map(|s| s.count)
            .sum();
        assert_eq!(counted, calls, "traced run counted every call");
        drop(probes);
        eprintln!(
            "round {}: none {:.0} floor {:.0} other {:.0} traced {:.0} ns/call",
            round + 1,
            none[round],
            floor[round],
            other[round],
            traced[round]
        );
    }
    let _ = bystander.kill();
    let _ = bystander.wait();

    let (n, f, o, t) = (
        common::median(&mut none),
        common::median(&mut floor),
        common::median(&mut other),
        common::median(&mut traced),
    );
    let per_run = |c: (u64, u64)| {
        if c.1 == 0 {
            "n/a".to_string()
        } else {
            format!("{:.0}", c.0 as f64 / c.1 as f64)
        }
    };
    println!(
        "\nsyscalls benchmark: {calls} getppid calls per run, median of {rounds} interleaved rounds\n"
    );
    println!(
        "| configuration | ns/call | added vs none | ratio to floor | eBPF ns per program run |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("| none (no program) | {n:.0} | – | – | – |");
    println!(
        "| floor (empty programs) | {f:.0} | +{:.0} | 1.00 | {} |",
        f - n,
        per_run(floor_cost)
    );
    println!(
        "| agent, other PID targeted | {o:.0} | +{:.0} | {:.2} (goal ≤ 1.10) | {} |",
        o - n,
        o / f,
        per_run(other_cost)
    );
    println!(
        "| agent, loop process targeted | {t:.0} | +{:.0} | {:.2} (goal ≤ 1.50) | {} |",
        t - n,
        t / f,
        per_run(traced_cost)
    );
    common::goal(
        "untraced syscall ÷ empty-program floor",
        format!("{:.2}", o / f),
        "≤ 1.10",
        o / f <= 1.10,
    );
    common::goal(
        "traced syscall ÷ empty-program floor",
        format!("{:.2}", t / f),
        "≤ 1.50",
        t / f <= 1.50,
    );
}
