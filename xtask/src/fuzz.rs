//! `cargo xtask fuzz [--seconds N] [TARGET…]`: each cargo-fuzz (libFuzzer) target in
//! fuzz/ for N seconds, seeded from the shipped files; a crash fails the task and leaves
//! its input in fuzz/artifacts/TARGET/ (turn it into a regression test). Prints the
//! executions each target ran.
//!
//! One build for short and long runs: cargo-fuzz's dev build with AddressSanitizer and
//! debug assertions, at opt-level 1 (fuzz/Cargo.toml). On 2 cores it builds from scratch
//! in 9.5 min against 13 for the release build, and runs the config target at ~900
//! executions/s against ~1350 (opt-level 0 builds in 4.5 min but runs at ~30/s).
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const TARGETS: &[&str] = &[
    "config",
    "rules",
    "expr",
    "api_body",
    "event_decoder",
    "route",
    "http_head",
];

/// Seeds for a target's corpus: (file name, contents).
fn seeds(root: &Path, target: &str) -> Vec<(String, Vec<u8>)> {
    let file = |p: &str| std::fs::read(root.join(p)).unwrap_or_default();
    match target {
        "config" => vec![("shipped".into(), file("config/infersight.toml"))],
        "rules" => vec![("shipped".into(), file("config/rules.toml"))],
        "expr" => vec![
            (
                "and".into(),
                b"gpu_utilization_percent < 50 and http_active_requests > 0".to_vec(),
            ),
            ("pct".into(), b"http_error_ratio > 10%".to_vec()),
            ("dur".into(), b"ttft_p95_seconds > 2s".to_vec()),
        ],
        "api_body" => vec![
            (
                "rule".into(),
                br#"{"name":"A","expr":"load1 > 4","severity":"high"}"#.to_vec(),
            ),
            ("target".into(), br#"{"pid":1,"name":"x"}"#.to_vec()),
            (
                "sub".into(),
                br#"{"subscribe":{"parts":["host"],"alerts":false}}"#.to_vec(),
            ),
        ],
        "route" => vec![
            ("path".into(), b"/v1/items/42?x=1".to_vec()),
            ("abs".into(), b"http://h/a/0123456789abcdef0123/b".to_vec()),
        ],
        "http_head" => vec![
            (
                "request".into(),
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
                    .to_vec(),
            ),
            (
                "sse".into(),
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec(),
            ),
        ],
        _ => Vec::new(),
    }
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = crate::cargo_command(&["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!("installing cargo-fuzz");
        crate::cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    Ok(())
}

/// How long each target runs in the test suite's smoke check.
pub const SMOKE_SECONDS: u64 = 10;

/// Run `targets` (all when empty) for `seconds` each; (target, executions) per target.
pub fn run(root: &Path, seconds: u64, targets: &[String]) -> Result<Vec<(String, u64)>> {
    ensure_cargo_fuzz()?;
    let chosen: Vec<String> = if targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        targets.to_vec()
    };
    if let Some(t) = chosen.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        bail!("unknown fuzz target {t:?} (known: {})", TARGETS.join(", "));
    }
    // Built first with its output shown: from scratch this takes minutes (see above); the
    // runs below reuse it (same flags).
    let fuzz_dir = root.join("fuzz");
    let fuzz_dir = fuzz_dir
        .to_str()
        .context("fuzz directory path is not UTF-8")?;
    crate::cargo(&["+nightly", "fuzz", "build", "--dev", "--fuzz-dir", fuzz_dir])?;
    let mut out = Vec::new();
    for t in &chosen {
        let corpus = root.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        for (name, data) in seeds(root, t) {
            std::fs::write(corpus.join(name), data)?;
        }
        let output =
            crate::cargo_command(&["+nightly", "fuzz", "run", "--dev", "--fuzz-dir", fuzz_dir])
                .arg(t)
                .arg(&corpus)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-rss_limit_mb=4096",
                    "-print_final_stats=1",
                ])
                .output()
                .with_context(|| format!("running the {t} fuzz target"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {t} failed (input in fuzz/artifacts/{t}/):\n{}",
                tail.join("\n")
            );
        }
        // libFuzzer's final line: "Done 123456 runs in 10 second(s)".
        let runs = log
            .lines()
            .find_map(|l| {
                l.strip_prefix("Done ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        println!("fuzz {t}: {runs} executions in {seconds} s, no crash");
        out.push((t.clone(), runs));
    }
    Ok(out)
}
