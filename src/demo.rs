//! `pgdrill demo`: a whole drill on this machine in one command — start a primary + standby, run
//! load, fail over, print the report, clean up. The failover is a drill trigger like
//! `--failover-command` (same schedule, timing and verdict); only its action differs: an
//! [`InProcessTrigger`] that asks this module, which owns the lab, to run the failure mode
//! ([`fail`]) and answer with the lab's own account.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::clock::unix;
use crate::config::{Cli, DemoArgs, DemoFailover, DemoReplication};
use crate::drill::plan::{InProcessTrigger, TriggerAction};
use crate::Summary;
use pgdrill_lab::{HostsFile, Lab, LabError, LabOptions, Node, ReplicationMode, Stamp, ADDR_A};

/// The name the dns mode moves from the old primary to the new one.
const DNS_NAME: &str = "primary.pgdrill.lab";

/// The least an HA agent takes to notice a crashed primary. Promoted at once, the standby
/// can take writes within 25 ms, under the outage threshold: no outage to judge.
const FORCED_DETECTION: Duration = Duration::from_millis(200);

/// What each failover mode stands for, printed with the report.
fn models(mode: DemoFailover) -> &'static str {
    match mode {
        DemoFailover::Forced => {
            "a crashed primary (immediate stop: connections reset, new ones refused), \
             standby promoted 0.2 s later"
        }
        DemoFailover::Switchover => "a planned switchover (fast stop, then promotion)",
        DemoFailover::Frozen => {
            "a primary whose VM or zone vanished (every process frozen: TCP accepted, nothing \
             answered), standby promoted after the HA service's detection time; multi-host DSN"
        }
        DemoFailover::Dns => {
            "a managed-service failover (Azure Flexible Server, RDS, Cloud SQL): the old primary \
             hangs and one host name moves to the standby's address at promotion"
        }
        DemoFailover::FrozenBack => {
            "a primary that hangs (VM paused, live migration, storage stall) and comes back; \
             no promotion"
        }
    }
}

