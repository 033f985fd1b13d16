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
