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

#[test]
fn metrics_port_is_consistent() {
    const PORT: &str = "9743";
    let doc = compose();
    let pgdrill = &doc["services"]["pgdrill"];
    let command: Vec<String> = match &pgdrill["command"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        other => panic!("pgdrill command: {other}"),
    };
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
                }
            }
            if let Some(v) = line.strip_prefix("--listen=") {
                assert_eq!(v, format!("0.0.0.0:{PORT}"), "{}", rel(&manifest));
            }
        }
    }
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
