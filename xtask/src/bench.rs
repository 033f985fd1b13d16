//! `cargo xtask bench`: every benchmark in turn (or one, `cargo xtask bench NAME`), their
//! output shown as it comes, and the goal lines they print
//! (`GOAL<TAB>measure<TAB>figure<TAB>goal<TAB>pass`) gathered into the summary table at the
//! top of BENCHMARKS.md. A run replaces the rows of the benchmarks it ran and keeps the
//! others'; each row carries the date of the run it comes from.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

pub const NAMES: &[&str] = &[
    "syscalls", "sched", "http", "sse", "memory", "cuda", "alerts", "store", "engines", "failures",
];

const BEGIN: &str = "<!-- summary: written by `cargo xtask bench` -->";
const END: &str = "<!-- end of summary -->";

/// One row of the summary: benchmark, measure, figure, goal, pass, date.
type Row = [String; 6];

/// Every benchmark, then the summary table.
pub fn all(root: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for name in NAMES {
        rows.extend(run(name, &[])?);
    }
    write_summary(root, NAMES, rows)
}

/// One benchmark (with its own arguments), then its rows of the summary table.
pub fn one(root: &Path, name: &str, args: &[String]) -> Result<()> {
    let rows = run(name, args)?;
    write_summary(root, &[name], rows)
}

/// Run `cargo bench --bench name -- args`, showing its output; its goal lines.
fn run(name: &str, args: &[String]) -> Result<Vec<Row>> {
    eprintln!("== cargo bench --bench {name}");
    let mut a = vec!["bench", "-p", "infersight", "--bench", name, "--"];
    a.extend(args.iter().map(String::as_str));
    let mut child = crate::cargo_command(&a)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the {name} benchmark"))?;
    let out = child.stdout.take().context("benchmark output")?;
    let date = today();
    let mut rows = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line?;
        match line.strip_prefix("GOAL\t") {
            Some(rest) => {
                if let [measure, figure, goal, pass] = rest.split('\t').collect::<Vec<_>>()[..] {
                    rows.push([name, measure, figure, goal, pass, &date].map(str::to_string));
                }
            }
            None => println!("{line}"),
        }
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("the {name} benchmark failed: {st}");
    }
    Ok(rows)
}

/// The summary table with the rows of `ran` replaced by `new`, in `NAMES` order.
fn write_summary(root: &Path, ran: &[&str], new: Vec<Row>) -> Result<()> {
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let block = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => Some((b, e)),
        _ => None,
    };
    let mut rows: Vec<Row> = block
        .map(|(b, e)| old_rows(&text[b..e]))
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !ran.contains(&r[0].as_str()))
        .collect();
    rows.extend(new);
    // Stable: each benchmark's rows stay in the order it printed them.
    rows.sort_by_key(|r| NAMES.iter().position(|n| *n == r[0]).unwrap_or(NAMES.len()));
    let mut table = format!(
        "{BEGIN}\n\n## Summary\n\n`cargo xtask bench` on {}; each row is from the latest run of its benchmark, on the date shown.\n\n| benchmark | measure | ours | goal | | run |\n| --- | --- | ---: | --- | --- | --- |\n",
        machine(),
    );
    for r in &rows {
        table += &format!("| {} |\n", r.join(" | "));
    }
    table += &format!("\n{END}");
    let new_text = match block {
        Some((b, e)) => format!("{}{table}{}", &text[..b], &text[e + END.len()..]),
        // First time: after the title line.
        None => match text.split_once('\n') {
            Some((title, rest)) => format!("{title}\n\n{table}\n{rest}"),
            None => format!("# Benchmarks\n\n{table}\n"),
        },
    };
    std::fs::write(&path, new_text)?;
    println!("{table}");
    Ok(())
}

/// The rows of an existing summary block. Rows written before the table had a date
/// column take the date of the block's header line.
fn old_rows(block: &str) -> Vec<Row> {
    let header_date = block
        .lines()
        .find(|l| l.starts_with("`cargo xtask bench` on "))
        .and_then(|l| {
            l.trim_end_matches('.')
                .rsplit(", ")
                .next()
                .filter(|d| d.len() == 10 && d.as_bytes()[4] == b'-')
        })
        .unwrap_or("")
        .to_string();
    block
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(str::trim)
                .collect();
            if !NAMES.contains(cells.first()?) {
                return None;
            }
            match cells[..] {
                [b, m, f, g, p, d] => Some([b, m, f, g, p, d].map(str::to_string)),
                [b, m, f, g, p] => Some([b, m, f, g, p, &header_date].map(str::to_string)),
                _ => None,
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_rows_take_the_header_date() {
        let block = "## Summary\n\n`cargo xtask bench` on AMD EPYC, 2 cores, Linux 6.18.44, 2026-11-23.\n\n| benchmark | measure | ours | goal | |\n| --- | --- | ---: | --- | --- |\n| syscalls | a ÷ b | 1.06 | ≤ 1.10 | pass |\n| sched | c | 1.02 | ≤ 1.10 | pass | 2026-12-01 |\n";
        let rows = old_rows(block);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][5], "2026-11-23");
        assert_eq!(rows[0][2], "1.06");
        assert_eq!(rows[1][5], "2026-12-01");
    }
}
