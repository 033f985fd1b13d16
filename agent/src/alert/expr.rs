//! The rule expression language: named signals with label matchers, compared with
//! numbers, combined with `and` / `or`, and functions over the per-tick samples the
//! engine keeps (`range.rs`).
//!
//! ```text
//! expr     := and ("or" and)*
//! and      := cmp ("and" cmp)*
//! cmp      := primary (("<" | "<=" | ">" | ">=" | "==" | "!=") number)?
//! primary  := selector
//!           | ("increase" | "rate" | "changes") "(" selector "[" window "]" ")"
//!           | "absent" "(" selector ")"
//!           | "(" expr ")"
//! selector := signal ("{" matcher ("," matcher)* "}")?
//! matcher  := label ("=" | "!=") "string"
//! number   := digits ("." digits)? unit?      unit: % (÷100), ms, s, m, h, d (→ seconds)
//! window   := digits ("." digits)? ("s" | "m" | "h" | "d")
//! ```
//! A comparison keeps the instances (label sets) for which it holds, with their values.
//! `a and b` keeps instances of `a` that agree with some instance of `b` on the labels
//! both have; `a or b` is the union (`a`'s value where both have the instance).
//!
//! Functions, per series (label set) of the selector, over the samples of the last
//! `window` (as Prometheus, without its extrapolation):
//! - `increase(s[w])`: how much the series grew: the sum of its rises from one sample to
//!   the next, a drop counting as a counter reset (the value after it is added). A series
//!   that appears during the window counts from 0: three restarts of a target that is
//!   new within the window are an increase of 3 (Prometheus would extrapolate from its
//!   first sample, and say 0 for a series with a single sample). Before the engine has
//!   kept `w` of samples, a series it has seen from its first tick counts from its first
//!   sample (the history fills first).
//! - `rate(s[w])`: `increase(s[w])` ÷ the window in seconds.
//! - `changes(s[w])`: how many times the value changed (a series appearing is no change).
//!
//! Each gives one instance per series seen in the window (also one gone since, until the
//! window has passed it), labelled as the series.
//! - `absent(s{...})`: when no instance of `s` passes the matchers this tick, one instance
//!   of value 1 labelled with the `=` matchers (as Prometheus; a label matched twice is
//!   left out); else none. An instance that is gone because there is nothing to measure
//!   (no stream open) is absent, not "no data".
//!
//! A function of a signal with no data (its collector is not working) has no data too,
//! `absent` included: a collector that is down never pages as "absent" (the rule reports
//! no data, and `target_up` or `infersight_collector_up` page on that).
pub use crate::base::signal::{label_hash, Instance, Labels, Signals};

pub mod range;
pub use range::History;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Select {
        name: String,
        matchers: Vec<Matcher>,
        /// Column (1-based) of the name, for errors found after parsing.
        column: usize,
    },
    /// `increase`, `rate` or `changes` of a selector's series over `window` seconds.
    Range {
        func: RangeFn,
        name: String,
        matchers: Vec<Matcher>,
        window: f64,
        /// Column of the signal's name.
        column: usize,
    },
    /// `absent(selector)`.
    Absent {
        name: String,
        matchers: Vec<Matcher>,
        /// Column of the signal's name.
        column: usize,
    },
    Compare {
        lhs: Box<Expr>,
        op: CmpOp,
        rhs: f64,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub label: String,
    pub equal: bool,
    pub value: String,
}

/// A function over a series' samples in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFn {
    Increase,
    Rate,
    Changes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

