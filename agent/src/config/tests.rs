use super::*;

fn from_text(text: &str, over: &Overrides) -> Result<Config, ConfigError> {
    let p = PathBuf::from("test.toml");
    let src = source::Source {
        path: Some(&p),
        text,
        env: Default::default(),
    };
    build(parse_file(&p, text)?, &src, over)
}

#[test]
fn defaults_trace_the_host() {
    let c = from_text("", &Overrides::default()).unwrap();
    assert_eq!(c.agent.listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.agent.tick, Duration::from_secs(1));
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
    assert_eq!(c.agent.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.agent.tick, Duration::from_millis(500));
    assert_eq!(
        c.targets,
        TargetSpec::List(vec![
            TargetRequest::Pid {
                pid: 42,
                name: Some("vllm".into()),
                endpoints: Default::default(),
            },
            TargetRequest::Cgroup {
                path: "/system.slice/x.service".into(),
                name: None,
                endpoints: Default::default(),
            },
        ])
    );
    let over = Overrides {
        listen: Some("127.0.0.1:1".into()),
        pids: vec!["7=seven".into()],
        ..Default::default()
    };
    let c = from_text(text, &over).unwrap();
    assert_eq!(c.agent.listen, "127.0.0.1:1".parse().unwrap());
    assert_eq!(
        c.targets,
        TargetSpec::List(vec![TargetRequest::Pid {
            pid: 7,
            name: Some("seven".into()),
            endpoints: Default::default(),
        }])
    );
}

