//! Conventions of the rules: names, severities, runbooks, one RTO objective, windows that
//! hold enough scrapes, aggregations that keep the topology, recording rules that are read
//! and documented.

use super::*;

/// Where the alerts' runbook links point: a placeholder the user replaces with
/// where they publish docs/runbooks.md (the Azure template takes it as the
/// parameter `runbookBaseUrl`). `.invalid` never resolves to someone else's site.
pub(super) const RUNBOOK_BASE: &str = "https://pgdrill.invalid/docs/runbooks.md";

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

/// Range selectors (`[5m]`, `[10m:1m]`) of an expression with the function
/// that reads them.
pub(super) fn ranges_in(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .expect("unclosed [");
        let range = rest[open + 1..close].to_string();
        // The innermost function call that the range is an argument of: the nearest `(`
        // before it that is not closed before it (a subquery's expression is in parentheses).
        let before = &rest[..open];
        let mut depth = 0usize;
        let enclosing = before.char_indices().rev().find_map(|(i, c)| match c {
            ')' => {
                depth += 1;
                None
            }
            '(' if depth == 0 => Some(i),
            '(' => {
                depth -= 1;
                None
            }
            _ => None,
        });
        let function = enclosing
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

pub(super) fn seconds(duration: &str) -> u64 {
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
    // A subquery's range belongs to the call around its parentheses, not a call inside.
    assert_eq!(
        ranges_in("max_over_time((a and time() - b < 180)[27m:1m])"),
        [("max_over_time".to_string(), "27m:1m".to_string())]
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

/// A duration as docs/runbooks.md writes it: `5 min`, `1 h`, `7 days`.
fn spoken(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 && s > 86_400 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The table of alerts in docs/runbooks.md says, for each alert and severity, what the rule
/// does: one row per alert and severity, and its "fires when" names the rule's `for:` hold
/// and every window of an hour or more (how long a job that went stays remembered, which
/// the reader cannot guess from the alert's name).
#[test]
fn runbook_table_states_each_alerts_hold_and_long_windows() {
    let runbooks = read("docs/runbooks.md");
    let rows: Vec<Vec<&str>> = runbooks
        .lines()
        .filter(|l| l.starts_with("| `Pgdrill"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    let mut problems = Vec::new();
    for rule in all_rules() {
        let Some(alert) = &rule.alert else { continue };
        let severity = str_of(&rule.raw["labels"], "severity").unwrap_or_default();
        let name = format!("`{alert}`");
        let matching: Vec<&Vec<&str>> = rows
            .iter()
            .filter(|r| r.first() == Some(&name.as_str()) && r.get(1) == Some(&severity))
            .collect();
        let [row] = matching[..] else {
            problems.push(format!(
                "{alert} ({severity}): {} rows in the table of alerts",
                matching.len()
            ));
            continue;
        };
        let fires_when = row.get(2).copied().unwrap_or_default();
        let mut durations: Vec<u64> = str_of(&rule.raw, "for").map(seconds).into_iter().collect();
        durations.extend(
            ranges_in(&rule.expr)
                .into_iter()
                .map(|(_, range)| seconds(range.split(':').next().unwrap_or_default()))
                .filter(|&s| s >= 3_600),
        );
        durations.sort_unstable();
        durations.dedup();
        for s in durations {
            let said = spoken(s);
            if !fires_when.contains(&said) {
                problems.push(format!(
                    "{alert} ({severity}): \"fires when\" does not say {said}: {fires_when}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "docs/runbooks.md: {problems:#?}");
    assert_eq!(spoken(604_800), "7 days");
    assert_eq!(spoken(3_600), "1 h");
    assert_eq!(spoken(300), "5 min");
}
