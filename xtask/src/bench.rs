//! `cargo xtask bench` with no name: every benchmark in turn, their output shown as it
//! comes, and the goal lines they print (`GOAL<TAB>measure<TAB>figure<TAB>goal<TAB>pass`)
//! gathered into the summary table at the top of BENCHMARKS.md, with the machine and date.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

pub const NAMES: &[&str] = &[
    "syscalls", "sched", "http", "cuda", "alerts", "store", "engines", "failures",
];

const BEGIN: &str = "<!-- summary: written by `cargo xtask bench` -->";
const END: &str = "<!-- end of summary -->";

pub fn all(root: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for name in NAMES {
        eprintln!("== cargo bench --bench {name}");
        let mut child = crate::cargo_command(&["bench", "-p", "infersight", "--bench", name])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {name} benchmark"))?;
        let out = child.stdout.take().context("benchmark output")?;
        for line in BufReader::new(out).lines() {
            let line = line?;
            match line.strip_prefix("GOAL\t") {
                Some(rest) => rows.push((
                    name.to_string(),
                    rest.split('\t').map(str::to_string).collect::<Vec<_>>(),
                )),
                None => println!("{line}"),
            }
        }
        let st = child.wait()?;
        if !st.success() {
            bail!("the {name} benchmark failed: {st}");
        }
    }
    let mut table = format!(
        "{BEGIN}\n\n## Summary\n\n`cargo xtask bench` on {}, {}.\n\n| benchmark | measure | ours | goal | |\n| --- | --- | ---: | --- | --- |\n",
        machine(),
        today()
    );
    for (bench, f) in &rows {
        if let [measure, figure, goal, pass] = f.as_slice() {
            table += &format!("| {bench} | {measure} | {figure} | {goal} | {pass} |\n");
        }
    }
    table += &format!("\n{END}");
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{table}{}", &text[..b], &text[e + END.len()..]),
        // First time: after the title line.
        _ => match text.split_once('\n') {
            Some((title, rest)) => format!("{title}\n\n{table}\n{rest}"),
            None => format!("# Benchmarks\n\n{table}\n"),
        },
    };
    std::fs::write(&path, new)?;
    println!("{table}");
    Ok(())
}

/// CPU model, cores and kernel.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
