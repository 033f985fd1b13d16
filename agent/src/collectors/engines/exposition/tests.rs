use super::*;

fn all(text: &str) -> Result<Vec<Sample<'_>>, ParseError> {
    parse(text, |_| true)
}

#[test]
fn samples_labels_and_values() {
    let text = "# HELP x y\n# TYPE vllm:num_requests_waiting gauge\n\
        vllm:num_requests_waiting{engine=\"0\",model_name=\"m{a}/\\\"q\\\"\\\\\\n\"} 3.0\n\
        up 1\n\
        x_bucket{le=\"+Inf\"} 5 1700000000000\n\
        nan_value NaN\n\
        neg{a=\"b\",} -Inf\n\
        sci 1.5e-05\r\n\
        \n";
    let s = all(text).unwrap();
    assert_eq!(s.len(), 6);
    assert_eq!(s[0].name, "vllm:num_requests_waiting");
    assert_eq!(s[0].label("engine"), Some("0"));
    assert_eq!(s[0].label("model_name"), Some("m{a}/\"q\"\\\n"));
    assert_eq!(s[0].value, 3.0);
    assert_eq!((s[1].name, s[1].value, s[1].labels.len()), ("up", 1.0, 0));
    assert_eq!(s[2].label("le"), Some("+Inf"));
    assert!(s[3].value.is_nan());
    assert_eq!(s[4].value, f64::NEG_INFINITY);
    assert_eq!(s[5].value, 1.5e-5);
}

#[test]
fn only_kept_names_are_returned_but_every_line_is_checked() {
    let text = "a{x=\"1\"} 1\nb 2\n";
    let s = parse(text, |n| n == "b").unwrap();
    assert_eq!(
        s,
        vec![Sample {
            name: "b",
            labels: vec![],
            value: 2.0
        }]
    );
    let e = parse("a{x=\"1} 1\nb 2\n", |n| n == "b").unwrap_err();
    assert_eq!(e.line, 1);
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let cases = [
        ("ok 1\n{a=\"b\"} 1", 2, "expected a metric name"),
        ("m{a=b} 1", 1, "label a: value not quoted"),
        (
            "m{a=\"b\"",
            1,
            "label a: expected ',' or '}' after the value",
        ),
        ("m{a=\"b\\t\"} 1", 1, "label a: bad escape at column 7"),
        ("m{a=\"1\",a=\"2\"} 1", 1, "label a given twice"),
        ("m{1a=\"1\"} 1", 1, "expected a label name at column 3"),
        ("m", 1, "m: no value"),
        ("m one", 1, "m: bad value \"one\""),
        ("m inf", 1, "m: bad value \"inf\""),
        ("m 1 2.5", 1, "m: bad timestamp \"2.5\""),
        ("m 1 2 3", 1, "m: unexpected \"3\" after the value"),
    ];
    for (text, line, reason) in cases {
        let e = all(text).unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (line, reason), "{text:?}");
    }
    // Labels of samples not kept are still checked.
    assert!(parse("m{a=\"b\\x\"} 1", |_| false).is_err());
}
