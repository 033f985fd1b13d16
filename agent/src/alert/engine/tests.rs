use std::{collections::HashMap, path::Path};

use super::*;
use crate::alert::{expr::Instance, rules};

/// Signals set by the test: cpu_usage_percent and http_error_ratio{target}, or no data.
#[derive(Default)]
struct Fake(HashMap<&'static str, Option<Vec<Instance>>>);

impl Signals for Fake {
    fn get(&self, name: &str) -> Option<&[Instance]> {
        self.0.get(name)?.as_deref()
    }
}

fn cpu(v: Option<f64>) -> Fake {
    let mut f = Fake::default();
    f.0.insert(
        "cpu_usage_percent",
        v.map(|value| vec![Instance::new(Labels::new(), value)]),
    );
    f
}

fn engine(rule: &str) -> Engine {
    let l = rules::parse(Path::new("t.toml"), rule, &["log".into()]);
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    Engine::new(l.rules, 300.0)
}

/// (time, status) of each notification over a series of (time, cpu) readings.
fn run(e: &mut Engine, series: &[(f64, Option<f64>)]) -> Vec<(f64, Status)> {
    let mut out = Vec::new();
    for (t, v) in series {
        for n in e.evaluate(&cpu(*v), *t) {
            out.push((*t, n.status));
        }
    }
    out
}

const HIGH_CPU: &str = r#"
[[rule]]
name = "HighCpu"
expr = "cpu_usage_percent > 80"
for = "5m"
severity = "high"
labels = { team = "ml" }
[rule.annotations]
summary = "CPU at {{ $value }}% ({{ $labels.team }}, {{ $labels.severity }})"
"#;

#[test]
fn pending_for_the_whole_for_then_firing_then_resolved() {
    let mut e = engine(HIGH_CPU);
    let n = e.evaluate(&cpu(Some(90.0)), 0.0);
    assert!(n.is_empty());
    assert_eq!(e.alerts()[0].state, AlertState::Pending);
    // A dip below the threshold while pending resets it, silently.
    assert!(e.evaluate(&cpu(Some(50.0)), 100.0).is_empty());
    assert!(e.alerts().is_empty());
    assert!(e.evaluate(&cpu(Some(91.5)), 200.0).is_empty());
    assert!(e.evaluate(&cpu(Some(91.5)), 499.0).is_empty());
    let n = e.evaluate(&cpu(Some(92.25)), 500.0);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].status, Status::Firing);
    assert_eq!(n[0].starts_at, 200.0);
    assert_eq!(n[0].annotations["summary"], "CPU at 92.25% (ml, high)");
    assert_eq!(n[0].labels["alertname"], "HighCpu");
    assert_eq!(n[0].labels["team"], "ml");
    assert_eq!(e.alerts()[0].state, AlertState::Firing);
    let n = e.evaluate(&cpu(Some(10.0)), 560.0);
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].status, n[0].ends_at), (Status::Resolved, Some(560.0)));
    assert!(e.alerts().is_empty());
}

#[test]
fn keep_firing_for_holds_through_a_short_dip() {
    let mut e = engine(&HIGH_CPU.replace("for = \"5m\"", "keep_firing_for = \"2m\""));
    let got = run(
        &mut e,
        &[
            (0.0, Some(90.0)),
            (60.0, Some(10.0)),  // dip: still firing
            (120.0, Some(95.0)), // back before 2 m
            (180.0, Some(10.0)),
            (299.0, Some(10.0)),
            (300.0, Some(10.0)), // 2 m after the dip began
        ],
    );
    assert_eq!(got, vec![(0.0, Status::Firing), (300.0, Status::Resolved)]);
}

#[test]
fn resolve_expr_gives_hysteresis() {
    let mut e =
        engine(&HIGH_CPU.replace("for = \"5m\"", "resolve_expr = \"cpu_usage_percent < 70\""));
    let got = run(
        &mut e,
        &[
            (0.0, Some(85.0)),
            (10.0, Some(75.0)), // below 80, not below 70: still firing
            (20.0, Some(79.0)),
            (30.0, Some(65.0)),
        ],
    );
    assert_eq!(got, vec![(0.0, Status::Firing), (30.0, Status::Resolved)]);
}

#[test]
fn repeats_while_firing_and_cools_down_after_a_resolve() {
    let mut e = engine(&HIGH_CPU.replace("for = \"5m\"", "repeat_interval = \"1h\""));
    let got = run(
        &mut e,
        &[
            (0.0, Some(90.0)),
            (3599.0, Some(90.0)),
            (3600.0, Some(90.0)), // repeat
            (3700.0, Some(10.0)), // resolved
            (3760.0, Some(90.0)), // re-fires within the 300 s cooldown: held
            (3800.0, Some(10.0)), // and resolves unannounced
            (3900.0, Some(90.0)), // held
            (4000.0, Some(90.0)), // cooldown over, still firing: announced
        ],
    );
    assert_eq!(
        got,
        vec![
            (0.0, Status::Firing),
            (3600.0, Status::Firing),
            (3700.0, Status::Resolved),
            (4000.0, Status::Firing),
        ]
    );
}

