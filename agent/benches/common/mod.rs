//! Helpers shared by the benchmark harnesses.
#![allow(dead_code)]

/// `--name VALUE` from the command line, or `default`.
pub fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Exit with a message unless running as root (the benchmarks load eBPF programs).
pub fn require_root(bench: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the {bench} benchmark loads eBPF programs: run it as root");
        std::process::exit(1);
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One goal line for `cargo xtask bench`'s summary table (tab-separated on stdout):
/// measure, our figure, the goal, and whether it is met.
pub fn goal(measure: &str, figure: String, goal: &str, met: bool) {
    println!(
        "GOAL\t{measure}\t{figure}\t{goal}\t{}",
        if met { "pass" } else { "short" }
    );
}
