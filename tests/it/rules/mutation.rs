//! Mutation testing of the alerts: each threshold, window and duration changed in a copy of
//! the rules must make some promtool unit test fail.

use super::*;

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
        from: "[27m:]",
        to: "[7m:]",
    },
    Mutation {
        rule: "PgdrillRTOObjectiveMissed",
        from: "[27m:]",
        to: "[57m:]",
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
        from: "rate(pgdrill_transactions_total[5m]) unless",
        to: "rate(pgdrill_transactions_total[1m]) unless",
    },
    Mutation {
        rule: "job:pgdrill_transactions_succeeded:ratio_target5m",
        from: "last_over_time(pgdrill_target_rate[5m]) unless min_over_time(pgdrill_load_running[5m]) == 0",
        to: "last_over_time(pgdrill_target_rate[5m])",
    },
    Mutation {
        rule: "PgdrillVerificationFailing",
        from: "for: 5m",
        to: "for: 0m",
    },
    Mutation {
        rule: "PgdrillVerificationFailing",
        from: "unless",
        to: "or",
    },
    Mutation {
        rule: "PgdrillVerificationFailing",
        from: "increase(pgdrill_verifications_total[5m])",
        to: "increase(pgdrill_verifications_total[15m])",
    },
    Mutation {
        rule: "PgdrillVerificationFailing",
        from: "increase(pgdrill_verification_errors_total[5m])",
        to: "increase(pgdrill_verification_errors_total[15m])",
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
        rule: "PgdrillCanaryAbsent",
        from: "verdict=\"none\"}[1h]) == 0",
        to: "verdict=\"none\"}[1h]) == 2",
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
        from: "unless last_over_time(pgdrill_load_running[2m]) == 0",
        to: "",
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

/// Where the search for a catching group starts, for the mutations that the default order
/// (groups naming the rule, then the smallest) reached only after several promtool runs (up to
/// 73 of 98; 327 runs in all where 48 can do): (rule, `to`, the name of a test group that
/// caught it). A stale entry costs minutes, never a verdict: the search goes on from there.
const FIRST_TRIED: &[(&str, &str, &str)] = &[
    (
        "PgdrillWritesUnavailable",
        "job:pgdrill_writes_unavailable_seconds:scrape",
        "a canary writing every 200 s is not down between its writes",
    ),
    (
        "PgdrillWritesUnavailable",
        "< 60",
        "a 5-minute outage in aks-1 pages once for aks-1; aks-2 stays quiet",
    ),
    (
        "job:pgdrill_writes_unavailable_seconds:scrape",
        "time()",
        "failover of 115 s ending between a scrape and an evaluation pages nothing - scrape every 60s, 30s after the evaluation",
    ),
    (
        "PgdrillAcknowledgedWritesLost",
        "[5m]",
        "lost writes, and a verification retried for 30 s - scrape every 60s, aligned",
    ),
    (
        "PgdrillRTOObjectiveMissed",
        "[7m:]",
        "a 5-minute outage in aks-1 pages once for aks-1; aks-2 stays quiet",
    ),
    (
        "PgdrillRTOObjectiveMissed",
        "[57m:]",
        "a 5-minute outage in aks-1 pages once for aks-1; aks-2 stays quiet",
    ),
    (
        "PgdrillErrorRatioHigh",
        "> 0.03",
        "4 % of transactions fail for 35 minutes - scrape every 60s, aligned",
    ),
    (
        "job:pgdrill_transaction_errors:ratio_rate5m",
        "(rate(pgdrill_transaction_errors_total[1m]))",
        "8 % of transactions fail for 35 minutes - scrape every 60s, 30s after the evaluation",
    ),
    (
        "job:pgdrill_transactions_succeeded:ratio_target5m",
        "rate(pgdrill_transactions_total[1m]) unless",
        "a new primary that sustains 50 % of the target, recovering forever - scrape every 60s, 30s after the evaluation",
    ),
    (
        "PgdrillCanaryDown",
        "up[15m]",
        "canary coverage per job and cluster",
    ),
    (
        "PgdrillCanaryDown",
        "for: 0m",
        "a replacement pod crash-loops before its first good scrape - scrape every 60s, aligned",
    ),
    (
        "PgdrillCanaryAbsent",
        "count[5m]) unless job",
        "canary coverage per job and cluster",
    ),
    (
        "PgdrillCanaryAbsent",
        "verdict=\"none\"}[1h]) == 2",
        "canary coverage per job and cluster",
    ),
    (
        "job:pgdrill_canaries:expected",
        "vector(1)",
        "canary coverage per job and cluster",
    ),
    (
        "PgdrillFailoverInProgress",
        "< 6000",
        "a new primary that sustains 50 % of the target, recovering forever - scrape every 60s, aligned",
    ),
    (
        "PgdrillFailoverInProgress",
        "pgdrill_failover_state{state=\"outage\"}",
        "failover beyond the objective pages once per job, through a failed scrape - scrape every 60s, aligned",
    ),
    (
        "PgdrillErrorBudgetBurn",
        "ratio_rate1h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 10",
        "an unplanned failover of 60 s pages - scrape every 60s, 30s after the evaluation",
    ),
    (
        "PgdrillErrorBudgetBurn",
        "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 9",
        "an outage of an hour pages throughout, through a failed scrape - scrape every 60s, 30s after the evaluation",
    ),
    (
        "PgdrillErrorBudgetBurn",
        "(1 - job:pgdrill_write_success:ratio_rate5m)",
        "every connection hangs for 120 s: skipped writes burn the budget - scrape every 60s, 30s after the evaluation",
    ),
    (
        "PgdrillErrorBudgetBurn",
        "(1 - job:pgdrill_write_success:ratio_rate6h)",
        "after 9 clean hours, a 30 s failover files no ticket - scrape every 60s, 30s after the evaluation",
    ),
    (
        "PgdrillErrorBudgetBurn",
        "ratio_rate6h) / (1 - scalar(pgdrill:write_success_objective_ratio)) > 2",
        "2 % of writes fail (burn rate 20) - scrape every 60s, 30s after the evaluation",
    ),
    (
        "job:pgdrill_write_failures:rate5m",
        "+ 0 * rate(pgdrill_transactions_skipped_total[5m])",
        "every connection hangs for 120 s: skipped writes burn the budget - scrape every 60s, 30s after the evaluation",
    ),
];

/// The group [`FIRST_TRIED`] names for `m`, if any.
fn first_tried(m: &Mutation) -> Option<&'static str> {
    FIRST_TRIED
        .iter()
        .find(|(rule, to, _)| *rule == m.rule && *to == m.to)
        .map(|(_, _, group)| *group)
}

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

