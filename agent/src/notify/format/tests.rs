use super::*;

#[test]
fn slack_text_escapes_angle_brackets_and_ampersands() {
    let hostile = "<img src=x onerror=alert(1)>";
    let n = Notification {
        rule: "Bad<Rule>".into(),
        status: Status::Firing,
        severity: Severity::High,
        labels: [
            ("alertname".to_string(), "Bad<Rule>".to_string()),
            ("target".to_string(), hostile.to_string()),
        ]
        .into(),
        annotations: [("summary".to_string(), "a & b <!channel>".to_string())].into(),
        value: 1.0,
        starts_at: 1.0,
        ends_at: None,
        channels: vec![],
        reason: None,
    };
    let v = slack(&[n], "host<1>", "http://agent:9464/");
    let text = v["attachments"][0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "🔥 a &amp; b &lt;!channel&gt; (value 1; target=&lt;img src=x onerror=alert(1)&gt;)"
    );
    assert_eq!(v["text"], "[FIRING:1] Bad&lt;Rule&gt; host&lt;1&gt;");
    assert_eq!(v["attachments"][0]["title"], v["text"]);
    assert_eq!(v["attachments"][0]["footer"], "infersight on host&lt;1&gt;");
    let all = v.to_string();
    assert!(!all.contains('<') && !all.contains('>'), "{all}");
}
