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
// Dashboards.

/// A PromQL expression found in a dashboard, with where it was found.
struct DashboardExpr {
    at: String,
    expr: String,
}

fn collect_exprs(v: &Value, at: &str, out: &mut Vec<DashboardExpr>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = match (map.get("title"), map.get("refId"), map.get("name")) {
                    (Some(Value::String(t)), _, _) => format!("{at}/{t}"),
                    (_, Some(Value::String(r)), _) => format!("{at}/{r}"),
                    (_, _, Some(Value::String(n))) => format!("{at}/{n}"),
                    _ => at.to_string(),
                };
                if k == "expr" {
                    if let Value::String(expr) = child {
                        out.push(DashboardExpr {
                            at: here,
                            expr: expr.clone(),
                        });
                    }
                } else {
                    collect_exprs(child, &here, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, at, out)),
        _ => {}
    }
}

fn dashboard_exprs() -> Vec<DashboardExpr> {
    let mut out = Vec::new();
    for file in dashboard_files() {
        collect_exprs(&json_file(&file), &rel(&file), &mut out);
    }
    assert!(!out.is_empty(), "no expressions in the dashboards");
    out
}

/// Template-variable queries (`label_values(metric{...}, label)`), Grafana syntax, not PromQL.
fn dashboard_variable_queries() -> Vec<String> {
    let mut out = Vec::new();
    for file in dashboard_files() {
        let dash = json_file(&file);
        for var in dash["templating"]["list"].as_array().into_iter().flatten() {
            if str_of(var, "type") != Some("query") {
                continue;
            }
            match &var["query"] {
                Value::String(q) => out.push(q.clone()),
                Value::Object(o) => {
                    out.extend(o.get("query").and_then(Value::as_str).map(str::to_string))
                }
                _ => {}
            }
        }
    }
    out
}

/// Replaces Grafana's variables so that promtool can parse the expression.
fn grafana_to_promql(expr: &str) -> String {
    let mut s = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "1m")
        .replace("${__interval}", "1m")
        .replace("$__range", "1h")
        .replace("${__range}", "1h");
    // Remaining template variables ($job, ${instance}, ${instance:regex}) only
    // occur inside label-matcher strings.
    while let Some(start) = s.find('$') {
        let rest = &s[start + 1..];
        let len = if let Some(inner) = rest.strip_prefix('{') {
            inner.find('}').map(|i| i + 2).expect("unclosed ${")
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        };
        s.replace_range(start..start + 1 + len, ".*");
    }
    s
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

// ---------------------------------------------------------------------------
// Azure Monitor managed Prometheus rule groups (ARM template).

const AZURE_TEMPLATE: &str = "prometheus/azure/pgdrill-rule-groups.json";
/// Azure evaluates rule groups every 1 to 15 minutes.
const AZURE_INTERVAL: &str = "PT1M";
const AZURE_MAX_RULES_PER_GROUP: usize = 20;

/// Prometheus duration ("90s", "5m", "1h30m") to ISO 8601 ("PT90S", "PT5M", "PT1H30M").
fn iso8601(duration: &str) -> String {
    let mut out = String::from("PT");
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            let unit = match c {
                'h' => 'H',
                'm' => 'M',
                's' => 'S',
                other => panic!("duration {duration:?}: unit {other:?} has no Azure equivalent"),
            };
            assert!(!number.is_empty(), "duration {duration:?}");
            out.push_str(&number);
            out.push(unit);
            number.clear();
        }
    }
    assert!(number.is_empty() && out.len() > 2, "duration {duration:?}");
    out
}

/// Azure alert severity (0 critical .. 4 verbose) from our `severity` label.
fn azure_severity(label: &str) -> u8 {
    match label {
        "critical" => 0,
        "warning" => 2,
        "info" => 3,
        other => panic!("severity {other:?} has no Azure mapping"),
    }
}

/// ARM evaluates strings starting with `[` as template expressions; `[[` escapes.
fn arm_literal(s: &str) -> Value {
    if s.starts_with('[') {
        Value::String(format!("[{s}"))
    } else {
        Value::String(s.to_string())
    }
}

fn arm_map(v: &Value) -> Value {
    let map = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), arm_literal(v.as_str().expect("string value"))))
                .collect()
        })
        .unwrap_or_default();
    Value::Object(map)
}

