//! Installs what the build and the tests need, skipping what is present.
use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

/// Debian packages: LLVM 22 for bpf-linker (build and run time), a C compiler for the
/// test workloads, python3 for the test HTTP server, promtool (package prometheus) for
/// exposition checks, wrk for the HTTP benchmark, iproute2 and nftables for the TCP test's
/// network namespace and packet loss, aiosmtpd (a real SMTP server) and Alertmanager for
/// the alerting tests, Chromium for the dashboard test, grpcio for the gRPC test and
/// h2load for the HTTP/2 benchmark.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "gcc",
    "libc6-dev",
    "python3",
    "prometheus",
    "wrk",
    "iproute2",
    "nftables",
    "python3-aiosmtpd",
    "prometheus-alertmanager",
    "chromium",
    // The gRPC server and client of the protocol tests; h2load for the HTTP/2 benchmark.
    "python3-grpcio",
    "nghttp2-client",
    // The test CA and the benchmark's certificate (openssl CLI).
    "openssl",
    // systemd-analyze verify/security on the unit (dpkg-deb comes with dpkg).
    "systemd",
    // The server stacks traced by tests/stacks.rs: FastAPI on uvicorn (h11 and httptools),
    // aiohttp, Node, Go net/http (built by the test) and nginx in front.
    "python3-uvicorn",
    // uvicorn's event loop in vLLM and SGLang (a Suggests only), used by `bench sse`.
    "python3-uvloop",
    "python3-fastapi",
    "python3-httptools",
    "python3-aiohttp",
    "nodejs",
    "golang-go",
    "nginx-light",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// PATH with $CARGO_HOME/bin first, where cargo install puts bpf-linker.
pub fn path_with_cargo_bin() -> OsString {
    let mut dirs = vec![cargo_home().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.env("PATH", path_with_cargo_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.env("PATH", path_with_cargo_bin())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let start = Instant::now();
    eprintln!("setup: {what}");
    let st = cmd
        .env("PATH", path_with_cargo_bin())
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("setup: {what} failed ({st})");
    }
    eprintln!("setup: {what}: done in {:.0?}", start.elapsed());
    Ok(())
}

fn apt_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .contains("install ok installed")
}

pub fn ensure() -> Result<()> {
    let start = Instant::now();
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !apt_installed(p))
        .collect();
    if !missing.is_empty() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "setup: Debian packages missing ({}); run as root",
                missing.join(" ")
            );
        }
        run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-q"]),
        )?;
        run(
            &format!("apt-get install {}", missing.join(" ")),
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]));
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run(
            "rustup toolchain install nightly",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src,clippy",
            ]),
        )?;
    }
    let nightly_components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    for comp in ["rust-src", "clippy"] {
        if !nightly_components.lines().any(|l| l.starts_with(comp)) {
            run(
                &format!("rustup component add {comp} (nightly)"),
                Command::new("rustup").args(["component", "add", comp, "--toolchain", "nightly"]),
            )?;
        }
    }
    for (comp, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        if !quiet_ok(Command::new("cargo").args([probe, "--version"])) {
            run(
                &format!("rustup component add {comp}"),
                Command::new("rustup").args(["component", "add", comp]),
            )?;
        }
    }

    let linker = output(Command::new("bpf-linker").arg("--version"));
    if !linker.contains(BPF_LINKER_VERSION) {
        // Built against Debian's LLVM 22, the major rustc's LLVM has here.
        run(
            &format!("cargo install bpf-linker@{BPF_LINKER_VERSION}"),
            Command::new("cargo")
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    eprintln!("setup: all present ({:.1?})", start.elapsed());
    Ok(())
}