/// One test group of a promtool test file as a file of its own: the file's header
/// (`rule_files`, `evaluation_interval`) with `tests` holding only this group, so that a
/// mutation can stop at the first group that catches it.
struct GroupFile {
    /// `alerts.test.yml#3`, for the report.
    label: String,
    /// Its `name`, as promtool prints it.
    name: String,
    /// The rule files (names) it loads.
    loads: Vec<String>,
    text: String,
}

fn group_files() -> Vec<GroupFile> {
    let mut out = Vec::new();
    for path in rule_test_files() {
        let doc = yaml(&path);
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let loads: Vec<String> = doc["rule_files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|f| Path::new(f).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        let groups = doc["tests"].as_array().expect("tests list");
        for (i, group) in groups.iter().enumerate() {
            let mut one = doc.clone();
            one["tests"] = Value::Array(vec![group.clone()]);
            out.push(GroupFile {
                label: format!("{name}#{i}"),
                name: str_of(group, "name").unwrap_or_default().to_string(),
                loads: loads.clone(),
                text: serde_norway::to_string(&one).expect("group as YAML"),
            });
        }
    }
    out
}

/// What promtool said about one group against one copy of the rules.
struct Run {
    dir: usize,
    group: usize,
    failed: bool,
    output: String,
}

/// Runs `promtool test rules` for each (rules copy, group) job, as many at a time as there
/// are cores. With `stop_at_failure`, a copy's remaining jobs are skipped once one of its
/// groups fails: one failing test is all a mutation needs, and most of the minutes were
/// spent on groups that ran after the mutation had already been caught.
fn run_groups(
    dirs: &[PathBuf],
    groups: &[GroupFile],
    jobs: Vec<(usize, usize)>,
    stop_at_failure: bool,
) -> Vec<Run> {
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(jobs));
    let failed = std::sync::Mutex::new(BTreeSet::new());
    let runs = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = {
                    let mut queue = queue.lock().expect("queue");
                    let failed = failed.lock().expect("failed");
                    std::iter::from_fn(|| queue.pop_front())
                        .find(|(dir, _)| !(stop_at_failure && failed.contains(dir)))
                };
                let Some((dir, group)) = next else { break };
                let file = dirs[dir].join("tests").join(format!("group-{group}.yml"));
                fs::write(&file, &groups[group].text).expect("write group file");
                let out = Command::new(promtool())
                    .args(["test", "rules"])
                    .arg(&file)
                    .output()
                    .expect("run promtool");
                if !out.status.success() {
                    failed.lock().expect("failed").insert(dir);
                }
                runs.lock().expect("runs").push(Run {
                    dir,
                    group,
                    failed: !out.status.success(),
                    output: format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                });
            });
        }
    });
    runs.into_inner().expect("runs")
}