#[test]
fn no_data_keeps_alerts_as_they_are() {
    let mut e = engine(&HIGH_CPU.replace("for = \"5m\"", ""));
    let got = run(&mut e, &[(0.0, Some(90.0)), (10.0, None), (20.0, None)]);
    assert_eq!(got, vec![(0.0, Status::Firing)]);
    assert_eq!(
        e.health().collect::<Vec<_>>(),
        vec![("HighCpu", RuleHealth::Nodata)]
    );
    assert_eq!(e.alerts().len(), 1, "not resolved by missing data");
    let got = run(&mut e, &[(30.0, Some(10.0))]);
    assert_eq!(got, vec![(30.0, Status::Resolved)]);
    assert_eq!(
        e.health().collect::<Vec<_>>(),
        vec![("HighCpu", RuleHealth::Ok)]
    );
}

#[test]
fn each_label_set_is_its_own_instance() {
    let mut e = engine(
        r#"
[[rule]]
name = "Errors"
expr = "http_error_ratio > 10%"
severity = "high"
"#,
    );
    let mut f = Fake::default();
    let inst = |t: &str, v: f64| Instance::new([("target".to_string(), t.to_string())].into(), v);
    f.0.insert(
        "http_error_ratio",
        Some(vec![inst("a", 0.5), inst("b", 0.01)]),
    );
    let n = e.evaluate(&f, 0.0);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].labels["target"], "a");
    f.0.insert(
        "http_error_ratio",
        Some(vec![inst("a", 0.5), inst("b", 0.2)]),
    );
    let n = e.evaluate(&f, 1.0);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].labels["target"], "b");
}

#[test]
fn templates() {
    let l: Labels = [("target".to_string(), "vllm".to_string())].into();
    assert_eq!(
        render(
            "{{$value}} on {{ $labels.target }}{{ $labels.x }}",
            &l,
            0.125
        ),
        "0.125 on vllm"
    );
    assert_eq!(render("100%: {{ $value }}", &l, 3.0), "100%: 3");
    assert_eq!(render("{{ other }} {{", &l, 1.0), "{{ other }} {{");
}

#[test]
fn resolve_expr_does_not_promote_pending_alerts() {
    // The shipped GpuHot rule (for 2m, resolve below 80 °C): one tick above 85 °C, then
    // minutes just below it. Prometheus drops a pending alert as soon as its expression
    // stops holding; hysteresis keeps firing alerts only.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut loaded = rules::parse(&path, &text, &["log".into()]);
    loaded.rules.retain(|r| r.name == "GpuHot");
    assert_eq!(loaded.rules.len(), 1);
    let mut e = Engine::new(loaded.rules, 300.0);
    let temp = |v: f64| {
        let mut f = Fake::default();
        let l: Labels = [("gpu".to_string(), "0".to_string())].into();
        f.0.insert("gpu_temperature_celsius", Some(vec![Instance::new(l, v)]));
        f
    };
    assert!(e.evaluate(&temp(86.0), 0.0).is_empty());
    assert_eq!(e.alerts()[0].state, AlertState::Pending);
    assert!(e.evaluate(&temp(84.0), 1.0).is_empty());
    assert!(e.alerts().is_empty(), "pending dropped: {:?}", e.alerts());
    for t in 2..=300 {
        let n = e.evaluate(&temp(84.0), f64::from(t));
        assert!(n.is_empty(), "paged at {t} s: {n:?}");
    }
    // Once firing, the same readings keep it firing until below 80 °C.
    assert!(e.evaluate(&temp(90.0), 400.0).is_empty());
    let n = e.evaluate(&temp(90.0), 520.0);
    assert_eq!(n.len(), 1);
    assert!(e.evaluate(&temp(84.0), 530.0).is_empty());
    assert_eq!(e.alerts()[0].state, AlertState::Firing);
    let n = e.evaluate(&temp(79.0), 540.0);
    assert_eq!(n[0].status, Status::Resolved);
}

/// `gpu_xid_errors` per GPU (`None`: no data).
fn xids(v: Option<&[(&str, f64)]>) -> Fake {
    let mut f = Fake::default();
    f.0.insert(
        "gpu_xid_errors",
        v.map(|v| {
            v.iter()
                .map(|(g, x)| Instance::new([("gpu".to_string(), g.to_string())].into(), *x))
                .collect()
        }),
    );
    f
}

/// (status, gpu, value) of each notification.
fn notes(n: Vec<Notification>) -> Vec<(Status, String, f64)> {
    n.into_iter()
        .map(|n| (n.status, n.labels["gpu"].clone(), n.value))
        .collect()
}

