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

fn repo() -> &'static Path {
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
fn run_promtool(dir: &Path, args: &[&str]) -> Output {
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
struct Rule {
    group: String,
    record: Option<String>,
    alert: Option<String>,
    expr: String,
    raw: Value,
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

fn all_rules() -> Vec<Rule> {
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
                            rule.insert("annotations".into(), arm_map(annotations));
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
            "ruleGroupPrefix": {"type": "string", "defaultValue": "", "metadata": {"description": "Prefix of the rule group names, to deploy several copies into one resource group"}}
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

#[test]
fn rules_follow_naming_and_annotation_conventions() {
    let docs = read("README.md");
    let anchors: BTreeSet<String> = docs
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| github_anchor(l.trim_start_matches('#')))
        .collect();
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
            let want = format!(
                "https://github.com/pgdrill/pgdrill#alert-{}",
                alert.to_lowercase()
            );
            match str_of(&rule.raw["annotations"], "runbook_url") {
                Some(url) if url == want => {}
                other => problems.push(format!("{alert}: runbook_url {other:?}, want {want}")),
            }
            if !anchors.contains(&format!("alert-{}", alert.to_lowercase())) {
                problems.push(format!(
                    "{alert}: README.md has no heading `Alert: {alert}`"
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
    let defining: Vec<Rule> = all_rules()
        .into_iter()
        .filter(|r| r.record.as_deref() == Some("pgdrill:rto_objective_seconds"))
        .collect();
    assert_eq!(
        defining.len(),
        1,
        "pgdrill:rto_objective_seconds must be recorded once"
    );
    let objective = defining[0].expr.trim();
    assert!(
        objective.starts_with("vector(") && objective.ends_with(')'),
        "the objective is a constant vector: {objective}"
    );
    // No other rule hard-codes the objective: the alert compares with the rule.
    let alert = all_rules()
        .into_iter()
        .find(|r| r.alert.as_deref() == Some("PgdrillRTOObjectiveMissed"))
        .expect("PgdrillRTOObjectiveMissed");
    assert!(alert.expr.contains("pgdrill:rto_objective_seconds"));
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
fn dashboards_use_the_datasource_variable_and_job_instance_variables() {
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
        for var in ["job", "instance"] {
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
                if reads_pgdrill && !(expr.contains("$job") && expr.contains("$instance")) {
                    problems.push(format!(
                        "{name}/{}: not filtered by $job and $instance: {expr}",
                        str_of(panel, "title").unwrap_or_default()
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }
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
        .filter(|j| str_of(j, "job_name") == Some("pgdrill"))
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
