//! Alerting end to end with real peers: an HTTP receiver standing in for Slack and a
//! webhook (500 three times, then 200), a real SMTP server (aiosmtpd) that is down when
//! the alert fires, peers that hang (one slow channel must not delay another), a real
//! Alertmanager that starts after the alert fired, and a kill -9 with notifications
//! undelivered.
//!
//! The rule: `target_up == 0` on a PID-file target whose file names no live process, so
//! it fires at once; writing a live PID into the file resolves it.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{
    email_section, free_port, health_entry, http_get, mails, smtpd, wait_mails, Agent, Metrics,
};

const RULES: &str = r#"
[[rule]]
name = "SvcDown"
expr = "target_up == 0"
severity = "critical"
channels = CHANNELS
labels = { team = "infer" }
[rule.annotations]
summary = "{{ $labels.target }} is down"
"#;

/// A temporary directory with the agent's config, rules, PID file and state.
struct Setup {
    dir: PathBuf,
}

impl Setup {
    fn new(tag: &str, channels: &str, sections: &str) -> Setup {
        let dir =
            std::env::temp_dir().join(format!("infersight-alert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rules.toml"), RULES.replace("CHANNELS", channels)).unwrap();
        std::fs::write(
            dir.join("infersight.toml"),
            format!("[alerting]\nrules_file = \"rules.toml\"\n\n{sections}"),
        )
        .unwrap();
        // No such process: the target is down from the start.
        std::fs::write(dir.join("svc.pid"), "999999999\n").unwrap();
        Setup { dir }
    }

    fn agent(&self) -> Agent {
        let config = self.dir.join("infersight.toml");
        let state = self.dir.join("state");
        let pid = format!("{}=svc", self.dir.join("svc.pid").display());
        Agent::start(&[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--pid-file",
            &pid,
            "--no-host",
        ])
    }

