//! The canary SLO (`prometheus/rules/pgdrill-slo.rules.yml`): the objective recorded once,
//! `PgdrillErrorBudgetBurn` in the SRE-workbook shape, the promtool scenarios at every
//! cadence, and the mutations that
//! `rules::mutation::every_alert_mutation_fails_a_unit_test` runs against
//! `prometheus/tests/slo.test.yml`.
//!
//! `prometheus/tests/slo.test.yml` (every scenario, 60 s scrapes off the evaluation) is
//! run by `rules::promtool::promtool_unit_tests_pass` with every other test file;
//! `prometheus/tests/cadences/slo.test.yml` (the scrape-sensitive scenarios at the five
//! other cadences) is run here. Both come from `generate_slo_tests.py`.

use std::collections::BTreeSet;

use crate::rules::{all_rules, numbers_in, repo, run_promtool, Mutation, Rule};

const OBJECTIVE: &str = "pgdrill:write_success_objective_ratio";
const ALERT: &str = "PgdrillErrorBudgetBurn";

/// Each threshold and window of the SLO rules, changed one at a time; each must make
/// `prometheus/tests/slo.test.yml` fail (the scenario that catches it in brackets).
pub(crate) const MUTATIONS: &[Mutation] = &[
    // [a 120 s failover pages] no longer pages with a budget ten times larger.
    Mutation {
        rule: OBJECTIVE,
        from: "vector(0.999)",
        to: "vector(0.99)",
    },
    // [a 40 s failover does not page] pages with half the budget.
    Mutation {
        rule: OBJECTIVE,
        from: "vector(0.999)",
        to: "vector(0.9995)",
    },
    // [a 120 s failover pages] burns 33x over 1 h.
    Mutation {
        rule: ALERT,
        from: "ratio_rate1h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 14.4",
        to: "ratio_rate1h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 40",
    },
    // [a 40 s failover does not page] burns 11x over 1 h.
    Mutation {
        rule: ALERT,
        from: "ratio_rate1h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 14.4",
        to: "ratio_rate1h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 10",
    },
    // [a 120 s failover pages] would page for 30 minutes, not 4.
    Mutation {
        rule: ALERT,
        from: "(1 - job:pgdrill_write_success:ratio_rate5m)",
        to: "(1 - job:pgdrill_write_success:ratio_rate30m)",
    },
    // [0.8 % of writes fail] burns 8x: never pages at 9.
    Mutation {
        rule: ALERT,
        from: "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 6",
        to: "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 9",
    },
    // [0.8 % of writes fail] pages about 100 minutes early at 4.5.
    Mutation {
        rule: ALERT,
        from: "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 6",
        to: "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 4.5",
    },
    // [a drill against another database] the 30 m window holds the page for half an hour.
    Mutation {
        rule: ALERT,
        from: "(1 - job:pgdrill_write_success:ratio_rate30m)",
        to: "(1 - job:pgdrill_write_success:ratio_rate5m)",
    },
    // [after 9 clean hours, a 30 s failover] the 3 d window keeps the ticket quiet.
    Mutation {
        rule: ALERT,
        from: "(1 - job:pgdrill_write_success:ratio_rate3d)",
        to: "(1 - job:pgdrill_write_success:ratio_rate6h)",
    },
    // [a 120 s failover pages] files a ticket at a 3 d burn rate of 5.6.
    Mutation {
        rule: ALERT,
        from: "ratio_rate3d) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 1",
        to: "ratio_rate3d) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 6",
    },
    // [a 40 s failover does not page] files a ticket at a 6 h burn rate of 1.9.
    Mutation {
        rule: ALERT,
        from: "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 1",
        to: "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 2",
    },
    // [a drill's failover burns nothing] no process is a drill any more.
    Mutation {
        rule: "instance:pgdrill_slo_canary:eligible",
        from: "[10m]) == 0)",
        to: "[10m]) == 2)",
    },
    // [a drill's failover burns nothing] the canaries count again a minute after the
    // drill process exits, while their 5 m rates still hold its failover.
    Mutation {
        rule: "instance:pgdrill_slo_canary:eligible",
        from: "[10m]) == 0)",
        to: "[1m]) == 0)",
    },
    // [a drill's failover burns nothing] the drill goes through another port.
    Mutation {
        rule: "instance:pgdrill_slo_canary:eligible",
        from: "on (host, database)",
        to: "on (host, port, database)",
    },
    // [every connection hangs] skipped writes are what a hang costs.
    Mutation {
        rule: "job:pgdrill_write_failures:rate5m",
        from: "+ rate(pgdrill_transactions_skipped_total[5m])",
        to: "+ 0 * rate(pgdrill_transactions_skipped_total[5m])",
    },
];

