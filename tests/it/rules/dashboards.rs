//! Dashboards are code: every expression parses, every metric it names exists, the
//! datasource and topology are variables.

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

/// The labels of one canary replica, which every dashboard variable matches (`.*`).
const REPLICA: &str =
    r#"{cluster="aks-1", namespace="pgdrill", job="pgdrill", instance="a:9743", pod="a"}"#;

/// Evaluates, with promtool, every dashboard expression that `select` picks (`which`
/// says which) as `count(<expr>)` at `at` against one replica's `series` (`(metric,
/// values)` in promtool's expanding notation, one sample a minute), and asserts that each
/// returns `want` series (0: nothing drawn). Returns how many expressions were evaluated.
fn assert_dashboard_exprs_count(
    select: impl Fn(&str) -> bool,
    which: &str,
    series: &[(&str, &str)],
    at: &str,
    want: usize,
    case: &str,
) -> usize {
    assert_dashboard_exprs_count_where(select, which, series, at, "", want, case)
}

/// As `assert_dashboard_exprs_count`, counting only the series that pass `filter`, a
/// comparison such as `> 120` ("" for every series).
fn assert_dashboard_exprs_count_where(
    select: impl Fn(&str) -> bool,
    which: &str,
    series: &[(&str, &str)],
    at: &str,
    filter: &str,
    want: usize,
    case: &str,
) -> usize {
    let exprs: Vec<DashboardExpr> = dashboard_exprs()
        .into_iter()
        .filter(|e| select(&e.expr))
        .collect();
    let exp_samples = if want == 0 {
        json!([])
    } else {
        json!([{"labels": "{}", "value": want}])
    };
    let tests: Vec<Value> = exprs
        .iter()
        .map(|e| {
            json!({
                // promtool prints a failing expression but not where it came from.
                "expr": format!("count(({}) {filter})  # {}", grafana_to_promql(&e.expr), e.at),
                "eval_time": at,
                "exp_samples": exp_samples,
            })
        })
        .collect();
    let input: Vec<Value> = series
        .iter()
        .map(|(name, values)| json!({"series": format!("{name}{REPLICA}"), "values": values}))
        .collect();
    let doc = json!({
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"name": case, "interval": "1m", "input_series": input, "promql_expr_test": tests}],
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard.test.yml");
    fs::write(&file, serde_norway::to_string(&doc).expect("yaml")).expect("write");
    let out = Command::new(promtool())
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{case}: each dashboard expression {which} should draw {want} series {filter} at {at}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    exprs.len()
}

/// `pgdrill_last_success_timestamp_seconds` is 0 until the first acknowledged write: a
/// canary that starts while the database is down must draw nothing from it, not the unix
/// time (~1.7e9 s, which squashes every other line of its panel); once it has written, each
/// expression draws its write gap.
#[test]
fn dashboard_draws_no_write_gap_before_the_first_success() {
    let metric = "pgdrill_last_success_timestamp_seconds";
    let reads = |e: &str| metric_names_in(e).contains(metric);
    let which = format!("reading {metric}");
    let never = [(metric, "0x20"), ("pgdrill_load_running", "1x20")];
    let n = assert_dashboard_exprs_count(reads, &which, &never, "15m", 0, "never written");
    assert!(n >= 2, "{n} dashboard expressions read {metric}");
    // Last wrote at 2m: a 13-minute gap, drawn by every expression.
    let stalled = [(metric, "0 60 120x18"), ("pgdrill_load_running", "1x20")];
    assert_dashboard_exprs_count(reads, &which, &stalled, "15m", 1, "written, then stalled");
}

