//! A drill run by several processes: three pgdrill binaries against the lab's primary and
//! sync standby, one drill id, member 0 triggering a forced failover, the others measuring
//! only; `pgdrill report` merges their summaries into one verdict (0 pass, 3 fail,
//! 4 invalid) and one page, which headless Chromium renders.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgdrill_lab::ReplicationMode;
use serde_json::Value;

use crate::browser::{chromium, dump_dom};
use crate::drills::forced_failover_command;
use crate::report::{assert_self_contained, elements};
use crate::support::drill::Binary;
use crate::support::prometheus::{rules_with, Prometheus, ScrapeJob};
use crate::support::{eventually, free_port, start_lab};

const MEMBERS: usize = 3;
const DRILL_ID: &str = "fleet-test-1";

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("JSON")).expect("write JSON");
}

/// `pgdrill report FILES… -o page --json merged`: exit code, stderr, the merged JSON.
async fn report(files: &[&Path], page: &Path, merged: &Path) -> (Option<i32>, String, Value) {
    let mut args = vec!["report".to_string()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    args.extend([
        "-o".into(),
        page.display().to_string(),
        "--json".into(),
        merged.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, err) = Binary::spawn(&args).wait(Duration::from_secs(30)).await;
    println!("pgdrill {}\n{err}", args.join(" "));
    (status.code(), err, read_json(merged))
}

/// The write unavailability of the outage a member's own summary holds after `trigger`
/// (the first that began at most 1 s before it).
fn own_unavailability(summary: &Value, trigger: f64) -> f64 {
    let outage = summary["outages"]
        .as_array()
        .expect("outages")
        .iter()
        .find(|o| f(&o["start_unix"]) >= trigger - 1.0)
        .unwrap_or_else(|| panic!("no outage after the trigger: {}", summary["outages"]));
    f(&outage["write_unavailable_seconds"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_one_trigger_one_merged_verdict() {
    let lab = start_lab(Some(ReplicationMode::Sync)).await;
    let dsn = lab.multi_host_dsn();
    let command = forced_failover_command(&lab, 0.2);
    let dir = tempfile::tempdir().expect("temp dir");
    // The last member's output is kept as a pod's log would be.
    let files: Vec<PathBuf> = (0..MEMBERS)
        .map(|i| match i {
            i if i == MEMBERS - 1 => dir.path().join(format!("member-{i}.log")),
            i => dir.path().join(format!("member-{i}.json")),
        })
        .collect();
    let members = MEMBERS.to_string();
    let listen: Vec<std::net::SocketAddr> = (0..MEMBERS)
        .map(|_| {
            format!("127.0.0.1:{}", free_port())
                .parse()
                .expect("address")
        })
        .collect();
    let bins: Vec<Binary> = (0..MEMBERS)
        .map(|i| {
            let listen = listen[i].to_string();
            let index = i.to_string();
            // The last member prints its summary as the last line of its output, the way
            // a pod's is collected from its log (docs/drills.md).
            let json = if i == MEMBERS - 1 {
                "-".to_string()
            } else {
                files[i].display().to_string()
            };
            Binary::spawn(&[
                "--listen",
                &listen,
                "--dsn",
                &dsn,
                // 300/s in all, as a Job with --rate TOTAL/N.
                "--rate",
                "100",
                "--duration",
                "16s",
                "--failover-command",
                &command,
                "--failover-after",
                "5s",
                "--rto-objective",
                "30s",
                "--drill-id",
                DRILL_ID,
                "--member-index",
                &index,
                "--members",
                &members,
                "--summary-json",
                &json,
                "--progress-interval",
                "2s",
            ])
        })
        .collect();
    // The members are one job in Prometheus, as the Job's pods are (the PodMonitors take the
    // job from app.kubernetes.io/instance), under the shipped rules.
    let prom = Prometheus::start(
        &[ScrapeJob {
            name: "pgdrill-drill".into(),
            targets: listen.clone(),
            labels: Default::default(),
        }],
        &rules_with(&[]),
    )
    .await;
    let runs =
        futures_util::future::join_all(bins.into_iter().map(|b| b.wait(Duration::from_secs(90))))
            .await;
    // Its summary is the last line of its output; `pgdrill report` reads the whole log.
    let (_, out, _) = &runs[MEMBERS - 1];
    let last = out.lines().last().expect("output");
    assert!(
        last.starts_with('{') && last.contains("\"run_id\":"),
        "{last}"
    );
    std::fs::write(&files[MEMBERS - 1], out).expect("write the log");
    for (i, (status, out, _)) in runs.iter().enumerate() {
        let text = out
            .lines()
            .filter(|l| !l.starts_with('{'))
            .collect::<Vec<_>>();
        println!("--- member {i}: {status}\n{}", text.join("\n"));
        // Member 0's own verdict; the others are measurements (no verdict, exit 0).
        assert_eq!(status.code(), Some(0), "member {i}: {}", text.join("\n"));
        let role = if i == 0 {
            "runs the trigger"
        } else {
            "measures only"
        };
        let line = format!("drill         {DRILL_ID}, member {i} of {MEMBERS} ({role}");
        assert!(out.contains(&line), "member {i}: {out}");
    }
    let mut summaries: Vec<Value> = files[..MEMBERS - 1].iter().map(|p| read_json(p)).collect();
    summaries.push(serde_json::from_str(last).expect("the summary line"));
    assert_eq!(summaries[0]["drill"]["verdict"]["verdict"], "pass");
    for (i, s) in summaries.iter().enumerate() {
        assert_eq!(s["drill_id"], DRILL_ID);
        assert_eq!(s["member"]["index"], i);
        assert_eq!(
            s["drill"].is_null(),
            i != 0,
            "only member 0 ran the trigger"
        );
    }
    let trigger = f(&summaries[0]["drill"]["triggers"][0]["started_unix"]);

    // PASS: one verdict, each member's figures as its own summary has them, the worst.
    let page = dir.path().join("drill.html");
    let merged_json = dir.path().join("merged.json");
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, err, merged) = report(&paths, &page, &merged_json).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        merged["verdict"]["verdict"], "pass",
        "{}",
        merged["verdict"]
    );
    assert_eq!(merged["drill_id"], DRILL_ID);
    assert_eq!(merged["trigger_member"], "member 0 (member-0.json)");
    let mut worst: f64 = 0.0;
    println!("member                    own unavailable  merged unavailable  first failed  new primary  lost  clock");
    for (i, m) in merged["members"]
        .as_array()
        .expect("members")
        .iter()
        .enumerate()
    {
        let own = own_unavailability(&summaries[i], trigger);
        let figure = f(&m["worst_write_unavailable_seconds"]);
        println!(
            "{:<25} {own:>15.3}  {figure:>18.3}  {:>12.3}  {:>11.3}  {:>4}  {:+.4}",
            m["name"].as_str().unwrap_or("?"),
            f(&m["drills"][0]["trigger_to_first_failed_write_seconds"]),
            f(&m["drills"][0]["trigger_to_new_primary_write_seconds"]),
            m["lost_writes"],
            f(&m["clock_ahead_seconds"])
        );
        assert_eq!(figure, own, "member {i}: {m}");
        assert_eq!(m["lost_writes"], summaries[i]["lost_writes"]);
        // One machine, one clock: read through the server, the members agree.
        assert!(
            summaries[i]["server_clock"]["offset_seconds"].is_f64(),
            "{}",
            summaries[i]
        );
        let ahead = f(&m["clock_ahead_seconds"]);
        assert!(
            ahead.abs() < 0.05,
            "member {i}: clock {ahead} s off member 0's"
        );
        worst = worst.max(own);
    }
    assert_eq!(f(&merged["worst"]["write_unavailable_seconds"]), worst);
    let member1_ahead = f(&merged["members"][1]["clock_ahead_seconds"]);
    assert_eq!(f(&merged["write_unavailable_seconds"]["max"]), worst);
    assert_eq!(merged["write_unavailable_seconds"]["samples"], MEMBERS);
    let lost: u64 = summaries
        .iter()
        .filter_map(|s| s["lost_writes"].as_u64())
        .sum();
    assert_eq!(merged["lost_writes"], lost);
    assert_eq!(lost, 0, "sync replication loses nothing");
    println!(
        "merged: worst {worst:.3} s ({}), across members {}, lost {lost}, unknown outcomes {}",
        merged["worst"]["member"],
        merged["write_unavailable_seconds"],
        merged["unknown_outcome_writes"]
    );

    // The page in a real browser: the verdict, every member's chart on one axis.
    let html = std::fs::read_to_string(&page).expect("page");
    assert_self_contained(&html);
    if let Some(browser) = chromium() {
        let dom = dump_dom(browser, &format!("file://{}", page.display())).await;
        let verdict = elements(&dom, "<div class=\"verdict", "</div>");
        assert_eq!(verdict.len(), 1, "{dom}");
        assert!(verdict[0].contains("PASS"), "{}", verdict[0]);
        assert_eq!(elements(&dom, "<svg class=\"chart\"", ">").len(), MEMBERS);
        assert_eq!(elements(&dom, "<tr data-member=", "</tr>").len(), MEMBERS);
    }

    // The same drill in Prometheus: the job-level view agrees with the merged report.
    in_prometheus(&prom, &listen, &merged).await;

    // FAIL: member 0's objective missed (its summary rewritten to a 1 ms objective).
    let strict = dir.path().join("member-0-strict.json");
    let mut s = summaries[0].clone();
    s["drill"]["objectives"]["rto_seconds"] = 0.001.into();
    write_json(&strict, &s);
    let (code, err, merged) = report(&[&strict, &files[1], &files[2]], &page, &merged_json).await;
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(merged["verdict"]["verdict"], "fail");
    assert!(
        err.contains("member 0 (member-0-strict.json): trigger 1: writes unavailable for")
            && err.contains("over the RTO objective (0.001 s)"),
        "{err}"
    );

    // INVALID: a summary of another drill, named and left out.
    let foreign = dir.path().join("member-2-other.json");
    let mut s = summaries[2].clone();
    s["drill_id"] = "another-drill".into();
    write_json(&foreign, &s);
    let (code, err, merged) = report(&[&files[0], &files[1], &foreign], &page, &merged_json).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("member 2 (member-2-other.json) not merged: drill id \"another-drill\""),
        "{err}"
    );
    assert_eq!(merged["not_merged"][0]["file"], "member-2-other.json");

    // INVALID: the triggering member's summary missing.
    let (code, err, _) = report(&[&files[1], &files[2]], &page, &merged_json).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("member 0 of 3 is missing"), "{err}");
    assert!(
        err.contains("no summary holds the failover trigger"),
        "{err}"
    );

    // INVALID: member 1's clock half a second off member 0's, as read through the server's.
    let skewed = dir.path().join("member-1-skewed.json");
    let mut s = summaries[1].clone();
    let offset = f(&s["server_clock"]["offset_seconds"]);
    s["server_clock"]["offset_seconds"] = (offset - 0.5).into();
    write_json(&skewed, &s);
    let (code, err, merged) = report(&[&files[0], &skewed, &files[2]], &page, &merged_json).await;
    assert_eq!(code, Some(4), "{err}");
    // Half a second on top of what the members' clocks already differed by (a millisecond or so).
    let ahead = f(&merged["members"][1]["clock_ahead_seconds"]);
    assert!((ahead - (member1_ahead + 0.5)).abs() < 1e-6, "{ahead}");
    assert!(
        err.contains(&format!(
            "member 1 (member-1-skewed.json): its clock was {ahead:+.3} s"
        )),
        "{err}"
    );
    lab.shutdown().await;
}

/// What the shipped rules and the members' series say of the drill, against the merged report:
/// the members all reported, each member's write unavailability, the worst (as the RTO alerts
/// take it), the trigger, the lost writes (as the lost-writes alert adds them).
async fn in_prometheus(prom: &Prometheus, listen: &[std::net::SocketAddr], merged: &Value) {
    let reporting =
        "max_over_time(job:pgdrill_canaries_reporting:count{job=\"pgdrill-drill\"}[5m])";
    eventually(Duration::from_secs(10), "every member scraped", || async {
        prom.optional(reporting).await == Some(MEMBERS as f64)
    })
    .await;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-3;
    for (i, addr) in listen.iter().enumerate() {
        let own = prom
            .scalar(&format!(
                "last_over_time(pgdrill_last_outage_duration_seconds{{instance=\"{addr}\"}}[5m])"
            ))
            .await;
        let figure = f(&merged["members"][i]["worst_write_unavailable_seconds"]);
        println!("prometheus: member {i} ({addr}) last outage {own:.3} s, merged {figure:.3} s");
        assert!(
            close(own, figure),
            "member {i}: {own} in Prometheus, {figure} merged"
        );
    }
    // The job's worst finished outage, as PgdrillRTOObjectiveMissed computes it.
    let worst = prom
        .scalar(
            "max without (instance, pod, container, endpoint) (\
               last_over_time(pgdrill_outage_end_timestamp_seconds[5m]) \
               - last_over_time(pgdrill_outage_start_timestamp_seconds[5m]) \
               and last_over_time(pgdrill_outage_start_timestamp_seconds[5m]) > 0)",
        )
        .await;
    let merged_worst = f(&merged["worst"]["write_unavailable_seconds"]);
    println!("prometheus: job worst {worst:.3} s, merged worst {merged_worst:.3} s");
    assert!(close(worst, merged_worst), "{worst} vs {merged_worst}");
    let trigger = prom
        .scalar("max(last_over_time(pgdrill_failover_trigger_timestamp_seconds[5m]))")
        .await;
    assert!(
        close(trigger, f(&merged["triggers"][0]["started_unix"])),
        "{trigger}"
    );
    let lost = prom
        .scalar(
            "sum without (instance, pod, container, endpoint) \
               (last_over_time(pgdrill_lost_writes_total[5m]))",
        )
        .await;
    assert_eq!(Some(lost), merged["lost_writes"].as_f64());
}