    /// Point the PID file at a live process: the alert resolves.
    fn bring_up(&self, pid: u32) {
        std::fs::write(self.dir.join("svc.pid"), format!("{pid}\n")).unwrap();
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP server recording each POST body, answering with scripted statuses (the last
/// one repeats); status 0 holds the connection open and never answers (a hanging peer).
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<(u16, serde_json::Value)>>>,
}

impl Receiver {
    fn start(statuses: Vec<u16>) -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), statuses)
    }

    fn on(listener: TcpListener, statuses: Vec<u16>) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let bodies: Arc<Mutex<Vec<(u16, serde_json::Value)>>> = Arc::default();
        let seen = bodies.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut all = seen.lock().unwrap();
                let status = *statuses.get(all.len()).or(statuses.last()).unwrap();
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                all.push((status, json));
                drop(all);
                if status == 0 {
                    held.push(s);
                    continue;
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Receiver { port, bodies }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn got(&self) -> Vec<(u16, serde_json::Value)> {
        self.bodies.lock().unwrap().clone()
    }

    /// Wait until `n` requests arrived.
    fn wait(&self, n: usize, limit: Duration) -> Vec<(u16, serde_json::Value)> {
        let start = Instant::now();
        while self.got().len() < n {
            assert!(
                start.elapsed() < limit,
                "{} of {n} requests: {:?}",
                self.got().len(),
                self.got()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.got()
    }
}

fn sleeper() -> Child {
    Command::new("sleep").arg("600").spawn().unwrap()
}

fn notifications(m: &Metrics, channel: &str, result: &str) -> f64 {
    m.get(
        "infersight_notifications_total",
        &[("channel", channel), ("result", result)],
    )
    .unwrap_or(0.0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn webhook_and_slack_get_firing_and_resolved_with_retries() {
    let webhook = Receiver::start(vec![500, 500, 500, 200]);
    let slack = Receiver::start(vec![200]);
    let s = Setup::new(
        "http",
        r#"["webhook", "slack"]"#,
        &format!(
            "[channels.webhook]\nurl = \"{}\"\n[channels.slack]\nwebhook_url = \"{}\"\n",
            webhook.url(),
            slack.url()
        ),
    );
    let agent = s.agent();
    let got = webhook.wait(4, Duration::from_secs(30));
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![500, 500, 500, 200]
    );
    let body = &got[3].1;
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "webhook");
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "SvcDown");
    assert_eq!(alert["labels"]["target"], "svc");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["team"], "infer");
    assert_eq!(alert["annotations"]["summary"], "svc is down");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    // The four attempts carried the same alert.
    assert!(got
        .iter()
        .all(|g| g.1["alerts"][0]["startsAt"] == alert["startsAt"]));

    let sl = slack.wait(1, Duration::from_secs(10));
    let title = format!("[FIRING:1] SvcDown {}", hostname());
    assert_eq!(sl[0].1["text"], title.as_str());
    assert_eq!(sl[0].1["attachments"][0]["color"], "#d00000");
    assert!(sl[0].1["attachments"][0]["text"]
        .as_str()
        .unwrap()
        .contains("svc is down"));

    // Marked delivered once the answer is read; the next snapshot shows it.
    let m = agent.wait_for(Duration::from_secs(5), "deliveries counted", |m| {
        notifications(m, "webhook", "delivered") == 1.0
            && notifications(m, "slack", "delivered") == 1.0
    });
    assert_eq!(notifications(&m, "webhook", "failed"), 3.0);
    assert_eq!(notifications(&m, "webhook", "delivered"), 1.0);
    assert_eq!(notifications(&m, "slack", "delivered"), 1.0);
    let firing = m.matching(
        "ALERTS",
        &[("alertname", "SvcDown"), ("alertstate", "firing")],
    );
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].0["target"], "svc");

    let mut up = sleeper();
    s.bring_up(up.id());
    let got = webhook.wait(5, Duration::from_secs(10));
    assert_eq!(got[4].1["status"], "resolved");
    assert_ne!(got[4].1["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let sl = slack.wait(2, Duration::from_secs(10));
    assert_eq!(sl[1].1["attachments"][0]["color"], "#2eb886");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(webhook.got().len(), 5, "no extra deliveries");
    let m = agent.wait_for(Duration::from_secs(5), "outbox empty", |m| {
        m.get("infersight_notification_outbox_depth", &[]) == Some(0.0)
    });
    assert!(m.matching("ALERTS", &[("alertname", "SvcDown")]).is_empty());
    assert_eq!(
        m.get("infersight_notification_outbox_depth", &[]),
        Some(0.0)
    );
    let _ = up.kill();
    let _ = up.wait();
}

/// The `notifications` collector in /health: (HTTP status, state, reason).
fn notify_health(agent: &Agent) -> (u16, String, String) {
    let (code, v) = agent.health();
    let c = health_entry(&v, "collectors", "notifications");
    (
        code,
        c["state"].as_str().unwrap_or("").to_string(),
        c["reason"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn hanging_receivers_delay_only_their_own_channel() {
    // The webhook hangs on its first attempt, then answers 500 twice, then 200; the mail
    // server accepts a connection and never greets. Each holds an attempt for the whole
    // 15 s timeout; Slack must not wait behind them.
    let webhook = Receiver::start(vec![0, 500, 500, 200]);
    let slack = Receiver::start(vec![200]);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    // One connection, held; the listener closes once it is taken.
    std::thread::spawn(move || {
        if let Ok((c, _)) = silent.accept() {
            let _ = tx.send(c);
        }
    });
    let s = Setup::new(
        "slow",
        r#"["email", "slack", "webhook"]"#,
        &format!(
            "{}[channels.webhook]\nurl = \"{}\"\n[channels.slack]\nwebhook_url = \"{}\"\n",
            email_section(port),
            webhook.url(),
            slack.url()
        ),
    );
    let start = Instant::now();
    let agent = s.agent();
    let sl = slack.wait(1, Duration::from_secs(10));
    let slack_after = start.elapsed();
    assert_eq!(
        sl[0].1["text"],
        format!("[FIRING:1] SvcDown {}", hostname()).as_str()
    );
    let held = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the agent connects to the mail server");
    assert_eq!(webhook.got().len(), 1, "the webhook's first attempt hangs");
    assert!(
        slack_after < Duration::from_secs(10),
        "Slack waited {slack_after:?} behind the hanging channels"
    );
    // Scrapes answer while two deliveries hang.
    let t = Instant::now();
    assert_eq!(agent.get("/metrics").0, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // The mail server comes up on the same port (the silent listener is closed).
    let maildir = s.dir.join("maildir");
    let mut smtpd = smtpd(port, &maildir);

    // Once the hanging attempt times out, /health names the webhook until it delivers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (code, reason) = loop {
        let (code, state, reason) = notify_health(&agent);
        if state == "failed" && reason.contains("webhook: POST") {
            break (code, reason);
        }
        assert!(Instant::now() < deadline, "never failing: {state} {reason}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 503, "{reason}");
    assert!(
        reason.contains("no answer in 15s") || reason.contains("HTTP 500"),
        "{reason}"
    );
    let m = agent.metrics();
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "notifications")]),
        Some(0.0)
    );

    // Everything arrives in the end, each exactly once.
    let got = webhook.wait(4, Duration::from_secs(40));
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![0, 500, 500, 200]
    );
    assert!(got.iter().all(|g| g.1["status"] == "firing"));
    wait_mails(&maildir, 1, Duration::from_secs(40), &agent);
    let m = agent.wait_for(Duration::from_secs(10), "all delivered", |m| {
        m.get("infersight_collector_up", &[("collector", "notifications")]) == Some(1.0)
            && m.get("infersight_notification_outbox_depth", &[]) == Some(0.0)
    });
    assert_eq!(notifications(&m, "slack", "delivered"), 1.0);
    assert_eq!(notifications(&m, "webhook", "failed"), 3.0);
    assert_eq!(notifications(&m, "webhook", "delivered"), 1.0);
    assert_eq!(notifications(&m, "email", "delivered"), 1.0);
    assert!(notifications(&m, "email", "failed") >= 1.0);
    assert_eq!(notify_health(&agent).1, "active");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(mails(&maildir).len(), 1);
    assert_eq!(slack.got().len(), 1);
    assert_eq!(webhook.got().len(), 4);
    drop(held);
    let _ = smtpd.kill();
    let _ = smtpd.wait();
}

#[test]
fn email_arrives_once_after_the_smtp_server_comes_up_late() {
    let port = free_port();
    let s = Setup::new("smtp", r#"["email"]"#, &email_section(port));
    let agent = s.agent();
    // The mail server is down when the alert fires.
    agent.wait_for(Duration::from_secs(10), "a failed delivery", |m| {
        notifications(m, "email", "failed") >= 1.0
    });
    std::thread::sleep(Duration::from_secs(10));
    let maildir = s.dir.join("maildir");
    let mut smtpd = smtpd(port, &maildir);
    let mail = &wait_mails(&maildir, 1, Duration::from_secs(40), &agent)[0];
    let host = hostname();
    assert!(
        mail.contains(&format!("Subject: [FIRING:1] SvcDown {host}")),
        "{mail}"
    );
    assert!(mail.contains("From: infersight@test.local"), "{mail}");
    assert!(
        mail.contains("To: oncall@test.local, lead@test.local"),
        "{mail}"
    );
    assert!(mail.contains("svc is down"), "{mail}");
    assert!(mail.contains("Content-Type: text/html"), "{mail}");

    let mut up = sleeper();
    s.bring_up(up.id());
    wait_mails(&maildir, 2, Duration::from_secs(20), &agent);
    std::thread::sleep(Duration::from_secs(1));
    let all = mails(&maildir);
    assert_eq!(all.len(), 2, "exactly one firing and one resolved mail");
    assert!(all
        .iter()
        .any(|m| m.contains(&format!("Subject: [RESOLVED:1] SvcDown {host}"))));
    let m = agent.wait_for(Duration::from_secs(5), "deliveries counted", |m| {
        notifications(m, "email", "delivered") == 2.0
    });
    assert_eq!(notifications(&m, "email", "delivered"), 2.0);
    let _ = smtpd.kill();
    let _ = smtpd.wait();
    let _ = up.kill();
    let _ = up.wait();
}

#[test]
fn alertmanager_receives_the_alert_and_its_resolution_after_being_down() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("infersight-am-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let s = Setup::new(
        "am",
        r#"["alertmanager"]"#,
        &format!("[channels.alertmanager]\nurl = \"http://127.0.0.1:{port}\"\n"),
    );
    // Alertmanager is down when the alert fires: the failure shows, the agent keeps going.
    let agent = s.agent();
    agent.wait_for(Duration::from_secs(10), "a failed delivery", |m| {
        notifications(m, "alertmanager", "failed") >= 1.0
            && m.get("infersight_collector_up", &[("collector", "notifications")]) == Some(0.0)
    });
    let (code, state, reason) = notify_health(&agent);
    assert_eq!((code, state.as_str()), (503, "failed"), "{reason}");
    // The URL shows as scheme, host and port (a path or query may hold a secret).
    assert!(
        reason.contains(&format!("alertmanager: POST http://127.0.0.1:{port}: ")),
        "{reason}"
    );
    let mut am = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (the test command installs it)");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() || http_get(addr, "/-/ready").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Alertmanager did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ours = || -> Vec<serde_json::Value> {
        let (status, body) = http_get(addr, "/api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == "SvcDown")
            .cloned()
            .collect()
    };
    let start = Instant::now();
    while ours().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "alert not in Alertmanager"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let a = &ours()[0];
    assert_eq!(a["labels"]["target"], "svc");
    // This host, so one rule firing on many hosts stays many alerts.
    assert_eq!(
        a["labels"]["instance"].as_str(),
        Some(
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
        )
    );
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["team"], "infer");
    assert_eq!(a["annotations"]["summary"], "svc is down");
    assert_eq!(a["status"]["state"], "active");

    let mut up = sleeper();
    s.bring_up(up.id());
    let start = Instant::now();
    while !ours().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "alert did not resolve: {:?}",
            ours()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(notify_health(&agent).1, "active");
    let _ = up.kill();
    let _ = up.wait();
    let _ = am.kill();
    let _ = am.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn undelivered_notifications_survive_kill_9() {
    // The receiver's port is reserved but nobody answers yet.
    let port = free_port();
    let s = Setup::new(
        "restart",
        r#"["webhook"]"#,
        &format!("[channels.webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\n"),
    );
    let mut agent = s.agent();
    agent.wait_for(Duration::from_secs(10), "a failed delivery", |m| {
        notifications(m, "webhook", "failed") >= 1.0
            && m.get("infersight_notification_outbox_depth", &[]) == Some(1.0)
    });
    agent.child.kill().unwrap(); // SIGKILL
    let _ = agent.child.wait();

    let receiver = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), vec![200]);
    let agent = s.agent();
    let got = receiver.wait(1, Duration::from_secs(15));
    assert_eq!(got[0].1["alerts"][0]["labels"]["alertname"], "SvcDown");
    // The restored alert state knows it was already announced: no second firing message.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.got().len(), 1, "{:?}", receiver.got());
    let m = agent.metrics();
    assert_eq!(notifications(&m, "webhook", "delivered"), 1.0);
    assert_eq!(
        m.get("infersight_notification_outbox_depth", &[]),
        Some(0.0)
    );
    let firing = m.matching(
        "ALERTS",
        &[("alertname", "SvcDown"), ("alertstate", "firing")],
    );
    assert_eq!(firing.len(), 1);
}