/// A run that ended during an outage (`pgdrill_load_running` 0) and stays up with
/// `--linger` keeps exporting the open outage and its last success, but tries no write: no
/// panel may draw an outage so far or a write gap that grows on the clock (`time()`,
/// `timestamp()`) for it, as the recording rule and `PgdrillFailoverInProgress` do not.
/// While the load runs, each draws.
#[test]
fn dashboard_draws_no_growing_outage_once_the_load_stopped() {
    let clocked = |e: &str| {
        let names = metric_names_in(e);
        (e.contains("time()") || e.contains("timestamp("))
            && (names.contains("pgdrill_outage_start_timestamp_seconds")
                || names.contains("pgdrill_last_success_timestamp_seconds"))
    };
    let which = "measuring an outage or a write gap on the clock";
    // An outage from 5m that never ends; the run ends at 10m, the process lingers.
    let outage = [
        ("pgdrill_outage_start_timestamp_seconds", "0x4 300x30"),
        ("pgdrill_outage_end_timestamp_seconds", "0x34"),
        ("pgdrill_last_success_timestamp_seconds", "0+60x4 300x30"),
    ];
    let lingering: Vec<(&str, &str)> = outage
        .iter()
        .copied()
        .chain([("pgdrill_load_running", "1x9 0x25")])
        .collect();
    // 15 minutes after the load stopped: beyond every panel's window (10m).
    let n = assert_dashboard_exprs_count(clocked, which, &lingering, "25m", 0, "lingering");
    assert!(n >= 4, "{n} dashboard expressions {which}");
    let running: Vec<(&str, &str)> = outage
        .iter()
        .copied()
        .chain([("pgdrill_load_running", "1x34")])
        .collect();
    assert_dashboard_exprs_count(clocked, which, &running, "25m", 1, "load running");
}

/// An outage from 595 s to 700 s (105 s, within the 120 s objective) seen in progress by the
/// scrapes at 10m and 11m and as ended by the one at 12m: until that scrape, an outage so far
/// measured on the evaluation's clock (`time()`) reaches 124 s. Measured on the scrape's clock,
/// as `job:pgdrill_writes_unavailable_seconds:scrape` is, no panel shows more than the outage.
#[test]
fn dashboard_never_shows_an_outage_so_far_longer_than_the_outage() {
    let so_far = |e: &str| {
        metric_names_in(e).contains("pgdrill_outage_start_timestamp_seconds")
            && (e.contains("time()") || e.contains("timestamp("))
    };
    let which = "measuring an outage so far";
    let outage = [
        ("pgdrill_outage_start_timestamp_seconds", "0x9 595x5"),
        ("pgdrill_outage_end_timestamp_seconds", "0x11 700x3"),
        ("pgdrill_load_running", "1x15"),
    ];
    let at = "11m59s";
    let n = assert_dashboard_exprs_count(so_far, which, &outage, at, 1, "outage in progress");
    assert!(n >= 2, "{n} dashboard expressions {which}");
    assert_dashboard_exprs_count_where(so_far, which, &outage, at, "> 105", 0, "longer");
}

/// The state timeline `title`'s expression, recorded as `dashboard:panel` and evaluated by
/// promtool as Grafana would (`$__interval` 1m) on `series` (scraped every minute) for
/// instance a:9743: `(minute, value)` pairs, `None` for no sample.
fn assert_timeline(title: &str, series: Vec<Value>, expected: &[(u32, Option<u32>)]) {
    let labels = r#"dashboard:panel{cluster="c",instance="a:9743",namespace="n"}"#;
    let timeline = |p: &Value| str_of(p, "type") == Some("state-timeline");
    assert_panel(
        timeline,
        title,
        "A",
        series,
        "dashboard:panel",
        labels,
        expected,
    );
}

/// The query `ref_id` of the panel `title` (of those `pick` accepts), recorded as
/// `dashboard:panel` and evaluated by promtool as Grafana would (`$__interval` and
/// `$__rate_interval` 1m) on `series` (scraped every minute): what `shown` (PromQL over
/// `dashboard:panel`) gives, with `labels`, as `(minute, value)` pairs, `None` for no sample.
fn assert_panel(
    pick: impl Fn(&Value) -> bool,
    title: &str,
    ref_id: &str,
    series: Vec<Value>,
    shown: &str,
    labels: &str,
    expected: &[(u32, Option<u32>)],
) {
    let dash = json_file(&repo().join("grafana/dashboards/pgdrill.json"));
    let panel = (dash["panels"].as_array().into_iter().flatten())
        .find(|p| pick(p) && str_of(p, "title") == Some(title))
        .unwrap_or_else(|| panic!("no panel {title:?}"));
    let target = (panel["targets"].as_array().into_iter().flatten())
        .find(|t| str_of(t, "refId") == Some(ref_id))
        .unwrap_or_else(|| panic!("{title}: no query {ref_id}"));
    let expr = str_of(target, "expr").expect("its expression");
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = json!({"groups": [{"name": "panel", "rules": [
        {"record": "dashboard:panel", "expr": grafana_to_promql(expr)}
    ]}]});
    let yaml = |v: &Value| serde_norway::to_string(v).expect("yaml");
    fs::write(dir.path().join("panel.yml"), yaml(&rules)).expect("write the rules");
    let shown = expected.iter().map(|(minute, value)| {
        let samples: Vec<Value> = value
            .iter()
            .map(|v| json!({"labels": labels, "value": v}))
            .collect();
        let expr = format!("{shown}  # {title} {ref_id}");
        json!({"expr": expr, "eval_time": format!("{minute}m"), "exp_samples": samples})
    });
    let test = json!({"rule_files": ["panel.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series, "promql_expr_test": shown.collect::<Vec<_>>(),
    }]});
    fs::write(dir.path().join("panel.test.yml"), yaml(&test)).expect("write the test");
    run_promtool(dir.path(), &["test", "rules", "panel.test.yml"]);
}

