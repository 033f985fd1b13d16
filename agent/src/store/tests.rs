use super::*;
use crate::alert::rules::Severity;

fn note(status: Status) -> Notification {
    Notification {
        rule: "HighCpu".into(),
        status,
        severity: Severity::High,
        labels: [("alertname".to_string(), "HighCpu".to_string())].into(),
        annotations: Default::default(),
        value: 91.0,
        starts_at: 100.0,
        ends_at: (status == Status::Resolved).then_some(200.0),
        channels: vec![],
        reason: None,
    }
}

fn temp() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "infersight-store-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn outbox_rows_are_idempotent_and_survive_reopening() {
    let dir = temp();
    let mut s = Store::open(&dir).unwrap();
    assert!(s.enqueue("k1", "log", &note(Status::Firing), 10.0).unwrap());
    assert!(!s.enqueue("k1", "log", &note(Status::Firing), 11.0).unwrap());
    assert!(s
        .enqueue("k2", "slack", &note(Status::Resolved), 10.0)
        .unwrap());
    assert_eq!(s.depth().unwrap(), 2);
    let due = s.due(10.0, 10).unwrap().rows;
    assert_eq!(due.len(), 2);
    assert_eq!(due[1].notification, note(Status::Resolved));
    s.start_attempt(&[due[0].id, due[1].id], 10.0).unwrap();
    // Rows being sent are not handed out again while their attempt runs.
    assert!(s.due(10.0, 10).unwrap().rows.is_empty());
    let channels = |s: &Store| {
        s.pending_channels()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(channels(&s), ["log", "slack"]);
    s.delivered(&[due[0].id], 10.5).unwrap();
    assert_eq!(channels(&s), ["slack"]);
    drop(s);
    // As after a crash: the second row was in flight.
    let mut s = Store::open(&dir).unwrap();
    assert_eq!(s.interrupted().unwrap(), 1);
    assert_eq!(s.depth().unwrap(), 1);
    let due = s.due(20.0, 10).unwrap().rows;
    assert_eq!((due.len(), due[0].attempts), (1, 1));
    s.retry(&[due[0].id], 30.0, "HTTP 500").unwrap();
    assert!(s.due(29.0, 10).unwrap().rows.is_empty());
    assert_eq!(s.due(30.0, 10).unwrap().rows.len(), 1);
    s.expire(&[due[0].id], 31.0).unwrap();
    assert_eq!(s.depth().unwrap(), 0);
    assert!(s.pending_channels().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn alert_states_and_history_round_trip() {
    let dir = temp();
    let mut s = Store::open(&dir).unwrap();
    let labels: Labels = [("target".to_string(), "a".to_string())].into();
    let a = Active {
        state: AlertState::Firing,
        active_since: 5.0,
        value: 2.5,
        last_sent: Some(6.0),
        cleared_since: None,
    };
    s.save_alerts(&[("R".into(), labels.clone(), a.clone())])
        .unwrap();
    assert_eq!(s.load_alerts().unwrap(), vec![("R".to_string(), labels, a)]);
    s.record_history(&note(Status::Firing)).unwrap();
    s.record_history(&note(Status::Firing)).unwrap();
    s.record_history(&note(Status::Resolved)).unwrap();
    let h = s.alert_history(10).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].state.as_str(), h[0].started, h[0].resolved),
        ("resolved", 100.0, Some(200.0))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outbox_delivers_one_alerts_messages_in_order() {
    let dir = temp();
    let mut s = Store::open(&dir).unwrap();
    // The firing message fails and waits for its retry…
    assert!(s
        .enqueue("f", "slack", &note(Status::Firing), 10.0)
        .unwrap());
    let due = s.due(10.0, 10).unwrap().rows;
    s.start_attempt(&[due[0].id], 10.0).unwrap();
    s.retry(&[due[0].id], 40.0, "HTTP 500").unwrap();
    // …and the resolve written meanwhile waits behind it, on this channel only.
    assert!(s
        .enqueue("r", "slack", &note(Status::Resolved), 20.0)
        .unwrap());
    assert!(s
        .enqueue("o", "log", &note(Status::Resolved), 20.0)
        .unwrap());
    let due = s.due(30.0, 10).unwrap().rows;
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].channel, "log");
    let due = s.due(40.0, 10).unwrap().rows;
    let statuses: Vec<(&str, Status)> = due
        .iter()
        .map(|r| (r.channel.as_str(), r.notification.status))
        .collect();
    assert_eq!(
        statuses,
        [("slack", Status::Firing), ("log", Status::Resolved)],
        "the firing one first"
    );
    s.start_attempt(&[due[0].id], 40.0).unwrap();
    s.delivered(&[due[0].id], 41.0).unwrap();
    let due = s.due(41.0, 10).unwrap().rows;
    assert_eq!(
        due.iter()
            .map(|r| (r.channel.as_str(), r.notification.status))
            .collect::<Vec<_>>(),
        [("slack", Status::Resolved), ("log", Status::Resolved)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