/// The ARM template equivalent to the YAML rule files: one
/// Microsoft.AlertsManagement/prometheusRuleGroups resource per YAML group,
/// the same names, expressions, `for`, labels and annotations; Azure-only
/// fields (severity number, auto-resolve, action group) added.
fn azure_rule_groups() -> Value {
    let mut resources = Vec::new();
    for file in rule_files() {
        for group in load_groups(&file) {
            let rules: Vec<Value> = group
                .rules
                .iter()
                .map(|r| {
                    let mut rule = serde_json::Map::new();
                    if let Some(record) = &r.record {
                        rule.insert("record".into(), json!(record));
                    }
                    if let Some(alert) = &r.alert {
                        rule.insert("alert".into(), json!(alert));
                    }
                    rule.insert("expression".into(), arm_literal(r.expr.trim_end()));
                    rule.insert("enabled".into(), json!(true));
                    if let Some(labels) = r.raw.get("labels") {
                        rule.insert("labels".into(), arm_map(labels));
                    }
                    if r.alert.is_some() {
                        if let Some(f) = str_of(&r.raw, "for") {
                            rule.insert("for".into(), json!(iso8601(f)));
                        }
                        let severity = str_of(&r.raw["labels"], "severity")
                            .unwrap_or_else(|| panic!("{:?} has no severity", r.alert));
                        rule.insert("severity".into(), json!(azure_severity(severity)));
                        if let Some(annotations) = r.raw.get("annotations") {
                            let mut annotations = arm_map(annotations);
                            // The runbook base is a template parameter.
                            if let Some(url) = annotations.get_mut("runbook_url") {
                                let anchor = url
                                    .as_str()
                                    .and_then(|u| u.strip_prefix(RUNBOOK_BASE))
                                    .unwrap_or_else(|| panic!("{:?}: runbook_url {url}", r.alert))
                                    .to_string();
                                *url = json!(format!(
                                    "[concat(parameters('runbookBaseUrl'), '{anchor}')]"
                                ));
                            }
                            rule.insert("annotations".into(), annotations);
                        }
                        rule.insert(
                            "resolveConfiguration".into(),
                            json!({"autoResolved": true, "timeToResolve": "PT5M"}),
                        );
                        rule.insert(
                            "actions".into(),
                            json!("[if(empty(parameters('actionGroupId')), createArray(), createArray(createObject('actionGroupId', parameters('actionGroupId'))))]"),
                        );
                    }
                    Value::Object(rule)
                })
                .collect();
            resources.push(json!({
                "type": "Microsoft.AlertsManagement/prometheusRuleGroups",
                "apiVersion": "2023-03-01",
                "name": format!("[concat(parameters('ruleGroupPrefix'), '{}')]", group.name),
                "location": "[parameters('location')]",
                "properties": {
                    "description": format!("pgdrill rule group {} (generated from {})", group.name, rel(&file)),
                    "enabled": true,
                    "scopes": ["[parameters('azureMonitorWorkspace')]"],
                    "clusterName": "[if(empty(parameters('clusterName')), null(), parameters('clusterName'))]",
                    "interval": AZURE_INTERVAL,
                    "rules": rules,
                }
            }));
        }
    }
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": "pgdrill recording rules and alerts for Azure Monitor managed service for Prometheus. GENERATED from prometheus/rules/*.yml by tests/it/rules.rs; do not edit, regenerate with: PGDRILL_BLESS=1 cargo test azure_rule_groups"
        },
        "parameters": {
            "azureMonitorWorkspace": {"type": "string", "metadata": {"description": "Resource ID of the Azure Monitor workspace that stores the pgdrill metrics"}},
            "location": {"type": "string", "defaultValue": "[resourceGroup().location]", "metadata": {"description": "Location of the rule groups (the workspace's region)"}},
            "clusterName": {"type": "string", "defaultValue": "", "metadata": {"description": "Restrict the rules to the metrics of this AKS/Arc cluster (empty: all data in the workspace)"}},
            "actionGroupId": {"type": "string", "defaultValue": "", "metadata": {"description": "Resource ID of the action group notified by the alerts (empty: none)"}},
            "ruleGroupPrefix": {"type": "string", "defaultValue": "", "metadata": {"description": "Prefix of the rule group names, to deploy several copies into one resource group"}},
            "runbookBaseUrl": {"type": "string", "defaultValue": RUNBOOK_BASE, "metadata": {"description": "URL of your published copy of docs/runbooks.md; the alerts link to its #pgdrill... anchors (one per alert)"}}
        },
        "resources": resources,
    })
}

// ---------------------------------------------------------------------------
// Tests: Prometheus rules.

#[test]
fn promtool_check_rules_accepts_every_rule_file() {
    let files: Vec<String> = rule_files().iter().map(|f| rel(f)).collect();
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    run_promtool(repo(), &args);
}

#[test]
fn promtool_unit_tests_pass() {
    let files: Vec<String> = rule_test_files().iter().map(|f| rel(f)).collect();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = run_promtool(repo(), &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("SUCCESS").count(),
        files.len(),
        "expected one SUCCESS per test file:\n{stdout}"
    );
}

#[test]
fn prometheus_config_is_valid() {
    // Also loads and checks the rule files it points at.
    run_promtool(repo(), &["check", "config", "prometheus/prometheus.yml"]);
}

#[test]
fn every_rule_and_alert_has_a_unit_test() {
    let mut tested_exprs = Vec::new();
    let mut tested_alerts = BTreeSet::new();
    for file in rule_test_files() {
        let doc = yaml(&file);
        for test in doc["tests"].as_array().into_iter().flatten() {
            for t in test["promql_expr_test"].as_array().into_iter().flatten() {
                tested_exprs.push(str_of(t, "expr").unwrap_or_default().to_string());
            }
            for t in test["alert_rule_test"].as_array().into_iter().flatten() {
                tested_alerts.insert(str_of(t, "alertname").unwrap_or_default().to_string());
            }
        }
    }
    let tested_records: BTreeSet<String> = tested_exprs
        .iter()
        .flat_map(|e| recording_names_in(e))
        .collect();
    let mut untested = Vec::new();
    for rule in all_rules() {
        match (&rule.record, &rule.alert) {
            (Some(r), _) if !tested_records.contains(r) => untested.push(r.clone()),
            (_, Some(a)) if !tested_alerts.contains(a) => untested.push(a.clone()),
            _ => {}
        }
    }
    assert!(
        untested.is_empty(),
        "rules without a promtool unit test: {untested:?}"
    );
}

/// Where the alerts' runbook links point: a placeholder the user replaces with
/// where they publish docs/runbooks.md (the Azure template takes it as the
/// parameter `runbookBaseUrl`). `.invalid` never resolves to someone else's site.
const RUNBOOK_BASE: &str = "https://pgdrill.invalid/docs/runbooks.md";

/// Heading anchors of README.md and docs/*.md (runbooks may live in either).
fn doc_anchors() -> BTreeSet<String> {
    let mut texts = vec![read("README.md")];
    if let Ok(entries) = fs::read_dir(repo().join("docs")) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "md") {
                texts.push(fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with('#'))
        .map(|l| github_anchor(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn rules_follow_naming_and_annotation_conventions() {
    let anchors = doc_anchors();
    let mut problems = Vec::new();
    for rule in all_rules() {
        if let Some(record) = &rule.record {
            let parts: Vec<&str> = record.split(':').collect();
            // level:metric:operations; a constant has no operations (level:metric).
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
                problems.push(format!("{record}: not level:metric:operations"));
            }
        }
        if let Some(alert) = &rule.alert {
            let camel = alert.starts_with("Pgdrill")
                && alert.len() > "Pgdrill".len()
                && alert.chars().all(|c| c.is_ascii_alphanumeric())
                && alert["Pgdrill".len()..].starts_with(|c: char| c.is_ascii_uppercase());
            if !camel {
                problems.push(format!("{alert}: not CamelCase with the Pgdrill prefix"));
            }
            match str_of(&rule.raw["labels"], "severity") {
                Some("critical" | "warning" | "info") => {}
                other => problems.push(format!("{alert}: severity {other:?}")),
            }
            for key in ["summary", "description", "runbook_url"] {
                if str_of(&rule.raw["annotations"], key).is_none_or(str::is_empty) {
                    problems.push(format!("{alert}: no {key} annotation"));
                }
            }
            let want = format!("{RUNBOOK_BASE}#{}", alert.to_lowercase());
            match str_of(&rule.raw["annotations"], "runbook_url") {
                Some(url) if url == want => {}
                other => problems.push(format!("{alert}: runbook_url {other:?}, want {want}")),
            }
            if !anchors.contains(&alert.to_lowercase()) {
                problems.push(format!(
                    "{alert}: docs/runbooks.md has no heading `{alert}`"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn rto_objective_is_configured_in_one_place() {
    let rules = all_rules();
    let defining: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.record.as_deref() == Some("pgdrill:rto_objective_seconds"))
        .collect();
    assert_eq!(
        defining.len(),
        1,
        "pgdrill:rto_objective_seconds must be recorded once"
    );
    assert_eq!(
        defining[0].expr.trim(),
        "vector(120)",
        "the objective is a constant, 120 s by default"
    );
    // The alerts about the objective compare with the rule, and no rule
    // hard-codes the number.
    for alert in ["PgdrillWritesUnavailable", "PgdrillRTOObjectiveMissed"] {
        let rule = rules
            .iter()
            .find(|r| r.alert.as_deref() == Some(alert))
            .unwrap_or_else(|| panic!("no {alert}"));
        assert!(
            rule.expr.contains("pgdrill:rto_objective_seconds"),
            "{alert}"
        );
    }
    for rule in rules
        .iter()
        .filter(|r| r.record.as_deref() != Some("pgdrill:rto_objective_seconds"))
    {
        assert!(
            !numbers_in(&rule.expr).contains(&"120".to_string()),
            "{:?} hard-codes 120",
            rule.alert.as_ref().or(rule.record.as_ref())
        );
    }
}

/// Number literals of an expression (not digits inside names, strings or ranges).
pub(crate) fn numbers_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                }
            }
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
            }
            _ if c.is_ascii_digit()
                && !(prev.is_ascii_alphanumeric() || prev == '_' || prev == ':') =>
            {
                let mut number = c.to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_digit() || d == '.' {
                        number.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(number);
            }
            _ => {}
        }
        prev = c;
    }
    out
}

#[test]
fn rules_stay_within_azure_managed_prometheus_limits() {
    let mut problems = Vec::new();
    for file in rule_files() {
        for group in load_groups(&file) {
            for key in ["interval", "limit", "query_offset"] {
                if group.raw.get(key).is_some() {
                    problems.push(format!(
                        "group {}: `{key}` (Azure sets the interval itself; the others are not accepted)",
                        group.name
                    ));
                }
            }
            if group.rules.len() > AZURE_MAX_RULES_PER_GROUP {
                problems.push(format!(
                    "group {}: {} rules, Azure accepts {AZURE_MAX_RULES_PER_GROUP}",
                    group.name,
                    group.rules.len()
                ));
            }
            for rule in &group.rules {
                let name = rule
                    .record
                    .clone()
                    .or(rule.alert.clone())
                    .unwrap_or_default();
                if let Some(map) = rule.raw.as_object() {
                    for key in map.keys() {
                        let allowed = ["record", "alert", "expr", "for", "labels", "annotations"];
                        if !allowed.contains(&key.as_str()) {
                            problems.push(format!(
                                "{}/{name}: `{key}` is not accepted by Azure",
                                rule.group
                            ));
                        }
                    }
                }
                if rule.raw["labels"].as_object().is_some_and(|l| l.len() > 10) {
                    problems.push(format!("{name}: more than 10 labels"));
                }
                for (k, v) in rule.raw["annotations"].as_object().into_iter().flatten() {
                    if v.as_str().is_some_and(|s| s.len() > 1024) {
                        problems.push(format!("{name}: annotation {k} longer than 1024"));
                    }
                }
                if let Some(f) = str_of(&rule.raw, "for") {
                    iso8601(f);
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn azure_rule_groups_match_the_yaml() {
    let mut want = serde_json::to_string_pretty(&azure_rule_groups()).expect("serialize");
    want.push('\n');
    let path = repo().join(AZURE_TEMPLATE);
    if std::env::var_os("PGDRILL_BLESS").is_some() {
        fs::write(&path, &want).expect("write the Azure template");
        return;
    }
    let have = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{AZURE_TEMPLATE} is out of date with prometheus/rules; regenerate it with \
         `PGDRILL_BLESS=1 cargo test azure_rule_groups` and commit the result"
    );
    // Azure's own limits, checked on the generated resources.
    let doc: Value = serde_json::from_str(&have).expect("valid JSON");
    for res in doc["resources"].as_array().expect("resources") {
        let rules = res["properties"]["rules"].as_array().expect("rules");
        assert!(!rules.is_empty() && rules.len() <= AZURE_MAX_RULES_PER_GROUP);
        for r in rules {
            assert!(r.get("record").is_some() != r.get("alert").is_some());
            if let Some(s) = r.get("severity") {
                assert!(s.as_u64().is_some_and(|s| s <= 4));
            }
        }
    }
}

/// Range selectors (`[5m]`, `[10m:1m]`) of an expression with the function
/// that reads them.
fn ranges_in(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .expect("unclosed [");
        let range = rest[open + 1..close].to_string();
        // The innermost function call that the range is an argument of.
        let before = &rest[..open];
        let function = before
            .rfind('(')
            .map(|p| {
                let name: String = before[..p]
                    .chars()
                    .rev()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                name.chars().rev().collect()
            })
            .unwrap_or_default();
        out.push((function, range));
        rest = &rest[close + 1..];
    }
    out
}

fn seconds(duration: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            let n: u64 = number
                .parse()
                .unwrap_or_else(|_| panic!("duration {duration:?}"));
            number.clear();
            total += n * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                other => panic!("duration {duration:?}: unit {other}"),
            };
        }
    }
    assert!(number.is_empty(), "duration {duration:?}");
    total
}

/// At 60 s scrapes, rates need at least four scrapes in the window (and
/// three after one missed scrape): 5m. Shorter ranges only bridge a missed
/// scrape (`last_over_time`, `max_over_time` of a recorded series), never
/// measure a rate.
#[test]
fn windows_hold_enough_scrapes_at_60s() {
    let mut problems = Vec::new();
    for rule in all_rules() {
        let name = rule
            .alert
            .clone()
            .or(rule.record.clone())
            .unwrap_or_default();
        for (function, range) in ranges_in(&rule.expr) {
            let s = seconds(range.split(':').next().unwrap_or_default());
            let min = match function.as_str() {
                "rate" | "increase" | "irate" | "delta" | "changes" | "resets" => 300,
                "last_over_time" | "max_over_time" | "min_over_time" => 120,
                // Sums of a recorded 5m rate (the SLO windows), one sample per evaluation.
                "sum_over_time" => 300,
                other => {
                    problems.push(format!("{name}: [{range}] read by {other:?}"));
                    continue;
                }
            };
            if s < min {
                problems.push(format!("{name}: {function}[{range}] shorter than {min} s"));
            }
        }
        if let Some(f) = str_of(&rule.raw, "for") {
            if seconds(f) < 300 {
                problems.push(format!("{name}: for {f} is shorter than 5m"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        ranges_in("max_over_time(x[3m]) + rate(y{a=\"[\"}[5m:1m])").len(),
        2
    );
}

/// Job-level rules keep the topology: aggregations fold named labels
/// (`without`), and only labels that tell replicas or series of one canary
/// apart; they never keep a fixed list (`by`) that would drop cluster or
/// namespace.
#[test]
fn aggregations_keep_cluster_and_namespace() {
    const FOLDABLE: [&str; 7] = [
        "instance",
        "pod",
        "container",
        "endpoint",
        "class",
        "version",
        "state",
    ];
    let mut problems = Vec::new();
    for rule in all_rules() {
        let name = rule
            .alert
            .clone()
            .or(rule.record.clone())
            .unwrap_or_default();
        let expr = rule.expr.replace('\n', " ");
        if expr.contains(" by (") || expr.contains(" by(") {
            problems.push(format!("{name}: aggregates `by` a fixed label list"));
        }
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("without (") {
            let list = &rest[at + "without (".len()..];
            let end = list.find(')').expect("unclosed without (");
            for label in list[..end].split(',').map(str::trim) {
                if !FOLDABLE.contains(&label) {
                    problems.push(format!("{name}: folds `{label}`"));
                }
            }
            rest = &list[end..];
        }
        // Joins match on the job alone only where the right side is the
        // per-job parameter or a per-job alert filter.
        if expr.contains("on (job, instance)") {
            problems.push(format!(
                "{name}: joins on (job, instance), dropping topology"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Every recording rule is read by an alert, another recording rule that is
/// read, or a dashboard: nothing is recorded (and paid for on Azure) for nobody.
#[test]
fn every_recording_rule_is_read() {
    let rules = all_rules();
    let mut readers: Vec<String> = rules
        .iter()
        .filter(|r| r.alert.is_some())
        .map(|r| r.expr.clone())
        .collect();
    readers.extend(dashboard_exprs().into_iter().map(|e| e.expr));
    let mut read: BTreeSet<String> = BTreeSet::new();
    // Rules read by read rules are read too: iterate to a fixed point.
    loop {
        let before = read.len();
        for expr in &readers {
            read.extend(recording_names_in(expr));
        }
        for rule in &rules {
            if rule.record.as_ref().is_some_and(|r| read.contains(r)) {
                read.extend(recording_names_in(&rule.expr));
            }
        }
        if read.len() == before {
            break;
        }
    }
    let unread: Vec<String> = recorded_names().difference(&read).cloned().collect();
    assert!(
        unread.is_empty(),
        "recording rules nobody reads: {unread:?}"
    );
}

/// The recording-rule table of docs/observability.md lists exactly the rules of the YAML.
#[test]
fn observability_doc_lists_exactly_the_recording_rules() {
    let doc = read("docs/observability.md");
    let section = doc
        .split("\n## Recording rules\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/observability.md has a `## Recording rules` section");
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let recorded = recorded_names();
    let undocumented: Vec<_> = recorded.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&recorded).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/observability.md recording rules: missing {undocumented:?}, not in the YAML {stale:?}"
    );
}

/// prometheus/tests/cadence.test.yml is generated; it must match its generator.
#[test]
fn cadence_tests_match_their_generator() {
    assert_generated("prometheus/tests/generate_cadence_tests.py");
}

/// Runs a test generator with `--check`: what it would write is what the repository holds.
pub(crate) fn assert_generated(script: &str) {
    let out = Command::new("python3")
        .arg(script)
        .arg("--check")
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (scripts/deps installs it): {e}"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One change of a threshold, window or duration of one rule.
pub(crate) struct Mutation {
    pub(crate) rule: &'static str,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
}

/// For each alert, its thresholds, windows and durations, changed one at a time.
const MUTATIONS: &[Mutation] = &[
    Mutation {
        rule: "pgdrill:rto_objective_seconds",
        from: "vector(120)",
        to: "vector(90)",
    },
    Mutation {
        rule: "pgdrill:rto_objective_seconds",
        from: "vector(120)",
        to: "vector(400)",
    },
    Mutation {
        rule: "PgdrillWritesUnavailable",
        from: "max_over_time(job:pgdrill_writes_unavailable_seconds:scrape[3m])",
        to: "job:pgdrill_writes_unavailable_seconds:scrape",
    },
    Mutation {
        rule: "PgdrillWritesUnavailable",
        from: "< 300",
        to: "< 60",
    },
    Mutation {
        rule: "job:pgdrill_writes_unavailable_seconds:scrape",
        from: "timestamp(pgdrill_outage_start_timestamp_seconds)",
        to: "time()",
    },
    Mutation {
        rule: "PgdrillAcknowledgedWritesLost",
        from: "[15m]",
        to: "[5m]",
    },
    Mutation {
        rule: "PgdrillAcknowledgedWritesLost",
        from: "])) > 0",
        to: "])) > 5",
    },
    Mutation {
        rule: "PgdrillRTOObjectiveMissed",
        from: "< 1800",
        to: "< 600",
    },
    Mutation {
        rule: "PgdrillRTOObjectiveMissed",
        from: "< 1800",
        to: "< 3600",
    },
    Mutation {
        rule: "PgdrillErrorRatioHigh",
        from: "> 0.05",
        to: "> 0.1",
    },
    Mutation {
        rule: "PgdrillErrorRatioHigh",
        from: "> 0.05",
        to: "> 0.03",
    },
    Mutation {
        rule: "PgdrillErrorRatioHigh",
        from: "for: 10m",
        to: "for: 5m",
    },
    Mutation {
        rule: "job:pgdrill_transaction_errors:ratio_rate5m",
        from: "(rate(pgdrill_transaction_errors_total[5m]))",
        to: "(rate(pgdrill_transaction_errors_total[1m]))",
    },
    Mutation {
        rule: "PgdrillRateBelowTarget",
        from: "< 0.9",
        to: "< 0.5",
    },
    Mutation {
        rule: "PgdrillRateBelowTarget",
        from: "< 0.9",
        to: "< 0.97",
    },
    Mutation {
        rule: "PgdrillRateBelowTarget",
        from: "for: 10m",
        to: "for: 5m",
    },
    Mutation {
        rule: "job:pgdrill_transactions_succeeded:ratio_target5m",
        from: "(rate(pgdrill_transactions_total[5m]))",
        to: "(rate(pgdrill_transactions_total[1m]))",
    },
    Mutation {
        rule: "PgdrillVerificationFailing",
        from: "[15m]",
        to: "[5m]",
    },
    Mutation {
        rule: "PgdrillVerificationFailing",
        from: "])) > 0",
        to: "])) > 1",
    },
    Mutation {
        rule: "PgdrillCanaryDown",
        from: "up[5m]",
        to: "up[15m]",
    },
    Mutation {
        rule: "PgdrillCanaryDown",
        from: "for: 5m",
        to: "for: 0m",
    },
    Mutation {
        rule: "PgdrillCanaryAbsent",
        from: "for: 5m",
        to: "for: 0m",
    },
    Mutation {
        rule: "PgdrillCanaryAbsent",
        from: "count[1h]) unless job",
        to: "count[5m]) unless job",
    },
    Mutation {
        rule: "job:pgdrill_canaries:expected",
        from: "vector(2)",
        to: "vector(1)",
    },
    Mutation {
        rule: "PgdrillFailoverInProgress",
        from: "< 600",
        to: "< 6000",
    },
    Mutation {
        rule: "PgdrillFailoverInProgress",
        from: "last_over_time(pgdrill_failover_state{state=\"outage\"}[2m])",
        to: "pgdrill_failover_state{state=\"outage\"}",
    },
    Mutation {
        rule: "PgdrillPrimaryChanged",
        from: "[5m]",
        to: "[1m]",
    },
    Mutation {
        rule: "PgdrillPrimaryChanged",
        from: "])) > 0",
        to: "])) > 5",
    },
];

/// The rule file with one mutation applied inside the named rule's block;
/// `None` if the file has no rule of that name. Where several rules share the
/// name (one alert per severity), the one block that holds `from` is mutated.
fn try_mutate(text: &str, m: &Mutation) -> Option<String> {
    let blocks: Vec<(usize, usize)> = [
        format!("- alert: {}\n", m.rule),
        format!("- record: {}\n", m.rule),
    ]
    .iter()
    .flat_map(|head| text.match_indices(head.as_str()).map(|(start, _)| start))
    .map(|start| {
        let after = start + 2;
        let end = text[after..]
            .find("\n      - ")
            .map(|e| after + e)
            .unwrap_or(text.len());
        (start, end)
    })
    .collect();
    if blocks.is_empty() {
        return None;
    }
    let holding: Vec<&(usize, usize)> = blocks
        .iter()
        .filter(|(start, end)| text[*start..*end].contains(m.from))
        .collect();
    let [&(start, end)] = holding[..] else {
        panic!(
            "{}: `{}` must occur in exactly one rule of that name",
            m.rule, m.from
        );
    };
    let block = &text[start..end];
    assert_eq!(
        block.matches(m.from).count(),
        1,
        "{}: `{}` must occur once in the rule",
        m.rule,
        m.from
    );
    Some(format!(
        "{}{}{}",
        &text[..start],
        block.replace(m.from, m.to),
        &text[end..]
    ))
}

/// Every rule file (name, text), with `m` applied to the one that holds its rule, and
/// that file's name.
fn mutated_rule_files(m: &Mutation) -> (Vec<(String, String)>, String) {
    let mut hits = Vec::new();
    let files = rule_files()
        .iter()
        .map(|path| {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = fs::read_to_string(path).expect("read rule file");
            match try_mutate(&text, m) {
                Some(mutated) => {
                    hits.push(name.clone());
                    (name, mutated)
                }
                None => (name, text),
            }
        })
        .collect();
    let [mutated] = &hits[..] else {
        panic!("{}: must be a rule of exactly one file: {hits:?}", m.rule);
    };
    (files, mutated.clone())
}

/// Whether the promtool test file loads the rule file `name` (its `rule_files`).
fn test_loads(test: &Path, name: &str) -> bool {
    yaml(test)["rule_files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|f| Path::new(f).file_name().is_some_and(|n| n == name))
}

/// Every mutation: those of pgdrill.rules.yml here, the SLO's in `slo.rs`.
fn all_mutations() -> impl Iterator<Item = &'static Mutation> {
    MUTATIONS.iter().chain(crate::slo::MUTATIONS)
}

/// Names of the failing tests in promtool's output: `name:` lines for alert
/// tests; the `# <test name>` comment the generator appends to expressions.
fn failing_tests(output: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in output.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("name: ") {
            out.insert(name.trim_end_matches(',').to_string());
        } else if line.starts_with("expr: ") {
            match line.find("  # ") {
                Some(at) => {
                    let name = &line[at + 4..];
                    let name = name.split("\", time:").next().unwrap_or(name);
                    out.insert(name.to_string());
                }
                None => {
                    out.insert(format!("alerts.test.yml: {line}"));
                }
            }
        }
    }
    out
}

/// Each threshold, window or duration of each alert, changed in a copy of the
/// rules, makes `promtool test rules` fail; prints which tests caught it.
///
/// Minutes of promtool on both cores: `scripts/test` runs it on its own after the suite,
/// so that it does not starve the timing-sensitive failover tests running beside it.
#[test]
#[ignore = "CPU-heavy: scripts/test runs it alone after the suite"]
fn every_alert_mutation_fails_a_unit_test() {
    let tests = rule_test_files();
    // Every alert is mutated at least once.
    for rule in all_rules() {
        if let Some(alert) = &rule.alert {
            assert!(
                all_mutations().any(|m| m.rule == alert),
                "no mutation of {alert}"
            );
        }
    }
    // Every mutation applies, before the slow part.
    for m in all_mutations() {
        mutated_rule_files(m);
    }
    let mut report = String::new();
    let mut survivors = Vec::new();
    for m in all_mutations() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
        fs::create_dir_all(dir.path().join("tests")).expect("mkdir");
        let (files, mutated) = mutated_rule_files(m);
        for (name, text) in files {
            fs::write(dir.path().join("rules").join(name), text).expect("write");
        }
        // One promtool per test file that loads the mutated file, side by side.
        let children: Vec<_> = tests
            .iter()
            .filter(|t| test_loads(t, &mutated))
            .map(|t| {
                let copy = dir.path().join("tests").join(t.file_name().expect("name"));
                fs::copy(t, &copy).expect("copy test file");
                Command::new(promtool())
                    .args(["test", "rules"])
                    .arg(&copy)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("run promtool")
            })
            .collect();
        let mut failed = false;
        let mut caught = BTreeSet::new();
        for child in children {
            let out = child.wait_with_output().expect("promtool output");
            if !out.status.success() {
                failed = true;
                caught.extend(failing_tests(&String::from_utf8_lossy(&out.stdout)));
                caught.extend(failing_tests(&String::from_utf8_lossy(&out.stderr)));
            }
        }
        report.push_str(&format!("{}: `{}` -> `{}`\n", m.rule, m.from, m.to));
        for name in &caught {
            report.push_str(&format!("    caught by: {name}\n"));
        }
        if !failed {
            survivors.push(format!("{}: {} -> {}", m.rule, m.from, m.to));
        }
    }
    println!("{report}");
    assert!(
        survivors.is_empty(),
        "mutations no test catches: {survivors:#?}"
    );
}

// ---------------------------------------------------------------------------
// Tests: dashboards.

#[test]
fn every_dashboard_expression_parses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exprs = dashboard_exprs();
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:expr_{i}:check"), "expr": grafana_to_promql(&e.expr)}))
        .collect();
    let doc = json!({"groups": [{"name": "dashboard-expressions", "rules": rules}]});
    let file = dir.path().join("dashboard-exprs.yml");
    fs::write(&file, serde_norway::to_string(&doc).expect("yaml")).expect("write");
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    if !out.status.success() {
        let report: String = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| format!("  dashboard:expr_{i}:check  {}\n      {}\n", e.at, e.expr))
            .collect();
        panic!(
            "a dashboard expression does not parse:\n{}\n{}\nexpressions:\n{report}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn metric_names_used_are_exported_by_pgdrill() {
    let known = known_metric_names();
    let used = metric_names_used();
    assert!(used.contains("pgdrill_transactions_total"), "{used:?}");
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "names used by dashboards or rules but not in tests/fixtures/metric_names.txt: {unknown:?}"
    );
}

#[test]
fn every_exported_metric_is_used_somewhere() {
    let unused: Vec<String> = known_metric_names()
        .difference(&metric_names_used())
        .cloned()
        .collect();
    assert!(
        unused.is_empty(),
        "metrics in tests/fixtures/metric_names.txt that no dashboard or rule shows: {unused:?}"
    );
}

#[test]
fn recording_rules_read_by_dashboards_and_rules_exist() {
    let defined = recorded_names();
    let mut missing = BTreeSet::new();
    for rule in all_rules() {
        missing.extend(recording_names_in(&rule.expr).difference(&defined).cloned());
    }
    for e in dashboard_exprs() {
        missing.extend(recording_names_in(&e.expr).difference(&defined).cloned());
    }
    assert!(
        missing.is_empty(),
        "recording rules used but not defined: {missing:?}"
    );
}

#[test]
fn metric_name_extraction() {
    let e = r#"histogram_quantile(0.9, sum by (le) (rate(pgdrill_transaction_duration_seconds_bucket{job=~"$job", state="pgdrill_not_a_metric"}[5m])))
        / on () group_left max(pgdrill:rto_objective_seconds) + job:pgdrill_transactions:rate1m + process_cpu_seconds_total offset 1h30m + max_over_time(pgdrill_target_rate[10m:5s])"#;
    let want: BTreeSet<String> = [
        "pgdrill_target_rate",
        "pgdrill_transaction_duration_seconds",
        "process_cpu_seconds_total",
    ]
    .map(String::from)
    .into();
    assert_eq!(metric_names_in(e), want);
    let recorded: BTreeSet<String> = [
        "pgdrill:rto_objective_seconds",
        "job:pgdrill_transactions:rate1m",
    ]
    .map(String::from)
    .into();
    assert_eq!(recording_names_in(e), recorded);
    assert_eq!(
        grafana_to_promql(
            r#"rate(x{job=~"$job",instance=~"${instance:regex}"}[$__rate_interval])"#
        ),
        r#"rate(x{job=~".*",instance=~".*"}[1m])"#
    );
}

#[test]
fn dashboards_use_the_datasource_variable_and_topology_variables() {
    fn check_datasources(v: &Value, file: &str, problems: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(ds) = map.get("datasource") {
                    match ds {
                        Value::Object(d) => {
                            let uid = d.get("uid").and_then(Value::as_str);
                            if !matches!(uid, Some("${datasource}" | "$datasource")) {
                                problems.push(format!("{file}: datasource {ds}"));
                            }
                        }
                        Value::String(s) if s == "${datasource}" || s == "$datasource" => {}
                        other => problems.push(format!("{file}: datasource {other}")),
                    }
                }
                map.values()
                    .for_each(|c| check_datasources(c, file, problems));
            }
            Value::Array(items) => items
                .iter()
                .for_each(|c| check_datasources(c, file, problems)),
            _ => {}
        }
    }
    for file in dashboard_files() {
        let name = rel(&file);
        let dash = json_file(&file);
        let mut problems = Vec::new();
        check_datasources(&dash["panels"], &name, &mut problems);
        check_datasources(&dash["annotations"], &name, &mut problems);
        let vars: BTreeMap<&str, &Value> = dash["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((str_of(v, "name")?, v)))
            .collect();
        match vars.get("datasource") {
            Some(v)
                if str_of(v, "type") == Some("datasource")
                    && str_of(v, "query") == Some("prometheus") => {}
            other => problems.push(format!("{name}: datasource variable {other:?}")),
        }
        for var in ["cluster", "namespace", "job", "instance"] {
            match vars.get(var) {
                Some(v) => check_datasources(v, &name, &mut problems),
                None => problems.push(format!("{name}: no `{var}` variable")),
            }
        }
        // Dashboards for provisioning: no numeric id, a stable uid.
        if !dash.get("id").is_none_or(Value::is_null) {
            problems.push(format!("{name}: has a numeric id"));
        }
        if str_of(&dash, "uid").is_none_or(str::is_empty) {
            problems.push(format!("{name}: no uid"));
        }
        let mut ids = BTreeSet::new();
        for panel in dash["panels"].as_array().expect("panels") {
            let id = panel["id"].as_u64().expect("panel id");
            if !ids.insert(id) {
                problems.push(format!("{name}: duplicate panel id {id}"));
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = str_of(target, "expr").unwrap_or_default();
                let reads_pgdrill = !metric_names_in(expr).is_empty();
                let filtered = ["$cluster", "$namespace", "$job", "$instance"]
                    .iter()
                    .all(|v| expr.contains(v));
                if reads_pgdrill && !filtered {
                    problems.push(format!(
                        "{name}/{}: not filtered by $cluster, $namespace, $job and $instance: {expr}",
                        str_of(panel, "title").unwrap_or_default()
                    ));
                }
                // Aggregations keep the topology: `by` lists name cluster and namespace.
                for by in expr.match_indices(" by (") {
                    let list = &expr[by.0 + 5..];
                    let list = &list[..list.find(')').unwrap_or(list.len())];
                    let folds_replicas_only =
                        list.contains("cluster") && list.contains("namespace");
                    let single_dimension = matches!(
                        list,
                        "le" | "class" | "state" | "version" | "outcome" | "host"
                    );
                    if reads_pgdrill && !folds_replicas_only && !single_dimension {
                        problems.push(format!(
                            "{name}/{}: `by ({list})` drops cluster and namespace",
                            str_of(panel, "title").unwrap_or_default()
                        ));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

/// The panels the issue asks for, read the way that holds at real ranges and
/// cadences.
#[test]
fn dashboard_shows_history_timestamps_and_scrape_health() {
    let file = repo().join("grafana/dashboards/pgdrill.json");
    let dash = json_file(&file);
    let panels = dash["panels"].as_array().expect("panels");
    let panel = |title: &str| -> &Value {
        panels
            .iter()
            .find(|p| str_of(p, "title") == Some(title))
            .unwrap_or_else(|| panic!("no panel {title:?}"))
    };
    let exprs = |p: &Value| -> Vec<String> {
        p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| str_of(t, "expr").map(str::to_string))
            .collect()
    };
    // Failover history: one row per outage from the exported timestamps.
    let history = panel("Failover history");
    assert_eq!(str_of(history, "type"), Some("table"));
    let text = exprs(history).join("\n");
    for metric in [
        "pgdrill_outage_start_timestamp_seconds",
        "pgdrill_outage_end_timestamp_seconds",
        "pgdrill_last_failover_lost_writes",
        "pgdrill_last_failover_rpo_seconds",
    ] {
        assert!(text.contains(metric), "history lacks {metric}");
    }
    let transforms: Vec<&str> = history["transformations"]
        .as_array()
        .expect("transformations")
        .iter()
        .filter_map(|t| str_of(t, "id"))
        .collect();
    assert!(transforms.contains(&"groupBy"), "{transforms:?}");
    // State timeline: the worst state per interval, not a sampled point.
    let timeline = panel("Failover state");
    let timeline = if str_of(timeline, "type") == Some("state-timeline") {
        timeline
    } else {
        panels
            .iter()
            .find(|p| {
                str_of(p, "type") == Some("state-timeline")
                    && str_of(p, "title") == Some("Failover state")
            })
            .expect("a Failover state timeline")
    };
    for e in exprs(timeline) {
        assert!(
            e.contains("max_over_time(") && e.contains("[$__interval]"),
            "timeline samples points: {e}"
        );
    }
    // Annotations at the exported timestamps, not at sampled state changes.
    let annotations = dash["annotations"]["list"].as_array().expect("annotations");
    for metric in [
        "pgdrill_outage_start_timestamp_seconds",
        "pgdrill_outage_end_timestamp_seconds",
    ] {
        let a = annotations
            .iter()
            .find(|a| str_of(a, "expr").is_some_and(|e| e.contains(metric) && e.contains("* 1000")))
            .unwrap_or_else(|| panic!("no annotation from {metric}"));
        assert_eq!(a["useValueForTime"], true, "{metric}");
    }
    for a in annotations {
        for (_, range) in ranges_in(str_of(a, "expr").unwrap_or_default()) {
            assert!(
                seconds(&range) >= 300,
                "annotation window [{range}]: empty at 60 s scrapes"
            );
        }
    }
    // The objective, from the recording rule, as the threshold of "Last RTO".
    let rto = panel("Last RTO");
    assert!(exprs(rto)
        .iter()
        .any(|e| e.contains("pgdrill:rto_objective_seconds")));
    let config = rto["transformations"]
        .as_array()
        .and_then(|t| t.iter().find(|t| str_of(t, "id") == Some("configFromData")))
        .expect("Last RTO takes its threshold from the objective query");
    assert_eq!(
        config["options"]["mappings"][0]["handlerKey"], "threshold1",
        "{config}"
    );
    // Scrape health.
    assert!(exprs(panel("Scrape health (up)"))
        .iter()
        .any(|e| e.contains("up{")));
    assert!(exprs(panel("Scrape duration and samples"))
        .iter()
        .any(|e| e.contains("scrape_duration_seconds")));
    assert!(exprs(panel("Canaries reporting vs expected"))
        .iter()
        .any(|e| e.contains("job:pgdrill_canaries:expected")));
}

// ---------------------------------------------------------------------------
// Tests: compose stack, Dockerfile, ports.

fn compose() -> Value {
    yaml(&repo().join("compose.yaml"))
}

#[test]
fn compose_file_validates_against_the_compose_spec() {
    let schema: Value = json_file(&repo().join("tests/fixtures/compose-spec.json"));
    let validator = jsonschema::validator_for(&schema).expect("compose-spec schema compiles");
    let doc = compose();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "compose.yaml: {errors:#?}");
    // The validator itself is not vacuous.
    let bad = json!({"services": {"x": {"image": 1, "ports": "9743"}}});
    assert!(!validator.is_valid(&bad));
}

#[test]
fn compose_references_files_that_exist() {
    let doc = compose();
    let mut missing = Vec::new();
    let mut check = |what: String, path: &str| {
        if !repo().join(path).exists() {
            missing.push(format!("{what}: {path}"));
        }
    };
    let services = doc["services"].as_object().expect("services");
    for (name, svc) in services {
        match &svc["build"] {
            Value::String(ctx) => check(format!("{name} build context"), ctx),
            Value::Object(b) => {
                let ctx = b.get("context").and_then(Value::as_str).unwrap_or(".");
                check(format!("{name} build context"), ctx);
                if let Some(df) = b.get("dockerfile").and_then(Value::as_str) {
                    check(
                        format!("{name} dockerfile"),
                        &Path::new(ctx).join(df).to_string_lossy(),
                    );
                } else {
                    check(
                        format!("{name} dockerfile"),
                        &Path::new(ctx).join("Dockerfile").to_string_lossy(),
                    );
                }
            }
            _ => {}
        }
        for vol in svc["volumes"].as_array().into_iter().flatten() {
            let source = match vol {
                Value::String(s) => s.split(':').next().unwrap_or_default().to_string(),
                Value::Object(o) => o
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            };
            if source.starts_with("./") || source.starts_with("../") {
                check(format!("{name} volume"), &source);
            }
        }
        for env_file in svc["env_file"].as_array().into_iter().flatten() {
            check(
                format!("{name} env_file"),
                env_file.as_str().unwrap_or_default(),
            );
        }
    }
    for (name, cfg) in doc["configs"].as_object().into_iter().flatten() {
        if let Some(file) = str_of(cfg, "file") {
            check(format!("config {name}"), file);
        }
    }
    assert!(
        missing.is_empty(),
        "compose.yaml references missing paths: {missing:?}"
    );
    // And the stack mounts our rules, provisioning and dashboards.
    let text = read("compose.yaml");
    for path in [
        "./prometheus/rules",
        "./prometheus/prometheus.yml",
        "./grafana/provisioning",
        "./grafana/dashboards",
    ] {
        assert!(text.contains(path), "compose.yaml does not mount {path}");
    }
}

#[test]
fn metrics_port_is_consistent() {
    const PORT: &str = "9743";
    let doc = compose();
    let pgdrill = &doc["services"]["pgdrill"];
    let command: Vec<String> = match &pgdrill["command"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        other => panic!("pgdrill command: {other}"),
    };
    let listen = command
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| command.get(i + 1))
        .expect("pgdrill is started with --listen");
    assert_eq!(listen, &format!("0.0.0.0:{PORT}"));
    for flag in ["--dsn", "--rate"] {
        assert!(
            command.iter().any(|a| a == flag),
            "pgdrill command lacks {flag}"
        );
    }
    let ports: Vec<String> = pgdrill["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.get("target").map(|t| t.to_string()).unwrap_or_default(),
            other => other.to_string(),
        })
        .collect();
    assert!(
        ports
            .iter()
            .any(|p| p.ends_with(&format!(":{PORT}")) || p == PORT),
        "compose publishes pgdrill's {PORT}: {ports:?}"
    );

    let prom = yaml(&repo().join("prometheus/prometheus.yml"));
    let targets: Vec<&str> = prom["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .filter(|j| str_of(j, "job_name") == Some("pgdrill-compose"))
        .flat_map(|j| j["static_configs"].as_array().into_iter().flatten())
        .flat_map(|s| s["targets"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        targets,
        vec![format!("pgdrill:{PORT}")],
        "prometheus.yml scrape target"
    );

    let dockerfile = read("Dockerfile");
    let exposed: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(exposed, vec![PORT], "Dockerfile EXPOSE");

    for manifest in files_in("deploy/kubernetes", &[".yaml", ".yml"]) {
        let text = fs::read_to_string(&manifest).expect("read manifest");
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("- ").unwrap_or(line);
            for key in ["containerPort:", "targetPort:", "port:"] {
                if let Some(v) = line.strip_prefix(key) {
                    let v = v.trim().trim_matches('"');
                    assert!(
                        v == PORT || v == "metrics",
                        "{}: `{line}` is not {PORT}",
                        rel(&manifest)
                    );
                }
            }
            if let Some(v) = line.strip_prefix("--listen=") {
                assert_eq!(v, format!("0.0.0.0:{PORT}"), "{}", rel(&manifest));
            }
        }
    }
}

#[test]
fn dockerfile_builds_a_small_non_root_runtime() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_uppercase().starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage build expected");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !matches!(user.trim(), "root" | "0" | "0:0"),
        "runs as {user}"
    );
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    for path in ["target", ".git"] {
        assert!(
            ignored
                .iter()
                .any(|l| l == path || l == &format!("/{path}")),
            ".dockerignore keeps {path} out of the build context"
        );
    }
}
