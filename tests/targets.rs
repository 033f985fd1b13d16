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
