//! `cargo xtask bench sched`: what the scheduler programs cost a context-switch-heavy host,
//! side by side in one run.
//!
//! `sched_switch` runs on every context switch of the host and `sched_wakeup` on every
//! wake-up, whoever the task is. The workload: two processes passing one byte back and forth
//! over a pair of pipes (every message a wake-up and a context switch), neither of them a
//! target, both on CPU 0 ("one CPU": each message switches that CPU from one process to
//! the other) or one on each CPU ("two CPUs": each wakes the other's idle CPU). Configurations,
//! interleaved over several rounds:
//!   none     no program attached
//!   floor    empty programs on sched_switch, sched_wakeup and sched_wakeup_new
//!   other    the agent's scheduler programs, targeting another process (a `sleep`)
//!   traced   the same programs targeting the ping-pong processes (for comparison: what
//!            the figures of a target cost)
//! Goal: other ÷ floor ≤ 1.10.
//!
//! Usage: cargo bench -p infersight --bench sched -- [--trips N] [--rounds R]
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::Instant,
};

use infersight::{
    collectors::sched,
    config::{TargetRequest, TargetSpec},
    ebpf::{Kernel, ProgramSpec, SCHED_FLOOR_PROGRAMS},
    targets::Targets,
};

const PLACEMENTS: [&str; 2] = ["one CPU", "two CPUs"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pingpong") {
        let n = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000u64);
        let split = args.get(3).map(String::as_str) == Some("split");
        return pingpong(n, split);
    }
    let trips = common::flag(&args, "--trips", 200_000);
    let rounds = common::flag(&args, "--rounds", 5) as usize;
    common::require_root("sched");
    run(trips, rounds);
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it, and
    // sched_setaffinity reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Wait for the gate line, fork, and time `n` one-byte round trips between the two
/// processes; print ns per round trip.
fn pingpong(n: u64, split: bool) {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    pin(0);
    let mut there = [0i32; 2];
    let mut back = [0i32; 2];
    // SAFETY: pipe writes two descriptors into each array.
    unsafe {
        assert_eq!(libc::pipe(there.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(back.as_mut_ptr()), 0);
    }
    let mut b = [0u8; 1];
    // SAFETY: the child only reads and writes its pipes and calls _exit; the buffers are
    // its own copy of `b`.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            if split {
                pin(1);
            }
            for _ in 0..=n {
                if libc::read(there[0], b.as_mut_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
                libc::write(back[1], b.as_ptr().cast(), 1);
            }
            libc::_exit(0);
        }
        // One trip first: the child is running and pinned.
        let trip = |b: &mut [u8; 1]| {
            libc::write(there[1], b.as_ptr().cast(), 1);
            libc::read(back[0], b.as_mut_ptr().cast(), 1);
        };
        trip(&mut b);
        let start = Instant::now();
        for _ in 0..n {
            trip(&mut b);
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        println!("{ns}");
    }
}

struct PingPong(Child);

