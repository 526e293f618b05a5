//! Drills as code against the real lab and the real binary: pgdrill runs the failover
//! trigger itself, times the failover from it, and exits with the verdict (0 pass, 3 fail,
//! 4 invalid).
//!
//! The triggers are ordinary commands, as in production: a forced failover is `kill -QUIT`
//! of the primary's postmaster (an immediate stop) and `pg_promote()` on the standby through
//! psql; repeated failovers restart the single primary in place (`pg_ctl restart -m
//! immediate`), which pgdrill sees as a restarted server (a new postmaster start time): not a
//! primary change, but the first write after it is timed like a new primary's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgdrill_lab::{Lab, Node, ReplicationMode, StopMode};
use serde_json::Value;

use crate::support::drill::{metric, try_http_get, Binary};
use crate::support::{eventually, free_port, start_lab, start_single};

/// A finished drill run of the binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    summary: Value,
}

/// The sums of the progress lines' `ok=`, `failed=` and `skipped=` counts.
fn progress_sums(log: &str) -> [u64; 3] {
    let lines = log.lines().filter(|l| l.contains(" progress "));
    lines.fold([0; 3], |mut sums, line| {
        for (sum, key) in sums.iter_mut().zip([" ok=", " failed=", " skipped="]) {
            let value = line.split(key).nth(1).and_then(|v| v.split(' ').next());
            *sum += value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        sums
    })
}

/// Runs the binary with `args` (plus a listen address and a summary file), at most `limit`.
/// `during` runs while it does, with the `/metrics` address.
async fn run_drill<F, Fut>(args: &[&str], limit: Duration, during: F) -> Run
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("summary.json");
    let listen = format!("127.0.0.1:{}", free_port());
    let json_arg = json.display().to_string();
    let mut argv = vec![
        "--listen",
        &listen,
        "--summary-json",
        &json_arg,
        "--progress-interval",
        "1s",
    ];
    argv.extend_from_slice(args);
    let bin = Binary::spawn(&argv);
    during(listen.parse().expect("listen address")).await;
    let (status, stdout, stderr) = bin.wait(limit).await;
    println!(
        "{stdout}\n--- stderr (last 4 kB) ---\n{}",
        tail(&stderr, 4096)
    );
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{json:?}: {e}"));
    Run {
        code: status.code(),
        stdout,
        stderr,
        summary: serde_json::from_str(&text).expect("summary JSON"),
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut cut = s.len().saturating_sub(n);
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn psql(lab: &Lab) -> PathBuf {
    let bundled = lab.bin_dir().join("psql");
    if bundled.exists() {
        bundled
    } else {
        PathBuf::from("psql")
    }
}

fn postmaster_pid(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).expect("postmaster.pid");
    text.lines().next().expect("pid line").trim().to_string()
}

/// A forced failover as one command: after `delay_s`, the primary's postmaster gets SIGQUIT
/// (immediate stop, as a crash), then, 0.2 s later, the standby is promoted and the command
/// waits for the promotion (`pg_promote()` waits up to 60 s by default). The pause is the
/// least an HA agent takes to notice: a promotion at once has made the switch shorter than
/// the outage threshold, a transparent switchover with no outage to judge.
pub(crate) fn forced_failover_command(lab: &Lab, delay_s: f64) -> String {
    let old = lab.primary();
    let new = lab.standby().expect("a standby");
    let pid = postmaster_pid(&lab.base_dir().join(if old == Node::A { "a" } else { "b" }));
    format!(
        "sh -c 'sleep {delay_s}; kill -QUIT {pid} && sleep 0.2 && exec {psql} -X -At -h {sock} -p {port} \
         -U postgres -d postgres -c \"SELECT pg_promote()\"'",
        psql = psql(lab).display(),
        sock = lab.base_dir().display(),
        port = lab.port(new),
    )
}

/// The first trigger's drill figures and the outage attributed to it.
fn first_drill(summary: &Value) -> (&Value, &Value, &Value) {
    let drill = &summary["drill"];
    let trigger = &drill["triggers"][0];
    let timing = &drill["drills"][0];
    let index = timing["outage"]
        .as_u64()
        .unwrap_or_else(|| panic!("no outage attributed: {drill}"));
    let outage = summary["outages"]
        .as_array()
        .expect("outages")
        .iter()
        .find(|o| o["index"].as_u64() == Some(index))
        .expect("the attributed outage is recorded");
    (trigger, timing, outage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_forced_failover_passes_a_generous_objective_timed_from_the_trigger() {
    let lab = start_lab(Some(ReplicationMode::Sync)).await;
    let dsn = lab.multi_host_dsn();
    let command = forced_failover_command(&lab, 0.2);
    let run = run_drill(
        &[
            "--dsn",
            &dsn,
            "--rate",
            "200",
            // Room after the trigger: a promotion on a busy two-core machine has taken 5 s.
            "--duration",
            "16s",
            "--failover-command",
            &command,
            "--failover-after",
            "4s",
            "--rto-objective",
            "30s",
            "--linger",
            "3s",
        ],
        Duration::from_secs(60),
        |addr| async move {
            // Live on /metrics while the run goes on: the verdict is pending, the trigger
            // counted, then the figure timed from it.
            eventually(
                Duration::from_secs(20),
                "trigger counted on /metrics",
                || async move {
                    let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
                    metric(&text, "pgdrill_failover_triggers_total{outcome=\"ok\"}") == 1.0
                        && metric(&text, "pgdrill_failover_new_primary_write_seconds") > 0.0
                        && metric(&text, "pgdrill_drill_verdict{verdict=\"pending\"}") == 1.0
                        && metric(&text, "pgdrill_rto_objective_seconds") == 30.0
                        && metric(&text, "pgdrill_load_running") == 1.0
                },
            )
            .await;
            // --linger: the verdict can be scraped before the process exits.
            eventually(
                Duration::from_secs(40),
                "verdict on /metrics",
                || async move {
                    let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
                    // The alert rules tell a lingering run from unavailable writes by it.
                    metric(&text, "pgdrill_drill_verdict{verdict=\"pass\"}") == 1.0
                        && metric(&text, "pgdrill_load_running") == 0.0
                },
            )
            .await;
        },
    )
    .await;
    let drill = &run.summary["drill"];
    assert_eq!(run.code, Some(0), "a pass exits 0: {drill}");
    assert_eq!(drill["verdict"]["verdict"], "pass", "{drill}");
    assert!(run.stdout.contains("verdict: PASS"), "{}", run.stdout);
    // Said before the load: the trigger and the files written at the end.
    let plan = (run.stderr.lines())
        .take_while(|l| !l.contains("running the failover trigger"))
        .find(|l| l.contains("writes these files when the run ends"));
    assert!(
        plan.is_some_and(|l| l.contains("x1 after 4s") && l.contains("summary.json")),
        "{}",
        run.stderr
    );
    // The progress lines, the last one up to the stop, add up to the summary's counts.
    let n = |key: &str| run.summary[key].as_u64().unwrap_or(u64::MAX);
    let counts = [
        n("successes"),
        n("transactions") - n("successes"),
        n("skipped"),
    ];
    assert_eq!(progress_sums(&run.stderr), counts, "{}", run.stderr);

    let (trigger, timing, outage) = first_drill(&run.summary);
    assert_eq!(trigger["outcome"]["kind"], "ok");
    let started = f(&trigger["started_unix"]);
    let ended = f(&trigger["ended_unix"]);
    let outage_start = f(&outage["start_unix"]);
    // The trigger's timestamps bracket the outage's start: it waits 0.2 s, then kills.
    assert!(
        started + 0.2 <= outage_start && outage_start <= ended,
        "trigger {started}..{ended}, outage began {outage_start}"
    );
    // Clients kept writing for the 0.2 s the trigger waited (and not much longer).
    let first_failed = f(&timing["trigger_to_first_failed_write_seconds"]);
    assert!(
        (first_failed - (outage_start - started)).abs() < 1e-6,
        "{timing}"
    );
    assert!((0.2..1.0).contains(&first_failed), "{timing}");
    // The new primary took its first write after the outage began, within the outage's end.
    let new_primary = f(&timing["trigger_to_new_primary_write_seconds"]);
    let unavailable = f(&outage["write_unavailable_seconds"]);
    assert_eq!(f(&timing["write_unavailable_seconds"]), unavailable);
    assert!(
        new_primary > first_failed && new_primary <= first_failed + unavailable + 0.001,
        "{timing} {outage}"
    );
    assert_eq!(timing["lost_writes"], 0, "sync replication loses nothing");
    assert_eq!(run.summary["primary_changes"], 1);
    // The trigger's start and end are on the timeline, at the times recorded for it.
    let marks: Vec<(f64, String)> = run.summary["timeline"]["events"]["list"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "failover_trigger")
        .map(|e| {
            (
                f(&e["at"]),
                e["how"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(marks.len(), 2, "{marks:?}");
    assert!(
        marks[0].1.starts_with("trigger 1 started: sh -c"),
        "{marks:?}"
    );
    assert!(
        marks[1].1.starts_with("trigger 1 ended: ok after"),
        "{marks:?}"
    );
    assert!(
        (marks[0].0 - started).abs() < 0.01 && marks[1].0 == ended,
        "{marks:?}"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_failover_fails_a_20_millisecond_objective_with_exit_3() {
    let lab = start_lab(Some(ReplicationMode::Sync)).await;
    let dsn = lab.multi_host_dsn();
    let command = forced_failover_command(&lab, 0.0);
    let run = run_drill(
        &[
            "--dsn",
            &dsn,
            "--rate",
            "200",
            "--duration",
            "15s",
            "--failover-command",
            &command,
            "--failover-after",
            "4s",
            "--rto-objective",
            "20ms",
        ],
        Duration::from_secs(60),
        |_| async {},
    )
    .await;
    let verdict = &run.summary["drill"]["verdict"];
    assert_eq!(run.code, Some(3), "a failed drill exits 3: {verdict}");
    assert_eq!(verdict["verdict"], "fail");
    let reasons = verdict["failed"].to_string();
    assert!(
        reasons.contains("over the RTO objective (0.02 s)"),
        "{reasons}"
    );
    assert_eq!(verdict["invalid"].as_array().map(Vec::len), Some(0));
    assert!(run.stdout.contains("verdict: FAIL"), "{}", run.stdout);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_that_exits_1_makes_the_drill_invalid_with_exit_4() {
    let lab = start_single(None).await;
    let dsn = lab.dsn(Node::A);
    let run = run_drill(
        &[
            "--dsn",
            &dsn,
            "--rate",
            "200",
            "--duration",
            "5s",
            "--failover-command",
            "sh -c 'echo no such server >&2; exit 1'",
            "--failover-after",
            "2s",
        ],
        Duration::from_secs(30),
        |addr| async move {
            eventually(
                Duration::from_secs(15),
                "failed trigger counted",
                || async move {
                    let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
                    metric(
                        &text,
                        "pgdrill_failover_triggers_total{outcome=\"exited_non_zero\"}",
                    ) == 1.0
                },
            )
            .await;
        },
    )
    .await;
    let drill = &run.summary["drill"];
    assert_eq!(run.code, Some(4), "an invalid drill exits 4: {drill}");
    assert_eq!(drill["verdict"]["verdict"], "invalid");
    let reasons = drill["verdict"]["invalid"].to_string();
    assert!(
        reasons.contains("trigger 1 exited with status 1"),
        "{reasons}"
    );
    let trigger = &drill["triggers"][0];
    assert_eq!(trigger["outcome"]["code"], 1);
    assert_eq!(trigger["stderr_tail"], "no such server\n");
    // Load kept going to the end as configured.
    assert!(f(&run.summary["duration_seconds"]) >= 4.9);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_with_the_primary_down_runs_no_trigger_and_is_invalid() {
    let lab = start_single(None).await;
    let dsn = lab.dsn(Node::A);
    lab.stop(Node::A, StopMode::Fast).await.expect("stop");
    let run = run_drill(
        &[
            "--dsn",
            &dsn,
            "--rate",
            "100",
            "--duration",
            "5s",
            "--failover-command",
            "true",
            "--failover-after",
            "3s",
        ],
        Duration::from_secs(30),
        |_| async {},
    )
    .await;
    let drill = &run.summary["drill"];
    // Nothing written: the target's exit status, whatever the verdict, and said last.
    assert_eq!(run.code, Some(5), "{drill}");
    assert!(
        (run.stdout.lines())
            .any(|l| l.trim() == "service time                  - (nothing acknowledged)"),
        "latencies of nothing read as 0 ms:\n{}",
        run.stdout
    );
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot write to the target: none of the run's ")
            && last.ends_with("s (errors above)"),
        "{last}"
    );
    assert_eq!(drill["verdict"]["verdict"], "invalid");
    let reasons = drill["verdict"]["invalid"].to_string();
    assert!(
        reasons.contains("the baseline before trigger 1 was unhealthy")
            && reasons.contains("failed writes")
            && reasons.contains("0/s achieved of 100/s target"),
        "{reasons}"
    );
    assert_eq!(drill["baselines"][0]["successes"], 0, "{drill}");
    // Not run: no failover it caused could have been measured.
    let outcome = &drill["triggers"][0]["outcome"];
    assert_eq!(outcome["kind"], "cannot_start", "{drill}");
    assert!(outcome["reason"]
        .to_string()
        .contains("no write was acknowledged"));
    lab.shutdown().await;
}

/// Restarts the single primary in place (as the server's OS user when we are root).
fn restart_command(lab: &Lab) -> String {
    let data = lab.base_dir().join("a");
    let restart = format!(
        "pg_ctl restart -D {} -m immediate -l {}",
        data.display(),
        lab.log_path(Node::A).display()
    );
    match lab.server_user() {
        Some((uid, gid)) => {
            format!("setpriv --reuid={uid} --regid={gid} --clear-groups {restart}")
        }
        None => restart,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_repeated_failovers_give_a_distribution_of_their_outages() {
    let lab = start_single(None).await;
    let dsn = lab.dsn(Node::A);
    let command = restart_command(&lab);
    // Each later trigger's baseline is the second half of the time since the previous one.
    let run = run_drill(
        &[
            "--dsn",
            &dsn,
            "--rate",
            "200",
            "--duration",
            "30s",
            "--failover-command",
            &command,
            "--failover-after",
            "3s",
            "--failovers",
            "3",
            "--failover-every",
            "10s",
            "--rto-objective",
            "30s",
        ],
        Duration::from_secs(90),
        |_| async {},
    )
    .await;
    let summary = &run.summary;
    let drill = &summary["drill"];
    assert_eq!(run.code, Some(0), "{drill}");
    assert_eq!(drill["verdict"]["verdict"], "pass", "{drill}");
    let triggers = drill["triggers"].as_array().expect("triggers");
    let drills = drill["drills"].as_array().expect("drills");
    assert_eq!((triggers.len(), drills.len()), (3, 3), "{drill}");
    let outages = summary["outages"].as_array().expect("outages");
    let mut unavailable = Vec::new();
    for (t, d) in triggers.iter().zip(drills) {
        let index = d["outage"].as_u64().expect("an outage per restart");
        let o = outages
            .iter()
            .find(|o| o["index"].as_u64() == Some(index))
            .expect("recorded outage");
        // Each figure is the per-outage record's, timed from its own trigger.
        assert_eq!(
            d["write_unavailable_seconds"],
            o["write_unavailable_seconds"]
        );
        assert_eq!(d["lost_writes"], o["lost_writes"]);
        let first_failed = f(&o["start_unix"]) - f(&t["started_unix"]);
        assert!((f(&d["trigger_to_first_failed_write_seconds"]) - first_failed).abs() < 1e-6);
        // Before the trigger ended (pg_ctl waits for the restart); its lower bound is the
        // attribution's (a stall just before a trigger merges into its outage on a busy machine).
        assert!(
            f(&o["start_unix"]) <= f(&t["ended_unix"]),
            "trigger {t} outage {o}"
        );
        assert!(d["trigger_to_new_primary_write_seconds"].is_f64(), "{d}");
        unavailable.push(f(&o["write_unavailable_seconds"]));
    }
    let dist = &drill["distribution"]["write_unavailable_seconds"];
    assert_eq!(dist["samples"], 3, "{dist}");
    unavailable.sort_by(f64::total_cmp);
    assert_eq!(f(&dist["min"]), unavailable[0]);
    assert_eq!(f(&dist["median"]), unavailable[1]);
    assert_eq!(f(&dist["max"]), unavailable[2]);
    assert_eq!(
        drill["distribution"]["trigger_to_new_primary_write_seconds"]["samples"],
        3
    );
    // Restarts, not failovers, on /metrics and in the summary; the first write after each is
    // timed all the same (the new primary write figure above).
    assert_eq!(summary["primary_changes"], 0);
    assert!(run.stdout.contains("distribution (nearest-rank)"));
    lab.shutdown().await;
}

#[tokio::test]
async fn bad_drill_flags_exit_2_before_anything_starts() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--failover-command", "patronictl failover | tee log"],
            &["--failover-command", "`|`", "--failover-shell"],
        ),
        (
            &[
                "--duration",
                "1m",
                "--failover-command",
                "true",
                "--failover-after",
                "2m",
            ],
            &["--failover-after", "2m", "shorter than --duration"],
        ),
        (
            &["--failover-command", "true", "--failovers", "3"],
            &["--failovers", "--failover-every"],
        ),
        (&["--failover-after", "10s"], &["--failover-command"]),
        (&["--rto-objective", "0s"], &["--rto-objective", "0s"]),
        (
            &["--failover-command", "sh -c 'PGPASSWORD=hunter2 psql' | x"],
            &["--failover-command"],
        ),
    ];
    for (args, expect) in cases {
        let (status, _, err) = Binary::spawn(args).wait(Duration::from_secs(10)).await;
        assert_eq!(
            status.code(),
            Some(2),
            "{args:?}: usage errors exit 2\n{err}"
        );
        for word in *expect {
            assert!(
                err.contains(word),
                "{args:?}: stderr lacks {word:?}:\n{err}"
            );
        }
        assert!(!err.contains("hunter2"), "password leaked: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_run_has_no_verdict_and_exits_0() {
    let lab = start_single(None).await;
    let dsn = lab.dsn(Node::A);
    let run = run_drill(
        &["--dsn", &dsn, "--rate", "100", "--duration", "2s"],
        Duration::from_secs(30),
        |addr| async move {
            eventually(
                Duration::from_secs(10),
                "objectives on /metrics",
                || async move {
                    let text = try_http_get(addr, "/metrics").await.unwrap_or_default();
                    metric(&text, "pgdrill_drill_verdict{verdict=\"none\"}") == 1.0
                        && metric(&text, "pgdrill_rto_objective_seconds") == 120.0
                        && metric(&text, "pgdrill_rpo_objective_lost_writes") == 0.0
                },
            )
            .await;
        },
    )
    .await;
    assert_eq!(run.code, Some(0));
    assert!(run.summary.get("drill").is_none(), "{}", run.summary);
    assert!(!run.stdout.contains("verdict"), "{}", run.stdout);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fails_over_through_the_same_trigger_and_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("demo.json");
    let listen = format!("127.0.0.1:{}", free_port());
    let json_arg = json.display().to_string();
    let page = dir.path().join("demo.html");
    let page_arg = page.display().to_string();
    let bin = Binary::spawn(&[
        "demo",
        "--report",
        &page_arg,
        "--failover",
        "forced",
        "--failover-after",
        "3s",
        "--run-after",
        "4s",
        "--rate",
        "200",
        "--listen",
        &listen,
        "--summary-json",
        &json_arg,
    ]);
    let (status, stdout, stderr) = bin.wait(Duration::from_secs(120)).await;
    println!(
        "{stdout}\n--- stderr (last 4 kB) ---\n{}",
        tail(&stderr, 4096)
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("demo summary")).expect("JSON");
    let drill = &summary["drill"];
    assert_eq!(status.code(), Some(0), "{drill}");
    assert_eq!(drill["verdict"]["verdict"], "pass");
    assert_eq!(drill["command"], "lab forced failover");
    let trigger = &drill["triggers"][0];
    assert_eq!(trigger["outcome"]["kind"], "ok");
    // The lab's own account of the failover is the trigger's output.
    assert!(
        trigger["stdout_tail"]
            .as_str()
            .is_some_and(|t| t.starts_with("lab ground truth: A -> B")),
        "{trigger}"
    );
    let (_, timing, _) = first_drill(&summary);
    assert!(
        timing["trigger_to_new_primary_write_seconds"].is_f64(),
        "{timing}"
    );
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    // The new primary's first write comes after its promotion (rows the old one committed
    // as the failure began are on it too, replicated).
    let since_t0 = |what: &str| -> f64 {
        let at = stdout.find(what).map(|i| &stdout[i + what.len()..]);
        let figure = at.and_then(|s| s.split('s').next());
        figure
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {stdout}"))
    };
    let promoted = since_t0("promote requested +");
    let first = since_t0("first pgdrill write accepted by B +");
    assert!(first >= promoted, "{first} < {promoted}: {stdout}");
    // The report page shows the drill's verdict and the figures timed from its trigger.
    let html = std::fs::read_to_string(&page).expect("demo report page");
    assert!(html.contains("<h2>Failover triggers</h2>") && html.contains(">PASS<"));
    assert!(html.contains("lab forced failover"));
}

/// A signal while the demo's lab starts: its servers (in sessions of their own, out of the
/// signal's reach) are stopped and their directory removed, not left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_stopped_while_its_lab_starts_leaves_no_server_behind() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod the temp dir");
    let tmpdir = tmp.path().display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    // Its report, should the signal come only after the lab started, in the test's directory.
    let report = tmp.path().join("report.html").display().to_string();
    let args = ["demo", "--listen", &listen, "--report", &report];
    let bin = Binary::spawn_with(&[("TMPDIR", &tmpdir)], &args);
    // Processes whose command line names the demo's directory: its servers.
    let servers = || {
        let all = std::fs::read_dir("/proc").expect("/proc").flatten();
        all.filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&tmpdir))
        })
        .count()
    };
    eventually(
        Duration::from_secs(60),
        "a server of the demo's lab runs",
        || async { servers() > 0 },
    )
    .await;
    bin.signal(pgdrill_lab::sys::Signal::Term);
    let (status, _, stderr) = bin.wait(Duration::from_secs(60)).await;
    println!("{stderr}");
    assert_ne!(status.code(), Some(0), "{stderr}");
    eventually(
        Duration::from_secs(5),
        "the lab's servers stopped",
        || async { servers() == 0 },
    )
    .await;
    let left = std::fs::read_dir(tmp.path()).expect("read").flatten();
    let left: Vec<_> = left
        .filter(|e| !e.path().ends_with("report.html"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
