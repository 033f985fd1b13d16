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
mod tests;
