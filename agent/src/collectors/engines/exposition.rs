//! A strict parser of the Prometheus text exposition format (0.0.4), the format every
//! engine serves on `/metrics`. Written here rather than taken from prometheus-parse 0.2,
//! which drops samples whose label values hold `{` or `}`; a model name may. Every sample
//! line is checked; only the samples `keep` asks for are returned (with their labels
//! unescaped), so a page of a few hundred kilobytes costs little more than one pass.
use std::borrow::Cow;

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// What is wrong with a page, and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// The samples of `text` whose metric name `keep` accepts; an error for the first line
/// that is not valid exposition text.
pub fn parse<'a>(
    text: &'a str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Sample<'a>>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fail = |reason: String| ParseError {
            line: i + 1,
            reason,
        };
        if let Some(s) = sample(line, &keep).map_err(fail)? {
            out.push(s);
        }
    }
    Ok(out)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// One sample line; `None` when `keep` does not want it (it is still checked).
fn sample<'a>(line: &'a str, keep: impl Fn(&str) -> bool) -> Result<Option<Sample<'a>>, String> {
    let b = line.as_bytes();
    let mut i = skip_blanks(b, 0);
    let start = i;
    if !b.get(i).copied().is_some_and(is_name_start) {
        return Err("expected a metric name".into());
    }
    while b.get(i).copied().is_some_and(is_name_char) {
        i += 1;
    }
    let name = &line[start..i];
    let wanted = keep(name);
    let mut labels = Vec::new();
    i = skip_blanks(b, i);
    if b.get(i) == Some(&b'{') {
        i = label_set(line, i + 1, wanted.then_some(&mut labels))?;
    }
    let rest = &line[i..];
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let v = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value = number(v).ok_or_else(|| format!("{name}: bad value {v:?}"))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("{name}: bad timestamp {ts:?}"))?;
    }
    if let Some(extra) = fields.next() {
        return Err(format!("{name}: unexpected {extra:?} after the value"));
    }
    Ok(wanted.then_some(Sample {
        name,
        labels,
        value,
    }))
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// A float as the format writes it (`1.5`, `1e-05`, `+Inf`, `-Inf`, `NaN`).
fn number(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust's parser also takes "inf", "infinity" and "nan" in any case; the format
        // has exactly the three spellings above.
        _ if v
            .bytes()
            .any(|c| c.is_ascii_alphabetic() && !matches!(c, b'e' | b'E')) =>
        {
            None
        }
        _ => v.parse().ok(),
    }
}

/// The labels after `{` at byte `i`, up to and including `}`; the index after `}`.
/// With `out`, the labels are collected (values unescaped).
fn label_set<'a>(
    line: &'a str,
    mut i: usize,
    mut out: Option<&mut Vec<(&'a str, Cow<'a, str>)>>,
) -> Result<usize, String> {
    let b = line.as_bytes();
    loop {
        i = skip_blanks(b, i);
        if b.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        let start = i;
        if !b
            .get(i)
            .copied()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        {
            return Err(format!("expected a label name at column {}", i + 1));
        }
        while b
            .get(i)
            .copied()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            i += 1;
        }
        let lname = &line[start..i];
        i = skip_blanks(b, i);
        if b.get(i) != Some(&b'=') {
            return Err(format!("label {lname}: expected '='"));
        }
        i = skip_blanks(b, i + 1);
        if b.get(i) != Some(&b'"') {
            return Err(format!("label {lname}: value not quoted"));
        }
        i += 1;
        let vstart = i;
        let mut escaped = false;
        loop {
            match b.get(i) {
                None => return Err(format!("label {lname}: unterminated value")),
                Some(b'"') => break,
                Some(b'\\') => {
                    if !matches!(b.get(i + 1), Some(b'\\' | b'"' | b'n')) {
                        return Err(format!("label {lname}: bad escape at column {}", i + 1));
                    }
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
            }
        }
        let raw = &line[vstart..i];
        i += 1;
        if let Some(out) = out.as_deref_mut() {
            if out.iter().any(|(n, _)| *n == lname) {
                return Err(format!("label {lname} given twice"));
            }
            out.push((lname, if escaped { unescape(raw) } else { raw.into() }));
        }
        i = skip_blanks(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => {
                return Err(format!(
                    "label {lname}: expected ',' or '}}' after the value"
                ))
            }
        }
    }
}

fn unescape(raw: &str) -> Cow<'_, str> {
    let mut s = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => s.push('\n'),
                Some(c) => s.push(c),
                None => {}
            }
        } else {
            s.push(c);
        }
    }
    Cow::Owned(s)
}

#[cfg(test)]
mod tests {
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
}
