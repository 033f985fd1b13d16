use super::*;

#[test]
fn target_bodies() {
    assert_eq!(
        target_request(json!({"pid": 7, "name": "vllm"})).unwrap(),
        TargetRequest::Pid {
            pid: 7,
            name: Some("vllm".into())
        }
    );
    assert_eq!(
        target_request(json!({"cgroup": "/system.slice/x.service"})).unwrap(),
        TargetRequest::Cgroup {
            path: "/system.slice/x.service".into(),
            name: None
        }
    );
    let (code, body) = target_request(json!({"pid": 7, "cgroup": "/a"})).unwrap_err();
    assert_eq!(code, 422);
    assert_eq!(
        body["error"],
        "give exactly one of pid, cgroup, pid_file, process"
    );
    let (code, body) = target_request(json!({"pid": 7, "colour": "red"})).unwrap_err();
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown field `colour`"),
        "{body}"
    );
    assert_eq!(target_request(json!({"pid": 0})).unwrap_err().0, 422);
    assert_eq!(target_request(json!({"pid": "x"})).unwrap_err().0, 400);
}
