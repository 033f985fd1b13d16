//! History and the alert API of the running agent: signals recorded each tick and queried
//! by name and labels; the alert history; acknowledging needs the bearer token; bad
//! queries get a 4xx with a message; an unwritable state directory does not stop it.
mod common;

use std::{process::Command, time::Duration};

use common::{Agent, AlertDir};

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn history_alert_history_and_acknowledging() {
    let mut svc = Command::new("sleep").arg("600").spawn().unwrap();
    let dir = AlertDir::new(
        "hist",
        "[[rule]]\nname = \"SvcDown\"\nexpr = \"target_up == 0\"\nseverity = \"critical\"\n",
        "",
        &svc.id().to_string(),
    );
    let mut cmd = Command::new(common::AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", "s3cret");
    let args = dir.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(cmd, &args);
    let t0 = now() as i64;
    std::thread::sleep(Duration::from_millis(2200));
    let _ = svc.kill();
    let _ = svc.wait();
    agent.wait_for(Duration::from_secs(5), "the alert", |m| {
        !m.matching(
            "ALERTS",
            &[("alertname", "SvcDown"), ("alertstate", "firing")],
        )
        .is_empty()
    });
    std::thread::sleep(Duration::from_millis(1500));

    // target_up was 1, then 0, at one point per second.
    let (status, h) = agent.send(
        "GET",
        &format!(
            "/api/v1/history?metric=target_up&target=svc&from={}&step=1s",
            t0 - 5
        ),
        None,
        "",
    );
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["metric"], "target_up");
    let points = h["points"].as_array().unwrap();
    let values: Vec<f64> = points.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(values.len() >= 3, "{h}");
    assert_eq!(values[0], 1.0, "{h}");
    assert_eq!(*values.last().unwrap(), 0.0, "{h}");
    // Whole seconds, increasing.
    let ts: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    // Host signals are recorded too, with RFC 3339 times accepted.
    let from = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs((t0 - 5) as u64),
    );
    let (status, cpu) = agent.send(
        "GET",
        &format!("/api/v1/history?metric=cpu_usage_percent&from={from}"),
        None,
        "",
    );
    assert_eq!(status, 200, "{cpu}");
    assert!(!cpu["points"].as_array().unwrap().is_empty(), "{cpu}");

    let (status, e) = agent.send("GET", "/api/v1/history?metric=nope", None, "");
    assert_eq!(status, 400);
    assert_eq!(e["error"], "metric: unknown signal \"nope\"");
    let (status, e) = agent.send(
        "GET",
        "/api/v1/history?metric=load1&from=yesterday",
        None,
        "",
    );
    assert_eq!(status, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("from: \"yesterday\""),
        "{e}"
    );

    let (status, rows) = agent.send("GET", "/api/v1/alerts/history", None, "");
    assert_eq!(status, 200);
    let row = &rows[0];
    assert_eq!(row["name"], "SvcDown");
    assert_eq!(row["state"], "firing");
    assert!(row["acknowledged"].is_null());
    let id = row["id"].as_i64().unwrap();
    let ack = format!("/api/v1/alerts/{id}/ack");
    assert_eq!(agent.send("POST", &ack, None, "").0, 401);
    assert_eq!(agent.send("POST", &ack, Some("wrong"), "").0, 403);
    assert_eq!(
        agent
            .send("POST", "/api/v1/alerts/99999/ack", Some("s3cret"), "")
            .0,
        404
    );
    let (status, body) = agent.send("POST", &ack, Some("s3cret"), "");
    assert_eq!(status, 200, "{body}");
    let (_, rows) = agent.send("GET", "/api/v1/alerts/history", None, "");
    assert!(rows[0]["acknowledged"].as_f64().is_some(), "{rows}");
}

#[test]
fn writes_are_refused_without_a_configured_token_and_history_survives_a_bad_state_dir() {
    // /proc takes no new directories, even from root.
    let agent = Agent::start(&["--state-dir", "/proc/infersight-state"]);
    agent.settle();
    let (status, e) = agent.send("POST", "/api/v1/alerts/1/ack", Some("anything"), "");
    assert_eq!(status, 403);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("writes are disabled"),
        "{e}"
    );
    let m = agent.metrics();
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "history")]),
        Some(0.0)
    );
    assert_eq!(
        m.get("infersight_collector_up", &[("collector", "syscalls")]),
        Some(1.0)
    );
    let (status, e) = agent.send("GET", "/api/v1/history?metric=load1", None, "");
    assert_eq!(status, 503);
    assert!(
        e["error"].as_str().unwrap().contains("history is off"),
        "{e}"
    );
}

