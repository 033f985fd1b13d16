//! Project tasks: `cargo xtask setup | run | test | bench | install | uninstall | deb`.
//!
//! `run` and `test` first install whatever is missing on a Debian/Ubuntu host (run as
//! root): Debian packages, the nightly toolchain with rust-src, and bpf-linker built
//! against Debian's LLVM 22. Each check is quick when everything is present.
mod bench;
mod fuzz;
mod install;
mod layers;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Build the release agent and run it on config/infersight.toml (extra args follow --).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Formatting, lints (host and eBPF crates), the whole test suite and a fuzz smoke run.
    Test,
    /// Build the release agent and install it with its unit, config and rules (an edited
    /// config is kept); on a live systemd host, enable and start the service.
    Install {
        /// Staging root (DESTDIR); default /.
        #[arg(long, default_value = "/")]
        destdir: PathBuf,
        /// Install this binary instead of building the release one.
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Stop and remove what `install` put in place; edited config and state stay.
    Uninstall {
        #[arg(long, default_value = "/")]
        destdir: PathBuf,
    },
    /// The soak test: traced load, a flapping rule and stream-client churn for N minutes;
    /// reports the agent's RSS slope, fds and drops.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Run the cargo-fuzz targets (fuzz/) for a while each; a crash fails.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// Build a Debian package (target/infersight_<version>_<arch>.deb) with the same files.
    Deb {
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Benchmarks, printed as ratios measured side by side in one run.
    Bench {
        /// Which benchmark (one of `bench::NAMES`); none runs them all. The summary table at
        /// the top of BENCHMARKS.md gets the goal lines of those that ran.
        name: Option<String>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup => setup::ensure(),
        Task::Run { args } => {
            setup::ensure()?;
            cargo(&["build", "--release", "-p", "infersight"])?;
            let bin = root.join("target/release/infersight");
            let mut cmd = Command::new(&bin);
            cmd.arg("--config").arg(root.join("config/infersight.toml"));
            cmd.args(&args);
            exec(cmd)
        }
        Task::Test => {
            setup::ensure()?;
            layers::run(&root)?;
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            // The eBPF crate only builds for the BPF target (see TOOLCHAIN.md).
            cargo(&[
                "+nightly",
                "clippy",
                "-p",
                "agent-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo(&["test", "--workspace", "--no-fail-fast"])?;
            // The fuzz smoke: every target briefly, on the shipped seeds and what earlier
            // runs here found.
            fuzz::run(&root, fuzz::SMOKE_SECONDS, &[]).map(|_| ())
        }
        Task::Install { destdir, bin } => {
            let bin = release_bin(&root, bin)?;
            for line in install::install(&root, &bin, &destdir)? {
                println!("{line}");
            }
            Ok(())
        }
        Task::Uninstall { destdir } => {
            for line in install::uninstall(&root, &destdir)? {
                println!("{line}");
            }
            Ok(())
        }
        Task::Soak { minutes } => {
            setup::ensure()?;
            let m = minutes.to_string();
            cargo(&[
                "bench",
                "-p",
                "infersight",
                "--bench",
                "soak",
                "--",
                "--minutes",
                &m,
            ])
        }
        Task::Fuzz { seconds, targets } => {
            setup::ensure()?;
            fuzz::run(&root, seconds, &targets).map(|_| ())
        }
        Task::Deb { bin } => {
            let bin = release_bin(&root, bin)?;
            let out = install::deb(&root, &bin, env!("CARGO_PKG_VERSION"))?;
            println!("{}", out.display());
            Ok(())
        }
        Task::Bench { name, args } => {
            setup::ensure()?;
            match name.as_deref() {
                None | Some("all") => bench::all(&root),
                Some(n) if bench::NAMES.contains(&n) => bench::one(&root, n, &args),
                Some(other) => bail!(
                    "unknown benchmark {other:?} (known: {})",
                    bench::NAMES.join(", ")
                ),
            }
        }
    }
}

/// `bin`, or the release agent built now.
fn release_bin(root: &Path, bin: Option<PathBuf>) -> Result<PathBuf> {
    match bin {
        Some(b) => Ok(b),
        None => {
            setup::ensure()?;
            cargo(&["build", "--release", "-p", "infersight"])?;
            Ok(root.join("target/release/infersight"))
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").context("run through `cargo xtask`")?;
    Path::new(&dir)
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Run cargo (through rustup's proxy, so `+nightly` works) with ~/.cargo/bin on PATH.
fn cargo(args: &[&str]) -> Result<()> {
    status(cargo_command(args))
}

/// A cargo command as `cargo` runs it, to run another way (piped, captured).
fn cargo_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).env("PATH", setup::path_with_cargo_bin());
    // A toolchain chosen for the xtask itself must not leak into `cargo +nightly`.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    cmd.env_remove("CARGO");
    cmd.env_remove("RUSTC");
    cmd
}

fn status(mut cmd: Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn exec(mut cmd: Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot exec {cmd:?}"))
}
