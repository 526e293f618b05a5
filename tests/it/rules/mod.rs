//! Rules, dashboards and the compose stack are code, and are tested as code:
//! `promtool check rules` / `promtool test rules`, every dashboard expression
//! parsed by promtool, every metric name checked against
//! `tests/fixtures/metric_names.txt`, the Azure rule groups kept in sync with
//! the YAML, and `compose.yaml` validated against the compose-spec schema.
//!
//! Nothing is skipped: without `promtool` (Debian/Ubuntu package
//! `prometheus`, or `PROMTOOL=/path/to/promtool`) these tests fail and say so.
//!
//! `prometheus/azure/pgdrill-rule-groups.json` is generated from the YAML by
//! `azure_rule_groups()` below; after changing the rules, regenerate it with
//! `PGDRILL_BLESS=1 cargo test azure_rule_groups`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

mod azure;
mod conventions;
mod dashboards;
mod deploy;
mod mutation;
mod panels;
mod promtool;

pub(crate) use conventions::numbers_in;
use conventions::{ranges_in, seconds, RUNBOOK_BASE};
use dashboards::{dashboard_exprs, dashboard_variable_queries};
pub(crate) use mutation::Mutation;
pub(crate) use promtool::assert_generated;

// ---------------------------------------------------------------------------
// Files of the repository.

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Files directly in `dir` (relative to the repo root) whose name ends with one of `exts`, sorted.
fn files_in(dir: &str, exts: &[&str]) -> Vec<PathBuf> {
    let path = repo().join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            p.is_file() && exts.iter().any(|ext| name.ends_with(ext))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {exts:?} files in {}", path.display());
    files
}

fn rule_files() -> Vec<PathBuf> {
    files_in("prometheus/rules", &[".yml", ".yaml"])
}

fn rule_test_files() -> Vec<PathBuf> {
    files_in("prometheus/tests", &[".yml", ".yaml"])
}

fn dashboard_files() -> Vec<PathBuf> {
    files_in("grafana/dashboards", &[".json"])
}

fn yaml(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn json_file(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

// ---------------------------------------------------------------------------
// promtool.

fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "promtool not found: these tests need it and skip nothing. Install it \
             (Debian/Ubuntu: `apt-get install prometheus`) or set PROMTOOL=/path/to/promtool"
        )
    })
}

/// Runs promtool with `args` in `dir`, asserting success and showing its output otherwise.
pub(crate) fn run_promtool(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------
// Rules.

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    group: String,
    pub(crate) record: Option<String>,
    pub(crate) alert: Option<String>,
    pub(crate) expr: String,
    pub(crate) raw: Value,
}

#[derive(Debug)]
struct Group {
    name: String,
    raw: Value,
    rules: Vec<Rule>,
}

fn load_groups(path: &Path) -> Vec<Group> {
    let doc = yaml(path);
    let groups = doc["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no `groups` list", path.display()));
    groups
        .iter()
        .map(|g| {
            let name = str_of(g, "name").expect("group without name").to_string();
            let rules = g["rules"]
                .as_array()
                .unwrap_or_else(|| panic!("group {name}: no rules"))
                .iter()
                .map(|r| Rule {
                    group: name.clone(),
                    record: str_of(r, "record").map(str::to_string),
                    alert: str_of(r, "alert").map(str::to_string),
                    expr: str_of(r, "expr")
                        .unwrap_or_else(|| panic!("group {name}: rule without expr"))
                        .to_string(),
                    raw: r.clone(),
                })
                .collect();
            Group {
                name,
                raw: g.clone(),
                rules,
            }
        })
        .collect()
}

pub(crate) fn all_rules() -> Vec<Rule> {
    rule_files()
        .iter()
        .flat_map(|f| load_groups(f))
        .flat_map(|g| g.rules)
        .collect()
}

fn recorded_names() -> BTreeSet<String> {
    all_rules().into_iter().filter_map(|r| r.record).collect()
}

// ---------------------------------------------------------------------------
// Metric names.

/// Identifier-like tokens of a PromQL expression, outside string literals.
/// Durations, numbers and `[...]` ranges are skipped; `a:b:c` recording-rule
/// names stay whole.
fn identifiers(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '[' {
            // Range and subquery durations: `[5m]`, `[10m:30s]`.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            i += 1;
        }
    }
    out
}

/// The pgdrill process's own metric families (`pgdrill_*`, `process_*`) an
/// expression reads, by family name: `_bucket`/`_sum`/`_count` series map to
/// their histogram. Recording-rule names (with `:`) are not included.
pub fn metric_names_in(expr: &str) -> BTreeSet<String> {
    identifiers(expr)
        .into_iter()
        .filter(|t| !t.contains(':') && (t.starts_with("pgdrill_") || t.starts_with("process_")))
        .map(|t| {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = t.strip_suffix(suffix) {
                    return base.to_string();
                }
            }
            t
        })
        .collect()
}

/// Recording-rule names (`level:metric:operations`) an expression reads.
fn recording_names_in(expr: &str) -> BTreeSet<String> {
    identifiers(expr)
        .into_iter()
        .filter(|t| t.contains(':'))
        .collect()
}

/// Every metric family of pgdrill (`pgdrill_*`, `process_*`) that the
/// dashboards (panels, annotations, template variables) and the Prometheus
/// rules read, histograms by base name. Recording-rule outputs are excluded.
/// Compare with `tests/fixtures/metric_names.txt` or a live `/metrics` scrape.
pub fn metric_names_used() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for rule in all_rules() {
        names.extend(metric_names_in(&rule.expr));
    }
    for e in dashboard_exprs() {
        names.extend(metric_names_in(&e.expr));
    }
    for q in dashboard_variable_queries() {
        names.extend(metric_names_in(&q));
    }
    names
}

/// The metric families pgdrill exports, from `tests/fixtures/metric_names.txt`.
pub fn known_metric_names() -> BTreeSet<String> {
    read("tests/fixtures/metric_names.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