/// A number as written; its unit is checked by the parser, which knows whether a
/// threshold or a window is expected.
#[derive(Debug, Clone, PartialEq)]
struct Number {
    value: f64,
    digits: String,
    unit: String,
    unit_column: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(Number),
    Str(String),
    Sym(&'static str),
    End,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |column: usize, message: String| ParseError { column, message };
    while i < b.len() {
        let c = b[i];
        let col = i + 1;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[s..i].to_string()), col));
        } else if c.is_ascii_digit() || c == b'.' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let value: f64 = src[s..i]
                .parse()
                .map_err(|_| err(col, format!("bad number {:?}", &src[s..i])))?;
            let u = i;
            while i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'%') {
                i += 1;
            }
            let n = Number {
                value,
                digits: src[s..u].to_string(),
                unit: src[u..i].to_string(),
                unit_column: u + 1,
            };
            out.push((Tok::Num(n), col));
        } else if c == b'"' {
            let s = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            if i >= b.len() {
                return Err(err(col, "unterminated string".into()));
            }
            out.push((Tok::Str(src[s..i].to_string()), col));
            i += 1;
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let sym = match two {
                "<=" => Some("<="),
                ">=" => Some(">="),
                "==" => Some("=="),
                "!=" => Some("!="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push((Tok::Sym(s), col));
                i += 2;
                continue;
            }
            let one = match c {
                b'<' => "<",
                b'>' => ">",
                b'=' => "=",
                b'{' => "{",
                b'}' => "}",
                b'(' => "(",
                b')' => ")",
                b'[' => "[",
                b']' => "]",
                b',' => ",",
                _ => return Err(err(col, format!("unexpected character {:?}", c as char))),
            };
            out.push((Tok::Sym(one), col));
            i += 1;
        }
    }
    out.push((Tok::End, src.len() + 1));
    Ok(out)
}