/// Each threshold, window or duration of each alert, changed in a copy of the
/// rules, makes `promtool test rules` fail; prints which test caught it.
///
/// Each test file is split into one file per group; for each mutation the groups that
/// load its rule file run, its [`FIRST_TRIED`] group first, then those naming the mutated
/// rule, then the cheapest, until one fails. Only a failed assertion counts, not a file promtool cannot load,
/// and every catching group must pass against the shipped rules (the split is faithful).
///
/// About 25 s of promtool on both cores (49 runs): it runs with the untimed tests, never beside
/// those under `timed` (see `scripts/test`).
#[test]
fn every_alert_mutation_fails_a_unit_test() {
    // Every alert is mutated at least once.
    for rule in all_rules() {
        if let Some(alert) = &rule.alert {
            assert!(
                all_mutations().any(|m| m.rule == alert),
                "no mutation of {alert}"
            );
        }
    }
    let mutations: Vec<&Mutation> = all_mutations().collect();
    let groups = group_files();
    for (i, (rule, to, group)) in FIRST_TRIED.iter().enumerate() {
        assert!(
            !FIRST_TRIED[..i]
                .iter()
                .any(|(r, t, _)| r == rule && t == to),
            "FIRST_TRIED: {rule} to `{to}` twice"
        );
        assert!(
            mutations.iter().any(|m| m.rule == *rule && m.to == *to),
            "FIRST_TRIED: no mutation of {rule} to `{to}`"
        );
        assert!(
            groups.iter().any(|g| g.name == *group),
            "FIRST_TRIED: no test group is named `{group}`"
        );
    }
    let root = tempfile::tempdir().expect("temp dir");
    // One copy of the rules per mutation, and the shipped rules last (the control).
    let mut dirs = Vec::new();
    let mut candidates = Vec::new();
    for (i, m) in mutations.iter().enumerate() {
        let (files, mutated) = mutated_rule_files(m);
        let dir = root.path().join(format!("m{i}"));
        fs::create_dir_all(dir.join("rules")).expect("mkdir");
        fs::create_dir_all(dir.join("tests")).expect("mkdir");
        for (name, text) in files {
            fs::write(dir.join("rules").join(name), text).expect("write");
        }
        dirs.push(dir);
        let mut these: Vec<usize> = (0..groups.len())
            .filter(|&g| groups[g].loads.contains(&mutated))
            .collect();
        let first = first_tried(m);
        if let Some(first) = first {
            assert!(
                these.iter().any(|&g| groups[g].name == first),
                "FIRST_TRIED: no group named `{first}` loads {mutated}"
            );
        }
        these.sort_by_key(|&g| {
            (
                first != Some(groups[g].name.as_str()),
                !groups[g].text.contains(m.rule),
                groups[g].text.len(),
            )
        });
        assert!(
            !these.is_empty(),
            "{}: no test group loads {mutated}",
            m.rule
        );
        candidates.push(these);
    }
    let control = root.path().join("shipped");
    fs::create_dir_all(control.join("rules")).expect("mkdir");
    fs::create_dir_all(control.join("tests")).expect("mkdir");
    for path in rule_files() {
        fs::copy(
            &path,
            control.join("rules").join(path.file_name().expect("name")),
        )
        .expect("copy rule file");
    }
    dirs.push(control);

    // Each mutation's best candidate first, then every mutation's second, and so on.
    let depth = candidates.iter().map(Vec::len).max().unwrap_or(0);
    let jobs: Vec<(usize, usize)> = (0..depth)
        .flat_map(|rank| {
            candidates
                .iter()
                .enumerate()
                .filter_map(move |(m, these)| these.get(rank).map(|&g| (m, g)))
        })
        .collect();
    let total = jobs.len();
    let runs = run_groups(&dirs, &groups, jobs, true);

    let mut report = String::new();
    let mut survivors = Vec::new();
    let mut catchers = BTreeSet::new();
    for (i, m) in mutations.iter().enumerate() {
        let ran = runs.iter().filter(|r| r.dir == i).count();
        report.push_str(&format!(
            "{}: `{}` -> `{}` ({ran} of {} groups run)\n",
            m.rule,
            m.from,
            m.to,
            candidates[i].len()
        ));
        let failures: Vec<&Run> = runs.iter().filter(|r| r.dir == i && r.failed).collect();
        if failures.is_empty() {
            survivors.push(format!("{}: {} -> {}", m.rule, m.from, m.to));
        }
        for run in failures {
            let names = failing_tests(&run.output);
            assert!(
                !names.is_empty(),
                "{}: {} failed without a failing assertion:\n{}",
                m.rule,
                groups[run.group].label,
                run.output
            );
            catchers.insert(run.group);
            for name in names {
                report.push_str(&format!(
                    "    caught by: {name} ({})\n",
                    groups[run.group].label
                ));
            }
        }
    }
    println!("{report}");
    println!(
        "{} promtool runs of {total} (the rest skipped once caught)",
        runs.len()
    );
    assert!(
        survivors.is_empty(),
        "mutations no test catches: {survivors:#?}"
    );
    // The control: what caught a mutation passes against the shipped rules.
    let shipped = dirs.len() - 1;
    let jobs = catchers.into_iter().map(|g| (shipped, g)).collect();
    for run in run_groups(&dirs, &groups, jobs, false) {
        assert!(
            !run.failed,
            "{} fails against the shipped rules too:\n{}",
            groups[run.group].label, run.output
        );
    }
}
