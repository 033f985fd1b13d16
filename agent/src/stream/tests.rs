use super::*;

#[test]
fn subscriptions_cut_the_snapshot_and_skip_alerts() {
    let snap = Snapshot {
        readings: crate::readings::Readings {
            tick: 7,
            timestamp_ms: 1000,
            gpu: crate::collectors::gpu::GpuPart {
                hostname: "h".into(),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let msgs = messages(&snap);
    let all = Subscription::default().render(&msgs[0]).unwrap();
    assert_eq!(all, msgs[0].text());
    let s = Subscription::from_query("parts=hostname,gpus&alerts=false").unwrap();
    let cut: serde_json::Value = serde_json::from_str(&s.render(&msgs[0]).unwrap()).unwrap();
    assert_eq!(
        cut,
        serde_json::json!({"type": "snapshot", "data": {"timestamp_ms": 1000, "tick": 7, "hostname": "h", "gpus": []}})
    );
    let alert = Message::Alert("{\"type\":\"alert\"}".into());
    assert_eq!(s.render(&alert), None);
    assert_eq!(
        Subscription::default().render(&alert).as_deref(),
        Some("{\"type\":\"alert\"}")
    );
}

#[test]
fn bad_subscriptions_are_named() {
    assert_eq!(
        Subscription::from_query("parts=gpu").unwrap_err(),
        format!(
            "parts: unknown part \"gpu\" (one of {})",
            parts().join(", ")
        )
    );
    assert_eq!(
        Subscription::from_query("alerts=maybe").unwrap_err(),
        "alerts: \"maybe\" is not true or false"
    );
    assert_eq!(
        Subscription::from_query("x=1").unwrap_err(),
        "unknown parameter \"x\" (parts, alerts)"
    );
    let s = Subscription::from_message(r#"{"subscribe": {"parts": ["host"]}}"#).unwrap();
    assert_eq!(s.parts, Some(BTreeSet::from(["host".to_string()])));
    assert!(s.alerts);
    assert!(Subscription::from_message(r#"{"subscribe": {"part": []}}"#)
        .unwrap_err()
        .starts_with("unknown field `part`"));
}

#[test]
fn the_parts_are_the_snapshot_fields_but_the_two_always_sent() {
    let v = serde_json::to_value(Snapshot::default()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.retain(|k| !["timestamp_ms", "tick"].contains(k));
    assert_eq!(parts(), keys);
    for p in [
        "targets", "http", "failures", "host", "gpus", "alerting", "config",
    ] {
        assert!(parts().iter().any(|k| k == p), "{p}");
    }
}
