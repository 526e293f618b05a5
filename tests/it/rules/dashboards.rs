//! Dashboards are code: every expression parses, every metric it names exists, the
//! datasource and topology are variables, and the panels the issue asks for are there.
//! What the panels draw, evaluated by promtool, is in `panels.rs`.

use super::*;

// ---------------------------------------------------------------------------
// Dashboards.

/// A PromQL expression found in a dashboard, with where it was found.
pub(super) struct DashboardExpr {
    pub(super) at: String,
    pub(super) expr: String,
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

pub(super) fn dashboard_exprs() -> Vec<DashboardExpr> {
    let mut out = Vec::new();
    for file in dashboard_files() {
        collect_exprs(&json_file(&file), &rel(&file), &mut out);
    }
    assert!(!out.is_empty(), "no expressions in the dashboards");
    out
}

/// Template-variable queries (`label_values(metric{...}, label)`), Grafana syntax, not PromQL.
pub(super) fn dashboard_variable_queries() -> Vec<String> {
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
pub(super) fn grafana_to_promql(expr: &str) -> String {
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
    // pgdrill sets what an outage has yet to tell to NaN: said "pending", not "NaN". The
    // recovery stays NaN for good if the rate never got back within its window.
    for (title, text) in [
        ("Last recovery", "pending / not reached"),
        ("Lost writes (last failover)", "pending"),
        ("RPO (last failover)", "pending"),
        ("Failover history", "pending"),
    ] {
        let mappings = &panel(title)["fieldConfig"]["defaults"]["mappings"];
        assert!(
            (mappings.as_array().into_iter().flatten())
                .any(|m| m["options"]["match"] == "nan" && m["options"]["result"]["text"] == text),
            "{title}: {mappings}"
        );
    }
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
    let from_data = |p: &Value| -> Option<Value> {
        let t = p["transformations"].as_array()?;
        t.iter()
            .find(|t| str_of(t, "id") == Some("configFromData"))
            .cloned()
    };
    let config = from_data(rto).expect("Last RTO takes its threshold from the objective query");
    assert_eq!(
        config["options"]["mappings"][0]["handlerKey"], "threshold1",
        "{config}"
    );
    // And the SLI's: green from the objective up, over a red base.
    let sli = panel("Write success, 30 days");
    assert!(exprs(sli)
        .iter()
        .any(|e| e.contains("pgdrill:write_success_objective_ratio")));
    let config = from_data(sli).expect("the SLI takes its threshold from the objective query");
    let mapping = &config["options"]["mappings"][0];
    assert_eq!(mapping["handlerKey"], "threshold1", "{config}");
    assert_eq!(mapping["handlerArguments"]["threshold"]["color"], "green");
    let steps = &sli["fieldConfig"]["defaults"]["thresholds"]["steps"];
    assert_eq!(steps[0]["color"], "red", "{steps}");
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
