//! Hot reload: SIGHUP and `POST /api/v1/reload` read the config and rules again. A new
//! threshold takes effect and alert state survives; a broken file is refused, shown in
//! `/health` and metrics, and the old configuration stays; targets follow the file.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use common::{Agent, Metrics};

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    dir: PathBuf,
    sleepers: Vec<Child>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for s in &mut self.sleepers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(dir: &Path, extra: &str) -> String {
    format!(
        "[api]\ntoken = \"tok\"\n\n[alerting]\nrules_file = \"rules.toml\"\n\n\
         [[targets.pid_file]]\npath = \"{}\"\nname = \"svc\"\n{extra}",
        dir.join("svc.pid").display()
    )
}

fn rules(threshold_expr: Option<&str>) -> String {
    let mut r = String::from(
        "[[rule]]\nname = \"Steady\"\nexpr = \"target_up == 1\"\nseverity = \"warning\"\n",
    );
    if let Some(e) = threshold_expr {
        r += &format!("\n[[rule]]\nname = \"Threshold\"\nexpr = \"{e}\"\nseverity = \"warning\"\n");
    }
    r
}

fn firing(m: &Metrics, rule: &str) -> bool {
    !m.matching(
        "ALERTS",
        &[
            ("alertname", rule),
            ("alertstate", "firing"),
            ("target", "svc"),
        ],
    )
    .is_empty()
}

fn reloaded_ok(m: &Metrics) -> Option<f64> {
    m.get("infersight_config_last_reload_successful", &[])
}

fn hup(agent: &Agent) {
    // SAFETY: kill(2) with a child's PID and a valid signal number.
    let rc = unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0);
}

fn steady_since(agent: &Agent) -> f64 {
    let (_, alerts) = agent.send("GET", "/api/v1/alerts", None, "");
    alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "Steady" && a["labels"]["target"] == "svc")
        .expect("the Steady alert of svc")["active_since"]
        .as_f64()
        .unwrap()
}

#[test]
fn reload_changes_rules_and_targets_keeps_alert_state_and_refuses_broken_files() {
    let dir = std::env::temp_dir().join(format!("infersight-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let s = Setup {
        dir: dir.clone(),
        sleepers: vec![
            Command::new("sleep").arg("60").spawn().unwrap(),
            Command::new("sleep").arg("60").spawn().unwrap(),
        ],
    };
    std::fs::write(dir.join("svc.pid"), format!("{}\n", s.sleepers[0].id())).unwrap();
    let conf = dir.join("infersight.toml");
    std::fs::write(&conf, config(&dir, "")).unwrap();
    let rules_file = dir.join("rules.toml");
    std::fs::write(&rules_file, rules(Some("target_up > 1"))).unwrap();
    let state = dir.join("state").display().to_string();
    let conf_arg = conf.display().to_string();
    let agent = Agent::start(&["--config", &conf_arg, "--state-dir", &state, "--no-host"]);

    let m = agent.wait_for(WAIT, "Steady firing", |m| firing(m, "Steady"));
    assert!(!firing(&m, "Threshold"));
    assert_eq!(reloaded_ok(&m), Some(1.0));
    let since = steady_since(&agent);

    // A new threshold through SIGHUP: the rule fires under it; Steady keeps its state.
    std::fs::write(&rules_file, rules(Some("target_up > 0"))).unwrap();
    hup(&agent);
    agent.wait_for(WAIT, "Threshold firing", |m| firing(m, "Threshold"));
    assert_eq!(steady_since(&agent), since);

    // A broken rule: refused, with the line and field; the old rules stay in force.
    std::fs::write(&rules_file, rules(Some("target_up >"))).unwrap();
    assert_eq!(agent.send("POST", "/api/v1/reload", None, "").0, 401);
    let (code, body) = agent.send("POST", "/api/v1/reload", Some("tok"), "");
    assert_eq!(code, 422, "{body}");
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.starts_with(&format!(
            "{}: line 6: rule \"Threshold\": expr:",
            rules_file.display()
        )),
        "{err}"
    );
    // Seen from the next tick on.
    let m = agent.wait_for(WAIT, "the refused reload", |m| reloaded_ok(m) == Some(0.0));
    assert!(firing(&m, "Threshold") && firing(&m, "Steady"));
    let (code, health) = agent.health();
    assert_eq!(code, 503, "{health}");
    let config_health = common::health_entry(&health, "collectors", "config");
    assert_eq!(config_health["state"], "failed");
    assert!(config_health["reason"]
        .as_str()
        .unwrap()
        .contains("rule \"Threshold\": expr:"));

    // Fixed: the Threshold rule is gone, a second target comes in from the file.
    std::fs::write(&rules_file, rules(None)).unwrap();
    let second = format!(
        "\n[[targets.pid]]\npid = {}\nname = \"second\"\n",
        s.sleepers[1].id()
    );
    std::fs::write(&conf, config(&dir, &second)).unwrap();
    let (code, body) = agent.send("POST", "/api/v1/reload", Some("tok"), "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rules"], 1);
    assert_eq!(body["targets_added"], 1);
    let m = agent.wait_for(WAIT, "Threshold gone, second target up", |m| {
        !firing(m, "Threshold")
            && m.get("infersight_target_up", &[("target", "second")]) == Some(1.0)
    });
    assert_eq!(reloaded_ok(&m), Some(1.0));
    assert!(firing(&m, "Steady"));
    assert_eq!(steady_since(&agent), since);

    // A config file that does not parse: refused, everything stays.
    std::fs::write(&conf, "[agent]\ntick = 5\n").unwrap();
    hup(&agent);
    let m = agent.wait_for(WAIT, "the refused reload", |m| reloaded_ok(m) == Some(0.0));
    assert_eq!(
        m.get("infersight_target_up", &[("target", "second")]),
        Some(1.0)
    );
    assert!(firing(&m, "Steady"));
    let log = agent.log_text();
    assert!(
        log.contains("reload refused, the old configuration stays:"),
        "{log}"
    );
    drop(agent);
    drop(s);
}

/// The systemd notification protocol on a real datagram socket: READY=1 once serving,
/// WATCHDOG=1 from the tick loop, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1.
#[test]
fn systemd_notify_ready_watchdog_reload_and_stop() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("infersight-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // systemd sets WATCHDOG_PID to the service's PID: the shell's, which execs the agent.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", common::AGENT])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000");
    let state = dir.join("state").display().to_string();
    let mut agent = Agent::start_with(cmd, &["--state-dir", &state, "--no-host"]);
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("a notification within 10 s: {e}"));
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    };
    assert_eq!(next(), "READY=1");
    // 100 ms ticks, pings every 200 ms at most.
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    hup(&agent);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = next();
        if m != "WATCHDOG=1" {
            seen.push(m);
        }
    }
    assert_eq!(seen, ["RELOADING=1", "READY=1"]);
    // SAFETY: kill(2) with a child's PID and a valid signal number.
    assert_eq!(
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) },
        0
    );
    loop {
        let m = next();
        if m != "WATCHDOG=1" {
            assert_eq!(m, "STOPPING=1");
            break;
        }
    }
    let _ = agent.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
