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
