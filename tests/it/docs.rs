//! The documentation is checked against the repository, without any server: relative links and
//! `#anchors` resolve, every alert's `runbook_url` lands on its own heading of
//! `docs/runbooks.md`, and the flag and metric tables equal, in both directions, what the binary's
//! `--help` and `tests/fixtures/metric_names.txt` say. A new flag, metric or alert without docs
//! fails here, and so does documentation of one that no longer exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Files directly in `dir` (relative to the repo root) with extension `ext`, sorted.
fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let path = repo().join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// The Markdown pages whose links are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md"), repo().join("CONTRIBUTING.md")];
    pages.extend(files_in("docs", "md"));
    pages
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Markdown: headings, anchors, links, tables.

/// Lines outside fenced code blocks (a `# comment` in a shell block is not a heading).
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// `## Title` → `Some("Title")`, with its level.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let rest = &line[level..];
    ((1..=6).contains(&level) && rest.starts_with(' ')).then(|| (level, rest.trim()))
}

/// GitHub's anchor for a heading: lowercase, punctuation other than `-` and `_` dropped (so
/// backticks vanish), each space becomes `-`.
fn slug(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a page, with GitHub's `-1`, `-2`… suffixes for repeated headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, title) in prose_lines(text).into_iter().filter_map(heading) {
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    anchors
}

/// `text` with inline code spans removed, so that `` `[a](b)` `` is not taken for a link.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// Targets of inline links `[text](target)` outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            // A link may carry a title: `[a](path "title")`.
            let target = rest[..end].split_whitespace().next().unwrap_or_default();
            targets.push(target.to_string());
            rest = &rest[end..];
        }
    }
    targets
}

/// Cells of the Markdown table rows in the section under `section` (a heading title), up to
/// the next heading of the same or a higher level. Header and separator rows are included;
/// callers pick rows by their first cell.
fn table_rows(text: &str, section: &str) -> Vec<Vec<String>> {
    let mut level = None;
    let mut rows = Vec::new();
    for line in prose_lines(text) {
        if let Some((l, title)) = heading(line) {
            match level {
                Some(open) if l <= open => break,
                None if title == section => level = Some(l),
                _ => {}
            }
            continue;
        }
        if level.is_some() && line.trim_start().starts_with('|') {
            let cells = line.trim().trim_matches('|').split('|');
            rows.push(cells.map(|c| c.trim().to_string()).collect());
        }
    }
    assert!(level.is_some(), "no heading `{section}`");
    rows
}

/// `` `--rate` `` → `Some("--rate")`: a cell that is exactly one code span.
fn code_cell(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

#[test]
fn links_and_anchors_resolve() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = read(&page);
        let name = page
            .strip_prefix(repo())
            .unwrap_or(&page)
            .display()
            .to_string();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target.as_str(), ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap_or(repo()).join(path)
            };
            if !file.exists() {
                problems.push(format!(
                    "{name}: link `{target}`: {} does not exist",
                    file.display()
                ));
                continue;
            }
            let is_page = file.extension().is_some_and(|e| e == "md");
            if !fragment.is_empty() && is_page && !anchors(&read(&file)).contains(fragment) {
                problems.push(format!(
                    "{name}: link `{target}`: no heading with anchor #{fragment}"
                ));
            }
        }
    }
    assert_no_problems("links", &problems);
}

#[test]
fn readme_is_a_front_page() {
    let readme = read(&repo().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; move detail into docs/"
    );
    // The quick start comes first: the two commands, in this order.
    let first_block: Vec<&str> = readme
        .split("```")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        first_block,
        ["scripts/demo", "scripts/test"],
        "README's first code block"
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("PgBouncer and `--query-mode`"),
        "pgbouncer-and---query-mode"
    );
    assert_eq!(
        slug("RTO in Prometheus, and its precision"),
        "rto-in-prometheus-and-its-precision"
    );
    assert_eq!(
        slug("PgdrillRTOObjectiveMissed"),
        "pgdrillrtoobjectivemissed"
    );
    let text = "# A\n```sh\n# not a heading\n```\n## A\n";
    let want: BTreeSet<String> = ["a", "a-1"].map(String::from).into();
    assert_eq!(anchors(text), want);
    assert_eq!(
        link_targets("[x](a.md#b) `[y](no.md)` [z](#c \"t\")"),
        ["a.md#b", "#c"]
    );
}

// ---------------------------------------------------------------------------
// Runbooks.

