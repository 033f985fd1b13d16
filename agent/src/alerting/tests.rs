//! Alerting in the running agent, over a real state store: rules removed or changed
//! resolve their alerts; a write the outbox refuses is tried again.
use super::*;
use crate::{
    alert::engine::Status,
    base::{CollectorStatus, Health},
    collectors::host::{Filesystem, HostPart, HostSample, MemoryBytes},
    readings::Readings,
};

/// CPU, memory and disk over their thresholds.
fn burning() -> Readings {
    Readings {
        collectors: vec![CollectorStatus {
            name: "host".into(),
            health: Health::active(),
            duration_seconds: None,
        }],
        host: HostPart {
            host: Some(HostSample {
                cpu_usage_ratio: Some(0.97),
                memory: Some(MemoryBytes {
                    fields: vec![("MemTotal", 1000), ("MemAvailable", 50)],
                }),
                filesystems: vec![Filesystem {
                    device: "/dev/vda1".into(),
                    fstype: "ext4".into(),
                    mountpoint: "/".into(),
                    size_bytes: 100,
                    free_bytes: 8,
                    avail_bytes: 5,
                    files: 10,
                    files_free: 5,
                    readonly: false,
                }],
                ..HostSample::default()
            }),
        },
        ..Readings::default()
    }
}

/// A temporary state directory and rules file; removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str, rules: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "infersight-runtime-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("rules.toml"), rules).unwrap();
        Dir(d)
    }

    fn config(&self) -> crate::config::Alerting {
        crate::config::Alerting {
            rules_file: Some(self.0.join("rules.toml")),
            default_channels: vec!["log".into()],
            cooldown: std::time::Duration::from_secs(300),
            max_age: std::time::Duration::from_secs(3600),
            ..Default::default()
        }
    }

    fn start(&self) -> Alerting {
        Alerting::start(&self.config(), &self.0, "h".into(), "http://a/".into()).unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const HOT_RULES: &str = "[[rule]]\nname = \"Cpu\"\nexpr = \"cpu_usage_percent > 80\"\nseverity = \"high\"\n\n[[rule]]\nname = \"Mem\"\nexpr = \"memory_usage_percent > 90\"\nseverity = \"critical\"\n";

/// (rule, status) of a tick's alert events.
fn events(v: &AlertingView) -> Vec<(String, Status)> {
    v.events
        .iter()
        .map(|n| (n.rule.clone(), n.status))
        .collect()
}

#[test]
fn removed_rules_resolve_their_firing_alerts() {
    let dir = Dir::new("removed", HOT_RULES);
    let mut a = dir.start();
    let signals = burning().signals();
    let v = a.evaluate(&signals);
    assert_eq!(
        events(&v),
        [
            ("Cpu".into(), Status::Firing),
            ("Mem".into(), Status::Firing)
        ]
    );
    // An API rule, firing, then deleted.
    let body =
        serde_json::json!({"name": "Disk", "expr": "disk_usage_percent > 85", "severity": "high"});
    assert_eq!(
        a.command(RuleCommand::Create(body)).unwrap().0,
        Done::Created
    );
    assert_eq!(
        events(&a.evaluate(&signals)),
        [("Disk".into(), Status::Firing)]
    );
    assert_eq!(
        a.command(RuleCommand::Delete("Disk".into())).unwrap().0,
        Done::Changed
    );
    let v = a.evaluate(&signals);
    assert_eq!(events(&v), [("Disk".into(), Status::Resolved)]);
    let slack = crate::notify::format::slack(&v.events, "h", "http://a/");
    let text = slack["attachments"][0]["text"].as_str().unwrap();
    assert!(text.contains("the rule was removed"), "{text}");
    // The file loses Mem and changes Cpu's severity: Mem resolves; Cpu resolves under its
    // old labels and fires again under the new ones.
    std::fs::write(
        dir.0.join("rules.toml"),
        "[[rule]]\nname = \"Cpu\"\nexpr = \"cpu_usage_percent > 80\"\nseverity = \"critical\"\n",
    )
    .unwrap();
    a.reload(&dir.config()).unwrap();
    let v = a.evaluate(&signals);
    let mut got: Vec<(String, Status, String)> = v
        .events
        .iter()
        .map(|n| (n.rule.clone(), n.status, n.labels["severity"].clone()))
        .collect();
    got.sort_by(|x, y| (&x.0, x.1 as u8).cmp(&(&y.0, y.1 as u8)));
    assert_eq!(
        got,
        [
            ("Cpu".into(), Status::Firing, "critical".into()),
            ("Cpu".into(), Status::Resolved, "high".into()),
            ("Mem".into(), Status::Resolved, "critical".into()),
        ]
    );
    assert!(a.evaluate(&signals).events.is_empty());
    // Removed while the agent was stopped: resolved at the next start.
    drop(a);
    std::fs::write(
        dir.0.join("rules.toml"),
        "[[rule]]\nname = \"Mem\"\nexpr = \"memory_usage_percent > 90\"\nseverity = \"critical\"\n",
    )
    .unwrap();
    let mut a = dir.start();
    let v = a.evaluate(&signals);
    let got: Vec<(String, Status, String, Option<String>)> = v
        .events
        .iter()
        .map(|n| {
            let l = n.labels["severity"].clone();
            (n.rule.clone(), n.status, l, n.reason.clone())
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "Cpu".into(),
                Status::Resolved,
                "critical".into(),
                Some("the rule was removed".into())
            ),
            ("Mem".into(), Status::Firing, "critical".into(), None),
        ]
    );
}

#[test]
fn a_failed_enqueue_is_retried() {
    let dir = Dir::new("enqueue", HOT_RULES);
    let mut a = dir.start();
    // The outbox refuses writes, as on a full disk.
    let db = rusqlite::Connection::open(dir.0.join("infersight.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER full BEFORE INSERT ON outbox BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
    )
    .unwrap();
    let signals = burning().signals();
    a.evaluate(&signals);
    let depth = |a: &Alerting| a.store().unwrap().lock().unwrap().depth().unwrap();
    assert_eq!(depth(&a), 0);
    db.execute_batch("DROP TRIGGER full;").unwrap();
    a.evaluate(&signals);
    assert_eq!(
        depth(&a),
        2,
        "both firing notifications written once the disk has room"
    );
    a.evaluate(&signals);
    assert_eq!(depth(&a), 2, "and only once");
    // The same for the resolves.
    db.execute_batch(
        "CREATE TRIGGER full BEFORE INSERT ON outbox BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
    )
    .unwrap();
    let mut snap_calm = burning();
    if let Some(h) = snap_calm.host.host.as_mut() {
        h.cpu_usage_ratio = Some(0.1);
        h.memory = Some(MemoryBytes {
            fields: vec![("MemTotal", 1000), ("MemAvailable", 900)],
        });
    }
    let calm = snap_calm.signals();
    a.evaluate(&calm);
    assert_eq!(depth(&a), 2);
    db.execute_batch("DROP TRIGGER full;").unwrap();
    a.evaluate(&calm);
    assert_eq!(depth(&a), 4, "both resolves written once the disk has room");
    a.evaluate(&calm);
    assert_eq!(depth(&a), 4);
}
