//! Target process metrics, and targets that come back: a PID file rewritten by a
//! restarted server, a process found again by name, a cgroup removed and created again.
//! The kernel side must follow each new process: its syscalls are counted exactly.
mod common;

use std::time::Duration;

use common::{bpf_or_skip, workload_bin, Agent, Metrics, TestCgroup, Workload};

const WAIT: Duration = Duration::from_secs(10);

fn getppid(m: &Metrics, target: &str) -> Option<f64> {
    m.get(
        "infersight_syscalls_total",
        &[("target", target), ("syscall", "getppid")],
    )
}

fn up(m: &Metrics, target: &str) -> Option<f64> {
    m.get("infersight_target_up", &[("target", target)])
}

/// Release `w`, let it make its calls and exit.
fn run(mut w: Workload) {
    w.release();
    w.finish(WAIT);
}

#[test]
fn pid_file_target_reports_its_process_and_follows_a_restart() {
    if !bpf_or_skip("pid_file_target") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("infersight-pidfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("svc.pid");
    let first = Workload::spawn(100, 0, 0, false);
    std::fs::write(&file, format!("{}\n", first.pid())).unwrap();
    let arg = format!("{}=svc", file.display());
    let agent = Agent::start(&["--pid-file", &arg]);
    let m = agent.wait_for(WAIT, "target up", |m| up(m, "svc") == Some(1.0));

    // Process figures match /proc for the waiting workload.
    let pid = first.pid();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    let rss: f64 = fields[21].parse::<f64>().unwrap() * page;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    let t = [("target", "svc")];
    assert_eq!(m.get("infersight_target_processes", &t), Some(1.0));
    assert_eq!(m.get("infersight_target_threads", &t), Some(1.0));
    assert_eq!(
        m.get("infersight_target_resident_memory_bytes", &t),
        Some(rss)
    );
    assert_eq!(m.get("infersight_target_open_fds", &t), Some(fds));
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = btime + fields[19].parse::<f64>().unwrap() / 100.0;
    assert_eq!(
        m.get("infersight_target_start_time_seconds", &t),
        Some(start)
    );

    run(first);
    let m = agent.wait_for(WAIT, "target down", |m| up(m, "svc") == Some(0.0));
    assert_eq!(getppid(&m, "svc"), Some(100.0));

    // The server restarts with a new PID and rewrites its PID file.
    let second = Workload::spawn(50, 0, 0, false);
    std::fs::write(&file, format!("{}\n", second.pid())).unwrap();
    agent.wait_for(WAIT, "target up again", |m| up(m, "svc") == Some(1.0));
    run(second);
    let m = agent.wait_for(WAIT, "second run counted", |m| {
        getppid(m, "svc") == Some(150.0)
    });
    assert_eq!(getppid(&m, "svc"), Some(150.0));
    assert!(
        agent.log_text().contains("target change"),
        "{}",
        agent.log_text()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn process_name_target_is_found_when_it_starts_and_again_after_it_exits() {
    if !bpf_or_skip("process_name_target") {
        return;
    }
    // A copy with a name of its own: the other tests run the workload at the same time.
    let exe = format!("byname-{}", std::process::id());
    let bin = workload_bin().with_file_name(&exe);
    std::fs::copy(workload_bin(), &bin).unwrap();
    let arg = format!("{exe}=byname");
    // Started before its process exists: the target is there, down.
    let agent = Agent::start(&["--process", &arg]);
    agent.wait_for(WAIT, "target down", |m| up(m, "byname") == Some(0.0));
    for (i, calls) in [(1, 30), (2, 70)] {
        let w = Workload::spawn_bin(&bin, calls, 0, 0, false);
        agent.wait_for(WAIT, &format!("process {i} found"), |m| {
            up(m, "byname") == Some(1.0)
        });
        run(w);
        agent.wait_for(WAIT, &format!("process {i} gone"), |m| {
            up(m, "byname") == Some(0.0)
        });
    }
    let m = agent.metrics();
    assert_eq!(getppid(&m, "byname"), Some(100.0));
    let _ = std::fs::remove_file(&bin);
}

#[test]
fn recreated_cgroup_is_followed() {
    if !bpf_or_skip("recreated_cgroup") {
        return;
    }
    let cg = TestCgroup::create("recreate");
    let arg = format!("{}=unit", cg.path.display());
    let agent = Agent::start(&["--cgroup", &arg]);
    let w = Workload::spawn(40, 0, 0, false);
    cg.add(w.pid());
    run(w);
    agent.wait_for(WAIT, "first run", |m| getppid(m, "unit") == Some(40.0));
    // A restarted systemd unit: the same path, a new cgroup (new id).
    std::fs::remove_dir(&cg.path).unwrap();
    std::fs::create_dir(&cg.path).unwrap();
    // The agent picks up the new id on its next tick.
    std::thread::sleep(Duration::from_millis(300));
    let w = Workload::spawn(60, 0, 0, false);
    cg.add(w.pid());
    run(w);
    let m = agent.wait_for(WAIT, "second run", |m| getppid(m, "unit") == Some(100.0));
    assert_eq!(getppid(&m, "unit"), Some(100.0));
}

#[test]
fn targets_are_added_and_removed_through_the_api() {
    if !bpf_or_skip("targets_api") {
        return;
    }
    let state = std::env::temp_dir().join(format!("infersight-tapi-{}", std::process::id()));
    let first = Workload::spawn(10, 0, 0, false);
    let mut cmd = std::process::Command::new(common::AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", "tok");
    let pid_arg = format!("{}=first", first.pid());
    let state_arg = state.display().to_string();
    let agent = Agent::start_with(cmd, &["--pid", &pid_arg, "--state-dir", &state_arg]);
    let tok = Some("tok");

    let added = Workload::spawn(250, 0, 0, false);
    let body = format!(r#"{{"pid": {}, "name": "added"}}"#, added.pid());
    // Writes need the token; the body is checked before anything changes.
    assert_eq!(agent.send("POST", "/api/v1/targets", None, &body).0, 401);
    assert_eq!(
        agent.send("POST", "/api/v1/targets", Some("x"), &body).0,
        403
    );
    let (code, err) = agent.send("POST", "/api/v1/targets", tok, r#"{"pid": 1, "port": 80}"#);
    assert_eq!(code, 400);
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("unknown field `port`"));
    let (code, err) = agent.send("POST", "/api/v1/targets", tok, "{}");
    assert_eq!(
        (code, err["error"].as_str()),
        (
            422,
            Some("give exactly one of pid, cgroup, pid_file, process")
        )
    );
    let (code, err) = agent.send("POST", "/api/v1/targets", tok, r#"{"pid": 4294967294}"#);
    assert_eq!(
        (code, err["error"].as_str()),
        (422, Some("--pid 4294967294: no such process"))
    );
    let dup = format!(r#"{{"pid": {}, "name": "first"}}"#, added.pid());
    assert_eq!(agent.send("POST", "/api/v1/targets", tok, &dup).0, 409);

    let (code, t) = agent.send("POST", "/api/v1/targets", tok, &body);
    assert_eq!(code, 201, "{t}");
    assert_eq!(
        (t["name"].as_str(), t["kind"].as_str()),
        (Some("added"), Some("pid"))
    );
    assert_eq!(t["pid"].as_u64(), Some(u64::from(added.pid())));
    run(added);
    agent.wait_for(WAIT, "the added target's calls", |m| {
        getppid(m, "added") == Some(250.0)
    });

    // A cgroup target added live: the kernel's cgroup lookup is switched on for it.
    let cg = TestCgroup::create("api");
    let cg_body = format!(r#"{{"cgroup": "{}", "name": "unit"}}"#, cg.path.display());
    assert_eq!(agent.send("POST", "/api/v1/targets", tok, &cg_body).0, 201);
    let w = Workload::spawn(30, 0, 0, false);
    cg.add(w.pid());
    run(w);
    agent.wait_for(WAIT, "the cgroup's calls", |m| {
        getppid(m, "unit") == Some(30.0)
    });

    let (_, list) = agent.send("GET", "/api/v1/targets", None, "");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "added", "unit"]);

    assert_eq!(
        agent.send("DELETE", "/api/v1/targets/added", None, "").0,
        401
    );
    let (code, gone) = agent.send("DELETE", "/api/v1/targets/added", tok, "");
    assert_eq!((code, gone["removed"].as_str()), (200, Some("added")));
    assert_eq!(
        agent.send("DELETE", "/api/v1/targets/added", tok, "").0,
        404
    );
    assert_eq!(agent.send("DELETE", "/api/v1/targets/unit", tok, "").0, 200);
    let m = agent.wait_for(WAIT, "the removed targets' series gone", |m| {
        getppid(m, "added").is_none() && up(m, "unit").is_none()
    });
    assert_eq!(up(&m, "first"), Some(1.0));
    let (_, list) = agent.send("GET", "/api/v1/targets", None, "");
    assert_eq!(list.as_array().unwrap().len(), 1);
    drop(first);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn api_target_paths_are_confined() {
    if !bpf_or_skip("api_target_paths_are_confined") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("infersight-paths-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.pid");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // A huge PID file: only its first bytes are read (it names no process: down).
    let huge = dir.join("huge.pid");
    std::fs::write(&huge, "1".repeat(8 << 20)).unwrap();
    let first = Workload::spawn(10, 0, 0, false);
    let mut cmd = std::process::Command::new(common::AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", "tok");
    let pid_arg = format!("{}=first", first.pid());
    let state_arg = dir.join("state").display().to_string();
    let agent = Agent::start_with(cmd, &["--pid", &pid_arg, "--state-dir", &state_arg]);
    let tok = Some("tok");
    let add = |body: String| agent.send("POST", "/api/v1/targets", tok, &body);
    let json = |v: &std::path::Path| serde_json::to_string(&v.display().to_string()).unwrap();
    // A FIFO would block the reader; a device file never ends; a directory is no file.
    for path in [fifo.as_path(), "/dev/zero".as_ref(), dir.as_path()] {
        let (code, e) = add(format!(r#"{{"pid_file": {}}}"#, json(path)));
        assert_eq!(code, 422, "{}: {e}", path.display());
        assert_eq!(
            e["error"],
            format!("--pid-file {}: not a regular file", path.display()),
        );
    }
    let (code, e) = add(r#"{"pid_file": "run/x.pid"}"#.into());
    assert_eq!(code, 422, "{e}");
    assert_eq!(e["error"], "pid_file: must be an absolute path");
    // Cgroups stay under the cgroup mount.
    let mount = infersight::targets::cgroup2_mount().unwrap();
    for path in [
        "/../../..".to_string(),
        format!("{}/../..", mount.display()),
        "/system.slice/../../etc".to_string(),
    ] {
        let (code, e) = add(format!(r#"{{"cgroup": {path:?}}}"#));
        assert_eq!(code, 422, "{path}: {e}");
        assert_eq!(
            e["error"],
            format!("--cgroup {path}: must be a path below the cgroup mount, without \"..\""),
        );
    }
    let (code, t) = add(format!(
        r#"{{"pid_file": {}, "name": "huge"}}"#,
        json(&huge)
    ));
    assert_eq!(code, 201, "{t}");
    agent.settle();
    let m = agent.metrics();
    assert_eq!(up(&m, "huge"), Some(0.0));
    assert_eq!(up(&m, "first"), Some(1.0));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PID target whose process exited is down for good: a later process that gets the
/// same PID is not it (its start time differs).
#[test]
fn a_pid_target_does_not_follow_a_reused_pid() {
    if !bpf_or_skip("a_pid_target_does_not_follow_a_reused_pid") {
        return;
    }
    let _turn = common::turn();
    let first = Workload::spawn(10, 0, 0, false);
    let pid = first.pid();
    let arg = format!("{pid}=victim");
    let agent = Agent::start(&["--pid", &arg]);
    agent.wait_for(WAIT, "target up", |m| up(m, "victim") == Some(1.0));
    run(first);
    agent.wait_for(WAIT, "target down", |m| up(m, "victim") == Some(0.0));
    let later = common::workload_with_pid(pid, 10);
    agent.settle();
    agent.settle();
    let m = agent.metrics();
    assert_eq!(up(&m, "victim"), Some(0.0));
    assert_eq!(
        m.get("infersight_target_processes", &[("target", "victim")]),
        Some(0.0)
    );
    drop(later);
}

/// A PID file that still names a process that exited, whose PID a later process got, is
/// not followed to that process (it started after the file was written); neither is one
/// naming PID 1 (what a container writes for its own namespace's PID 1).
#[test]
fn a_stale_pid_file_is_not_followed_to_a_later_process() {
    if !bpf_or_skip("a_stale_pid_file_is_not_followed") {
        return;
    }
    let _turn = common::turn();
    let dir = std::env::temp_dir().join(format!("infersight-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("svc.pid");
    let init = dir.join("init.pid");
    std::fs::write(&init, "1\n").unwrap();
    let first = Workload::spawn(10, 0, 0, false);
    let pid = first.pid();
    std::fs::write(&file, format!("{pid}\n")).unwrap();
    let arg = format!("{}=svc", file.display());
    let arg_init = format!("{}=init", init.display());
    let agent = Agent::start(&["--pid-file", &arg, "--pid-file", &arg_init]);
    agent.wait_for(WAIT, "target up", |m| up(m, "svc") == Some(1.0));
    run(first);
    agent.wait_for(WAIT, "target down", |m| up(m, "svc") == Some(0.0));
    // The file is left as it was; a later process gets the PID and makes calls.
    std::thread::sleep(Duration::from_millis(1100));
    let later = common::workload_with_pid(pid, 50);
    agent.settle();
    agent.settle();
    run(later);
    agent.settle();
    let m = agent.metrics();
    assert_eq!(up(&m, "svc"), Some(0.0));
    assert_eq!(getppid(&m, "svc"), Some(10.0));
    assert_eq!(up(&m, "init"), Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}
