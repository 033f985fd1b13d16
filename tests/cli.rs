//! Error paths and the unprivileged mode of the `infersight` binary.
mod common;

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::Command,
};

use common::{Agent, AGENT};

/// Run the agent with `args`; it must exit non-zero at once with one line on stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(AGENT)
        .args(args)
        .env("INFERSIGHT_LOG", "info")
        .output()
        .expect("run agent");
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "one line for {args:?}, got:\n{err}");
    err
}

#[test]
fn bad_listen_address() {
    assert_eq!(
        fails(&["--listen", "nope"]),
        "infersight: error: --listen: invalid value \"nope\": expected an IP address and port, such as 127.0.0.1:9464 or [::1]:9464"
    );
}

#[test]
fn listen_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = fails(&["--listen", &addr]);
    assert!(
        err.starts_with(&format!(
            "infersight: error: --listen {addr}: cannot listen: "
        )),
        "{err}"
    );
}

#[test]
fn missing_pid() {
    // Above the kernel's pid_max limit (4194304), so it can never exist.
    assert_eq!(
        fails(&["--listen", "127.0.0.1:0", "--pid", "99999999"]),
        "infersight: error: --pid 99999999: no such process"
    );
    assert_eq!(
        fails(&["--pid", "abc"]),
        "infersight: error: --pid: invalid value \"abc\": expected a positive process ID, optionally with a name (1234=vllm)"
    );
}

#[test]
fn missing_cgroup() {
    let err = fails(&[
        "--listen",
        "127.0.0.1:0",
        "--cgroup",
        "/infersight-no-such-cgroup",
    ]);
    assert!(
        err.starts_with("infersight: error: --cgroup /infersight-no-such-cgroup: no such cgroup (looked for ")
            || err.starts_with("infersight: error: --cgroup /infersight-no-such-cgroup: no cgroup v2 hierarchy is mounted"),
        "{err}"
    );
}

#[test]
fn bad_config_file_names_line_and_key() {
    let dir = std::env::temp_dir().join(format!("infersight-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[agent]\nlisten = \"127.0.0.1:1\"\ntick = 5\n").unwrap();
    let err = fails(&["--config", file.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "infersight: error: {}: TOML parse error at line 3, column 8",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("tick"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn conflicting_targets() {
    assert_eq!(
        fails(&["--all", "--pid", "1"]),
        "infersight: error: --all cannot be combined with --pid, --cgroup, --pid-file, --process or --gpu-processes"
    );
}

#[test]
fn shipped_config_is_valid() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/infersight.toml");
    let state = std::env::temp_dir().join(format!("infersight-shipped-{}", std::process::id()));
    let agent = Agent::start(&["--config", cfg, "--state-dir", state.to_str().unwrap()]);
    agent.settle();
    let m = agent.metrics();
    // The shipped rules load, every one of them, with the alerting collector healthy.
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "alerting")]),
        Some(1.0),
        "{}",
        agent.log_text()
    );
    assert_eq!(m.matching("infersight_alert_rule_nodata", &[]).len(), 12);
    assert!(state.join("infersight.db").exists());
    drop(agent);
    let _ = std::fs::remove_dir_all(&state);
}

/// As an unprivileged user the agent runs, says what is missing, and serves both
/// endpoints with the eBPF parts marked unsupported.
#[test]
fn runs_without_privileges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: run as we are.
        check_unprivileged(Command::new(AGENT));
        return;
    }
    // Copy the binary where user `nobody` can execute it (the build tree may sit below a
    // directory only root can enter).
    let dir = std::env::temp_dir().join(format!("infersight-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("infersight");
    std::fs::copy(AGENT, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.uid(65534).gid(65534).current_dir(&dir);
    check_unprivileged(cmd);
    let _ = std::fs::remove_dir_all(&dir);
}

fn check_unprivileged(cmd: Command) {
    let agent = Agent::start_with(cmd, &[]);
    let log = agent.log_text();
    assert!(
        log.contains("missing capability CAP_BPF and CAP_PERFMON"),
        "log should name the capability:\n{log}"
    );
    let m = agent.metrics();
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "syscalls")]),
        Some(0.0)
    );
    assert_eq!(
        m.get(
            "infersight_ebpf_program_attached",
            &[("program", "sys_enter")]
        ),
        Some(0.0)
    );
    // Unknown is absent, never a confident 0.
    assert!(m.matching("infersight_syscalls_total", &[]).is_empty());
    assert!(m
        .matching("infersight_ebpf_program_run_time_seconds_total", &[])
        .is_empty());
    let (status, body) = agent.get("/health");
    assert_eq!(status, 200, "unsupported is not a failure: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["collectors"][0]["state"], "unsupported");
    assert!(v["collectors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("CAP_BPF"));
    assert_eq!(v["programs"][0]["state"], "unsupported");
}