#[test]
fn increase_fills_its_history_first_counts_new_series_from_zero_and_slides() {
    let mut e = engine(
        r#"
[[rule]]
name = "XidBurst"
expr = "increase(gpu_xid_errors[10m]) >= 3"
severity = "high"

[[rule]]
name = "HighCpu"
expr = "cpu_usage_percent > 80"
severity = "high"
"#,
    );
    // Only what range functions read is kept, for the longest window.
    assert_eq!(e.history.tracked(), vec![("gpu_xid_errors", 600.0)]);
    // 5 errors from before the engine started: not an increase it saw.
    assert!(e.evaluate(&xids(Some(&[("0", 5.0)])), 0.0).is_empty());
    assert_eq!(
        notes(e.evaluate(&xids(Some(&[("0", 8.0)])), 60.0)),
        vec![(Status::Firing, "0".into(), 3.0)]
    );
    // GPU 1 appears with 3: counted from 0.
    assert_eq!(
        notes(e.evaluate(&xids(Some(&[("0", 8.0), ("1", 3.0)])), 120.0)),
        vec![(Status::Firing, "1".into(), 3.0)]
    );
    // No data: kept as they are, not resolved.
    assert!(e.evaluate(&xids(None), 180.0).is_empty());
    assert_eq!(
        e.health().collect::<Vec<_>>(),
        vec![
            ("XidBurst", RuleHealth::Nodata),
            ("HighCpu", RuleHealth::Nodata)
        ]
    );
    assert_eq!(e.alerts().len(), 2);
    // Ten minutes after GPU 0's rise it has no increase left; GPU 1's appearance at
    // 120 s is still in the window.
    let both = [("0", 8.0), ("1", 3.0)];
    assert_eq!(
        notes(e.evaluate(&xids(Some(&both)), 660.0)),
        vec![(Status::Resolved, "0".into(), 3.0)]
    );
    assert_eq!(
        notes(e.evaluate(&xids(Some(&both)), 720.0)),
        vec![(Status::Resolved, "1".into(), 3.0)]
    );
    // A rule gone: its samples too.
    e.remove("XidBurst", 730.0, "test");
    assert_eq!(e.history.tracked(), vec![]);
}

#[test]
fn history_follows_rule_changes_and_resolve_expressions() {
    let mut e = engine(
        r#"
[[rule]]
name = "Flapping"
expr = "changes(target_up[5m]) >= 2"
resolve_expr = "changes(target_up[15m]) == 0"
severity = "warning"
"#,
    );
    assert_eq!(e.history.tracked(), vec![("target_up", 900.0)]);
    let l = rules::parse(
        Path::new("t.toml"),
        "[[rule]]\nname = \"Flapping\"\nexpr = \"rate(target_up[1m]) > 0\"\nseverity = \"warning\"\n",
        &["log".into()],
    );
    e.replace(l.rules.into_iter().next().unwrap(), 0.0);
    assert_eq!(e.history.tracked(), vec![("target_up", 60.0)]);
}

/// `target_up` with these targets' values (none: no target).
fn up(v: &[(&str, f64)]) -> Fake {
    let mut f = Fake::default();
    f.0.insert(
        "target_up",
        Some(
            v.iter()
                .map(|(t, x)| Instance::new([("target".to_string(), t.to_string())].into(), *x))
                .collect(),
        ),
    );
    f
}

#[test]
fn changes_fires_on_a_flapping_target_and_resolves_after_the_window() {
    let mut e = engine(
        r#"
[[rule]]
name = "Flapping"
expr = 'changes(target_up{target="svc"}[1m]) >= 2'
severity = "warning"
"#,
    );
    let mut got = Vec::new();
    for (t, v) in [
        (0.0, 1.0),
        (10.0, 0.0),
        (20.0, 1.0),
        (30.0, 1.0),
        (79.0, 1.0),
        (80.0, 1.0),
    ] {
        for n in e.evaluate(&up(&[("svc", v), ("other", 0.0)]), t) {
            got.push((t, n.status, n.value));
        }
    }
    // Down at 10 s, up at 20 s; a minute after 10 s only one change is left.
    assert_eq!(
        got,
        vec![(20.0, Status::Firing, 2.0), (79.0, Status::Resolved, 2.0)]
    );
}

#[test]
fn absent_fires_while_the_instance_is_missing_and_not_without_data() {
    let mut e = engine(
        r#"
[[rule]]
name = "SvcMissing"
expr = 'absent(target_up{target="svc"})'
severity = "critical"
"#,
    );
    let n = e.evaluate(&up(&[("other", 1.0)]), 0.0);
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].status, n[0].labels["target"].as_str(), n[0].value),
        (Status::Firing, "svc", 1.0)
    );
    // The process collector is down: no data, the alert stays.
    let mut down = Fake::default();
    down.0.insert("target_up", None);
    assert!(e.evaluate(&down, 10.0).is_empty());
    assert_eq!(e.alerts().len(), 1);
    let n = e.evaluate(&up(&[("svc", 0.0)]), 20.0);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].status, Status::Resolved);
    // A fresh engine whose collector is down from the start never pages "absent".
    let mut e =
        engine("[[rule]]\nname = \"A\"\nexpr = \"absent(target_up)\"\nseverity = \"critical\"\n");
    assert!(e.evaluate(&down, 0.0).is_empty());
    assert!(e.alerts().is_empty());
    assert_eq!(
        e.health().collect::<Vec<_>>(),
        vec![("A", RuleHealth::Nodata)]
    );
}
