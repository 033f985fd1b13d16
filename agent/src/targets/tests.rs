use super::*;

#[test]
fn own_process_resolves_with_comm_name() {
    let me = std::process::id();
    let t = Targets::resolve(&TargetSpec::List(vec![TargetRequest::Pid {
        pid: me,
        name: None,
        endpoints: Default::default(),
    }]))
    .unwrap();
    let first = t.iter().next().unwrap();
    assert_eq!(first.index, 1);
    assert_eq!(first.kind, TargetKind::Pid { pid: me });
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(first.name, comm.trim_end());
}

#[test]
fn missing_pid_and_duplicate_names() {
    let e = Targets::resolve(&TargetSpec::List(vec![TargetRequest::Pid {
        pid: u32::MAX - 1,
        name: None,
        endpoints: Default::default(),
    }]))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("--pid {}: no such process", u32::MAX - 1)
    );
    let me = std::process::id();
    let two = TargetSpec::List(vec![
        TargetRequest::Pid {
            pid: me,
            name: Some("a".into()),
            endpoints: Default::default(),
        },
        TargetRequest::Pid {
            pid: me,
            name: Some("a".into()),
            endpoints: Default::default(),
        },
    ]);
    assert!(matches!(Targets::resolve(&two), Err(TargetError::DuplicateName(n)) if n == "a"));
}

#[test]
fn missing_cgroup_is_named() {
    let e = Targets::resolve(&TargetSpec::List(vec![TargetRequest::Cgroup {
        path: "/no/such/cgroup-infersight".into(),
        name: None,
        endpoints: Default::default(),
    }]))
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("--cgroup /no/such/cgroup-infersight: "),
        "{msg}"
    );
}

#[test]
fn descendants_finds_a_child() {
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let d = descendants(std::process::id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(d.contains(&child.id()), "{d:?}");
}

#[test]
fn the_target_limit_holds_for_added_targets() {
    let me = std::process::id();
    let mut t = Targets::resolve_limited(
        &TargetSpec::List(vec![TargetRequest::Pid {
            pid: me,
            name: Some("a".into()),
            endpoints: Default::default(),
        }]),
        1,
    )
    .unwrap();
    let e = t
        .add(&TargetRequest::Pid {
            pid: me,
            name: Some("b".into()),
            endpoints: Default::default(),
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "1 targets are traced already ([agent] max_targets)"
    );
    assert!(t.add_process(me).is_none());
    // A removed target frees its place; its index is not used again.
    assert_eq!(t.remove("a").map(|x| x.index), Some(1));
    let b = t
        .add(&TargetRequest::Pid {
            pid: me,
            name: Some("b".into()),
            endpoints: Default::default(),
        })
        .unwrap();
    assert_eq!(b.index, 2);
}