/// Bounds on an expression's shape: the parser and the evaluator recurse once per level,
/// and an expression nested without end would overflow the stack.
const MAX_NESTING: usize = 32;
const MAX_OPERATORS: usize = 256;

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// Parentheses open around the current position.
    nesting: usize,
    /// `and`/`or` operators read so far.
    operators: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }
    fn column(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }
    fn fail<T>(&self, expected: &str) -> Result<T, ParseError> {
        let found = match self.peek() {
            Tok::Ident(s) => format!("{s:?}"),
            Tok::Num(n) => format!("{}{}", n.digits, n.unit),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::Sym(s) => format!("{s:?}"),
            Tok::End => "the end".into(),
        };
        Err(ParseError {
            column: self.column(),
            message: format!("expected {expected}, found {found}"),
        })
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == k)
    }
    /// Step over `sym`, or fail saying `expected`.
    fn eat(&mut self, sym: &'static str, expected: &str) -> Result<(), ParseError> {
        if self.peek() == &Tok::Sym(sym) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(expected)
        }
    }

    /// Step over an `and`/`or`, failing past `MAX_OPERATORS`.
    fn operator(&mut self) -> Result<(), ParseError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(ParseError {
                column: self.column(),
                message: format!("more than {MAX_OPERATORS} \"and\"/\"or\" operators"),
            });
        }
        self.pos += 1;
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.keyword("or") {
            self.operator()?;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.cmp()?;
        while self.keyword("and") {
            self.operator()?;
            e = Expr::And(Box::new(e), Box::new(self.cmp()?));
        }
        Ok(e)
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.primary()?;
        let op = match self.peek() {
            Tok::Sym("<") => CmpOp::Lt,
            Tok::Sym("<=") => CmpOp::Le,
            Tok::Sym(">") => CmpOp::Gt,
            Tok::Sym(">=") => CmpOp::Ge,
            Tok::Sym("==") => CmpOp::Eq,
            Tok::Sym("!=") => CmpOp::Ne,
            _ => return Ok(lhs),
        };
        self.pos += 1;
        let Tok::Num(n) = self.peek().clone() else {
            return self.fail("a number");
        };
        self.pos += 1;
        let scale = match n.unit.as_str() {
            "" | "s" => 1.0,
            "%" => 0.01,
            "ms" => 0.001,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => {
                return Err(ParseError {
                    column: n.unit_column,
                    message: format!("unknown unit {other:?} (expected %, ms, s, m, h or d)"),
                })
            }
        };
        Ok(Expr::Compare {
            lhs: Box::new(lhs),
            op,
            rhs: n.value * scale,
        })
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let column = self.column();
        match self.next() {
            Tok::Sym("(") => {
                self.nesting += 1;
                if self.nesting > MAX_NESTING {
                    return Err(ParseError {
                        column,
                        message: format!("parentheses nested deeper than {MAX_NESTING}"),
                    });
                }
                let e = self.expr()?;
                self.eat(")", "\")\"")?;
                self.nesting -= 1;
                Ok(e)
            }
            Tok::Ident(name) if name != "and" && name != "or" => {
                if self.peek() == &Tok::Sym("(") {
                    return self.call(&name, column);
                }
                Ok(Expr::Select {
                    matchers: self.matchers()?,
                    name,
                    column,
                })
            }
            _ => {
                self.pos -= 1;
                self.fail("a signal name or \"(\"")
            }
        }
    }

    /// A function call, from its "(" on.
    fn call(&mut self, func: &str, column: usize) -> Result<Expr, ParseError> {
        let range = match func {
            "increase" => Some(RangeFn::Increase),
            "rate" => Some(RangeFn::Rate),
            "changes" => Some(RangeFn::Changes),
            "absent" => None,
            _ => {
                return Err(ParseError {
                    column,
                    message: format!(
                        "unknown function {func:?} (expected increase, rate, changes or absent)"
                    ),
                })
            }
        };
        self.pos += 1;
        let column = self.column();
        let name = match self.next() {
            Tok::Ident(name) if name != "and" && name != "or" => name,
            _ => {
                self.pos -= 1;
                return self.fail("a signal name");
            }
        };
        let matchers = self.matchers()?;
        let e = match range {
            Some(func) => {
                self.eat("[", "\"[\" and a window (e.g. [5m])")?;
                let window = self.window()?;
                self.eat("]", "\"]\"")?;
                Expr::Range {
                    func,
                    name,
                    matchers,
                    window,
                    column,
                }
            }
            None => Expr::Absent {
                name,
                matchers,
                column,
            },
        };
        self.eat(")", "\")\"")?;
        Ok(e)
    }

    /// A range function's window, in seconds.
    fn window(&mut self) -> Result<f64, ParseError> {
        let Tok::Num(n) = self.peek().clone() else {
            return self.fail("a window (e.g. 5m)");
        };
        let column = self.column();
        self.pos += 1;
        let scale = match n.unit.as_str() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(ParseError {
                    column: n.unit_column,
                    message: "a window needs a unit: s, m, h or d (e.g. 5m)".into(),
                })
            }
            other => {
                return Err(ParseError {
                    column: n.unit_column,
                    message: format!("unknown window unit {other:?} (expected s, m, h or d)"),
                })
            }
        };
        if n.value <= 0.0 {
            return Err(ParseError {
                column,
                message: "a window must be longer than 0".into(),
            });
        }
        Ok(n.value * scale)
    }

    /// A selector's `{...}` (none: no matchers).
    fn matchers(&mut self) -> Result<Vec<Matcher>, ParseError> {
        let mut matchers = Vec::new();
        if self.peek() != &Tok::Sym("{") {
            return Ok(matchers);
        }
        self.pos += 1;
        loop {
            let label = match self.next() {
                Tok::Ident(l) => l,
                Tok::Sym("}") if matchers.is_empty() => break,
                _ => {
                    self.pos -= 1;
                    return self.fail("a label name");
                }
            };
            let equal = match self.next() {
                Tok::Sym("=") => true,
                Tok::Sym("!=") => false,
                _ => {
                    self.pos -= 1;
                    return self.fail("\"=\" or \"!=\"");
                }
            };
            let value = match self.next() {
                Tok::Str(v) => v,
                _ => {
                    self.pos -= 1;
                    return self.fail("a quoted label value");
                }
            };
            matchers.push(Matcher {
                label,
                equal,
                value,
            });
            match self.next() {
                Tok::Sym(",") => {}
                Tok::Sym("}") => break,
                _ => {
                    self.pos -= 1;
                    return self.fail("\",\" or \"}\"");
                }
            }
        }
        Ok(matchers)
    }
}

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        nesting: 0,
        operators: 0,
    };
    let e = p.expr()?;
    if p.peek() != &Tok::End {
        return p.fail("\"and\", \"or\" or the end");
    }
    Ok(e)
}

