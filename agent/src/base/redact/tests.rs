use super::*;

#[test]
fn urls_keep_scheme_host_and_port_only() {
    for (raw, want) in [
        (
            "https://hooks.slack.com/services/T0/B0/SECRET",
            "https://hooks.slack.com",
        ),
        (
            "http://u:pw@127.0.0.1:9093/?token=x",
            "http://127.0.0.1:9093",
        ),
        ("ws://[::1]:8080/ingest?k=v", "ws://[::1]:8080"),
        ("not a url", "(an invalid URL)"),
    ] {
        assert_eq!(url(raw), want, "{raw}");
    }
}

#[test]
fn scrub_removes_the_url_and_its_secret_parts() {
    let raw = "ws://pushuser:PushSecret@127.0.0.1:1/ingest?token=QuerySecret";
    let text = format!("Unable to connect to {raw}; user pushuser, path /ingest?token=QuerySecret");
    assert_eq!(
        scrub(&text, raw),
        "Unable to connect to ws://127.0.0.1:1; user …, path …?…"
    );
}