/// `(alert, runbook_url)` for every object with an `alert` name, wherever it sits: the YAML rule
/// groups and the Azure template nest them differently.
fn alerts_with_runbooks(value: &Value, out: &mut Vec<(String, Option<String>)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(alert)) = map.get("alert") {
                let url = map
                    .get("annotations")
                    .and_then(|a| a.get("runbook_url"))
                    .and_then(Value::as_str);
                out.push((alert.clone(), url.map(String::from)));
            }
            map.values().for_each(|v| alerts_with_runbooks(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| alerts_with_runbooks(v, out)),
        _ => {}
    }
}

#[test]
fn every_runbook_url_lands_on_its_runbook() {
    let runbooks = read(&repo().join("docs/runbooks.md"));
    let anchors = anchors(&runbooks);
    let mut sources: Vec<(PathBuf, Value)> = Vec::new();
    for file in files_in("prometheus/rules", "yml") {
        let value = serde_norway::from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
        sources.push((file, value));
    }
    for file in files_in("prometheus/azure", "json") {
        let value = serde_json::from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        sources.push((file, value));
    }

    let mut problems = Vec::new();
    let mut linked = BTreeSet::new();
    for (file, value) in &sources {
        let name = file.strip_prefix(repo()).unwrap_or(file).display();
        let mut alerts = Vec::new();
        alerts_with_runbooks(value, &mut alerts);
        // A file of recording rules only (the expected replicas) has none to find.
        let recording_only = value["groups"].as_array().is_some_and(|groups| {
            let mut rules = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten());
            rules.all(|r| r.get("record").is_some())
        });
        if alerts.is_empty() && !recording_only {
            problems.push(format!("{name}: no alerts found"));
        }
        for (alert, url) in alerts {
            let Some(url) = url else {
                problems.push(format!("{name}: {alert} has no runbook_url"));
                continue;
            };
            let (path, fragment) = url.split_once('#').unwrap_or((url.as_str(), ""));
            // The Azure template joins its `runbookBaseUrl` parameter (the user's published
            // docs/runbooks.md) and the anchor: `[concat(parameters('runbookBaseUrl'), '#x')]`.
            let (path, fragment) = match path.strip_prefix("[concat(parameters('runbookBaseUrl')") {
                Some(_) => ("docs/runbooks.md", fragment.trim_end_matches("')]")),
                None => (path, fragment),
            };
            let want = alert.to_lowercase();
            if !path.ends_with("docs/runbooks.md") || fragment != want {
                problems.push(format!(
                    "{name}: {alert}: {url} is not …/docs/runbooks.md#{want}"
                ));
            } else if !anchors.contains(fragment) {
                problems.push(format!(
                    "{name}: {alert}: docs/runbooks.md has no `## {alert}`"
                ));
            }
            linked.insert(want);
        }
    }
    // The other direction: a runbook for an alert that no longer exists is stale.
    for (level, title) in prose_lines(&runbooks).into_iter().filter_map(heading) {
        if level == 2 && title.starts_with("Pgdrill") && !linked.contains(&slug(title)) {
            problems.push(format!(
                "docs/runbooks.md: `## {title}` is no alert's runbook"
            ));
        }
    }
    assert_no_problems("runbook_url", &problems);
}

// ---------------------------------------------------------------------------
// Flags.

/// Long flags of `pgdrill --help` with their environment variable, clap's own `--help` and
/// `--version` left out.
fn flags_from_help() -> BTreeMap<String, Option<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_pgdrill"))
        .arg("--help")
        // No PGDRILL_* values or terminal width from the caller's environment in the text.
        .env_clear()
        .output()
        .expect("running pgdrill --help");
    assert!(out.status.success(), "pgdrill --help failed: {out:?}");
    let help = String::from_utf8(out.stdout).expect("--help is UTF-8");

    // clap starts each option at column 2 (`  -h, --help`) or 6 (`      --dsn <DSN>`); help text
    // is indented further, so a `--flag` mentioned in a description never starts a block.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let def = line.strip_prefix("      --").or_else(|| {
            line.strip_prefix("  -")
                .and_then(|l| l.split_once(", --").map(|(_, r)| r))
        });
        match def {
            Some(def) => {
                // Dots too: `--web.config.file` keeps the exporter-toolkit name.
                let name: String = def
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                    .collect();
                blocks.push((format!("--{name}"), def.to_string()));
            }
            None => {
                if let Some((_, text)) = blocks.last_mut() {
                    text.push(' ');
                    text.push_str(line.trim());
                }
            }
        }
    }
    blocks
        .into_iter()
        .filter(|(flag, _)| flag != "--help" && flag != "--version")
        .map(|(flag, text)| {
            let env = text.split_once("[env: ").map(|(_, rest)| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            });
            (flag, env)
        })
        .collect()
}