impl Expr {
    /// Every signal the expression reads, with its column.
    pub fn signals(&self) -> Vec<(&str, usize)> {
        match self {
            Expr::Select { name, column, .. }
            | Expr::Range { name, column, .. }
            | Expr::Absent { name, column, .. } => vec![(name.as_str(), *column)],
            Expr::Compare { lhs, .. } => lhs.signals(),
            Expr::And(a, b) | Expr::Or(a, b) => {
                let mut v = a.signals();
                v.extend(b.signals());
                v
            }
        }
    }

    /// The signals read by range functions, with each window (seconds): those whose
    /// samples the engine keeps.
    pub fn ranges(&self) -> Vec<(&str, f64)> {
        match self {
            Expr::Range { name, window, .. } => vec![(name.as_str(), *window)],
            Expr::Select { .. } | Expr::Absent { .. } => Vec::new(),
            Expr::Compare { lhs, .. } => lhs.ranges(),
            Expr::And(a, b) | Expr::Or(a, b) => {
                let mut v = a.ranges();
                v.extend(b.ranges());
                v
            }
        }
    }
}

/// The instances for which `e` holds; `None` when a signal it reads has no data. Range
/// functions read `h`, which has recorded this tick's signals.
pub fn eval(e: &Expr, s: &dyn Signals, h: &History) -> Option<Vec<Instance>> {
    match e {
        Expr::Select { .. } => select(e, s, h, |_| true),
        Expr::Range {
            func,
            name,
            matchers,
            window,
            ..
        } => {
            s.get(name)?;
            Some(h.apply(*func, name, matchers, *window))
        }
        Expr::Absent { name, matchers, .. } => {
            if s.get(name)?.iter().any(|i| passes(matchers, &i.labels)) {
                return Some(Vec::new());
            }
            Some(vec![Instance::new(absent_labels(matchers), 1.0)])
        }
        Expr::Compare { lhs, op, rhs } => {
            let holds = |i: &Instance| op.holds(i.value, *rhs);
            match lhs.as_ref() {
                // The common case: filter the signal's instances in one pass, copying
                // only those that hold.
                Expr::Select { .. } => select(lhs, s, h, holds),
                other => Some(eval(other, s, h)?.into_iter().filter(holds).collect()),
            }
        }
        Expr::And(a, b) => {
            let (a, b) = (eval(a, s, h)?, eval(b, s, h)?);
            Some(
                a.into_iter()
                    .filter(|i| b.iter().any(|j| agree(i, j)))
                    .collect(),
            )
        }
        Expr::Or(a, b) => {
            let (mut a, b) = (eval(a, s, h)?, eval(b, s, h)?);
            for j in b {
                if !a.iter().any(|i| i.id == j.id && i.labels == j.labels) {
                    a.push(j);
                }
            }
            Some(a)
        }
    }
}

/// The instances of a selector's signal that pass its matchers and `keep`.
fn select(
    e: &Expr,
    s: &dyn Signals,
    h: &History,
    keep: impl Fn(&Instance) -> bool,
) -> Option<Vec<Instance>> {
    let Expr::Select { name, matchers, .. } = e else {
        return eval(e, s, h);
    };
    Some(
        s.get(name)?
            .iter()
            .filter(|i| keep(i) && passes(matchers, &i.labels))
            .cloned()
            .collect(),
    )
}

/// Whether labels pass every matcher (a missing label reads as "").
fn passes(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| {
        let v = labels.get(&m.label).map(String::as_str).unwrap_or("");
        (v == m.value) == m.equal
    })
}

/// `absent`'s labels: those of its `=` matchers, except a label matched more than once
/// (as Prometheus) and an empty value (a missing label).
fn absent_labels(matchers: &[Matcher]) -> Labels {
    matchers
        .iter()
        .filter(|m| {
            m.equal
                && !m.value.is_empty()
                && matchers.iter().filter(|o| o.label == m.label).count() == 1
        })
        .map(|m| (m.label.clone(), m.value.clone()))
        .collect()
}

/// Two instances agree when every label both have is equal.
fn agree(a: &Instance, b: &Instance) -> bool {
    a.labels
        .iter()
        .all(|(k, v)| b.labels.get(k).is_none_or(|w| w == v))
}

#[cfg(test)]
mod tests;
