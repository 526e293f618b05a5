//! promtool over the shipped files: rules and config check, unit tests pass, every rule
//! has one, and the generated test files match their generators.

use super::*;

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
