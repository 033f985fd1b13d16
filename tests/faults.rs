//! Fault injection: the state directory's disk fills up (a small tmpfs) while the agent
//! writes its history. The fault shows in `/health` and the metrics, `/metrics` keeps
//! answering, and history resumes once there is room again.
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
