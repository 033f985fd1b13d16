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

/// How many rules config/rules.toml holds.
fn shipped_rules() -> usize {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rules.toml"))
        .unwrap()
        .lines()
        .filter(|l| *l == "[[rule]]")
        .count()
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
    assert_eq!(
        m.matching("infersight_alert_rule_nodata", &[]).len(),
        shipped_rules()
    );
    assert!(state.join("infersight.db").exists());
    // One startup line says what works and what does not.
    let log = agent.log_text();
    let started = log
        .lines()
        .find(|l| l.contains("started: "))
        .unwrap_or_else(|| panic!("no startup summary in:\n{log}"));
    assert!(started.contains("targets: host;"), "{started}");
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

/// `infersight check-config FILE`: (exit code, stdout, stderr).
fn check_config(file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(AGENT)
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .expect("run check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
    )
}

#[test]
fn check_config_passes_the_shipped_files_and_names_line_and_key_of_each_problem() {
    let shipped = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/infersight.toml"
    ));
    let (code, out, err) = check_config(shipped);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        format!(
            "{}: ok; {}: {} rule(s) ok",
            shipped.display(),
            shipped.with_file_name("rules.toml").display(),
            shipped_rules()
        )
    );

    let dir = std::env::temp_dir().join(format!("infersight-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("c.toml");
    let c = conf.display().to_string();
    // (config text, rules text, the errors expected, one per line)
    let cases: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "[agent]\nlisten = \"nope\"\n",
            "",
            vec![format!("infersight: error: {c}: line 2: agent.listen: invalid value \"nope\": expected an IP address and port, such as 127.0.0.1:9464 or [::1]:9464")],
        ),
        (
            "[agent]\ntick = \"1s\"\n\n[[targets.pid]]\npid = 0\n",
            "",
            vec![format!("infersight: error: {c}: line 5: targets.pid[0].pid: invalid value \"0\": PID must be positive")],
        ),
        (
            "[alerting]\nrules_file = \"r.toml\"\ndefault_channels = [\"log\", \"slack\"]\n",
            "",
            vec![format!("infersight: error: {c}: line 3: alerting.default_channels: invalid value \"slack\": not a configured channel (configured: log)")],
        ),
        (
            "[alerting]\nrules_file = \"r.toml\"\n",
            "[[rule]]\nname = \"A\"\nexpr = \"cpu_usage_percent >\"\nseverity = \"high\"\n\n[[rule]]\nname = \"B\"\nexpr = \"cpu_usage_percent > 1\"\nseverity = \"urgent\"\n",
            vec![
                format!("infersight: error: {}: line 1: rule \"A\": expr:", dir.join("r.toml").display()),
                format!("infersight: error: {}: line 6: rule \"B\": severity:", dir.join("r.toml").display()),
            ],
        ),
    ];
    for (config, rules, expected) in cases {
        std::fs::write(&conf, config).unwrap();
        std::fs::write(dir.join("r.toml"), rules).unwrap();
        let (code, out, err) = check_config(&conf);
        assert_eq!((code, out.as_str()), (1, ""), "{config}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{err}");
        for (line, want) in lines.iter().zip(&expected) {
            assert!(
                line.starts_with(want.as_str()),
                "got {line:?}, want {want:?}"
            );
        }
    }
    // A type error: toml names line, column and key.
    std::fs::write(&conf, "[agent]\nlisten = \"127.0.0.1:1\"\ntick = 5\n").unwrap();
    let (code, _, err) = check_config(&conf);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "infersight: error: {c}: TOML parse error at line 3, column 8"
        )) && err.contains("tick"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
