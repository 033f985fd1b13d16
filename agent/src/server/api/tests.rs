//! The API's answers to bad target bodies: the refusal kinds and their status codes.
use serde_json::json;

use super::status_of;
use crate::{config::TargetRequest, control::target_request};

/// (status code, JSON answer) of a refused target body.
fn refused(v: serde_json::Value) -> (u16, serde_json::Value) {
    let r = target_request(v).unwrap_err();
    (
        status_of(r.kind).as_u16(),
        json!({ "error": r.to_string() }),
    )
}

#[test]
fn target_bodies() {
    assert_eq!(
        target_request(json!({"pid": 7, "name": "vllm"})).unwrap(),
        TargetRequest::Pid {
            pid: 7,
            name: Some("vllm".into()),
            endpoints: Default::default(),
        }
    );
    assert_eq!(
        target_request(json!({"cgroup": "/system.slice/x.service"})).unwrap(),
        TargetRequest::Cgroup {
            path: "/system.slice/x.service".into(),
            name: None,
            endpoints: Default::default(),
        }
    );
    let (code, body) = refused(json!({"pid": 7, "cgroup": "/a"}));
    assert_eq!(code, 422);
    assert_eq!(
        body["error"],
        "give exactly one of pid, cgroup, pid_file, process"
    );
    let (code, body) = refused(json!({"pid": 7, "colour": "red"}));
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown field `colour`"),
        "{body}"
    );
    assert_eq!(refused(json!({"pid": 0})).0, 422);
    assert_eq!(refused(json!({"pid": "x"})).0, 400);
}

#[test]
fn target_bodies_with_endpoints() {
    let r = target_request(
        json!({"pid": 7, "health_path": "/health", "metrics_url": "http://127.0.0.1:8002/metrics"}),
    )
    .unwrap();
    assert_eq!(r.endpoints().health_path.as_deref(), Some("/health"));
    assert_eq!(
        r.endpoints().metrics_url.as_deref(),
        Some("http://127.0.0.1:8002/metrics")
    );
    let (code, body) = refused(json!({"pid": 7, "health_url": "localhost:8000"}));
    assert_eq!(code, 422);
    assert_eq!(
        body["error"],
        "health_url: \"localhost:8000\": expected an http:// or https:// URL"
    );
}

#[test]
fn target_bodies_with_ports() {
    let r = target_request(json!({"pid": 7, "ports": [11434, 80]})).unwrap();
    assert_eq!(r.endpoints().ports, vec![80, 11434]);
    for (ports, shown) in [
        (json!([0]), "0"),
        (json!([65536]), "65536"),
        (json!(["80"]), "\\\"80\\\""),
        (json!([80.5]), "80.5"),
    ] {
        let (code, body) = refused(json!({"pid": 7, "ports": ports}));
        assert_eq!(code, 422, "{body}");
        assert_eq!(
            body["error"],
            format!("ports: \"{shown}\": expected a TCP port from 1 to 65535")
        );
    }
    let (code, body) = refused(json!({"pid": 7, "ports": 80}));
    assert_eq!(code, 422);
    assert_eq!(
        body["error"],
        "ports: \"80\": expected a list of ports, such as [11434]"
    );
    assert_eq!(refused(json!({"pid": 7, "ports": []})).0, 422);
}
