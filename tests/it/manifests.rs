//! The Kubernetes manifests (`deploy/kubernetes/`, `deploy/azure/`) and the
//! Dockerfile's labels are code, and are tested as code:
//!
//! * every manifest passes `kubernetes-validate --strict` (PyPI; installed
//!   by `scripts/deps test`) for each Kubernetes minor version that AKS
//!   supports in November 2026 — 1.34 (until the end of November), 1.35,
//!   1.36 and 1.37 (AKS release calendar); kubernetes-validate 1.37.0 knows
//!   schemas up to 1.37; the PodMonitors, which it has no schema for, are
//!   validated against their CRDs in `podmonitors.rs`;
//! * what the issue asks of the deployment: no secret in argv, the password
//!   from a file, `--retention`, a `--startup-timeout` that outlasts an
//!   outage, `sslmode=verify-full`, a PodDisruptionBudget, no service account
//!   token, no image we do not publish, and a federated credential in the docs
//!   for every Workload Identity service account;
//! * the drill's Indexed Job, and shell containers that end on SIGTERM.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

/// Kubernetes versions AKS supports (GA) in November 2026.
const AKS_VERSIONS: [&str; 4] = ["1.34.0", "1.35.0", "1.36.0", "1.37.0"];

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/azure"] {
        for entry in fs::read_dir(repo().join(dir)).expect("manifest dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 4, "manifests: {files:?}");
    files
}

/// Every YAML document of a file.
pub(crate) fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).expect("read manifest");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn all_documents() -> Vec<(PathBuf, Value)> {
    manifest_files()
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

pub(crate) fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// kubernetes-validate.

fn kubernetes_validate() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("kubernetes-validate"))
            .find(|c| c.is_file())
    });
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("pgdrill/venv/bin/kubernetes-validate"));
    on_path
        .or(cache.filter(|c| c.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "kubernetes-validate not found: this test needs it and skips nothing. \
                 Run `scripts/deps test` (installs it from PyPI into ~/.cache/pgdrill/venv) \
                 or set KUBERNETES_VALIDATE=/path/to/kubernetes-validate"
            )
        })
}

fn run_validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn manifests_pass_kubernetes_validate_strict_for_aks_versions() {
    let files = manifest_files();
    // Resources kubernetes-validate can check: all but the custom resources.
    let builtin: Vec<(PathBuf, Value)> = all_documents()
        .into_iter()
        .filter(|(_, d)| kind(d) != "PodMonitor")
        .collect();
    assert!(builtin.len() >= 6, "{}", builtin.len());
    for version in AKS_VERSIONS {
        let (ok, text) = run_validate(version, &files);
        assert!(ok, "kubernetes-validate {version}:\n{text}");
        let passed = text.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed,
            builtin.len(),
            "every built-in resource passes against {version}:\n{text}"
        );
        // The only resources without a schema are the PodMonitors (tested below).
        for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(line.contains("kind PodMonitor"), "{line}");
        }
    }
    // Strict mode is not vacuous: an unknown field fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.yaml");
    let text = fs::read_to_string(repo().join("deploy/kubernetes/pgdrill.yaml"))
        .expect("read")
        .replacen("  replicas: 2", "  replicas: 2\n  replicaCount: 2", 1);
    fs::write(&bad, text).expect("write");
    let (ok, out) = run_validate(AKS_VERSIONS[0], &[bad]);
    assert!(!ok, "an unknown field passed strict validation:\n{out}");
}

// ---------------------------------------------------------------------------
// The deployment.

