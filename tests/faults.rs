//! Fault injection around the state directory. Its disk fills up (a small tmpfs) while the
//! agent writes its history: the fault shows in `/health` and the metrics, `/metrics` keeps
//! answering, and history resumes once there is room. The agent is killed with SIGKILL in
//! the middle of its history writes, five times: every committed tick is there after each
//! restart and no database is found corrupt. The agent is stopped (SIGSTOP) while its
//! target serves 20 000 requests: the ring buffer overfills and every request is either
//! counted or counted as dropped, exactly. tracefs is unmounted under the agent (in a
//! mount namespace of its own, so other tests keep theirs): as root it mounts it again;
//! without the right to, the tracepoint programs say why and syscall tracing goes on.
mod common;

use std::{io::Write, path::PathBuf, process::Command, time::Duration};

use common::{health_entry, Agent, Metrics, Workload};

const WAIT: Duration = Duration::from_secs(15);

/// A 2 MiB tmpfs, unmounted on drop.
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn history_up(m: &Metrics) -> Option<f64> {
    m.get("infersight_collector_up", &[("collector", "history")])
}

#[test]
fn a_full_state_disk_is_reported_and_history_resumes_when_there_is_room() {
    let dir = std::env::temp_dir().join(format!("infersight-fulldisk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("INFERSIGHT_REQUIRE_BPF").is_none(),
            "cannot mount a tmpfs (needs root)"
        );
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    let disk = SmallDisk(dir.clone());
    let st = disk.0.join("state").display().to_string();
    let agent = Agent::start(&["--state-dir", &st, "--no-host"]);
    agent.wait_for(WAIT, "history active", |m| history_up(m) == Some(1.0));

    // Fill the disk.
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    drop(f);

    let m = agent.wait_for(WAIT, "history failing", |m| history_up(m) == Some(0.0));
    let lost = m
        .get(
            "infersight_history_dropped_ticks_total",
            &[("reason", "write_failed")],
        )
        .unwrap();
    assert!(lost >= 1.0, "{lost}");
    let (code, health) = agent.health();
    assert_eq!(code, 503, "{health}");
    let h = health_entry(&health, "collectors", "history");
    assert_eq!(h["state"], "failed");
    assert!(
        h["reason"].as_str().unwrap().contains("full"),
        "{}",
        h["reason"]
    );
    // The rest of the agent goes on.
    for _ in 0..3 {
        let (code, body) = agent.get("/metrics");
        assert_eq!(code, 200);
        assert!(body.contains("infersight_collector_up{collector=\"syscalls\"} 1"));
    }

    std::fs::remove_file(&filler).unwrap();
    agent.wait_for(WAIT, "history back", |m| history_up(m) == Some(1.0));
    drop(agent);
}

/// Points of `cpu_usage_percent` the agent's history holds since `from`.
fn history_points(agent: &Agent, from: u64) -> usize {
    let (code, body) = agent.get(&format!(
        "/api/v1/history?metric=cpu_usage_percent&from={from}&step=1"
    ));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["points"].as_array().map_or(0, Vec::len)
}

#[test]
fn kill_9_during_history_writes_loses_nothing_committed_and_corrupts_nothing() {
    let dir = std::env::temp_dir().join(format!("infersight-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let st = dir.display().to_string();
    let from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut before = 0;
    for round in 0..5u64 {
        let mut agent = Agent::start(&["--state-dir", &st]);
        // What the previous runs committed is all there, and the file opened cleanly.
        let m = agent.wait_for(WAIT, "history active", |m| history_up(m) == Some(1.0));
        assert_eq!(history_up(&m), Some(1.0));
        let now = history_points(&agent, from);
        assert!(
            now >= before,
            "round {round}: {now} points, {before} before the kill"
        );
        // 100 ms ticks: one write transaction every tick; the kill lands at varied points.
        std::thread::sleep(Duration::from_millis(1100 + 70 * round));
        before = history_points(&agent, from);
        assert!(before > now, "round {round}: no new points");
        agent.child.kill().unwrap(); // SIGKILL
        let _ = agent.child.wait();
    }
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
        .count();
    assert_eq!(aside, 0, "a database was moved aside as corrupt");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests the agent counted for target `py`, plus the events it dropped.
fn counted_and_dropped(m: &Metrics) -> (f64, f64) {
    let counted: f64 = m
        .matching(
            "http_server_request_duration_seconds_count",
            &[("target", "py")],
        )
        .iter()
        .map(|(_, v)| v)
        .sum();
    (
        counted,
        m.get("infersight_ringbuf_dropped_events_total", &[])
            .unwrap_or(0.0),
    )
}

#[test]
fn an_overfilled_ring_buffer_counts_every_drop_exactly() {
    if !common::bpf_or_skip("ringbuf_overfill") {
        return;
    }
    let server = common::PyServer::start();
    let state = std::env::temp_dir().join(format!("infersight-ringfill-{}", std::process::id()));
    let (pid, st) = (format!("{}=py", server.pid()), state.display().to_string());
    let agent = Agent::start(&["--pid", &pid, "--state-dir", &st, "--no-host"]);
    agent.settle();
    // Stop the agent: the kernel keeps tracing, nobody drains the 2 MiB ring, so after
    // some thousands of requests the rest are dropped (and counted in the kernel).
    let agent_pid = agent.child.id() as i32;
    // SAFETY: kill(2) with a child's PID and a valid signal number.
    assert_eq!(unsafe { libc::kill(agent_pid, libc::SIGSTOP) }, 0);
    let per_client = 5000;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut c = common::Client::connect(port);
                for _ in 0..per_client {
                    assert_eq!(c.get("/sleep/0").status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(agent_pid, libc::SIGCONT) }, 0);
    let sent = f64::from(4 * per_client);
    let m = agent.wait_for(WAIT, "every request counted or dropped", |m| {
        let (c, d) = counted_and_dropped(m);
        c + d >= sent
    });
    let (counted, dropped) = counted_and_dropped(&m);
    eprintln!("{sent} requests: {counted} counted, {dropped} dropped");
    assert!(dropped > 0.0, "the ring never filled: {counted} counted");
    assert_eq!(
        counted + dropped,
        sent,
        "{counted} counted + {dropped} dropped"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&state);
}

const TRACEFS: &str = "/sys/kernel/tracing";

#[test]
fn unmounted_tracefs_is_mounted_again_or_reported() {
    if !common::bpf_or_skip("unmounted_tracefs_is_mounted_again_or_reported") {
        return;
    }
    // (drop CAP_SYS_ADMIN, the tracepoint programs attach)
    for (unprivileged, classic_attached) in [(false, true), (true, false)] {
        let mut traced = Workload::spawn(500, 0, 0, false);
        let setpriv = if unprivileged {
            "setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin"
        } else {
            ""
        };
        // A private mount namespace: the unmount is the agent's alone.
        let script = format!(
            "umount -l {TRACEFS} 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
             if mountpoint -q {TRACEFS}; then exit 99; fi; exec {setpriv} \"$0\" \"$@\""
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(common::AGENT);
        let target = format!("{}=loop", traced.pid());
        let agent = Agent::start_with(cmd, &["--pid", &target, "--no-host"]);
        traced.release();
        traced.finish(WAIT);
        agent.settle();
        let m = agent.metrics();
        assert_eq!(
            m.get(
                "infersight_syscalls_total",
                &[("target", "loop"), ("syscall", "getppid")]
            ),
            Some(500.0),
            "unprivileged: {unprivileged}"
        );
        let attached = |p: &str| m.get("infersight_ebpf_program_attached", &[("program", p)]);
        assert_eq!(attached("sys_enter"), Some(1.0));
        assert_eq!(attached("sys_exit"), Some(1.0));
        let (code, health) = agent.health();
        let program = |name: &str| health_entry(&health, "programs", name);
        for p in ["task_newtask", "sched_process_exit", "sched_switch"] {
            assert_eq!(
                attached(p),
                Some(f64::from(u8::from(classic_attached))),
                "{p}"
            );
            if classic_attached {
                assert_eq!(program(p)["state"], "active", "{p}: {health}");
            } else {
                assert_eq!(program(p)["state"], "failed", "{p}: {health}");
                assert_eq!(
                    program(p)["reason"],
                    "cannot mount tracefs at /sys/kernel/tracing: Operation not permitted (os error 1)",
                    "{p}"
                );
            }
        }
        assert_eq!(code, if classic_attached { 200 } else { 503 }, "{health}");
    }
}
