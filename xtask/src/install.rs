//! `cargo xtask install | uninstall | deb`: the same file layout for a host install, a
//! DESTDIR-style staging root and the Debian package.
//!
//! An operator's edited config is never overwritten: the shipped file goes next to it as
//! `*.dist` (as dpkg does), and uninstall leaves it (and the state directory) in place.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// (file in the repository, installed path below the root, mode, config file?)
const FILES: &[(&str, &str, u32, bool)] = &[
    (
        "systemd/infersight.service",
        "lib/systemd/system/infersight.service",
        0o644,
        false,
    ),
    (
        "config/infersight.toml",
        "etc/infersight/infersight.toml",
        0o644,
        true,
    ),
    (
        "config/rules.toml",
        "etc/infersight/rules.toml",
        0o644,
        true,
    ),
    (
        "README.md",
        "usr/share/doc/infersight/README.md",
        0o644,
        false,
    ),
    (
        "config/grafana/infersight.json",
        "usr/share/infersight/grafana/infersight.json",
        0o644,
        false,
    ),
    (
        "config/prometheus/rules.yml",
        "usr/share/infersight/prometheus/rules.yml",
        0o644,
        false,
    ),
];
const BIN: &str = "usr/bin/infersight";

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

/// Install `bin` and the repository's files below `dest`; one line per action.
pub fn install(repo: &Path, bin: &Path, dest: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    copy(bin, &dest.join(BIN), 0o755)?;
    done.push(format!("installed {}", dest.join(BIN).display()));
    for (src, rel, mode, config) in FILES {
        let (from, to) = (repo.join(src), dest.join(rel));
        if *config && to.exists() && fs::read(&to)? != fs::read(&from)? {
            let dist = to.with_extension("toml.dist");
            copy(&from, &dist, *mode)?;
            done.push(format!(
                "kept your {} (the shipped one is {})",
                to.display(),
                dist.display()
            ));
            continue;
        }
        copy(&from, &to, *mode)?;
        done.push(format!("installed {}", to.display()));
    }
    if is_live_root(dest) {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", "infersight.service"])?;
        done.push("enabled and started infersight.service".into());
    }
    Ok(done)
}

/// Remove what `install` put below `dest`, except edited config files and the state.
pub fn uninstall(repo: &Path, dest: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if is_live_root(dest) {
        systemctl(&["disable", "--now", "infersight.service"])?;
    }
    let bin = dest.join(BIN);
    let mut targets: Vec<(PathBuf, Option<PathBuf>)> = vec![(bin, None)];
    for (src, rel, _, config) in FILES {
        targets.push((dest.join(rel), config.then(|| repo.join(src))));
    }
    for (path, shipped) in targets {
        if !path.exists() {
            continue;
        }
        if let Some(shipped) = shipped {
            if fs::read(&path)? != fs::read(&shipped)? {
                done.push(format!("kept {} (edited)", path.display()));
                continue;
            }
        }
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        done.push(format!("removed {}", path.display()));
        // Empty directories we made go too (never the root's own ones).
        for dir in [
            "etc/infersight",
            "usr/share/infersight/grafana",
            "usr/share/infersight/prometheus",
            "usr/share/infersight",
            "usr/share/doc/infersight",
        ] {
            let _ = fs::remove_dir(dest.join(dir));
        }
    }
    if is_live_root(dest) {
        systemctl(&["daemon-reload"])?;
    }
    done.push("left /var/lib/infersight (history and alert state) in place".into());
    Ok(done)
}

/// The real root of a host where systemd runs (not a staging directory).
fn is_live_root(dest: &Path) -> bool {
    dest == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<()> {
    let st = Command::new("systemctl")
        .args(args)
        .status()
        .context("running systemctl")?;
    if !st.success() {
        bail!("systemctl {} failed: {st}", args.join(" "));
    }
    Ok(())
}

/// Build `target/infersight_<version>_<arch>.deb` from a staged root.
pub fn deb(repo: &Path, bin: &Path, version: &str) -> Result<PathBuf> {
    let stage = repo.join("target/deb/root");
    let _ = fs::remove_dir_all(&stage);
    install(repo, bin, &stage)?;
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .context("running dpkg --print-architecture")?
            .stdout,
    )?
    .trim()
    .to_string();
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let size_kib = dir_size(&stage)? / 1024;
    fs::write(
        debian.join("control"),
        format!(
            "Package: infersight\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: infersight developers <infersight@localhost>\nInstalled-Size: {size_kib}\n\
             Depends: libc6\nSection: admin\nPriority: optional\n\
             Description: eBPF observability agent for ML inference hosts\n \
             Traces an inference server's syscalls and requests with eBPF, reads NVML GPU\n \
             metrics, evaluates alert rules and serves Prometheus metrics.\n"
        ),
    )?;
    fs::write(
        debian.join("conffiles"),
        "/etc/infersight/infersight.toml\n/etc/infersight/rules.toml\n",
    )?;
    let script = |name: &str, body: &str| -> Result<()> {
        let p = debian.join(name);
        fs::write(&p, format!("#!/bin/sh\nset -e\n{body}"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    let live = "if [ -d /run/systemd/system ]; then\n";
    script(
        "postinst",
        &format!(
            "{live}  systemctl daemon-reload\n  systemctl enable --now infersight.service\nfi\n"
        ),
    )?;
    script(
        "prerm",
        &format!("{live}  systemctl disable --now infersight.service || true\nfi\n"),
    )?;
    script(
        "postrm",
        &format!("{live}  systemctl daemon-reload || true\nfi\n"),
    )?;
    let out = repo.join(format!("target/infersight_{version}_{arch}.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&out)
        .status()
        .context("running dpkg-deb")?;
    if !st.success() {
        bail!("dpkg-deb failed: {st}");
    }
    Ok(out)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}
