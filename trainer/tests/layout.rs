//! The trainer's layout: its top-level modules follow the data path in the order `lib.rs` declares
//! them, each importing only those declared before it, and no folder's modules import each other in
//! a circle. Read from the sources themselves (`crate::` and `super::` paths outside test modules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module's path from the crate root ([] for `lib.rs`, ["stages", "solve"] for stages/solve.rs).
type ModPath = Vec<String>;

/// Every library source file under `src` (not the binaries) with its module path and its text.
fn sources(src: &Path) -> Vec<(ModPath, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(ModPath, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "bin" {
                    walk(&p, root, out);
                }
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap();
            let mut parts: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let last = parts.pop().unwrap();
            match last.as_str() {
                "main.rs" if parts.is_empty() => continue,
                "lib.rs" if parts.is_empty() => {}
                "mod.rs" => {}
                f => parts.push(f.trim_end_matches(".rs").to_string()),
            }
            out.push((parts, std::fs::read_to_string(&p).unwrap()));
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out.sort();
    out
}

/// The text without line comments and without its test module (from `#[cfg(test)]` on).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths of a use tree starting at `s` (after `crate::` or `super::`): `a::b`, `a::{b, c::d}`.
fn use_tree(s: &[u8], mut i: usize, prefix: &[String], out: &mut Vec<ModPath>) -> usize {
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
            *i += 1;
        }
        String::from_utf8_lossy(&s[start..*i]).into_owned()
    };
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let mut path = prefix.to_vec();
    loop {
        skip_ws(&mut i);
        if i < s.len() && s[i] == b'{' {
            i += 1;
            loop {
                skip_ws(&mut i);
                if i >= s.len() || s[i] == b'}' {
                    return i + 1;
                }
                i = use_tree(s, i, &path, out);
                skip_ws(&mut i);
                if i < s.len() && s[i] == b',' {
                    i += 1;
                }
            }
        }
        let id = ident(&mut i);
        if id.is_empty() || id == "self" {
            out.push(path);
            // skip `*` or `as name`
            while i < s.len() && !matches!(s[i], b',' | b'}' | b';' | b'\n') {
                i += 1;
            }
            return i;
        }
        path.push(id);
        if s[i..].starts_with(b"::") {
            i += 2;
            continue;
        }
        out.push(path);
        return i;
    }
}

/// Every module path `text` (the file of module `at`) names through `crate::` or `super::`.
fn references(at: &ModPath, text: &str) -> Vec<ModPath> {
    let code = code(text);
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
        if boundary && s[i..].starts_with(b"crate::") {
            i = use_tree(s, i + 7, &[], &mut out);
        } else if boundary && s[i..].starts_with(b"super::") {
            // a folder's mod.rs is the folder's module: its `super` is the folder's parent
            let mut base = at.clone();
            base.pop();
            i = use_tree(s, i + 7, &base, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// The edges between sibling modules: (parent, from, to) for each reference of a module of one
/// branch to a module of another branch of the same parent.
fn sibling_edges(files: &[(ModPath, String)]) -> BTreeSet<(ModPath, String, String)> {
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.0.clone()).collect();
    let mut edges = BTreeSet::new();
    for (at, text) in files {
        for r in references(at, text) {
            // the longest prefix of the reference that is a module
            let target = (0..=r.len())
                .rev()
                .map(|k| r[..k].to_vec())
                .find(|p| modules.contains(p))
                .unwrap_or_default();
            let k = at.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if k == at.len() || k == target.len() {
                continue; // one contains the other: a module and its own parts
            }
            edges.insert((at[..k].to_vec(), at[k].clone(), target[k].clone()));
        }
    }
    edges
}

/// A circle among the edges of one parent's modules, if there is one.
fn circle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        graph.entry(a).or_default().push(b);
    }
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|m| *m == n).unwrap();
                let mut c: Vec<String> = stack[from..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n, 1);
        stack.push(n);
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, &graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// What is wrong with a layout: circles in any folder, and top-level imports against `order`.
fn violations(files: &[(ModPath, String)], order: &[String]) -> Vec<String> {
    let edges = sibling_edges(files);
    let mut by_parent: BTreeMap<ModPath, BTreeSet<(String, String)>> = BTreeMap::new();
    for (parent, a, b) in &edges {
        by_parent
            .entry(parent.clone())
            .or_default()
            .insert((a.clone(), b.clone()));
    }
    let mut bad = Vec::new();
    for (parent, e) in &by_parent {
        if let Some(c) = circle(e) {
            bad.push(format!(
                "import circle in crate::{}: {}",
                parent.join("::"),
                c.join(" -> ")
            ));
        }
    }
    for (a, b) in by_parent.get(&Vec::new()).into_iter().flatten() {
        let pos = |m: &String| order.iter().position(|o| o == m);
        match (pos(a), pos(b)) {
            (Some(i), Some(j)) if j < i => {}
            _ => bad.push(format!(
                "crate::{a} imports crate::{b}, which lib.rs does not declare before it"
            )),
        }
    }
    bad
}

/// The top-level modules in the order lib.rs declares them.
fn declared(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn modules_follow_the_data_path_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = declared(&lib);
    assert!(order.len() >= 10, "lib.rs declares {order:?}");
    // the checker sees the imports it is meant to see
    let edges = sibling_edges(&files);
    for (from, to) in [
        ("stages", "train"),
        ("export", "stages"),
        ("eval", "stages"),
    ] {
        assert!(
            edges.contains(&(vec![], from.into(), to.into())),
            "{from} -> {to} not found"
        );
    }
    assert!(edges.contains(&(vec!["stages".into()], "student".into(), "pairs".into())));
    let bad = violations(&files, &order);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The checker finds a circle, a grouped import against the order, and ignores test modules.
#[test]
fn checker_finds_circles_and_imports_against_the_order() {
    let f = |p: &[&str], t: &str| -> (ModPath, String) {
        (p.iter().map(|s| s.to_string()).collect(), t.to_string())
    };
    let order: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let ok = [
        f(&["a"], "pub fn x() {}"),
        f(
            &["b"],
            "use crate::a::x;\n#[cfg(test)]\nmod t { use crate::c::y; }",
        ),
        f(&["c"], "use crate::{a::x, b};"),
        f(&["c", "p"], "use super::q::z; // crate::c::q is a sibling"),
        f(&["c", "q"], "pub fn z() { crate::a::x() }"),
    ];
    assert!(
        violations(&ok, &order).is_empty(),
        "{:?}",
        violations(&ok, &order)
    );
    let mut against = ok.to_vec();
    against[0] = f(&["a"], "use crate::{b::{self}, c};");
    let bad = violations(&against, &order);
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(bad[0].contains("circle in crate::: a -> b -> a"), "{bad:?}");
    assert!(
        bad[1..]
            .iter()
            .all(|b| b.contains("does not declare before it")),
        "{bad:?}"
    );
    let mut cyclic = ok.to_vec();
    cyclic[4] = f(&["c", "q"], "use super::p::w;");
    let bad = violations(&cyclic, &order);
    assert!(
        bad.len() == 1 && bad[0].contains("circle in crate::c"),
        "{bad:?}"
    );
}
