//! The rule expression language: named signals with label matchers, compared with
//! numbers, combined with `and` / `or`.
//!
//! ```text
//! expr     := and ("or" and)*
//! and      := cmp ("and" cmp)*
//! cmp      := primary (("<" | "<=" | ">" | ">=" | "==" | "!=") number)?
//! primary  := signal ("{" matcher ("," matcher)* "}")? | "(" expr ")"
//! matcher  := label ("=" | "!=") "string"
//! number   := digits ("." digits)? unit?      unit: % (÷100), ms, s, m, h, d (→ seconds)
//! ```
//! A comparison keeps the instances (label sets) for which it holds, with their values.
//! `a and b` keeps instances of `a` that agree with some instance of `b` on the labels
//! both have; `a or b` is the union (`a`'s value where both have the instance).
pub use crate::base::signal::{label_hash, Instance, Labels, Signals};

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Select {
        name: String,
        matchers: Vec<Matcher>,
        /// Column (1-based) of the name, for errors found after parsing.
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

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
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
            let mut v: f64 = src[s..i]
                .parse()
                .map_err(|_| err(col, format!("bad number {:?}", &src[s..i])))?;
            let u = i;
            while i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'%') {
                i += 1;
            }
            v *= match &src[u..i] {
                "" | "s" => 1.0,
                "%" => 0.01,
                "ms" => 0.001,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                other => {
                    return Err(err(
                        u + 1,
                        format!("unknown unit {other:?} (expected %, ms, s, m, h or d)"),
                    ))
                }
            };
            out.push((Tok::Num(v), col));
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

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
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
            Tok::Num(n) => n.to_string(),
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

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.cmp()?;
        while self.keyword("and") {
            self.pos += 1;
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
        match self.next() {
            Tok::Num(rhs) => Ok(Expr::Compare {
                lhs: Box::new(lhs),
                op,
                rhs,
            }),
            _ => {
                self.pos -= 1;
                self.fail("a number")
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let column = self.column();
        match self.next() {
            Tok::Sym("(") => {
                let e = self.expr()?;
                match self.next() {
                    Tok::Sym(")") => Ok(e),
                    _ => {
                        self.pos -= 1;
                        self.fail("\")\"")
                    }
                }
            }
            Tok::Ident(name) if name != "and" && name != "or" => {
                let mut matchers = Vec::new();
                if self.peek() == &Tok::Sym("{") {
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
                }
                Ok(Expr::Select {
                    name,
                    matchers,
                    column,
                })
            }
            _ => {
                self.pos -= 1;
                self.fail("a signal name or \"(\"")
            }
        }
    }
}

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
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
            Expr::Select { name, column, .. } => vec![(name.as_str(), *column)],
            Expr::Compare { lhs, .. } => lhs.signals(),
            Expr::And(a, b) | Expr::Or(a, b) => {
                let mut v = a.signals();
                v.extend(b.signals());
                v
            }
        }
    }
}

/// The instances for which `e` holds; `None` when a signal it reads has no data.
pub fn eval(e: &Expr, s: &dyn Signals) -> Option<Vec<Instance>> {
    match e {
        Expr::Select { .. } => select(e, s, |_| true),
        Expr::Compare { lhs, op, rhs } => {
            let holds = |i: &Instance| op.holds(i.value, *rhs);
            match lhs.as_ref() {
                // The common case: filter the signal's instances in one pass, copying
                // only those that hold.
                Expr::Select { .. } => select(lhs, s, holds),
                other => Some(eval(other, s)?.into_iter().filter(holds).collect()),
            }
        }
        Expr::And(a, b) => {
            let (a, b) = (eval(a, s)?, eval(b, s)?);
            Some(
                a.into_iter()
                    .filter(|i| b.iter().any(|j| agree(i, j)))
                    .collect(),
            )
        }
        Expr::Or(a, b) => {
            let (mut a, b) = (eval(a, s)?, eval(b, s)?);
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
fn select(e: &Expr, s: &dyn Signals, keep: impl Fn(&Instance) -> bool) -> Option<Vec<Instance>> {
    let Expr::Select { name, matchers, .. } = e else {
        return eval(e, s);
    };
    Some(
        s.get(name)?
            .iter()
            .filter(|i| {
                keep(i)
                    && matchers.iter().all(|m| {
                        let v = i.labels.get(&m.label).map(String::as_str).unwrap_or("");
                        (v == m.value) == m.equal
                    })
            })
            .cloned()
            .collect(),
    )
}

/// Two instances agree when every label both have is equal.
fn agree(a: &Instance, b: &Instance) -> bool {
    a.labels
        .iter()
        .all(|(k, v)| b.labels.get(k).is_none_or(|w| w == v))
}

#[cfg(test)]
mod tests;