fn slo_rules() -> Vec<Rule> {
    all_rules()
        .into_iter()
        .filter(|r| {
            r.alert.as_deref() == Some(ALERT)
                || r.record.as_deref().is_some_and(|name| {
                    name == OBJECTIVE || name.contains("pgdrill_write_") || name.contains("slo")
                })
        })
        .collect()
}

fn burn_alerts() -> Vec<Rule> {
    slo_rules()
        .into_iter()
        .filter(|r| r.alert.as_deref() == Some(ALERT))
        .collect()
}

fn severity(rule: &Rule) -> &str {
    rule.raw["labels"]["severity"].as_str().unwrap_or_default()
}

/// `(window, burn-rate threshold)` of every condition of an alert written as
/// `(1 - job:pgdrill_write_success:ratio_rate<window>) / (1 - scalar(<objective>)) > <t>`.
fn burn_conditions(expr: &str) -> BTreeSet<(String, String)> {
    let prefix = "(1 - job:pgdrill_write_success:ratio_rate";
    let middle = format!(") / (1 - scalar({OBJECTIVE})) > ");
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(prefix) {
        let tail = &rest[at + prefix.len()..];
        let (window, after) = tail
            .split_once(middle.as_str())
            .unwrap_or_else(|| panic!("{ALERT}: a condition not written as a burn rate: {tail}"));
        let threshold: String = after
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        out.insert((window.to_string(), threshold));
        rest = after;
    }
    out
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(w, t)| (w.to_string(), t.to_string()))
        .collect()
}

#[test]
fn burn_conditions_are_read_from_the_expression() {
    let expr = format!(
        "(1 - job:pgdrill_write_success:ratio_rate1h) / (1 - scalar({OBJECTIVE})) > 14.4\n  and\n\
         (1 - job:pgdrill_write_success:ratio_rate5m) / (1 - scalar({OBJECTIVE})) > 14.4)"
    );
    assert_eq!(
        burn_conditions(&expr),
        pairs(&[("1h", "14.4"), ("5m", "14.4")])
    );
    assert!(burn_conditions("up > 1").is_empty());
}

/// Critical: 14.4 over 1 h and 5 m, or 6 over 6 h and 30 m; warning: 1 over 3 d and 6 h.
/// No `for:` (each condition carries its window), one alert name, two severities.
#[test]
fn error_budget_burn_has_the_workbook_windows_and_thresholds() {
    let alerts = burn_alerts();
    let severities: Vec<&str> = alerts.iter().map(severity).collect();
    assert_eq!(severities, ["critical", "warning"], "one rule per severity");
    let (critical, warning) = (&alerts[0].expr, &alerts[1].expr);
    // Each pair must burn over both its windows (`and`); either pair pages (`or`).
    let page_pairs: Vec<&str> = critical.split("\nor\n").collect();
    assert_eq!(page_pairs.len(), 2, "{critical}");
    assert_eq!(
        burn_conditions(page_pairs[0]),
        pairs(&[("1h", "14.4"), ("5m", "14.4")])
    );
    assert_eq!(
        burn_conditions(page_pairs[1]),
        pairs(&[("6h", "6"), ("30m", "6")])
    );
    assert_eq!(burn_conditions(warning), pairs(&[("3d", "1"), ("6h", "1")]));
    for expr in page_pairs.iter().chain([&warning.as_str()]) {
        assert_eq!(expr.matches("\n  and\n").count(), 1, "{expr}");
    }
    for rule in &alerts {
        assert!(
            rule.raw.get("for").is_none(),
            "{}: no `for:`",
            severity(rule)
        );
    }
}

