use super::*;

fn from_text(text: &str, over: &Overrides) -> Result<Config, ConfigError> {
    let p = PathBuf::from("test.toml");
    build(parse_file(&p, text)?, Some(p), over)
}

#[test]
fn defaults_trace_the_host() {
    let c = from_text("", &Overrides::default()).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.tick, Duration::from_secs(1));
    assert_eq!(c.targets, TargetSpec::Host);
}

#[test]
fn file_values_and_cli_precedence() {
    let text = r#"
[agent]
listen = "0.0.0.0:9000"
tick = "500ms"
[[targets.pid]]
pid = 42
name = "vllm"
[[targets.cgroup]]
path = "/system.slice/x.service"
"#;
    let c = from_text(text, &Overrides::default()).unwrap();
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.tick, Duration::from_millis(500));
    assert_eq!(
        c.targets,
        TargetSpec::List(vec![
            TargetRequest::Pid {
                pid: 42,
                name: Some("vllm".into())
            },
            TargetRequest::Cgroup {
                path: "/system.slice/x.service".into(),
                name: None
            },
        ])
    );
    let over = Overrides {
        listen: Some("127.0.0.1:1".into()),
        pids: vec!["7=seven".into()],
        ..Default::default()
    };
    let c = from_text(text, &over).unwrap();
    assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
    assert_eq!(
        c.targets,
        TargetSpec::List(vec![TargetRequest::Pid {
            pid: 7,
            name: Some("seven".into())
        }])
    );
}

#[test]
fn errors_name_the_place() {
    let e = from_text("[agent]\nlisten = \"nope\"\n", &Overrides::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml: agent.listen: invalid value \"nope\": expected an IP address and port, such as 127.0.0.1:9464 or [::1]:9464"
    );
    let e = from_text("[agent]\nlisten = 5\n", &Overrides::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("test.toml: TOML parse error at line 2, column 10"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    let e = from_text("[agent]\nbogus = 1\n", &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    let e = from_text("[agent]\ntick = \"1 parsec\"\n", &Overrides::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("test.toml: agent.tick: invalid value \"1 parsec\""),
        "{e}"
    );
    let e = from_text(
        "[targets]\nall = true\n[[targets.pid]]\npid = 3\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("targets.all = true cannot be combined"),
        "{e}"
    );
}

#[test]
fn cli_values() {
    assert_eq!(
        parse_pid_arg("12").unwrap(),
        TargetRequest::Pid {
            pid: 12,
            name: None
        }
    );
    assert_eq!(
        parse_pid_arg("12=").unwrap(),
        TargetRequest::Pid {
            pid: 12,
            name: None
        }
    );
    assert_eq!(
        parse_pid_arg("x").unwrap_err().to_string(),
        "--pid: invalid value \"x\": expected a positive process ID, optionally with a name (1234=vllm)"
    );
    assert!(parse_pid_arg("0").is_err());
    assert!(parse_cgroup_arg("=a").is_err());
    let over = Overrides {
        all: true,
        pids: vec!["1".into()],
        ..Default::default()
    };
    assert_eq!(
        from_text("", &over).unwrap_err().to_string(),
        "--all cannot be combined with --pid, --cgroup, --pid-file, --process or --gpu-processes"
    );
}