#[test]
fn one_alerts_messages_are_delivered_in_order() {
    // The firing message fails once and waits for its retry (at least 1 s of backoff);
    // the alert resolves meanwhile. The resolve must not overtake the firing message.
    let webhook = Receiver::start(vec![500, 200]);
    let s = Setup::new(
        "order",
        r#"["webhook"]"#,
        &format!("[channels.webhook]\nurl = \"{}\"\n", webhook.url()),
    );
    let agent = s.agent();
    webhook.wait(1, Duration::from_secs(10));
    let mut up = sleeper();
    s.bring_up(up.id());
    let got = webhook.wait(3, Duration::from_secs(20));
    let seen: Vec<(u16, String)> = got
        .iter()
        .map(|(code, body)| (*code, body["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        seen,
        [
            (500, "firing".to_string()),
            (200, "firing".to_string()),
            (200, "resolved".to_string())
        ]
    );
    agent.wait_for(Duration::from_secs(5), "outbox empty", |m| {
        m.get("infersight_notification_outbox_depth", &[]) == Some(0.0)
    });
    let _ = up.kill();
    let _ = up.wait();
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

#[test]
fn planted_secrets_never_appear_on_any_endpoint_log_or_state_file() {
    // Every channel fails: receivers answer 500, the mail and push servers are down.
    let slack = Receiver::start(vec![500]);
    let webhook = Receiver::start(vec![500]);
    let am = Receiver::start(vec![500]);
    let (smtp, push) = (free_port(), free_port());
    let slack_url = format!(
        "http://127.0.0.1:{}/services/T0SECRET/B0SECRET/SlackPathSecret123",
        slack.port
    );
    let s = Setup::new(
        "secrets",
        r#"["slack", "webhook", "alertmanager", "email"]"#,
        &format!(
            "[channels.slack]\nwebhook_url = \"{slack_url}\"\n\
             [channels.webhook]\nurl = \"http://hookuser:WebhookPassSecret@127.0.0.1:{}/hook?token=WebhookQuerySecret\"\n\
             [channels.alertmanager]\nurl = \"http://amuser:AmPassSecret@127.0.0.1:{}/?am_token=AmQuerySecret\"\n\
             {}username = \"mailer\"\n\
             [push]\nurl = \"ws://pushuser:PushPassSecret@127.0.0.1:{push}/ingest?token=PushQuerySecret\"\n",
            webhook.port,
            am.port,
            email_section(smtp),
        ),
    );
    let config = s.dir.join("infersight.toml");
    let state = s.dir.join("state");
    let pid = format!("{}=svc", s.dir.join("svc.pid").display());
    let mut cmd = Command::new(common::AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", "ApiTokenSecret")
        .env("INFERSIGHT_SMTP_PASSWORD", "SmtpPassSecret");
    let agent = Agent::start_with(
        cmd,
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--pid-file",
            &pid,
            "--no-host",
        ],
    );
    // Each channel has failed (its error is in /health and the outbox), the push client
    // has failed to connect.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, reason) = notify_health(&agent);
        let all = ["slack:", "webhook:", "alertmanager:", "email:"]
            .iter()
            .all(|c| reason.contains(c));
        if all && agent.log_text().contains("push: cannot connect") {
            assert!(
                reason.contains(&format!("slack: POST http://127.0.0.1:{}:", slack.port)),
                "{reason}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{reason}\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let secrets = [
        "T0SECRET",
        "B0SECRET",
        "SlackPathSecret123",
        "hookuser",
        "WebhookPassSecret",
        "WebhookQuerySecret",
        "AmPassSecret",
        "AmQuerySecret",
        "SmtpPassSecret",
        "pushuser",
        "PushPassSecret",
        "PushQuerySecret",
        "ApiTokenSecret",
    ];
    let check = |what: &str, text: &[u8]| {
        let text = String::from_utf8_lossy(text);
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    };
    let mut seen = 0;
    for path in [
        "/",
        "/health",
        "/metrics",
        "/api/v1/snapshot",
        "/api/v1/alerts",
        "/api/v1/alerts/history",
        "/api/v1/rules",
        "/api/v1/targets",
        "/api/v1/history?metric=target_up",
    ] {
        let (code, body) = agent.get(path);
        assert!(code == 200 || code == 503, "{path}: {code}");
        check(path, body.as_bytes());
        seen += body.len();
    }
    assert!(seen > 1000);
    // The live stream: a snapshot and the alert event (the stream starts with the next
    // tick, so bring the target up and down again for events).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let messages = rt.block_on(async {
        use futures_util::StreamExt;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", agent.addr))
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                got.push(t.as_str().to_string());
            }
        }
        got
    });
    for m in &messages {
        check("/ws", m.as_bytes());
    }
    assert!(messages[0].contains("notifications"), "{}", messages[0]);
    check("the agent's log", agent.log_text().as_bytes());
    // The outbox's last_error is written by now; and the history database.
    drop(agent);
    let files = files_under(&state);
    assert!(files.iter().any(|(p, _)| p.ends_with("infersight.db")));
    assert!(files.iter().any(|(p, _)| p.ends_with("history.db")));
    for (p, bytes) in &files {
        check(&p.display().to_string(), bytes);
    }
    let db = rusqlite::Connection::open(state.join("infersight.db")).unwrap();
    let errors: Vec<String> = db
        .prepare(
            "SELECT DISTINCT channel || ': ' || last_error FROM outbox
             WHERE last_error IS NOT NULL AND last_error NOT LIKE 'superseded%' ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("alertmanager: POST http://127.0.0.1:{}:", am.port)),
        "{errors:?}"
    );
}

