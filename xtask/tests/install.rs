//! `cargo xtask install | uninstall | deb` into a staging root: the files land where the
//! unit expects them, an edited config survives install and uninstall, the unit passes
//! `systemd-analyze verify` and scores ≤ 2.5 in `systemd-analyze security`, and the
//! package holds the same files.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

fn xtask(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask");
    assert!(
        out.status.success(),
        "xtask {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infersight-xtask-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A stand-in for the release binary (install only copies it).
fn fake_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("infersight-bin");
    std::fs::write(&bin, "#!/bin/sh\nexit 0\n").unwrap();
    bin
}

const FILES: &[&str] = &[
    "usr/bin/infersight",
    "lib/systemd/system/infersight.service",
    "etc/infersight/infersight.toml",
    "etc/infersight/rules.toml",
    "usr/share/doc/infersight/README.md",
    "usr/share/infersight/grafana/infersight.json",
    "usr/share/infersight/prometheus/rules.yml",
];

#[test]
fn install_and_uninstall_into_a_staging_root_keep_an_edited_config() {
    let work = temp("install");
    let bin = fake_bin(&work);
    let root = work.join("root");
    let (b, r) = (bin.to_str().unwrap(), root.to_str().unwrap());
    xtask(&["install", "--destdir", r, "--bin", b]);
    for f in FILES {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    let mode = |f: &str| {
        std::fs::metadata(root.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/bin/infersight"), 0o755);
    assert_eq!(mode("lib/systemd/system/infersight.service"), 0o644);

    // The operator edits the config; a new install keeps it and puts the shipped one next
    // to it.
    let conf = root.join("etc/infersight/infersight.toml");
    std::fs::write(&conf, "[agent]\nlisten = \"0.0.0.0:9464\"\n").unwrap();
    let out = xtask(&["install", "--destdir", r, "--bin", b]);
    assert!(
        out.contains(&format!("kept your {}", conf.display())),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "[agent]\nlisten = \"0.0.0.0:9464\"\n"
    );
    assert!(root.join("etc/infersight/infersight.toml.dist").is_file());

    let out = xtask(&["uninstall", "--destdir", r]);
    assert!(
        out.contains(&format!("kept {} (edited)", conf.display())),
        "{out}"
    );
    assert!(conf.is_file());
    for f in FILES
        .iter()
        .filter(|f| **f != "etc/infersight/infersight.toml")
    {
        assert!(!root.join(f).exists(), "{f} left behind");
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_unit_verifies_and_scores_ok_in_systemd_analyze_security() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(repo.join("systemd/infersight.service")).unwrap();
    // verify checks that ExecStart exists: point it at a real executable.
    let work = temp("unit");
    let bin = fake_bin(&work);
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = work.join("infersight.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/bin/infersight",
            &format!("ExecStart={}", bin.display()),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (the test command installs systemd)");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("infersight.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    assert!(score <= 2.5, "exposure {score}:\n{text}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_debian_package_holds_the_same_files() {
    let work = temp("deb");
    let bin = fake_bin(&work);
    let out = xtask(&["deb", "--bin", bin.to_str().unwrap()]);
    // The last line (dpkg-deb says what it builds before).
    let deb = PathBuf::from(out.lines().last().unwrap_or_default());
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&contents.stdout).into_owned();
    for f in FILES {
        assert!(
            listing.contains(&format!("./{f}")),
            "{f} not in the package:\n{listing}"
        );
    }
    let field = |name: &str| {
        let o = Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "infersight");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    let conffiles = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout),
        "/etc/infersight/infersight.toml\n/etc/infersight/rules.toml\n"
    );
    let _ = std::fs::remove_file(&deb);
    let _ = std::fs::remove_dir_all(&work);
}
