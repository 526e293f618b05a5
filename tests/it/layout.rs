//! The source tree's shape (no database): no file over 700 lines, no import cycle
//! between the files of `src/` (a module may use its parent's items; a parent declaring
//! and re-exporting its children is not an import), and no folder importing one that
//! lib.rs lists before it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_over_700_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "lab/src", "benches"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("read").lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines})", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split by responsibility: {long:?}");
}

/// A module's path (`["db", "connect"]`) for a file under `src/`, or `None` for test files.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.last()?.clone();
    if last == "tests" || last.ends_with("_tests") {
        return None;
    }
    if last == "mod" || (parts.len() == 1 && (last == "lib" || last == "main")) {
        parts.pop();
    }
    Some(parts)
}

/// The modules a file's production code (before its first `#[cfg(test)]`) names through
/// `crate::` or `super::` paths, including braced groups (`crate::a::{b, c}`).
fn imports(module: &[String], text: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let resolve = |path: Vec<String>| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| known.contains(p))
    };
    let mut found = BTreeSet::new();
    for (anchor, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        for (at, _) in code.match_indices(anchor) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + anchor.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let mut path = base.clone();
            path.extend(
                rest[..end]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
            let mut targets: Vec<Vec<String>> = Vec::new();
            if rest[end..].starts_with('{') {
                let group = &rest[end + 1..rest[end..].find('}').map_or(end + 1, |i| end + i)];
                for item in group.split(',') {
                    let head = item.trim().split("::").next().unwrap_or_default();
                    let head = head.split_whitespace().next().unwrap_or_default();
                    if !head.is_empty() && head != "self" {
                        let mut p = path.clone();
                        p.push(head.to_string());
                        targets.push(p);
                    }
                }
            }
            targets.push(path);
            for t in targets.into_iter().filter_map(&resolve) {
                // Within one's own subtree or up one's own ancestry: structure, not an import.
                if !t.starts_with(module) && !module.starts_with(&t) {
                    found.insert(t);
                }
            }
        }
    }
    found
}

/// Each file's module under `src/`, with the modules its production code imports.
fn import_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .into_iter()
        .filter_map(|f| Some((module_of(&src, &f)?, f)))
        .collect();
    let known: BTreeSet<Vec<String>> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(m, f)| {
            let text = std::fs::read_to_string(f).expect("read");
            (m.clone(), imports(m, &text, &known))
        })
        .collect()
}

#[test]
fn no_import_cycle_between_source_files() {
    let graph = import_graph();
    // A cycle exists if some module reaches itself; report each such module with the path.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![((*start).clone(), vec![(*start).clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = trail.iter().map(|m| m.join("/")).collect();
                    cycles.push(format!("{} -> {}", names.join(" -> "), start.join("/")));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(graph.len() > 20, "found only {} modules", graph.len());
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The folders lib.rs lists, top first, up to the line of modules shared by all.
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    lib.lines()
        .take_while(|l| !l.contains("shared by all"))
        .filter_map(|l| l.strip_prefix("//! - `")?.split('`').next())
        .map(String::from)
        .collect()
}

#[test]
fn folders_import_only_the_layers_below_them() {
    let layers = layers();
    assert!(layers.len() >= 8, "lib.rs lists only {layers:?}");
    let layer = |m: &[String]| {
        m.first()
            .and_then(|top| layers.iter().position(|l| l == top))
    };
    let mut upward = Vec::new();
    for (m, imported) in import_graph() {
        let Some(own) = layer(&m) else { continue };
        for t in imported {
            if layer(&t).is_some_and(|other| other < own) {
                upward.push(format!("{} -> {}", m.join("/"), t.join("/")));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against lib.rs's order:\n{}",
        upward.join("\n")
    );
}