impl PingPong {
    fn spawn(trips: u64, split: bool) -> PingPong {
        let exe = std::env::current_exe().expect("own path");
        let child = Command::new(exe)
            .args([
                "pingpong",
                &trips.to_string(),
                if split { "split" } else { "same" },
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ping-pong");
        PingPong(child)
    }

    fn run(mut self) -> f64 {
        let mut stdin = self.0.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("gate");
        drop(stdin);
        let mut out = String::new();
        BufReader::new(self.0.stdout.take().expect("stdout"))
            .read_line(&mut out)
            .expect("result");
        let _ = self.0.wait();
        out.trim().parse().expect("ns per round trip")
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

/// The kernel object loaded for `targets` with `specs` attached (and process following,
/// so that the ping-pong's second process is a target when the first is).
fn attach(targets: &Targets, specs: &[ProgramSpec]) -> Kernel {
    let mut kernel = Kernel::load(targets, common::options());
    kernel.follow_processes();
    let h = kernel.attach(specs);
    assert!(h.reason.is_none(), "programs did not attach: {h:?}");
    kernel
}

#[derive(Default)]
struct Config {
    ns: [Vec<f64>; 2],
    /// eBPF (run time, runs) per placement.
    cost: [(u64, u64); 2],
    /// The same per program (switch, wake-up, wake-up of a new task), per placement.
    per_program: [[(u64, u64); 3]; 2],
}

fn measured(child: PingPong, kernel: &Kernel, specs: &[ProgramSpec], c: &mut Config, p: usize) {
    let before = kernel.program_statuses();
    let ns = child.run();
    let after = kernel.program_statuses();
    let (t, n) = common::cost(&before, &after, |n| specs.iter().any(|s| s.name == n));
    c.ns[p].push(ns);
    c.cost[p].0 += t;
    c.cost[p].1 += n;
    for (i, spec) in specs.iter().enumerate().take(3) {
        let (t, n) = common::cost(&before, &after, |n| n == spec.name);
        c.per_program[p][i].0 += t;
        c.per_program[p][i].1 += n;
    }
}

fn run(trips: u64, rounds: usize) {
    let (mut none, mut floor, mut other, mut traced) = (
        Config::default(),
        Config::default(),
        Config::default(),
        Config::default(),
    );
    let mut bystander = Command::new("sleep").arg("3600").spawn().expect("sleep");
    let bystander_targets = targets(bystander.id());
    for round in 0..rounds {
        for (p, split) in [(0, false), (1, true)] {
            // A wake-up across CPUs takes ten times as long here (an idle CPU woken).
            let trips = if split { (trips / 10).max(1) } else { trips };
            none.ns[p].push(PingPong::spawn(trips, split).run());
            let k = attach(&bystander_targets, SCHED_FLOOR_PROGRAMS);
            measured(
                PingPong::spawn(trips, split),
                &k,
                SCHED_FLOOR_PROGRAMS,
                &mut floor,
                p,
            );
            drop(k);
            let k = attach(&bystander_targets, sched::PROGRAMS);
            measured(
                PingPong::spawn(trips, split),
                &k,
                sched::PROGRAMS,
                &mut other,
                p,
            );
            drop(k);
            let child = PingPong::spawn(trips, split);
            let k = attach(&targets(child.0.id()), sched::PROGRAMS);
            measured(child, &k, sched::PROGRAMS, &mut traced, p);
            drop(k);
            eprintln!(
                "round {} ({}): ns per round trip: none {:.0} floor {:.0} other {:.0} traced {:.0}",
                round + 1,
                PLACEMENTS[p],
                none.ns[p][round],
                floor.ns[p][round],
                other.ns[p][round],
                traced.ns[p][round]
            );
        }
    }
    let _ = bystander.kill();
    let _ = bystander.wait();

    let per_run = common::per_run;
    println!(
        "\nsched benchmark: one-byte round trips over two pipes between two untargeted processes ({trips} per run on one CPU, {} on two), median of {rounds} interleaved rounds\n",
        (trips / 10).max(1)
    );
    println!("| placement | configuration | ns per round trip | ÷ floor | program runs per trip | eBPF ns per program run |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut ratios = [0.0; 2];
    for (p, place) in PLACEMENTS.iter().enumerate() {
        let f = common::median(&mut floor.ns[p]);
        for (name, c) in [
            ("none (no program)", &mut none),
            ("floor (empty programs)", &mut floor),
            ("agent, another process targeted", &mut other),
            ("agent, the ping-pong targeted", &mut traced),
        ] {
            let ns = common::median(&mut c.ns[p]);
            let trips = if p == 1 { (trips / 10).max(1) } else { trips };
            let runs = c.cost[p].1 as f64 / (trips as f64 * rounds as f64);
            println!(
                "| {place} | {name} | {ns:.0} | {:.3} | {} | {} |",
                ns / f,
                if c.cost[p].1 == 0 {
                    "–".to_string()
                } else {
                    format!("{runs:.1}")
                },
                if c.cost[p].1 == 0 {
                    "–".to_string()
                } else {
                    format!("{:.0}", per_run(c.cost[p]))
                }
            );
        }
        ratios[p] = common::median(&mut other.ns[p]) / f;
    }
    println!("\neBPF ns per run of each program (BPF run-time statistics), ping-pong on one CPU; runs per round trip in brackets:\n");
    println!("| program | floor (empty) | agent, another process targeted | agent, the ping-pong targeted |");
    println!("| --- | ---: | ---: | ---: |");
    for (i, name) in ["sched_switch", "sched_wakeup", "sched_wakeup_new"]
        .iter()
        .enumerate()
    {
        let cell = |c: &Config| {
            let (t, n) = c.per_program[0][i];
            if n == 0 {
                "– (0)".to_string()
            } else {
                format!(
                    "{:.0} ({:.2})",
                    t as f64 / n as f64,
                    n as f64 / (trips as f64 * rounds as f64)
                )
            }
        };
        println!(
            "| `{name}` | {} | {} | {} |",
            cell(&floor),
            cell(&other),
            cell(&traced)
        );
    }
    for (p, place) in PLACEMENTS.iter().enumerate() {
        common::goal(
            &format!("pipe ping-pong, {place}: untargeted ÷ empty-program floor"),
            format!("{:.3}", ratios[p]),
            "≤ 1.10",
            ratios[p] <= 1.10,
        );
    }
}
