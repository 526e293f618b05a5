//! What the dashboard's panels draw, evaluated by promtool on synthetic scrapes: no write
//! gap before the first success, no outage growing on the clock once the load stopped or
//! longer than the outage, the state and verdict timelines, primary changes counted once
//! per job, lost writes and RPO pending while any replica verifies.

use super::dashboards::{grafana_to_promql, DashboardExpr};
use super::*;

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

/// One replica's `pgdrill_failover_state{state}` series.
fn state(state: &str, values: &str) -> Value {
    let label = format!(r#",state="{state}""#);
    series("pgdrill_failover_state", "a:9743", &label, values)
}

/// At a 60 s scrape, an outage can begin and end between two scrapes: the state timeline
/// shows it where `pgdrill_outages_total` rose.
#[test]
fn the_state_timeline_shows_an_outage_no_scrape_saw() {
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

/// A new replica whose first scrape already counts an outage (over before it, as in a short
/// drill at a 60 s scrape): the state timeline shows it there, and the outages in range count
/// it, which `increase()` alone would not (one sample is no increase).
#[test]
fn an_outage_before_a_replicas_first_scrape_is_shown_and_counted() {
    let input = || {
        vec![
            state("healthy", "_ _ _ 1x5"),
            state("degraded", "_ _ _ 0x5"),
            state("recovering", "_ _ _ 0x5"),
            state("outage", "_ _ _ 0x5"),
            series("pgdrill_outages_total", "a:9743", "", "_ _ _ 1x5"),
        ]
    };
    assert_timeline("Failover state", input(), &[(3, Some(3)), (5, Some(0))]);
    let stat = |p: &Value| str_of(p, "type") == Some("stat");
    let counted = "dashboard:panel";
    let labels = "dashboard:panel";
    assert_panel(
        stat,
        "Outages in range",
        "A",
        input(),
        counted,
        labels,
        &[(5, Some(1))],
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

/// "Last RTO" turns red as pgdrill judges an outage, to the millisecond: 120.0004 s is shown
/// as 120.000 s and stays below the 120 s objective's threshold (nudged by half a millisecond,
/// since Grafana colours a value equal to its threshold).
#[test]
fn the_last_rto_is_judged_to_the_millisecond_as_pgdrill_judges_it() {
    let rto = series(
        "pgdrill_last_outage_duration_seconds",
        "a:9743",
        "",
        "120.0004x3",
    );
    let last = |p: &Value| p["id"] == 2;
    let shown = [(1, Some(120_000)), (2, Some(120_000))];
    assert_panel(
        last,
        "Last RTO",
        "A",
        vec![rto],
        "dashboard:panel * 1000",
        "{}",
        &shown,
    );
    let objective = json!({"series": "pgdrill:rto_objective_seconds", "values": "120x3"});
    let nudge = "round((dashboard:panel - 120) * 10000)";
    let shown = [(1, Some(5))];
    assert_panel(
        last,
        "Last RTO",
        "objective",
        vec![objective],
        nudge,
        "{}",
        &shown,
    );
}

/// A primary change without an outage that lost writes, verified after outage 1 had been
/// verified with none lost: outage 1's row keeps its 0, not the later loss.
#[test]
fn the_failover_history_gives_a_later_switchovers_loss_to_no_outage() {
    let history = |p: &Value| p["id"] == 25;
    let input = |of_outage: &str| {
        vec![
            series(
                "pgdrill_outage_start_timestamp_seconds",
                "a:9743",
                "",
                "0 60x5",
            ),
            series(
                "pgdrill_last_failover_lost_writes",
                "a:9743",
                "",
                "0 0 0 0 12 12",
            ),
            series("pgdrill_last_failover_outage", "a:9743", "", of_outage),
        ]
    };
    let labels = r#"dashboard:panel{cluster="c",namespace="n",job="pgdrill",instance="a:9743"}"#;
    let expected = [(2, Some(0)), (4, None)];
    let title = "Failover history";
    let shown = "dashboard:panel";
    assert_panel(
        history,
        title,
        "lost",
        input("0 1 1 1 0 0"),
        shown,
        labels,
        &expected,
    );
    // An older pgdrill without the gauge: as before.
    let old: Vec<Value> = input("0").into_iter().take(2).collect();
    let expected = [(2, Some(0)), (4, Some(12))];
    assert_panel(history, title, "lost", old, shown, labels, &expected);
}