/// A rule function through the running agent: `changes` over the per-tick `target_up` of
/// a PID-file target whose process is killed and replaced.
#[test]
fn changes_of_target_up_fire_when_the_target_restarts() {
    let rules = r#"
[[rule]]
name = "SvcFlapping"
expr = 'changes(target_up{target="svc"}[1m]) >= 2'
severity = "warning"
"#;
    let mut first = sleeper();
    let dir = common::AlertDir::new("changes", rules, "", &first.id().to_string());
    let mut args = dir.args();
    args.push("--no-host".into());
    let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let up =
        |v: f64| move |m: &Metrics| m.get("infersight_target_up", &[("target", "svc")]) == Some(v);
    let flapping = |m: &Metrics| m.matching("ALERTS", &[("alertname", "SvcFlapping")]);
    let m = agent.wait_for(Duration::from_secs(10), "svc up", up(1.0));
    assert_eq!(flapping(&m), vec![]);

    first.kill().unwrap();
    let _ = first.wait();
    let m = agent.wait_for(Duration::from_secs(10), "svc down", up(0.0));
    // One change so far.
    assert_eq!(flapping(&m), vec![]);

    let mut second = sleeper();
    dir.set_pid(second.id());
    let m = agent.wait_for(Duration::from_secs(10), "SvcFlapping firing", |m| {
        !flapping(m).is_empty()
    });
    let alerts = flapping(&m);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].0["alertstate"], "firing");
    assert_eq!(alerts[0].0["target"], "svc");
    let (code, body) = agent.get("/api/v1/alerts");
    assert_eq!(code, 200);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let api: Vec<_> = api
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "SvcFlapping")
        .collect();
    assert_eq!(api.len(), 1, "{body}");
    // Down, then up: two changes of target_up.
    assert_eq!(api[0]["value"], 2.0);
    let _ = second.kill();
    let _ = second.wait();
}
