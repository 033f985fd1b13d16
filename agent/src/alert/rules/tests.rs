use super::*;

fn load(text: &str) -> Loaded {
    parse(
        Path::new("rules.toml"),
        text,
        &["log".to_string(), "slack".to_string()],
    )
}

#[test]
fn bad_rules_are_named_precisely_and_the_others_load() {
    let text = r#"
[[rule]]
name = "Good"
expr = "cpu_usage_percent > 80"
for = "5m"
severity = "high"

[[rule]]
name = "Syntax"
expr = "cpu_usage_percent >"
severity = "high"

[[rule]]
name = "Unknown"
expr = "cpu_percent > 1"
severity = "info"

[[rule]]
name = "Duration"
expr = "load1 > 4"
for = "5 fortnights"
severity = "warning"

[[rule]]
name = "Channel"
expr = "load1 > 4"
severity = "warning"
channels = ["pager"]

[[rule]]
name = "Level"
expr = "load1 > 4"
severity = "urgent"

[[rule]]
name = "Good"
expr = "load1 > 4"
severity = "info"
"#;
    let l = load(text);
    assert_eq!(l.rules.len(), 1);
    assert_eq!(l.rules[0].name, "Good");
    assert_eq!(l.rules[0].for_, Duration::from_secs(300));
    assert_eq!(
        l.errors,
        vec![
            "rules.toml: line 8: rule \"Syntax\": expr: column 20: expected a number, found the end",
            "rules.toml: line 13: rule \"Unknown\": expr: column 1: unknown signal \"cpu_percent\" (the README lists them)",
            "rules.toml: line 18: rule \"Duration\": for: invalid duration \"5 fortnights\": unknown time unit \"fortnights\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (e.g. \"5m\")",
            "rules.toml: line 24: rule \"Channel\": channels: \"pager\" is not a configured channel (configured: log, slack)",
            "rules.toml: line 30: rule \"Level\": severity: \"urgent\" is not one of info, warning, medium, high, critical",
            "rules.toml: line 35: rule \"Good\": name: used by an earlier rule",
        ]
    );
}

#[test]
fn a_broken_file_is_one_error() {
    let l = load("[[rule]\nname = 1");
    assert!(l.rules.is_empty());
    assert_eq!(l.errors.len(), 1);
    assert!(l.errors[0].starts_with("rules.toml: "), "{}", l.errors[0]);
    assert!(l.errors[0].contains("line 1"), "{}", l.errors[0]);
}

#[test]
fn function_errors_name_the_rule_field_and_column() {
    let text = r#"
[[rule]]
name = "Window"
expr = "increase(gpu_xid_errors[5q]) > 0"
severity = "high"

[[rule]]
name = "Inner"
expr = 'changes(target_upp{target="a"}[10m]) >= 2'
severity = "high"

[[rule]]
name = "Resolve"
expr = "absent(target_up)"
resolve_expr = "nope(target_up)"
severity = "high"

[[rule]]
name = "Good"
expr = "rate(gpu_xid_errors[1m]) > 0 or absent(target_up)"
severity = "high"
"#;
    let l = load(text);
    assert_eq!(
        l.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["Good"]
    );
    assert_eq!(
        l.errors,
        vec![
            "rules.toml: line 2: rule \"Window\": expr: column 26: unknown window unit \"q\" (expected s, m, h or d)",
            "rules.toml: line 7: rule \"Inner\": expr: column 9: unknown signal \"target_upp\" (the README lists them)",
            "rules.toml: line 12: rule \"Resolve\": resolve_expr: column 1: unknown function \"nope\" (expected increase, rate, changes or absent)",
        ]
    );
}
