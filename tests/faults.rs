//! Fault injection around the state directory. Its disk fills up (a small tmpfs) while the
//! agent writes its history: the fault shows in `/health` and the metrics, `/metrics` keeps
//! answering, and history resumes once there is room. The agent is killed with SIGKILL in
//! the middle of its history writes, five times: every committed tick is there after each
//! restart and no database is found corrupt.
mod common;

use std::{io::Write, path::PathBuf, process::Command, time::Duration};

use common::{Agent, Metrics};

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
    let (code, health) = agent.get("/health");
    assert_eq!(code, 503, "{health}");
    let v: serde_json::Value = serde_json::from_str(&health).unwrap();
    let h = v["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "history")
        .unwrap();
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