/// Must run before the async runtime starts: the dns mode gives this process its own
/// mount namespace and `/etc/hosts`, which needs a single-threaded process.
pub fn prepare(args: &DemoArgs) -> Result<Option<HostsFile>, String> {
    if args.failover != DemoFailover::Dns {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("pgdrill-demo-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("hosts");
    let hosts = HostsFile::create(&path, DNS_NAME, ADDR_A)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    pgdrill_lab::enter_private_hosts(&path).map_err(|e| {
        format!("--failover dns needs root for a private /etc/hosts (mount namespace): {e}")
    })?;
    Ok(Some(hosts))
}

/// The demo's flags checked as the run checks them, before a lab starts.
pub fn check(args: &DemoArgs) -> Result<(), String> {
    if Duration::from(args.run_after).is_zero() {
        return Err(format!(
            "invalid value '{}' for --run-after: must be greater than zero (the run goes on \
             to see the failover end)",
            args.run_after
        ));
    }
    let (trigger, _) = InProcessTrigger::new("lab failover".to_string());
    let total =
        total(args).ok_or("--failover-after and --run-after add up to more than 100 years")?;
    load_config("host=127.0.0.1".into(), args, total, trigger)
        .map(drop)
        .map_err(|e| in_demo_words(&e))
}

/// An error of the run the demo configures, in the demo's flags: it has no
/// `--outage-threshold` or `--duration` of its own, and clap's own prefix and usage go.
fn in_demo_words(error: &str) -> String {
    let first = error.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    first
        .replace(
            "for --outage-threshold:",
            "for the demo's outage threshold:",
        )
        .replace("lower --outage-threshold, or raise", "raise")
        .replace(
            "--duration",
            "the demo's run (--failover-after + the failure + --run-after)",
        )
}

/// How long the demo's run lasts: until the failover, the failure itself, then --run-after.
fn total(args: &DemoArgs) -> Option<Duration> {
    // The failure itself lasts this long before the run continues for --run-after.
    let hang = match args.failover {
        DemoFailover::Frozen | DemoFailover::Dns => args.promote_after.into(),
        DemoFailover::FrozenBack => args.thaw_after.into(),
        DemoFailover::Forced => FORCED_DETECTION,
        DemoFailover::Switchover => Duration::ZERO,
    };
    let total = Duration::from(args.failover_after)
        .checked_add(hang)?
        .checked_add(args.run_after.into())?;
    (total <= crate::config::MAX_DURATION).then_some(total)
}

/// The whole drill; the binary provides the runtime and logging. Returns the exit status
/// of the drill's verdict (0 pass, 3 fail, 4 invalid).
pub async fn drill(args: DemoArgs, hosts: Option<HostsFile>) -> Result<u8, String> {
    let mode = match args.replication {
        DemoReplication::Sync => ReplicationMode::Sync,
        DemoReplication::Async => ReplicationMode::Async,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on --listen {}: {e}", args.listen))?;
    eprintln!(
        "pgdrill demo: starting a local primary and a {} streaming standby…",
        flag_value(args.replication)
    );
    // Listened to before the lab starts: a signal then would end the process before it could
    // stop the servers (`pg_ctl` starts them in sessions of their own, out of the signal's reach).
    let stop = crate::shutdown::cancel_on_signals();
    let lab = Lab::start(LabOptions {
        standby: Some(mode),
        separate_addresses: hosts.is_some(),
        ..LabOptions::default()
    })
    .await
    .map_err(|e| format!("starting the lab: {e}"))?;
    let result = match stop.is_cancelled() {
        true => Err("stopped while the lab started; it is removed".to_string()),
        false => drill_on(&lab, &args, hosts.as_ref(), listener, stop).await,
    };
    lab.shutdown().await;
    if let Some(dir) = hosts.as_ref().and_then(|h| h.path().parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// The run's configuration, parsed as from the command line, pointed at the lab with its failover
/// as the drill's trigger; with the arguments it was parsed from (for the report's flags).
fn load_config(
    dsn: String,
    args: &DemoArgs,
    total: Duration,
    trigger: InProcessTrigger,
) -> Result<(crate::Config, Vec<String>), String> {
    let flags = [
        ("--dsn", dsn),
        ("--rate", args.rate.to_string()),
        ("--duration", humantime::format_duration(total).to_string()),
        ("--progress-interval", "1s".to_string()),
        ("--listen", args.listen.to_string()),
        ("--report", args.report.display().to_string()),
        // Validated like any drill (schedule against --duration, objectives); the command
        // only names the action, which is swapped for the in-process one below.
        ("--failover-command", trigger.name.clone()),
        ("--failover-after", args.failover_after.to_string()),
        ("--rto-objective", args.rto_objective.to_string()),
        ("--rpo-objective", args.rpo_objective.to_string()),
    ];
    let json = args
        .summary_json
        .iter()
        .map(|p| ("--summary-json", p.display().to_string()));
    let mut argv = vec!["pgdrill".to_string()];
    for (flag, value) in flags.into_iter().chain(json) {
        argv.extend([flag.to_string(), value]);
    }
    let mut config = Cli::try_parse_from(&argv)
        .map_err(|e| e.to_string())?
        .run
        .validate(|_| None)
        .map_err(|e| e.to_string())?;
    if let Some(t) = config.drill.trigger.as_mut() {
        t.action = TriggerAction::InProcess(trigger);
    }
    Ok((config, argv))
}

/// Load, a failover in the middle (the drill's trigger), the report.
async fn drill_on(
    lab: &Lab,
    args: &DemoArgs,
    hosts: Option<&HostsFile>,
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
) -> Result<u8, String> {
    let total = total(args).ok_or("the demo's run is too long (checked at start)")?;
    let dsn = hosts.map_or_else(|| lab.multi_host_dsn(), |h| lab.named_dsn(h.name()));
    let name = format!("lab {} failover", flag_value(args.failover));
    let (trigger, mut requests) = InProcessTrigger::new(name);
    let (config, argv) = load_config(dsn, args, total, trigger)?;
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let flags = crate::config::flags_as_run(&argv, &config.target.redacted);
    let report_path = config.report.clone();
    eprintln!(
        "pgdrill demo: {} INSERT/s for {}, {} failover after {}; metrics on http://{}/metrics{}",
        args.rate,
        humantime::format_duration(total),
        flag_value(args.failover),
        humantime::format_duration(args.failover_after.into()),
        listener.local_addr().unwrap_or(args.listen),
        report_path
            .as_ref()
            .map(|p| format!("; the report stays at {}", p.display()))
            .unwrap_or_default()
    );
    eprintln!(
        "pgdrill demo: this models {}; --connect-timeout {}",
        models(args.failover),
        humantime::format_duration(config.connect_timeout)
    );

    let summary_json = config.summary_json.clone();
    let mut load = tokio::spawn(async move { crate::run(config, listener, stop, |r| r).await.0 });

    // Serve the trigger's request (the run asks when --failover-after has passed) until
    // the run ends. Each failure mode is one more branch of `fail`.
    let mut truth = None;
    let summary = loop {
        tokio::select! {
            done = &mut load => break done,
            Some(reply) = requests.recv() => {
                eprintln!("pgdrill demo: failing over now ({})", flag_value(args.failover));
                let answer = match fail(lab, args, hosts).await {
                    Ok(t) => Ok(format!("lab ground truth: {}", truth.insert(t).line)),
                    Err(e) => Err(format!("failing over: {e}")),
                };
                let _ = reply.send(answer);
            }
        }
    };
    let mut summary = summary
        .map_err(|e| format!("load task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    summary.set_flags(flags);
    println!("{summary}");
    if let Some(truth) = &truth {
        print_truth(lab, args, truth, &summary).await;
        if let Some(node) = truth.frozen_left {
            // Fence the still-frozen old primary, as a vanished VM finally is.
            lab.kill_frozen(node)
                .await
                .map_err(|e| format!("killing the frozen old primary: {e}"))?;
        }
    }
    let writing = |p: &std::path::Path, e: std::io::Error| format!("writing {}: {e}", p.display());
    if let Some(path) = summary_json {
        summary.write_json(&path).map_err(|e| writing(&path, e))?;
    }
    if let Some(path) = report_path {
        summary.write_report(&path).map_err(|e| writing(&path, e))?;
        println!("drill report: {}", path.display());
    }
    Ok(summary.exit_code())
}

/// The lab's own account of what happened.
struct Truth {
    /// Stop or freeze began.
    began: Stamp,
    old: Node,
    /// The node that takes writes afterwards (the old one if it came back).
    writer: Node,
    promote_requested: Option<Stamp>,
    writable: Option<Stamp>,
    thawed: Option<Stamp>,
    /// The old primary was left frozen.
    frozen_left: Option<Node>,
    line: String,
}

async fn fail(lab: &Lab, args: &DemoArgs, hosts: Option<&HostsFile>) -> Result<Truth, LabError> {
    let report = match args.failover {
        DemoFailover::Forced => lab.force_failover_after(FORCED_DETECTION).await?,
        DemoFailover::Switchover => lab.switchover().await?,
        DemoFailover::Frozen | DemoFailover::Dns => {
            lab.frozen_failover(args.promote_after.into(), hosts)
                .await?
        }
        DemoFailover::FrozenBack => {
            let old = lab.primary();
            let freeze = lab.freeze(old).await?;
            tokio::time::sleep(args.thaw_after.into()).await;
            let thawed = lab.thaw(old).await?;
            return Ok(Truth {
                began: freeze.freeze_begun,
                old,
                writer: old,
                promote_requested: None,
                writable: None,
                thawed: Some(thawed),
                frozen_left: None,
                line: format!(
                    "{old} frozen ({} processes) for {:.3}s, then continued",
                    freeze.processes,
                    thawed.since(&freeze.freeze_begun).as_secs_f64()
                ),
            });
        }
    };
    let frozen = matches!(args.failover, DemoFailover::Frozen | DemoFailover::Dns);
    Ok(Truth {
        began: report.stop_begun,
        old: report.old_primary,
        writer: report.new_primary,
        promote_requested: Some(report.promote_requested),
        writable: Some(report.writable),
        thawed: None,
        frozen_left: frozen.then_some(report.old_primary),
        line: report.to_string(),
    })
}

/// From the rows on the node that takes writes afterwards: the first pgdrill write it accepted once
/// it was back (`back`: the promotion or the thaw; rows the old primary committed just after the
/// failure began are there too, replicated), and the gap in `created_at` that the failover made,
/// the one ending at that row. A stall elsewhere in the run is not the failover's.
async fn rows_truth(lab: &Lab, node: Node, run_id: i64, back: f64) -> Option<(f64, f64)> {
    let (client, conn) = tokio_postgres::connect(&lab.dsn(node), tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn); // Its errors surface on the query below.
    let row = client
        .query_one(
            "SELECT extract(epoch FROM min(created_at) FILTER (WHERE created_at > to_timestamp($2)))::float8, \
                    extract(epoch FROM (array_agg(gap ORDER BY created_at) \
                        FILTER (WHERE created_at > to_timestamp($2)))[1])::float8 \
             FROM (SELECT created_at, created_at - lag(created_at) OVER (ORDER BY created_at) AS gap \
                   FROM pgdrill_writes WHERE run_id = $1) r",
            &[&run_id, &back],
        )
        .await
        .ok()?;
    Some((row.get::<_, Option<f64>>(0)?, row.get::<_, Option<f64>>(1)?))
}

async fn print_truth(lab: &Lab, args: &DemoArgs, t: &Truth, summary: &Summary) {
    let zero = unix(t.began.wall);
    let rel = |s: &Stamp| format!("+{:.3}s", unix(s.wall) - zero);
    println!("this mode models {}", models(args.failover));
    println!("lab ground truth: {}", t.line);
    let mut facts = vec![format!("failure began at t0 (node {})", t.old)];
    if let Some(p) = &t.promote_requested {
        facts.push(format!("promote requested {}", rel(p)));
    }
    if let Some(w) = &t.writable {
        facts.push(format!("{} writable (lab probe) {}", t.writer, rel(w)));
    }
    if let Some(th) = &t.thawed {
        facts.push(format!("continued {}", rel(th)));
    }
    let back = t
        .promote_requested
        .or(t.thawed)
        .map_or(zero, |s| unix(s.wall));
    let rows = rows_truth(lab, t.writer, summary.run_id, back).await;
    if let Some((first, _)) = rows {
        facts.push(format!(
            "first pgdrill write accepted by {} +{:.3}s (its created_at)",
            t.writer,
            first - zero
        ));
    }
    println!("lab ground truth: {}", facts.join("; "));
    println!("{}", measured_line(summary, rows.map(|(_, gap)| gap)));
}

/// What pgdrill measured beside the rows' gap, with the words the summary uses: an outage
/// still open is its time so far, writes never verified are unverified, not 0 lost.
fn measured_line(summary: &Summary, gap: Option<f64>) -> String {
    // The drill's outage: an earlier one (a stall before the trigger) is not the failover's.
    let first = summary.drill.as_ref().and_then(|d| d.drills.first());
    let measured = match first.and_then(|d| d.unavailable_shown()) {
        Some((s, false)) => format!("{s:.3}s"),
        Some((s, true)) => format!("{s:.3}s so far"),
        None => "-".to_string(),
    };
    let gap = gap.map_or_else(|| "-".to_string(), |g| format!("{g:.3}s"));
    let c = &summary.counts;
    let lost = summary.lost_writes_text("");
    format!(
        "pgdrill measured {measured} of write unavailability ({} outages); the rows' created_at \
         gap across the failover is {gap}; lost {lost}, unknown outcome {} ({} committed, {} not)",
        summary.outage_count(),
        c.unknown_outcome_writes,
        c.unknown_outcome_committed,
        c.unknown_outcome_not_committed
    )
}

/// A choice as it is written on the command line (`forced`, not `Forced`).
fn flag_value(value: impl ValueEnum) -> String {
    let v = value.to_possible_value();
    v.map_or_else(String::new, |v| v.get_name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(extra: &[&str]) -> DemoArgs {
        let argv = [&["pgdrill", "demo"], extra].concat();
        match Cli::try_parse_from(argv).expect("demo flags").command {
            Some(crate::config::Command::Demo(args)) => args,
            _ => panic!("a demo command"),
        }
    }

    #[test]
    fn the_demo_says_its_errors_in_its_own_flags() {
        assert_eq!(check(&demo(&[])), Ok(()));
        let e = check(&demo(&["--rto-objective", "1ms"])).unwrap_err();
        assert!(
            e.contains("--rto-objective") && !e.contains("--outage-threshold"),
            "{e}"
        );
        assert!(!e.starts_with("error:"), "{e}");
        // Its lab fails over at once: no caution about a --duration it does not have.
        let args = demo(&[]);
        let total = total(&args).expect("within 100 years");
        let (trigger, _) = InProcessTrigger::new("lab failover".to_string());
        let (config, _) = load_config("host=127.0.0.1".into(), &args, total, trigger).expect("ok");
        assert_eq!(config.caution(), None);
        let e = check(&demo(&["--failover-after", "60y", "--run-after", "50y"])).unwrap_err();
        assert_eq!(
            e,
            "--failover-after and --run-after add up to more than 100 years"
        );
    }

    #[test]
    fn the_demo_line_says_an_open_outage_and_unverified_writes_as_the_summary_does() {
        let summary = serde_json::json!({
            "run_id": 7,
            "transactions": 1000,
            "outages": [{"index": 1, "start_unix": 1800000030.2,
                         "write_unavailable_seconds": 12.5, "open_at_shutdown": true}],
            "drill": {
                "command": "lab", "shell": false, "planned_triggers": 1,
                "objectives": {"rto_seconds": 30.0, "max_lost_writes": 0},
                "triggers": [], "baselines": [], "distribution": {},
                "drills": [{"trigger": 1, "outage": 1, "later_outages": [],
                            "unavailable_at_run_end_seconds": 12.5, "trigger_seconds": 0.2}],
                "verdict": {"verdict": "invalid", "invalid": [], "failed": []}
            }
        });
        let s = crate::report::summary_from_json(summary).expect("a summary");
        let line = measured_line(&s, Some(12.6));
        assert!(
            line.starts_with("pgdrill measured 12.500s so far of write unavailability (1 outages)"),
            "{line}"
        );
        assert!(
            line.contains("lost unverified (outage 1 still open at the end)"),
            "{line}"
        );
    }
}