#[test]
fn rules_created_through_the_api_fire_persist_and_are_validated() {
    let mut svc = Command::new("sleep").arg("600").spawn().unwrap();
    let dir = AlertDir::new(
        "apirules",
        "[[rule]]\nname = \"FromFile\"\nexpr = \"target_up > 5\"\nseverity = \"info\"\n",
        "",
        &svc.id().to_string(),
    );
    let mut args = dir.args();
    args.push("--no-host".into());
    let start = || {
        let mut cmd = Command::new(common::AGENT);
        cmd.env("INFERSIGHT_API_TOKEN", "tok");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_with(cmd, &args)
    };
    let agent = start();
    let rule =
        r#"{"name":"ApiDown","expr":"target_up == 0","severity":"high","labels":{"via":"api"}}"#;
    let t = Some("tok");
    assert_eq!(agent.send("POST", "/api/v1/rules", None, rule).0, 401);
    assert_eq!(
        agent.send("POST", "/api/v1/rules", Some("bad"), rule).0,
        403
    );
    let (status, e) = agent.send("POST", "/api/v1/rules", t, "{not json");
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().starts_with("bad JSON"), "{e}");
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(70_000));
    assert_eq!(agent.send("POST", "/api/v1/rules", t, &big).0, 413);
    let (status, e) = agent.send(
        "POST",
        "/api/v1/rules",
        t,
        r#"{"name":"X","expr":"load1 >","severity":"high"}"#,
    );
    assert_eq!(
        (status, e["error"].as_str().unwrap()),
        (422, "expr: column 8: expected a number, found the end")
    );
    let (status, e) = agent.send(
        "POST",
        "/api/v1/rules",
        t,
        r#"{"name":"X","expr":"load1 > 1","severity":"high","colour":"red"}"#,
    );
    assert_eq!(status, 422);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{e}"
    );
    assert_eq!(agent.send("POST", "/api/v1/rules", t, rule).0, 201);
    assert_eq!(agent.send("POST", "/api/v1/rules", t, rule).0, 409);
    let file_rule = r#"{"name":"FromFile","expr":"load1 > 1","severity":"info"}"#;
    assert_eq!(
        agent.send("PUT", "/api/v1/rules/FromFile", t, file_rule).0,
        409
    );
    // The snapshot shows the new rule from the next tick on.
    std::thread::sleep(Duration::from_millis(300));
    let (_, rules) = agent.send("GET", "/api/v1/rules", None, "");
    assert_eq!(
        rules,
        serde_json::json!([["FromFile", "ok"], ["ApiDown", "ok"]])
    );
    drop(agent);

    // Persisted: after a restart the API rule is back, and fires like a file rule.
    let agent = start();
    let _ = svc.kill();
    let _ = svc.wait();
    let m = agent.wait_for(Duration::from_secs(10), "the API rule fires", |m| {
        !m.matching(
            "ALERTS",
            &[("alertname", "ApiDown"), ("alertstate", "firing")],
        )
        .is_empty()
    });
    assert_eq!(
        m.matching("ALERTS", &[("alertname", "ApiDown"), ("via", "api")])
            .len(),
        1
    );
    assert_eq!(agent.send("DELETE", "/api/v1/rules/ApiDown", t, "").0, 200);
    assert_eq!(agent.send("DELETE", "/api/v1/rules/ApiDown", t, "").0, 404);
    std::thread::sleep(Duration::from_millis(300));
    let (_, rules) = agent.send("GET", "/api/v1/rules", None, "");
    assert_eq!(rules, serde_json::json!([["FromFile", "ok"]]));
}

#[test]
fn history_queries_are_bounded_in_points_and_series() {
    // Points per series: a day at one point per second is over the 11 000 of Prometheus.
    let state = std::env::temp_dir().join(format!("infersight-hbound-{}", std::process::id()));
    let st = state.display().to_string();
    let agent = Agent::start(&["--state-dir", &st]);
    agent.settle();
    let t = now() as i64;
    let (status, e) = agent.send(
        "GET",
        &format!(
            "/api/v1/history?metric=load1&from={}&to={t}&step=1s",
            t - 86400
        ),
        None,
        "",
    );
    assert_eq!(status, 400, "{e}");
    assert_eq!(
        e["error"],
        "step: 1 s over 86400 s is 86401 points per series; at most 11000 \
         ([api] history_max_points): use a step of 8 s or more"
    );
    let (status, h) = agent.send(
        "GET",
        &format!(
            "/api/v1/history?metric=load1&from={}&to={t}&step=8s",
            t - 86400
        ),
        None,
        "",
    );
    assert_eq!((status, &h["step"]), (200, &serde_json::json!(8)), "{h}");
    drop(agent);
    let _ = std::fs::remove_dir_all(&state);

    // Series per answer: two targets, one series allowed.
    let mut other = Command::new("sleep").arg("600").spawn().unwrap();
    let dir = AlertDir::new(
        "hbound",
        "",
        "[api]\nhistory_max_series = 1\n",
        &other.id().to_string(),
    );
    let mut args = dir.args();
    args.extend(["--pid".to_string(), format!("{}=other", other.id())]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    let one = "/api/v1/history?metric=target_up&target=other";
    let start = std::time::Instant::now();
    loop {
        let (status, h) = agent.send("GET", one, None, "");
        assert_eq!(status, 200, "{h}");
        if h["points"].as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{h}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, e) = agent.send("GET", "/api/v1/history?metric=target_up", None, "");
    assert_eq!(status, 400, "{e}");
    assert_eq!(
        e["error"],
        "2 series of target_up match; at most 1 per answer ([api] history_max_series): \
         add label matchers (LABEL=VALUE)"
    );
    let _ = other.kill();
    let _ = other.wait();
}
