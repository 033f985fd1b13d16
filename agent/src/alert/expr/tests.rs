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
