//! The compose stack, the Dockerfile and the metrics port agree with each other.

use super::*;

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

/// A compose service's command, one argument a string.
fn command_of(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        other => panic!("command: {other}"),
    }
}

#[test]
fn metrics_port_is_consistent() {
    const PORT: &str = "9743";
    let doc = compose();
    let pgdrill = &doc["services"]["pgdrill"];
    let command = command_of(pgdrill);
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
        .filter(|j| str_of(j, "job_name") == Some("pgdrill-compose"))
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

    let (mut ports, mut listens) = (0, 0);
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
                    ports += usize::from(v == PORT);
                }
            }
            if let Some(v) = line.strip_prefix("--listen=") {
                assert_eq!(v, format!("0.0.0.0:{PORT}"), "{}", rel(&manifest));
                listens += 1;
            }
        }
    }
    // Checked, not passed over: the manifests name the port and listen on it.
    assert!(
        ports >= 1,
        "no containerPort or port {PORT} in deploy/kubernetes"
    );
    assert!(listens >= 1, "no --listen= in deploy/kubernetes");
}

/// No password in pgdrill's argv (`docker ps`, `/proc/1/cmdline`), the rule the Kubernetes
/// manifests follow: the DSN names the user only, and the password pgdrill gets from
/// PGPASSWORD is the one the primary gives the role and PgBouncer checks.
#[test]
fn compose_keeps_the_password_out_of_pgdrills_argv() {
    let doc = compose();
    let pgdrill = &doc["services"]["pgdrill"];
    for arg in command_of(pgdrill) {
        let userinfo = arg
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['/', '?']).next())
            .and_then(|authority| authority.rsplit_once('@'))
            .map(|(userinfo, _)| userinfo);
        assert!(
            !userinfo.is_some_and(|u| u.contains(':')) && !arg.to_lowercase().contains("password="),
            "compose.yaml: pgdrill's argv carries a password: {arg}"
        );
    }
    let password = str_of(&pgdrill["environment"], "PGPASSWORD")
        .expect("pgdrill's password in its environment (PGPASSWORD)");
    let primary = str_of(
        &doc["services"]["primary"]["environment"],
        "PGDRILL_PASSWORD",
    );
    assert_eq!(
        primary,
        Some(password),
        "the role's password (primary-init.sh)"
    );
    assert!(
        read("deploy/compose/userlist.txt").contains(&format!("\"pgdrill\" \"{password}\"")),
        "PgBouncer's userlist.txt holds another password"
    );
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

/// The body of the section of `doc` under `heading` (a whole heading line), up to the next
/// heading of any level.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no `{heading}`"))
        + heading.len()
        + 2;
    let rest = &doc[start..];
    // Headings only: a `#` comment inside a fenced code block is no heading.
    let mut fenced = false;
    let mut end = rest.len();
    let mut at = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            end = at;
            break;
        }
        at += line.len();
    }
    &rest[..end]
}

/// The scrape interval of each endpoint of a PodMonitor manifest.
fn podmonitor_intervals(rel: &str) -> Vec<String> {
    let doc = yaml(&repo().join(rel));
    let intervals: Vec<String> = doc["spec"]["podMetricsEndpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| str_of(e, "interval").map(str::to_string))
        .collect();
    assert!(!intervals.is_empty(), "{rel}: no endpoint interval");
    intervals
}

/// Grafana sizes `$__rate_interval` from the data source's Scrape interval (15 s when unset),
/// not from Prometheus: at 60 s scrapes with the default, the dashboard's rate panels read
/// one-sample windows and go blank. So the compose stack's provisioned data source states
/// the interval its Prometheus scrapes pgdrill at, and docs/deploy.md tells
/// kube-prometheus-stack and Azure Managed Grafana users to set theirs to their
/// PodMonitor's interval, and why.
#[test]
fn grafana_data_sources_are_told_the_scrape_interval() {
    let rate_panels = dashboard_exprs()
        .into_iter()
        .filter(|e| e.expr.contains("$__rate_interval"))
        .count();
    assert!(
        rate_panels > 0,
        "the dashboard no longer uses $__rate_interval"
    );

    // Compose: the provisioned data source's Scrape interval is pgdrill's scrape interval.
    let prometheus = yaml(&repo().join("prometheus/prometheus.yml"));
    let jobs = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape_configs");
    let pgdrill = jobs
        .iter()
        .find(|j| str_of(j, "job_name").is_some_and(|n| n.starts_with("pgdrill")))
        .expect("a pgdrill scrape job");
    let scrape = str_of(pgdrill, "scrape_interval")
        .or_else(|| str_of(&prometheus["global"], "scrape_interval"))
        .expect("a scrape interval");
    let datasources = yaml(&repo().join("grafana/provisioning/datasources/prometheus.yml"));
    for ds in datasources["datasources"].as_array().expect("datasources") {
        if str_of(ds, "type") == Some("prometheus") {
            assert_eq!(
                str_of(&ds["jsonData"], "timeInterval"),
                Some(scrape),
                "grafana/provisioning: the data source's Scrape interval (jsonData.timeInterval) \
                 must be the compose stack's pgdrill scrape interval"
            );
        }
    }

    // Elsewhere the user sets it: docs/deploy.md says so where each PodMonitor is applied.
    let deploy = read("docs/deploy.md");
    let why = section(&deploy, "## Grafana: the data source's scrape interval");
    for needed in [
        "$__rate_interval",
        "Scrape interval",
        "15 s",
        "jsonData.timeInterval",
    ] {
        assert!(
            why.contains(needed),
            "docs/deploy.md: the why lacks {needed:?}"
        );
    }
    for (heading, podmonitor, how) in [
        (
            "### kube-prometheus-stack",
            "deploy/kubernetes/podmonitor.yaml",
            "grafana.sidecar.datasources.defaultDatasourceScrapeInterval",
        ),
        (
            "## Azure Monitor managed Prometheus and Azure Managed Grafana",
            "deploy/azure/ama-metrics-podmonitor.yaml",
            "Scrape interval",
        ),
    ] {
        let text = section(&deploy, heading);
        assert!(
            text.contains(how),
            "docs/deploy.md `{heading}`: how to set the data source's Scrape interval ({how})"
        );
        assert!(
            text.contains("#grafana-the-data-sources-scrape-interval"),
            "docs/deploy.md `{heading}`: no link to why"
        );
        for interval in podmonitor_intervals(podmonitor) {
            assert!(
                text.contains(&format!("`{interval}`")),
                "docs/deploy.md `{heading}`: the Scrape interval to set is {podmonitor}'s \
                 `{interval}`"
            );
        }
    }
}