#[test]
fn errors_name_the_place() {
    let e = from_text("[agent]\nlisten = \"nope\"\n", &Overrides::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml: line 2: agent.listen: invalid value \"nope\": expected an IP address and port, such as 127.0.0.1:9464 or [::1]:9464"
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
            .starts_with("test.toml: line 2: agent.tick: invalid value \"1 parsec\""),
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
fn nested_keys_are_found_on_their_line() {
    let text = "# top\n[agent]\ntick = \"1s\"\n\n[[targets.process]]\ncomm = \"a\"\n\n[[targets.process]]\ncomm = \" \"\n\n[channels.email]\nsmtp_host = \"h\"\nfrom = \"x@y\"\nto = [\"nope\"]\n";
    assert_eq!(line_of(text, "agent.tick"), Some(3));
    assert_eq!(line_of(text, "targets.process[1].comm"), Some(9));
    assert_eq!(line_of(text, "channels.email.to"), Some(14));
    assert_eq!(line_of(text, "agent.listen"), None);
    let e = from_text(text, &Overrides::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml: line 9: targets.process[1].comm: invalid value \" \": expected a process name"
    );
    let e = from_text(
        &text.replace("comm = \" \"", "comm = \"b\""),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "test.toml: line 14: channels.email.to: invalid value \"nope\": not an email address"
        ),
        "{e}"
    );
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn environment_overrides_every_key_and_is_named_in_errors() {
    let dir = std::env::temp_dir().join(format!("infersight-cfg-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "[agent]\ntick = \"1s\"\n[history]\nenabled = true\n").unwrap();
    let over = Overrides {
        config: Some(file.clone()),
        ..Default::default()
    };
    let c = Config::load_with_env(
        &over,
        env(&[
            ("INFERSIGHT_AGENT_TICK", "250ms"),
            ("INFERSIGHT_HISTORY_ENABLED", "false"),
            ("INFERSIGHT_HTTP_ROUTE_LIMIT", "7"),
            ("INFERSIGHT_ALERTING_DEFAULT_CHANNELS", "[\"log\"]"),
            ("INFERSIGHT_LOG", "debug"),
            ("PATH", "/bin"),
        ])
        .into_iter(),
    )
    .unwrap();
    assert_eq!(c.agent.tick, Duration::from_millis(250));
    assert_eq!(c.history, None);
    assert_eq!(c.http.route_limit, 7);
    // An override's bad value names the variable, not the file.
    let e = Config::load_with_env(&over, env(&[("INFERSIGHT_AGENT_TICK", "soon")]).into_iter())
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("environment INFERSIGHT_AGENT_TICK: agent.tick: invalid value \"soon\""),
        "{e}"
    );
    let e = Config::load_with_env(&over, env(&[("INFERSIGHT_AGNET_TICK", "1s")]).into_iter())
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "environment INFERSIGHT_AGNET_TICK: invalid value \"1s\": not a configuration key"
        ),
        "{e}"
    );
    let e = Config::load_with_env(&over, env(&[("INFERSIGHT_AGENT_TIK", "1s")]).into_iter())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("with the environment overrides INFERSIGHT_AGENT_TIK")
            && e.to_string().contains("unknown field `tik`"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_values() {
    assert_eq!(
        parse_pid_arg("12").unwrap(),
        TargetRequest::Pid {
            pid: 12,
            name: None,
            endpoints: Default::default(),
        }
    );
    assert_eq!(
        parse_pid_arg("12=").unwrap(),
        TargetRequest::Pid {
            pid: 12,
            name: None,
            endpoints: Default::default(),
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

#[test]
fn target_endpoints_and_the_engines_section() {
    let text = r#"
[engines]
interval = "1s"
[[targets.pid]]
pid = 42
metrics_url = "http://127.0.0.1:8002/metrics"
health_path = "/v2/health/ready"
[[targets.process]]
comm = "vllm"
health_url = "https://10.0.0.5:8000/health"
"#;
    let c = from_text(text, &Overrides::default()).unwrap();
    let TargetSpec::List(reqs) = &c.targets else {
        panic!("{:?}", c.targets)
    };
    assert_eq!(
        reqs[0].endpoints(),
        &Endpoints {
            metrics_url: Some("http://127.0.0.1:8002/metrics".into()),
            health_url: None,
            health_path: Some("/v2/health/ready".into()),
            ports: Vec::new(),
        }
    );
    assert_eq!(
        reqs[1].endpoints().health_url.as_deref(),
        Some("https://10.0.0.5:8000/health")
    );
    // The interval bounds the default timeout; the rest are defaults.
    assert_eq!(
        c.engines,
        EnginesConfig {
            enabled: true,
            interval: Duration::from_secs(1),
            health_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(1),
            max_response_bytes: 4 << 20,
        }
    );
    let e = from_text(
        "[[targets.pid]]\npid = 1\n\n[[targets.cgroup]]\npath = \"/a\"\nmetrics_url = \"ftp://x/metrics\"\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml: line 6: targets.cgroup[0].metrics_url: invalid value \"ftp://x/metrics\": expected an http:// or https:// URL"
    );
    let e = from_text(
        "[[targets.pid]]\npid = 1\nhealth_path = \"health\"\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml: line 3: targets.pid[0].health_path: invalid value \"health\": expected a path such as /health"
    );
    let e = from_text(
        "[[targets.pid]]\npid = 1\nhealth_url = \"http://h/x\"\nhealth_path = \"/y\"\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("give health_url or health_path, not both"),
        "{e}"
    );
    let e = from_text(
        "[engines]\ninterval = \"1s\"\ntimeout = \"2s\"\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml: line 3: engines.timeout: invalid value \"2s\": must not be longer than engines.interval or engines.health_interval"
    );
    let e = from_text(
        "[engines]\nmax_response_bytes = 10\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("test.toml: line 2: engines.max_response_bytes: invalid value \"10\""),
        "{e}"
    );
}

#[test]
fn front_door_ports_from_the_file_and_the_command_line() {
    let text = "[[targets.process]]\ncomm = \"ollama\"\nports = [11434, 80, 11434]\n\n[[targets.pid]]\npid = 5\n";
    let c = from_text(text, &Overrides::default()).unwrap();
    let TargetSpec::List(reqs) = &c.targets else {
        panic!("{:?}", c.targets)
    };
    // Sorted, once each; a target without the key has every port.
    assert!(reqs[0].endpoints().ports.is_empty());
    assert_eq!(reqs[1].endpoints().ports, vec![80, 11434]);

    // Each bad value names the file, line and key.
    for (value, shown, reason) in [
        ("[0]", "0", "expected a TCP port from 1 to 65535"),
        (
            "[80, 65536]",
            "65536",
            "expected a TCP port from 1 to 65535",
        ),
        ("[-1]", "-1", "expected a TCP port from 1 to 65535"),
        ("[\"80\"]", "\"80\"", "expected a TCP port from 1 to 65535"),
        ("[80.5]", "80.5", "expected a TCP port from 1 to 65535"),
        ("80", "80", "expected a list of ports, such as [11434]"),
        (
            "[]",
            "[]",
            "expected at least one port (leave ports out for every port)",
        ),
    ] {
        let text =
            format!("[[targets.pid]]\npid = 1\n\n[[targets.pid]]\npid = 2\nports = {value}\n");
        let e = from_text(&text, &Overrides::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("test.toml: line 6: targets.pid[1].ports: invalid value {shown:?}: {reason}"),
            "{value}"
        );
    }

    // --ports: without a name on every target of the command line, with one on that
    // target; the file's targets are replaced as ever.
    let cli = |pids: &[&str], ports: &[&str]| {
        let over = Overrides {
            pids: pids.iter().map(|s| s.to_string()).collect(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        from_text(text, &over).map(|c| match c.targets {
            TargetSpec::List(l) => l
                .iter()
                .map(|r| r.endpoints().ports.clone())
                .collect::<Vec<_>>(),
            TargetSpec::Host => panic!("host"),
        })
    };
    assert_eq!(cli(&["7"], &["11434"]).unwrap(), vec![vec![11434]]);
    assert_eq!(
        cli(&["7=a", "8=b", "9"], &["b=8000,8001", "9000"]).unwrap(),
        vec![vec![9000], vec![8000, 8001], vec![9000]]
    );
    assert_eq!(cli(&["7=a", "8"], &["a=1"]).unwrap(), vec![vec![1], vec![]]);
    let err = |pids: &[&str], ports: &[&str]| cli(pids, ports).unwrap_err().to_string();
    assert_eq!(
        err(&["7"], &["0"]),
        "--ports: invalid value \"0\": \"0\": expected a TCP port from 1 to 65535"
    );
    assert_eq!(
        err(&["7"], &["80,x"]),
        "--ports: invalid value \"80,x\": \"x\": expected a TCP port from 1 to 65535"
    );
    assert_eq!(
        err(&["7"], &["70000"]),
        "--ports: invalid value \"70000\": \"70000\": expected a TCP port from 1 to 65535"
    );
    assert_eq!(
        err(&["7=a"], &["b=80"]),
        "--ports: invalid value \"b=80\": no target on the command line is named \"b\""
    );
    assert!(err(&["7"], &["80", "81"]).contains("given twice without a name"));
    // Nothing on the command line to apply it to: refused, not ignored.
    assert_eq!(
        err(&[], &["80"]),
        "--ports: applies to targets given with --pid, --cgroup, --pid-file or --process"
    );
    let over = Overrides {
        all: true,
        ports: vec!["80".into()],
        ..Default::default()
    };
    assert!(from_text("", &over).is_err());
}
