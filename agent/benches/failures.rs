//! `cargo xtask bench failures`: what the failure programs cost per event, side by side in
//! one run.
//!
//! A child process (targeted) sends itself signals and forks children that exit at once,
//! under three configurations, interleaved over several rounds:
//!   none     no program attached
//!   off      the agent's programs without the failure accounting (its programs detached,
//!            exit statuses not kept)
//!   on       the agent's programs, failure accounting on
//!
//! Signals: SIGUSR1 (not fatal: the common case on a host, one record read) and SIGFPE
//! (fatal, caught by a handler: counted for the target). Exits: fork, `_exit(0)`, wait
//! (the child is a target's process: its status is kept at `exit_group` and its end
//! counted at `sched_process_exit`).
//!
//! Usage: cargo bench -p infersight --bench failures -- [--ops N] [--rounds R]
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::Instant,
};

use infersight::{
    collectors::failures,
    config::{TargetRequest, TargetSpec},
    targets::Targets,
};

const WORKLOADS: [&str; 3] = ["SIGUSR1", "SIGFPE", "fork+exit"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("loop") {
        let n = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000u64);
        return child_loop(n);
    }
    let ops = common::flag(&args, "--ops", 200_000);
    let rounds = common::flag(&args, "--rounds", 5) as usize;
    common::require_root("failures");
    run(ops, rounds);
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Wait for the gate line, then time each workload (`n` signals each, `n / 20` forks)
/// and print ns per operation, one line each.
fn child_loop(n: u64) {
    // SAFETY: installing a handler that does nothing; the function lives for the program.
    unsafe {
        libc::signal(libc::SIGUSR1, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGFPE, on_signal as *const () as libc::sighandler_t);
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for sig in [libc::SIGUSR1, libc::SIGFPE] {
        let start = Instant::now();
        for _ in 0..n {
            // SAFETY: a signal to this process, whose handler returns at once.
            unsafe { libc::kill(me, sig) };
        }
        println!("{}", start.elapsed().as_nanos() as f64 / n as f64);
    }
    let forks = (n / 20).max(1);
    let start = Instant::now();
    for _ in 0..forks {
        // SAFETY: the child only calls _exit; the parent waits for it.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    println!("{}", start.elapsed().as_nanos() as f64 / forks as f64);
}

struct LoopChild(Child);

impl LoopChild {
    fn spawn(ops: u64) -> LoopChild {
        let exe = std::env::current_exe().expect("own path");
        let child = Command::new(exe)
            .args(["loop", &ops.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn loop");
        LoopChild(child)
    }

    fn run(mut self) -> [f64; 3] {
        let mut stdin = self.0.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("gate");
        drop(stdin);
        let mut out = BufReader::new(self.0.stdout.take().expect("stdout"));
        let mut ns = [0.0; 3];
        for v in &mut ns {
            let mut line = String::new();
            out.read_line(&mut line).expect("result");
            *v = line.trim().parse().expect("ns per operation");
        }
        let _ = self.0.wait();
        ns
    }
}

fn targets(pid: u32) -> Targets {
    Targets::resolve(&TargetSpec::List(vec![TargetRequest::Pid {
        pid,
        name: Some("bench".into()),
        endpoints: Default::default(),
    }]))
    .expect("resolve target")
}

const PROGRAMS: [&str; 2] = ["signal_generate", "sched_process_exit"];

fn run(ops: u64, rounds: usize) {
    let mut none: Vec<[f64; 3]> = Vec::new();
    let mut off: Vec<[f64; 3]> = Vec::new();
    let mut on: Vec<[f64; 3]> = Vec::new();
    let mut off_cost = [(0u64, 0u64); 2];
    let mut on_cost = [(0u64, 0u64); 2];
    for round in 0..rounds {
        none.push(LoopChild::spawn(ops).run());
        // The child's PID is only known once spawned: trace it before it passes the gate.
        for (results, costs, accounting) in [
            (&mut off, &mut off_cost, false),
            (&mut on, &mut on_cost, true),
        ] {
            let child = LoopChild::spawn(ops);
            let mut traced = common::Traced::start(targets(child.0.id()));
            if !accounting {
                traced.kernel.detach(failures::PROGRAMS);
                traced
                    .kernel
                    .set_config(agent_common::CONFIG_FAILURES, 0)
                    .expect("CONFIG");
            }
            let before = traced.kernel.program_statuses();
            let ns = child.run();
            let after = traced.kernel.program_statuses();
            for (sum, p) in costs.iter_mut().zip(PROGRAMS) {
                let c = common::cost(&before, &after, |n| n == p);
                sum.0 += c.0;
                sum.1 += c.1;
            }
            if accounting {
                let r = traced.read();
                let f = r.failures.failures.first().expect("the target's failures");
                let signals: u64 = f.signals.iter().map(|(_, n)| n).sum();
                assert_eq!(signals, ops, "every SIGFPE counted: {f:?}");
                // The forked children and the loop process itself.
                assert_eq!(
                    f.exits[0].1,
                    (ops / 20).max(1) + 1,
                    "every exit counted: {f:?}"
                );
            }
            results.push(ns);
        }
        eprintln!(
            "round {}: ns per op (SIGUSR1, SIGFPE, fork+exit): none {:?} off {:?} on {:?}",
            round + 1,
            none[round].map(|v| v.round()),
            off[round].map(|v| v.round()),
            on[round].map(|v| v.round())
        );
    }
    let med =
        |v: &[[f64; 3]], i: usize| common::median(&mut v.iter().map(|r| r[i]).collect::<Vec<_>>());
    let per_run = common::per_run;
    println!(
        "\nfailures benchmark: {ops} signals of each kind and {} fork+exit per run, median of {rounds} interleaved rounds\n",
        (ops / 20).max(1)
    );
    println!("| workload | none ns/op | accounting off | on | on ÷ off |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (i, w) in WORKLOADS.iter().enumerate() {
        let (n, f, o) = (med(&none, i), med(&off, i), med(&on, i));
        println!("| {w} | {n:.0} | {f:.0} | {o:.0} | {:.2} |", o / f);
    }
    println!("\n| program | ns per run, accounting off | on |");
    println!("| --- | ---: | ---: |");
    for (i, p) in PROGRAMS.iter().enumerate() {
        println!(
            "| `{p}` | {:.0} | {:.0} |",
            per_run(off_cost[i]),
            per_run(on_cost[i])
        );
    }
    let signal_ns = per_run(on_cost[0]);
    common::goal(
        "signal_generate, eBPF ns per run (signals of a target)",
        format!("{signal_ns:.0} ns"),
        "≤ 300 ns",
        signal_ns <= 300.0,
    );
    let exit_added = per_run(on_cost[1]) - per_run(off_cost[1]);
    common::goal(
        "sched_process_exit, eBPF ns added per exit by the accounting",
        format!("{exit_added:.0} ns"),
        "≤ 300 ns",
        exit_added <= 300.0,
    );
    // Wall time per fork+exit moves by ±50% between rounds here: the accounting's share
    // of it is its added eBPF time over the fork+exit+wait time with no program.
    let share = 100.0 * exit_added / med(&none, 2);
    common::goal(
        "accounting's eBPF time per process exit ÷ fork+exit+wait",
        format!("{share:.2}%"),
        "≤ 1%",
        share <= 1.0,
    );
}