/// A series of instance `instance` in cluster c, namespace n.
fn series(name: &str, instance: &str, label: &str, values: &str) -> Value {
    let at = format!(r#"job="pgdrill",cluster="c",namespace="n",instance="{instance}""#);
    json!({"series": format!("{name}{{{at}{label}}}"), "values": values})
}

/// At a 60 s scrape, an outage can begin and end between two scrapes: the state timeline
/// shows it where `pgdrill_outages_total` rose.
#[test]
fn the_state_timeline_shows_an_outage_no_scrape_saw() {
    let state = |s: &str, values: &str| {
        series(
            "pgdrill_failover_state",
            "a:9743",
            &format!(r#",state="{s}""#),
            values,
        )
    };
    let input = vec![
        state("healthy", "1x8"),
        state("degraded", "0x8"),
        state("recovering", "0x8"),
        state("outage", "0x8"),
        series("pgdrill_outages_total", "a:9743", "", "0 0 0 1 1 1 1 1 1"),
    ];
    assert_timeline(
        "Failover state",
        input,
        &[(2, Some(0)), (3, Some(3)), (5, Some(0))],
    );
}

/// The drill verdict of each drill process, pending then its verdict; canaries left out.
#[test]
fn the_drill_verdict_timeline_shows_drills_and_not_canaries() {
    let mut input = Vec::new();
    for (instance, verdicts) in [
        (
            "a:9743",
            [
                ("none", "0x8"),
                ("pending", "1 1 1 0 0 0 0 0 0"),
                ("fail", "0 0 0 1 1 1 1 1 1"),
            ],
        ),
        (
            "b:9743",
            [("none", "1x8"), ("pending", "0x8"), ("fail", "0x8")],
        ),
    ] {
        for (verdict, values) in verdicts {
            let label = format!(r#",verdict="{verdict}""#);
            input.push(series("pgdrill_drill_verdict", instance, &label, values));
        }
        for verdict in ["pass", "invalid"] {
            let label = format!(r#",verdict="{verdict}""#);
            input.push(series("pgdrill_drill_verdict", instance, &label, "0x8"));
        }
    }
    assert_timeline("Drill verdict", input, &[(1, Some(1)), (4, Some(4))]);
}

/// One failover that both replicas of a job saw in the same minute is one primary change.
#[test]
fn the_primary_changes_count_a_failover_once_per_job() {
    let input = ["a:9743", "b:9743"]
        .map(|i| series("pgdrill_primary_changes_total", i, "", "0 0 0 1 1 1"))
        .to_vec();
    let expected = [(2, Some(0)), (3, Some(1)), (4, Some(0))];
    let title = "Server timeline and primary changes";
    assert_panel(
        |_| true,
        title,
        "B",
        input,
        "dashboard:panel",
        "dashboard:panel",
        &expected,
    );
}

/// While one replica still verifies its writes (NaN) and another has verified, lost writes and
/// RPO both show "pending" (1 below: the panel's value is NaN), not one of them a figure.
#[test]
fn lost_writes_and_rpo_are_pending_while_any_replica_verifies() {
    let expected = [(1, Some(0)), (2, Some(1)), (3, Some(1)), (5, Some(0))];
    for (title, metric) in [
        (
            "Lost writes (last failover)",
            "pgdrill_last_failover_lost_writes",
        ),
        ("RPO (last failover)", "pgdrill_last_failover_rpo_seconds"),
    ] {
        let input = vec![
            series(metric, "a:9743", "", "0 0 NaN NaN NaN 3"),
            series(metric, "b:9743", "", "0 0 NaN 2 2 2"),
        ];
        let nan = "dashboard:panel != bool dashboard:panel";
        assert_panel(|_| true, title, "A", input, nan, "{}", &expected);
    }
}