/// The objective is one recording rule (99.9 % by default) that every burn condition
/// reads; no other SLO rule writes the target or the budget as a number.
#[test]
fn write_success_objective_is_configured_in_one_place() {
    let rules = all_rules();
    let defining: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.record.as_deref() == Some(OBJECTIVE))
        .collect();
    assert_eq!(defining.len(), 1, "{OBJECTIVE} must be recorded once");
    assert_eq!(defining[0].expr.trim(), "vector(0.999)");
    for rule in burn_alerts() {
        assert!(rule.expr.contains(OBJECTIVE), "{}", severity(&rule));
    }
    for rule in rules
        .iter()
        .filter(|r| r.record.as_deref() != Some(OBJECTIVE))
    {
        let numbers = numbers_in(&rule.expr);
        for literal in ["0.999", "0.001", "99.9"] {
            assert!(
                !numbers.iter().any(|n| n == literal),
                "{:?} hard-codes {literal}",
                rule.alert.as_ref().or(rule.record.as_ref())
            );
        }
    }
}

/// Every window of the SLI is built from the 5 m rates recorded at each evaluation, the
/// ones the drill exclusion gates; none reads a raw counter over a long range.
#[test]
fn sli_windows_sum_the_gated_five_minute_rates() {
    let windows: Vec<Rule> = slo_rules()
        .into_iter()
        .filter(|r| {
            r.record
                .as_deref()
                .is_some_and(|n| n.starts_with("job:pgdrill_write_success:ratio_rate"))
        })
        .collect();
    let names: BTreeSet<&str> = windows.iter().filter_map(|r| r.record.as_deref()).collect();
    let want: BTreeSet<String> = ["5m", "30m", "1h", "6h", "3d", "30d"]
        .iter()
        .map(|w| format!("job:pgdrill_write_success:ratio_rate{w}"))
        .collect();
    assert_eq!(
        names,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    for rule in &windows {
        let name = rule.record.as_deref().unwrap_or_default();
        assert!(
            rule.expr.contains("job:pgdrill_write_failures:rate5m")
                && rule.expr.contains("job:pgdrill_write_attempts:rate5m")
                && !rule.expr.contains("pgdrill_transactions_total"),
            "{name}: {}",
            rule.expr
        );
        if !name.ends_with("rate5m") {
            let window = name.rsplit("ratio_rate").next().unwrap_or_default();
            assert_eq!(
                rule.expr.matches(&format!("[{window}])")).count(),
                2,
                "{name}: both sums over [{window}]"
            );
        }
    }
    for rate in [
        "job:pgdrill_write_failures:rate5m",
        "job:pgdrill_write_attempts:rate5m",
    ] {
        let rule = slo_rules()
            .into_iter()
            .find(|r| r.record.as_deref() == Some(rate))
            .unwrap_or_else(|| panic!("no {rate}"));
        assert!(
            rule.expr.contains("instance:pgdrill_slo_canary:eligible"),
            "{rate} is gated by the drill exclusion"
        );
    }
}

#[test]
fn slo_tests_match_their_generator() {
    crate::rules::assert_generated("prometheus/tests/generate_slo_tests.py");
}

/// The scenarios that hinge on single scrapes (a failover, a drill, a failed scrape) at
/// 15 s and 30 s scrapes, aligned with the evaluation and not, and 60 s aligned; and the
/// three-day one (40 clean hours, then a 120 s failover: a page, no ticket), kept out of
/// slo.test.yml because it is the slowest and the mutation test reruns that file.
#[test]
fn slo_scenarios_hold_at_every_cadence() {
    let out = run_promtool(
        repo(),
        &["test", "rules", "prometheus/tests/cadences/slo.test.yml"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("SUCCESS").count(), 1, "{stdout}");
}