/// `| `--rate` | `PGDRILL_RATE` | … |` rows of a flag table: flag → environment variable.
fn documented_flags(path: &str, section: &str) -> BTreeMap<String, Option<String>> {
    table_rows(&read(&repo().join(path)), section)
        .iter()
        .filter_map(|row| {
            let flag = code_cell(row.first()?)?.strip_prefix("--")?;
            let env = row.get(1).and_then(|c| code_cell(c)).map(String::from);
            Some((format!("--{flag}"), env))
        })
        .collect()
}

#[test]
fn flag_table_equals_help() {
    let help = flags_from_help();
    assert!(help.len() > 10, "parsed only {help:?} from pgdrill --help");
    let docs = documented_flags("docs/configuration.md", "Flags");
    let mut problems = Vec::new();
    for (flag, env) in &help {
        match docs.get(flag) {
            None => problems.push(format!(
                "{flag} (env {env:?}) is missing from docs/configuration.md"
            )),
            Some(documented) if documented != env => problems.push(format!(
                "{flag}: docs/configuration.md says env {documented:?}, --help says {env:?}"
            )),
            Some(_) => {}
        }
    }
    for flag in docs.keys().filter(|f| !help.contains_key(*f)) {
        problems.push(format!(
            "{flag} is documented in docs/configuration.md but pgdrill has no such flag"
        ));
    }
    // The README's short table may only name real flags.
    for flag in documented_flags("README.md", "The ten most used flags").keys() {
        if !help.contains_key(flag) {
            problems.push(format!(
                "README.md names {flag}, which pgdrill does not have"
            ));
        }
    }
    assert_no_problems("flags", &problems);
}

// ---------------------------------------------------------------------------
// Metrics.

#[test]
fn metric_table_equals_fixture() {
    let fixture: BTreeSet<String> = read(&repo().join("tests/fixtures/metric_names.txt"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .chain(crate::metrics::NOT_CHARTED.iter().map(|s| s.to_string()))
        .chain(
            crate::metrics::AFTER_FIRST_CONNECTION
                .iter()
                .map(|s| s.to_string()),
        )
        .collect();
    let docs: BTreeSet<String> =
        table_rows(&read(&repo().join("docs/metrics.md")), "Metric families")
            .iter()
            .filter_map(|row| code_cell(row.first()?))
            .filter(|name| name.starts_with("pgdrill_") || name.starts_with("process_"))
            .map(String::from)
            .collect();
    assert!(fixture.len() > 10, "fixture holds only {fixture:?}");
    let mut problems: Vec<String> = Vec::new();
    for name in fixture.difference(&docs) {
        problems.push(format!(
            "{name} is exported (fixture or NOT_CHARTED) but missing from docs/metrics.md"
        ));
    }
    for name in docs.difference(&fixture) {
        problems.push(format!(
            "{name} is in docs/metrics.md but neither in tests/fixtures/metric_names.txt nor NOT_CHARTED"
        ));
    }
    assert_no_problems("metrics", &problems);
}

/// `class` label values of `pgdrill_transaction_errors_total` on a live scrape of the real
/// binary. No database is needed: every class is pre-created at 0, and the DSN points at a
/// loopback port where nothing listens.
fn live_error_classes() -> BTreeSet<String> {
    let port = crate::support::free_port();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_pgdrill"))
        .args(["--dsn", "host=127.0.0.1 port=1 user=docs dbname=docs"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Bounds the process even if this test panics before killing it.
        .args(["--duration", "15s", "--log-filter", "off"])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting pgdrill");
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        match scrape(port) {
            Ok(text) if text.contains("pgdrill_transaction_errors_total") => break Ok(text),
            result if Instant::now() >= deadline => break result,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // Its own child, stopped by PID; the result of kill does not matter once it has exited.
    let _ = daemon.kill();
    let _ = daemon.wait();
    let text = scrape.expect("scraping pgdrill's /metrics");
    text.lines()
        .filter_map(|l| l.strip_prefix("pgdrill_transaction_errors_total{class=\""))
        .filter_map(|rest| rest.split('"').next())
        .map(String::from)
        .collect()
}

fn scrape(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

#[test]
fn error_class_table_equals_live_classes() {
    let live = live_error_classes();
    assert!(live.len() > 5, "scraped only {live:?}");
    let docs: BTreeSet<String> =
        table_rows(&read(&repo().join("docs/metrics.md")), "Error classes")
            .iter()
            .filter_map(|row| code_cell(row.first()?))
            .map(String::from)
            .collect();
    let mut problems: Vec<String> = Vec::new();
    for class in live.difference(&docs) {
        problems.push(format!(
            "class {class} is exported but missing from docs/metrics.md"
        ));
    }
    for class in docs.difference(&live) {
        problems.push(format!(
            "class {class} is in docs/metrics.md but pgdrill does not export it"
        ));
    }
    assert_no_problems("error classes", &problems);
}
