//! The layer guard: every module of `agent/src` imports only from the layers below its own
//! (so there is no import cycle), and a collector never imports another collector. The
//! layer list is read from the README's "How it works" (the one place it is written).
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// The README block that lists the layers, bottom first: `| N | module, module | … |`.
const BEGIN: &str = "<!-- layers -->";
const END: &str = "<!-- /layers -->";

/// One import that breaks a rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Module name → layer number, from the README's block.
pub fn parse_layers(readme: &str) -> Result<BTreeMap<String, u32>> {
    let start = readme
        .find(BEGIN)
        .with_context(|| format!("README: no {BEGIN} block (the layer list)"))?;
    let end = readme[start..]
        .find(END)
        .with_context(|| format!("README: {BEGIN} without {END}"))?;
    let mut layers = BTreeMap::new();
    for line in readme[start..start + end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| 3 | `ebpf` | … |" splits into ["", "3", "`ebpf`", "…", ""].
        let (Some(n), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        for m in modules.split(',') {
            let m = m.trim().trim_matches('`');
            if !m.is_empty() && layers.insert(m.to_string(), n).is_some() {
                bail!("README: module {m} is listed in two layers");
            }
        }
    }
    if layers.is_empty() {
        bail!("README: the {BEGIN} block lists no layer");
    }
    Ok(layers)
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The module path of a file relative to the crate's `src` (`collectors/http/mod.rs` →
/// [collectors, http]).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// The code of a line without its `//` comment (imports named in comments do not count).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// A path as written (`crate::a::b`, `super::x`) resolved from module `here` to the
/// module path it names (crate-relative); `None` for a path outside the crate.
fn resolve(path: &[&str], here: &[String]) -> Option<Vec<String>> {
    let (mut base, mut rest) = match path.first() {
        Some(&"crate") => (Vec::new(), &path[1..]),
        Some(&"super") | Some(&"self") => (here.to_vec(), path),
        _ => return None,
    };
    while let Some(&first) = rest.first() {
        match first {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().map(|s| s.to_string()));
    Some(base)
}

/// Every path a `use` tree names: `a::{b, c::{d, e}}` → a::b, a::c::d, a::c::e.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        // `a::b as c` and the glob `a::*` name `a::b` and `a`.
        let path = tree.split(" as ").next().unwrap_or("").trim();
        return vec![path.trim_end_matches("::*").to_string()];
    };
    let prefix = tree[..open].trim().trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.extend(expand(&inner[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.extend(expand(&inner[start..]));
    out.into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.as_str() {
            "self" => prefix.to_string(),
            _ if prefix.is_empty() => p,
            _ => format!("{prefix}::{p}"),
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// (line, module path) of every crate path the code of a file names: each `use` tree
/// expanded, and paths written inline (`crate::base::now_seconds()`).
fn references(text: &str, here: &[String]) -> Vec<(usize, Vec<String>)> {
    let src: String = text.lines().map(|l| format!("{}\n", code(l))).collect();
    let line_of = |at: usize| src[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i < src.len() {
        let rest = &src[i..];
        let boundary = src[..i].chars().next_back().is_none_or(|c| !is_ident(c));
        if boundary && rest.starts_with("use ") {
            let end = rest.find(';').map_or(rest.len(), |e| e + 1);
            let tree: String = rest[4..end.saturating_sub(1)].split_whitespace().collect();
            for path in expand(&tree) {
                let parts: Vec<&str> = path.split("::").collect();
                if let Some(p) = resolve(&parts, here) {
                    out.push((line_of(i), p));
                }
            }
            i += end;
        } else if boundary && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let path: &str = rest
                .split(|c: char| !(is_ident(c) || c == ':'))
                .next()
                .unwrap_or("");
            let parts: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            if let Some(p) = resolve(&parts, here) {
                out.push((line_of(i), p));
            }
            i += path.len().max(1);
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// Check every file of the crate source `src` against `layers`.
pub fn check(src: &Path, layers: &BTreeMap<String, u32>) -> Result<Vec<Violation>> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let here = module_path(rel);
        // The binary and the crate root stand above every layer.
        let Some(top) = here.first() else { continue };
        if rel == Path::new("main.rs") {
            continue;
        }
        let Some(&own) = layers.get(top) else {
            out.push(Violation {
                file: rel.to_path_buf(),
                line: 1,
                message: format!("module {top} is in no layer of the README's list"),
            });
            continue;
        };
        let text = std::fs::read_to_string(&file)?;
        for (line, target) in references(&text, &here) {
            {
                let Some(to) = target.first() else { continue };
                let v = |message: String| Violation {
                    file: rel.to_path_buf(),
                    line,
                    message,
                };
                if to != top {
                    match layers.get(to) {
                        Some(&l) if l >= own => out.push(v(format!(
                            "{top} (layer {own}) imports {to} (layer {l}): only lower layers may be imported"
                        ))),
                        None => out.push(v(format!("{to} is in no layer of the README's list"))),
                        _ => {}
                    }
                } else if top == "collectors" {
                    // One collector never imports another (only `collectors`' own files).
                    let (mine, theirs) = (here.get(1), target.get(1));
                    if let (Some(mine), Some(theirs)) = (mine, theirs) {
                        let shared = !src.join("collectors").join(theirs).is_dir();
                        if mine != theirs && !shared {
                            out.push(v(format!(
                                "collector {mine} imports collector {theirs}: collectors never know each other"
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The guard as `cargo xtask test` runs it.
pub fn run(root: &Path) -> Result<()> {
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let layers = parse_layers(&readme)?;
    let violations = check(&root.join("agent/src"), &layers)?;
    if violations.is_empty() {
        println!("layers: agent/src imports only downward ({} layers)", {
            let mut n: Vec<u32> = layers.values().copied().collect();
            n.dedup();
            n.len()
        });
        return Ok(());
    }
    for v in &violations {
        eprintln!("agent/src/{v}");
    }
    bail!(
        "{} import(s) break the layers (README, \"How it works\")",
        violations.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "x\n<!-- layers -->\n| layer | modules | files |\n| --- | --- | --- |\n| 0 | `base` | |\n| 1 | `config` | |\n| 2 | `targets`, `server` | |\n| 3 | `collectors` | |\n| 4 | `agent` | |\n<!-- /layers -->\n";

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-layers-{}-{}",
            std::process::id(),
            fastrand_like()
        ));
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn fastrand_like() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn layers_come_from_the_readme() {
        let l = parse_layers(README).unwrap();
        assert_eq!(l["base"], 0);
        assert_eq!(l["targets"], 2);
        assert_eq!(l["server"], 2);
        assert_eq!(l["agent"], 4);
        assert!(parse_layers("no block").is_err());
    }

    #[test]
    fn references_resolve_crate_and_super() {
        let here: Vec<String> = ["collectors", "http", "requests"]
            .map(String::from)
            .to_vec();
        let paths = |text: &str| -> Vec<String> {
            references(text, &here)
                .into_iter()
                .map(|(line, p)| format!("{line}:{}", p.join("::")))
                .collect()
        };
        assert_eq!(
            paths("use crate::{\n    base::{Health, State},\n    config::Config,\n};\n"),
            ["1:base::Health", "1:base::State", "1:config::Config"]
        );
        assert_eq!(
            paths("use super::super::sampler::Sampler;"),
            ["1:collectors::sampler::Sampler"]
        );
        assert_eq!(
            paths("use super::{self, route};"),
            ["1:collectors::http", "1:collectors::http::route"]
        );
        assert_eq!(
            paths("// crate::agent\nlet x = crate::base::now(); // crate::agent"),
            ["2:base::now"]
        );
        assert!(paths("mycrate::agent::x(); use std::io;").is_empty());
    }

    #[test]
    fn a_planted_upward_import_fails_and_downward_ones_pass() {
        let layers = parse_layers(README).unwrap();
        let ok = tree(&[
            ("lib.rs", "pub mod base;\n"),
            ("base/mod.rs", "pub struct Health;\n"),
            (
                "targets.rs",
                "use crate::base::Health;\nuse crate::config::X;\n",
            ),
            ("config.rs", "pub struct X;\n"),
            ("collectors/mod.rs", "pub mod http; pub mod sampler;\n"),
            ("collectors/sampler.rs", "use crate::base::Health;\n"),
            (
                "collectors/http/mod.rs",
                "use super::sampler::S;\nuse crate::targets::T;\n",
            ),
            ("agent/mod.rs", "use crate::collectors::http::Http;\n"),
        ]);
        assert_eq!(check(&ok, &layers).unwrap(), Vec::new());
        let bad = tree(&[
            ("base/mod.rs", "use crate::agent::Agent; // planted\n"),
            ("config.rs", "use crate::targets::T;\n"),
            ("targets.rs", "pub struct T;\n"),
            ("server.rs", "use crate::{base::H, targets::T};\n"),
            ("collectors/http/mod.rs", "use super::gpu::Gpu;\n"),
            (
                "collectors/gpu/mod.rs",
                "use crate::collectors::http::Http;\n",
            ),
            ("agent/mod.rs", "\n"),
        ]);
        let v: Vec<String> = check(&bad, &layers)
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            v,
            [
                "base/mod.rs:1: base (layer 0) imports agent (layer 4): only lower layers may be imported",
                "collectors/gpu/mod.rs:1: collector gpu imports collector http: collectors never know each other",
                "collectors/http/mod.rs:1: collector http imports collector gpu: collectors never know each other",
                "config.rs:1: config (layer 1) imports targets (layer 2): only lower layers may be imported",
                "server.rs:1: server (layer 2) imports targets (layer 2): only lower layers may be imported",
            ]
        );
        let _ = std::fs::remove_dir_all(ok);
        let _ = std::fs::remove_dir_all(bad);
    }

    #[test]
    fn the_agent_keeps_its_layers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let v = check(&root.join("agent/src"), &parse_layers(&readme).unwrap()).unwrap();
        assert!(
            v.is_empty(),
            "{}",
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