fn containers(template: &Value) -> Vec<&Value> {
    let spec = &template["spec"];
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The Config pgdrill builds from a container's args, given a DSN (in the pod, from a
/// Secret) and a password file here in place of the mounted one.
fn config_of(args: &[String]) -> pgdrill::Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let password = dir.path().join("password");
    fs::write(&password, "x\n").expect("write");
    let mut argv = vec!["pgdrill".to_string()];
    argv.extend(
        args.iter()
            .map(|a| match a.strip_prefix("--password-file=") {
                Some(_) => format!("--password-file={}", password.display()),
                None => a.clone(),
            }),
    );
    argv.extend([
        "--dsn".to_string(),
        "postgres://pgdrill@db.invalid/pgdrill?sslmode=verify-full".to_string(),
    ]);
    <pgdrill::config::Cli as clap::Parser>::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{e}"))
        .run
        .validate(|_| None)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn deployments_keep_secrets_out_of_argv_and_run_locked_down() {
    let docs = all_documents();
    let deployments: Vec<&(PathBuf, Value)> = docs
        .iter()
        .filter(|(_, d)| kind(d) == "Deployment")
        .collect();
    assert!(deployments.len() >= 2, "plain and Entra ID examples");
    for (file, d) in deployments {
        let name = file.display();
        let template = &d["spec"]["template"];
        let pod = &template["spec"];
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{name}: mounts an API token"
        );
        let sa = pod["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        let account = docs
            .iter()
            .find(|(f, x)| f == file && kind(x) == "ServiceAccount" && x["metadata"]["name"] == sa)
            .unwrap_or_else(|| panic!("{name}: no ServiceAccount {sa}"));
        assert_eq!(account.1["automountServiceAccountToken"], false, "{name}");
        // A PodDisruptionBudget selecting these pods, in the same file.
        let labels = &template["metadata"]["labels"];
        let pdb = docs
            .iter()
            .find(|(f, x)| f == file && kind(x) == "PodDisruptionBudget")
            .unwrap_or_else(|| panic!("{name}: no PodDisruptionBudget"));
        for (k, v) in pdb.1["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("pdb selector")
        {
            assert_eq!(&labels[k], v, "{name}: the PDB does not select the pods");
        }
        assert!(
            pdb.1["spec"]["minAvailable"].as_u64().unwrap_or(0) >= 1
                || pdb.1["spec"]["maxUnavailable"].as_u64() == Some(1),
            "{name}: PDB"
        );

        let pgdrill = pod["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .find(|c| c["name"] == "pgdrill")
            .expect("a pgdrill container");
        let image = pgdrill["image"].as_str().expect("image");
        assert!(
            image.starts_with("registry.invalid/pgdrill:"),
            "{name}: image {image}: use the documented placeholder, not an image we do not publish"
        );
        let args = strings(&pgdrill["args"]);
        let argv: Vec<String> = strings(&pgdrill["command"])
            .into_iter()
            .chain(args.clone())
            .collect();
        for a in &argv {
            let lower = a.to_lowercase();
            assert!(
                !lower.contains("postgres://")
                    && !lower.contains("postgresql://")
                    && !lower.contains("$(pgdrill_dsn)")
                    && !lower.contains("password=")
                    && !lower.starts_with("--dsn"),
                "{name}: argv carries a connection string or secret: {a}"
            );
        }
        for flag in [
            "--password-file=",
            "--retention=",
            "--listen=0.0.0.0:9743",
            "--startup-timeout=",
        ] {
            assert!(
                args.iter().any(|a| a.starts_with(flag)),
                "{name}: pgdrill lacks {flag}"
            );
        }
        // A pod started during an outage keeps trying through it: with the default 60 s it
        // exits 5 and crash-loops, missing the very outage it is there to measure.
        let startup = config_of(&args).startup_timeout;
        assert!(
            startup >= std::time::Duration::from_secs(600),
            "{name}: --startup-timeout {startup:?} is shorter than an outage"
        );
        let dsn = pgdrill["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == "PGDRILL_DSN")
            .unwrap_or_else(|| panic!("{name}: PGDRILL_DSN not in the environment"));
        assert!(
            dsn["valueFrom"]["secretKeyRef"]["key"].is_string(),
            "{name}: the DSN comes from a Secret"
        );
        // Every container: no privilege escalation, read-only root, no capabilities.
        for c in containers(template) {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{name}: {}",
                c["name"]
            );
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: {}", c["name"]);
            assert_eq!(
                sc["capabilities"]["drop"],
                json!(["ALL"]),
                "{name}: {}",
                c["name"]
            );
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    }
}

/// Entra ID takes a service account's token only through a federated credential for that
/// very account: docs/deploy.md creates one for each account the manifests annotate, and
/// each manifest's header names its subject.
#[test]
fn every_workload_identity_service_account_is_federated_in_the_docs() {
    let deploy = fs::read_to_string(repo().join("docs/deploy.md")).expect("read docs/deploy.md");
    let mut accounts = 0;
    for (file, doc) in all_documents() {
        let annotations = &doc["metadata"]["annotations"];
        if kind(&doc) != "ServiceAccount"
            || !annotations["azure.workload.identity/client-id"].is_string()
        {
            continue;
        }
        let account = doc["metadata"]["name"].as_str().expect("name");
        let subject = format!("system:serviceaccount:pgdrill:{account}");
        assert!(
            deploy.contains(&format!("--subject {subject} ")),
            "docs/deploy.md creates no federated credential for {subject} ({})",
            file.display()
        );
        let text = fs::read_to_string(&file).expect("read");
        assert!(
            text.contains(&subject),
            "{}: names no {subject}",
            file.display()
        );
        accounts += 1;
    }
    assert!(accounts >= 2, "the Entra ID canary and the drill Job");
}

#[test]
fn example_dsns_verify_the_server() {
    let mut dsns = 0;
    for file in manifest_files() {
        let text = fs::read_to_string(&file).expect("read");
        for (i, line) in text.lines().enumerate() {
            if let Some(at) = line.find("sslmode=") {
                let mode: String = line[at + "sslmode=".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                assert_eq!(mode, "verify-full", "{}:{}: {line}", file.display(), i + 1);
                dsns += 1;
            }
        }
        assert!(!text.contains("ghcr.io/pgdrill"), "{}", file.display());
    }
    // Checked, not passed over: the manifests' example DSNs name an sslmode.
    assert!(dsns >= 1, "no sslmode= in the manifests");
}

#[test]
fn dockerfile_carries_oci_labels_in_step_with_cargo_toml() {
    let dockerfile = fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let cargo = fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let field = |key: &str| -> String {
        cargo
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("Cargo.toml has no {key}"))
            .trim_matches('"')
            .to_string()
    };
    let label = |key: &str| -> Option<String> {
        dockerfile.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&format!("LABEL org.opencontainers.image.{key}="))
                .map(|v| v.trim_matches('"').to_string())
        })
    };
    assert_eq!(label("title").as_deref(), Some("pgdrill"));
    assert_eq!(label("version"), Some(field("version")));
    assert_eq!(label("licenses"), Some(field("license")));
    assert_eq!(label("description"), Some(field("description")));
    assert!(label("base.name").is_some());
}

// ---------------------------------------------------------------------------
// A drill run by several pods: the Indexed Job.

#[test]
fn the_drill_job_runs_indexed_members_of_which_only_member_0_triggers() {
    let file = repo().join("deploy/kubernetes/pgdrill-drill-job.yaml");
    let docs = documents(&file);
    let job = docs
        .iter()
        .find(|d| kind(d) == "Job")
        .expect("a Job in the drill manifest");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let n = spec["completions"].as_u64().expect("completions");
    assert!(n >= 2, "a drill of several members");
    assert_eq!(
        spec["parallelism"].as_u64(),
        Some(n),
        "every member at once"
    );
    assert_eq!(
        spec["backoffLimitPerIndex"], 0,
        "a retried member 0 would trigger a second failover"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let env = |name: &str| -> Value {
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not set"))
            .clone()
    };
    assert_eq!(env("PGDRILL_MEMBERS")["value"], n.to_string());
    let field = |name: &str| env(name)["valueFrom"]["fieldRef"]["fieldPath"].clone();
    assert_eq!(
        field("PGDRILL_MEMBER_INDEX"),
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    // Shared by every pod of this Job, different for every Job.
    assert_eq!(
        field("PGDRILL_DRILL_ID"),
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    );
    assert!(env("PGDRILL_DSN")["valueFrom"]["secretKeyRef"]["key"].is_string());
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));

    let args = strings(&c["args"]);
    // The default table is being renamed and a drill keeps every row: neither is set here.
    for flag in [
        "--table",
        "--retention",
        "--dsn",
        "--member-index",
        "--drill-id",
    ] {
        assert!(
            !args.iter().any(|a| a.starts_with(flag)),
            "{flag} in the Job's args: {args:?}"
        );
    }
    assert!(args.iter().any(|a| a == "--summary-json=-"), "{args:?}");
    let rate: f64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--rate="))
        .expect("--rate")
        .parse()
        .expect("a number");
    let text = fs::read_to_string(&file).expect("read");
    let total = format!("{} INSERT/s in all from {n} members", rate * n as f64);
    assert!(
        text.replace(',', "").contains(&total),
        "the comment says --rate is TOTAL/N: {total}"
    );

    // pgdrill takes the flags as each pod gets them: member 0 triggers, the others measure.
    let dir = tempfile::tempdir().expect("temp dir");
    let password = dir.path().join("password");
    fs::write(&password, "x\n").expect("write");
    for index in [0, n - 1] {
        let mut argv = vec!["pgdrill".to_string()];
        argv.extend(args.iter().map(|a| {
            if a.starts_with("--password-file=") {
                format!("--password-file={}", password.display())
            } else {
                // Kubernetes turns the escape `$$(` into `$(` before the container starts.
                a.replace("$$(", "$(")
            }
        }));
        argv.extend([
            "--dsn".to_string(),
            "postgres://pgdrill@db.invalid/pgdrill?sslmode=verify-full".to_string(),
            "--drill-id".to_string(),
            "0b6f7f52-5a8f-4b1c-9d55-2f4c1c1e6a10".to_string(),
            "--member-index".to_string(),
            index.to_string(),
            "--members".to_string(),
            n.to_string(),
        ]);
        let config = <pgdrill::config::Cli as clap::Parser>::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .run
            .validate(|_| None)
            .unwrap_or_else(|e| panic!("member {index}: {e}"));
        assert_eq!(config.drill.trigger.is_some(), index == 0, "member {index}");
    }
}

/// A container's `sh -c` script runs as PID 1, which ignores an untrapped SIGTERM: a pod
/// deletion would wait out the grace period and end in SIGKILL. Each such script is run as
/// PID 1 of a PID namespace of its own, with the commands it calls failing, and must end on
/// SIGTERM at once, not after its sleep (which is 30 s and more; 10 s allowed).
#[test]
fn shell_containers_end_on_sigterm_as_pid_1() {
    if !pgdrill_lab::private_hosts_available() {
        println!("skipped: a PID namespace needs root");
        return;
    }
    let bin = tempfile::tempdir().expect("temp dir");
    for tool in ["az", "kubectl", "curl"] {
        let path = bin.path().join(tool);
        fs::write(&path, "#!/bin/sh\nexit 1\n").expect("write a stub");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        fs::set_permissions(&path, mode).expect("chmod a stub");
    }
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let mut scripts = 0;
    for (file, doc) in all_documents() {
        let Some(template) = doc["spec"]["template"]
            .get("spec")
            .map(|_| &doc["spec"]["template"])
            .or_else(|| doc["spec"]["jobTemplate"]["spec"]["template"].get("spec"))
        else {
            continue;
        };
        for c in containers(template) {
            let command = strings(&c["command"]);
            if !matches!(command.last().map(String::as_str), Some("-c")) {
                continue;
            }
            let script = strings(&c["args"]).concat();
            scripts += 1;
            let mut child = Command::new("unshare")
                .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
                .env_clear()
                .env("PATH", &path)
                .env("HOME", bin.path())
                .env("AZURE_CLIENT_ID", "x")
                .env("AZURE_TENANT_ID", "x")
                .env("AZURE_FEDERATED_TOKEN_FILE", "/dev/null")
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("unshare");
            // The shell is unshare's only child: PID 1 of the new namespace. A signal it has
            // no handler for is not even delivered, so it is sent once the script's trap is
            // set (or 10 s passed: a script without one fails below).
            let children = format!("/proc/{0}/task/{0}/children", child.id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let (init, trapped) = loop {
                let init: Option<i32> = fs::read_to_string(&children)
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok());
                let late = std::time::Instant::now() > deadline;
                match init {
                    Some(init) if catches_sigterm(init) => break (init, true),
                    Some(init) if late => break (init, false),
                    None if child.try_wait().expect("try_wait").is_some() => {
                        panic!("{}: the script ended at once", file.display())
                    }
                    None if late => panic!("{}: no shell within 10 s", file.display()),
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            };
            let _ = Command::new("kill")
                .args(["-TERM", &init.to_string()])
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let ended = loop {
                if child.try_wait().expect("try_wait").is_some() {
                    break true;
                }
                if std::time::Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                ended,
                "{} ({}): SIGTERM ignored (a handler for it set: {trapped})",
                file.display(),
                c["name"]
            );
        }
    }
    assert!(scripts >= 1, "no sh -c container found");
}

/// Whether process `pid` has a handler for SIGTERM (signal 15: bit 14 of `SigCgt` in
/// /proc/PID/status); false once it is gone.
fn catches_sigterm(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << 14) != 0)
}
