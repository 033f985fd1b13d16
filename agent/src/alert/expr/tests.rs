use super::*;
use std::collections::HashMap;

struct Fixed(HashMap<&'static str, Vec<Instance>>);

impl Signals for Fixed {
    fn get(&self, name: &str) -> Option<&[Instance]> {
        self.0.get(name).map(Vec::as_slice)
    }
}

fn inst(labels: &[(&str, &str)], value: f64) -> Instance {
    Instance::new(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    )
}

fn signals() -> Fixed {
    Fixed(HashMap::from([
        ("cpu_usage_percent", vec![inst(&[], 85.0)]),
        (
            "gpu_utilization_percent",
            vec![inst(&[("gpu", "0")], 30.0), inst(&[("gpu", "1")], 90.0)],
        ),
        (
            "http_error_ratio",
            vec![
                inst(&[("target", "vllm")], 0.12),
                inst(&[("target", "tgi")], 0.01),
            ],
        ),
        (
            "http_active_requests",
            vec![inst(&[("target", "vllm")], 4.0)],
        ),
    ]))
}

fn run(src: &str) -> Option<Vec<Instance>> {
    eval(&parse(src).unwrap(), &signals(), &History::default())
}

#[test]
fn comparisons_matchers_units_and_logic() {
    assert_eq!(run("cpu_usage_percent > 80"), Some(vec![inst(&[], 85.0)]));
    assert_eq!(run("cpu_usage_percent > 90"), Some(vec![]));
    assert_eq!(
        run("http_error_ratio > 10%"),
        Some(vec![inst(&[("target", "vllm")], 0.12)])
    );
    assert_eq!(
        run(r#"gpu_utilization_percent{gpu!="0"} >= 90"#),
        Some(vec![inst(&[("gpu", "1")], 90.0)])
    );
    // A label-less instance agrees with every instance.
    assert_eq!(
        run("gpu_utilization_percent < 50 and cpu_usage_percent > 80"),
        Some(vec![inst(&[("gpu", "0")], 30.0)])
    );
    assert_eq!(
        run("http_error_ratio > 0.1 and http_active_requests > 0"),
        Some(vec![inst(&[("target", "vllm")], 0.12)])
    );
    assert_eq!(
        run("(cpu_usage_percent > 90 or http_error_ratio < 5%)")
            .unwrap()
            .len(),
        1
    );
    assert_eq!(parse("x > 5m").unwrap(), parse("x > 300").unwrap());
    assert_eq!(parse("x > 250ms").unwrap(), parse("x > 0.25").unwrap());
    // A signal with no data makes the whole expression no data.
    assert_eq!(run("missing_signal > 1 or cpu_usage_percent > 1"), None);
}

#[test]
fn errors_name_the_column_and_what_was_expected() {
    let e = |src: &str| parse(src).unwrap_err().to_string();
    assert_eq!(
        e("cpu_usage_percent >"),
        "column 20: expected a number, found the end"
    );
    assert_eq!(
        e("cpu_usage_percent > 5x"),
        "column 22: unknown unit \"x\" (expected %, ms, s, m, h or d)"
    );
    assert_eq!(
        e(r#"gpu{gpu=0}"#),
        "column 9: expected a quoted label value, found 0"
    );
    assert_eq!(
        e("a > 1 b"),
        "column 7: expected \"and\", \"or\" or the end, found \"b\""
    );
    assert_eq!(e("(a > 1"), "column 7: expected \")\", found the end");
    assert_eq!(e("a # 1"), "column 3: unexpected character '#'");
}

/// One tick's signals: those listed have data (maybe no instances), the others none.
fn tick(list: &[(&'static str, Vec<Instance>)]) -> Fixed {
    Fixed(list.iter().cloned().collect())
}

fn x(labels: &[(&str, &str)], value: f64) -> (&'static str, Vec<Instance>) {
    ("x", vec![inst(labels, value)])
}

/// Record the ticks into a history keeping what `srcs` read, then evaluate each of
/// `srcs` at the last tick.
fn over(srcs: &[&str], ticks: &[(f64, Fixed)]) -> Vec<Option<Vec<Instance>>> {
    let exprs: Vec<Expr> = srcs.iter().map(|s| parse(s).unwrap()).collect();
    let mut h = History::default();
    h.track(exprs.iter().flat_map(|e| e.ranges()));
    for (t, s) in ticks {
        h.record(s, *t);
    }
    let last = &ticks.last().unwrap().1;
    exprs
        .iter()
        .map(|e| {
            eval(e, last, &h).map(|mut v| {
                v.sort_by(|a, b| a.labels.cmp(&b.labels));
                v
            })
        })
        .collect()
}

#[test]
fn functions_parse_with_their_window_and_signal_column() {
    let e = parse(r#"increase(x{a="b"}[5m]) > 2"#).unwrap();
    assert_eq!(
        e,
        Expr::Compare {
            lhs: Box::new(Expr::Range {
                func: RangeFn::Increase,
                name: "x".into(),
                matchers: vec![Matcher {
                    label: "a".into(),
                    equal: true,
                    value: "b".into()
                }],
                window: 300.0,
                column: 10,
            }),
            op: CmpOp::Gt,
            rhs: 2.0,
        }
    );
    assert_eq!(e.signals(), vec![("x", 10)]);
    assert_eq!(e.ranges(), vec![("x", 300.0)]);
    let e = parse("absent(y) or rate(z[1.5h]) > 0 and changes(x[30s]) >= 1").unwrap();
    assert_eq!(e.signals(), vec![("y", 8), ("z", 19), ("x", 44)]);
    assert_eq!(e.ranges(), vec![("z", 5400.0), ("x", 30.0)]);
    // Function names are not reserved: a signal may be called "rate".
    assert_eq!(parse("rate > 1").unwrap().signals(), vec![("rate", 1)]);
}

#[test]
fn function_errors_name_the_column() {
    let e = |src: &str| parse(src).unwrap_err().to_string();
    assert_eq!(
        e("increase(x[5q])"),
        "column 13: unknown window unit \"q\" (expected s, m, h or d)"
    );
    assert_eq!(
        e("increase(x[5%])"),
        "column 13: unknown window unit \"%\" (expected s, m, h or d)"
    );
    assert_eq!(
        e("increase(x[5m)"),
        "column 14: expected \"]\", found \")\""
    );
    assert_eq!(
        e("increase(x[5m]"),
        "column 15: expected \")\", found the end"
    );
    assert_eq!(
        e("foo(x[5m]) > 1"),
        "column 1: unknown function \"foo\" (expected increase, rate, changes or absent)"
    );
    assert_eq!(
        e("a > 1 or delta(x[5m]) > 1"),
        "column 10: unknown function \"delta\" (expected increase, rate, changes or absent)"
    );
    assert_eq!(
        e("increase(x) > 1"),
        "column 11: expected \"[\" and a window (e.g. [5m]), found \")\""
    );
    assert_eq!(
        e("rate(x[5])"),
        "column 9: a window needs a unit: s, m, h or d (e.g. 5m)"
    );
    assert_eq!(e("rate(x[0s])"), "column 8: a window must be longer than 0");
    assert_eq!(
        e("changes(x[])"),
        "column 11: expected a window (e.g. 5m), found \"]\""
    );
    assert_eq!(e("absent(x[5m])"), "column 9: expected \")\", found \"[\"");
    assert_eq!(
        e("increase(>)"),
        "column 10: expected a signal name, found \">\""
    );
    assert_eq!(
        e(r#"rate(x{a=1}[1m])"#),
        "column 10: expected a quoted label value, found 1"
    );
}

#[test]
fn increase_rate_and_changes_count_a_reset() {
    let a = [("t", "a")];
    // Present from the first tick: 1 → 3 → 6, a reset to 2, then 4.
    let ticks: Vec<(f64, Fixed)> = [1.0, 3.0, 6.0, 2.0, 4.0]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64 * 10.0, tick(&[x(&a, *v)])))
        .collect();
    let got = over(
        &[
            "increase(x[5m])",
            "rate(x[5m])",
            "changes(x[5m])",
            "changes(x[5m]) > 4",
        ],
        &ticks,
    );
    // (3 − 1) + (6 − 3) + 2 + (4 − 2)
    assert_eq!(got[0], Some(vec![inst(&a, 9.0)]));
    assert_eq!(got[1], Some(vec![inst(&a, 9.0 / 300.0)]));
    assert_eq!(got[2], Some(vec![inst(&a, 4.0)]));
    assert_eq!(got[3], Some(vec![]));
}

#[test]
fn a_series_that_appears_during_the_window_counts_from_zero() {
    let (a, b) = ([("t", "a")], [("t", "b")]);
    let both = |va: f64, vb: f64| tick(&[("x", vec![inst(&a, va), inst(&b, vb)])]);
    let mut ticks = vec![
        // `a` was there when the history started: its 5 happened before.
        (0.0, tick(&[x(&a, 5.0)])),
        // `b` appears: its three restarts are an increase of 3.
        (10.0, both(5.0, 1.0)),
        (20.0, both(5.0, 2.0)),
        (30.0, both(5.0, 3.0)),
    ];
    let srcs = ["increase(x[5m])", "changes(x[5m])"];
    assert_eq!(
        over(&srcs, &ticks),
        vec![
            Some(vec![inst(&a, 0.0), inst(&b, 3.0)]),
            // Appearing is no change.
            Some(vec![inst(&a, 0.0), inst(&b, 2.0)]),
        ]
    );
    // Once its appearance is older than the window, it counts from the value there.
    ticks.push((330.0, both(5.0, 4.0)));
    assert_eq!(
        over(&srcs, &ticks),
        vec![
            Some(vec![inst(&a, 0.0), inst(&b, 1.0)]),
            Some(vec![inst(&a, 0.0), inst(&b, 1.0)]),
        ]
    );
}

#[test]
fn windows_slide_and_start_at_the_history_when_it_is_shorter() {
    let a = [("t", "a")];
    let ticks = vec![
        (0.0, tick(&[x(&a, 10.0)])),
        (60.0, tick(&[x(&a, 11.0)])),
        (120.0, tick(&[x(&a, 13.0)])),
    ];
    assert_eq!(
        over(&["increase(x[1m])", "increase(x[10m])"], &ticks),
        vec![
            // From the value at 60 s.
            Some(vec![inst(&a, 2.0)]),
            // 2 minutes of history for a 10-minute window: from the first sample.
            Some(vec![inst(&a, 3.0)]),
        ]
    );
    // Kept only as long as the longest window read: a 1-minute window alone leaves the
    // value at 120 s, so the 10-minute one (not kept for) sees no increase.
    let mut h = History::default();
    h.track([("x", 60.0)]);
    for (t, s) in ticks.iter().chain([(180.0, tick(&[x(&a, 13.0)]))].iter()) {
        h.record(s, *t);
    }
    let ten = parse("increase(x[10m])").unwrap();
    assert_eq!(
        eval(&ten, &tick(&[x(&a, 13.0)]), &h),
        Some(vec![inst(&a, 0.0)])
    );
}

#[test]
fn a_series_gone_is_reported_until_the_window_passes_it() {
    let a = [("t", "a")];
    let mut ticks = vec![
        (0.0, tick(&[x(&a, 1.0)])),
        (10.0, tick(&[x(&a, 2.0)])),
        (20.0, tick(&[("x", vec![])])),
    ];
    assert_eq!(
        over(&["increase(x[1m])"], &ticks),
        vec![Some(vec![inst(&a, 1.0)])]
    );
    ticks.push((70.0, tick(&[("x", vec![])])));
    assert_eq!(over(&["increase(x[1m])"], &ticks), vec![Some(vec![])]);
}

#[test]
fn no_data_makes_functions_no_data_and_the_series_continue_after() {
    let a = [("t", "a")];
    let mut ticks = vec![
        (0.0, tick(&[x(&a, 1.0)])),
        (10.0, tick(&[x(&a, 2.0)])),
        (20.0, tick(&[("cpu_usage_percent", vec![inst(&[], 85.0)])])),
    ];
    let srcs = [
        "increase(x[5m])",
        "absent(x)",
        "changes(x[5m]) > 0 or cpu_usage_percent > 1",
    ];
    assert_eq!(over(&srcs, &ticks), vec![None, None, None]);
    // Back: not a new series, so no count from 0.
    ticks.push((30.0, tick(&[x(&a, 4.0)])));
    assert_eq!(over(&srcs[..1], &ticks), vec![Some(vec![inst(&a, 3.0)])]);
}

#[test]
fn absent_with_and_without_matchers() {
    let up = |v: Vec<Instance>| tick(&[("target_up", v)]);
    let other = || up(vec![inst(&[("target", "other")], 1.0)]);
    let one = |src: &str, s: &Fixed| eval(&parse(src).unwrap(), s, &History::default());
    assert_eq!(
        one("absent(target_up)", &up(vec![])),
        Some(vec![inst(&[], 1.0)])
    );
    assert_eq!(one("absent(target_up)", &other()), Some(vec![]));
    assert_eq!(
        one(r#"absent(target_up{target="svc", job!="x"})"#, &other()),
        Some(vec![inst(&[("target", "svc")], 1.0)])
    );
    assert_eq!(
        one(r#"absent(target_up{target="other"})"#, &other()),
        Some(vec![])
    );
    // A label matched twice names no one series: left out, as in Prometheus.
    assert_eq!(
        one(
            r#"absent(target_up{target="a", target!="b", job="j"})"#,
            &other()
        ),
        Some(vec![inst(&[("job", "j")], 1.0)])
    );
    assert_eq!(
        one(r#"absent(target_up{target="svc"}) > 0.5"#, &other()),
        Some(vec![inst(&[("target", "svc")], 1.0)])
    );
    // The collector is down: no data, not absent.
    assert_eq!(one("absent(target_up)", &tick(&[])), None);
}

#[test]
fn points_closer_than_a_thousandth_of_the_window_are_merged() {
    // A counter rising by 1 every second, kept for a 10 000 s window: points at least
    // 10 s apart.
    let ticks: Vec<(f64, Fixed)> = (0..=2000)
        .map(|t| (t as f64, tick(&[x(&[], t as f64)])))
        .collect();
    assert_eq!(
        over(&["increase(x[10000s])", "increase(x[100s])"], &ticks),
        vec![
            Some(vec![inst(&[], 2000.0)]),
            // The kept point before 1900 s is 1899 s (points 9 s apart from 0).
            Some(vec![inst(&[], 101.0)]),
        ]
    );
}

#[test]
fn a_signal_keeps_at_most_max_series_least_recently_seen_dropped_first() {
    let n = range::MAX_SERIES;
    let series = |ids: std::ops::Range<usize>| {
        tick(&[(
            "x",
            ids.map(|i| inst(&[("i", &i.to_string())], 1.0)).collect(),
        )])
    };
    let mut h = History::default();
    h.track([("x", 60.0)]);
    h.record(&series(0..n), 0.0);
    // Series 0 is not seen again: it goes for the newcomer.
    h.record(&series(1..n + 1), 1.0);
    let e = parse(r#"changes(x[1m])"#).unwrap();
    let ids = |h: &History| {
        let mut v: Vec<usize> = eval(&e, &series(0..0), h)
            .unwrap()
            .iter()
            .map(|i| i.labels["i"].parse().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(ids(&h), (1..n + 1).collect::<Vec<_>>());
    // All seen this tick: the newest arrival is the one refused, so the others keep
    // their history.
    h.record(&series(1..n + 2), 2.0);
    assert_eq!(ids(&h), (1..n + 1).collect::<Vec<_>>());
}

#[test]
fn nesting_and_operator_counts_are_bounded() {
    let deep = format!("{}x > 1{}", "(".repeat(33), ")".repeat(33));
    assert_eq!(
        parse(&deep).unwrap_err().to_string(),
        "column 33: parentheses nested deeper than 32"
    );
    let ok = format!("{}x > 1{}", "(".repeat(32), ")".repeat(32));
    assert!(parse(&ok).is_ok());
    // A stack-deep input the fuzzer found: thousands of "(".
    assert!(parse(&"(".repeat(4000)).is_err());
    let chain = |n: usize| vec!["x > 1"; n + 1].join(" and ");
    assert!(parse(&chain(256)).is_ok());
    let e = parse(&chain(257)).unwrap_err().to_string();
    assert!(e.ends_with("more than 256 \"and\"/\"or\" operators"), "{e}");
}
