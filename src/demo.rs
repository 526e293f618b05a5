//! `pgdrill demo`: a whole drill on this machine in one command — start a
//! primary + standby, run load, fail over, print the report, clean up.
//!
//! The failover is a drill trigger like `--failover-command`, with the same schedule, timing
//! and verdict; only its action differs: an [`InProcessTrigger`] that asks this module, which
//! owns the lab, to run the failure mode and answer with the lab's own account of it.

use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{Cli, DemoArgs, DemoFailover, DemoReplication};
use crate::drill::{InProcessTrigger, TriggerAction};
use pgdrill_lab::{FailoverReport, Lab, LabError, LabOptions, ReplicationMode};

/// The whole drill; the binary provides the runtime and logging. Returns the exit status
/// of the drill's verdict (0 pass, 3 fail, 4 invalid).
pub async fn drill(args: DemoArgs) -> Result<u8, String> {
    let mode = match args.replication {
        DemoReplication::Sync => ReplicationMode::Sync,
        DemoReplication::Async => ReplicationMode::Async,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on --listen {}: {e}", args.listen))?;
    eprintln!("pgdrill demo: starting a local primary and a {mode:?} streaming standby…");
    let lab = Lab::start(LabOptions {
        standby: Some(mode),
        ..LabOptions::default()
    })
    .await
    .map_err(|e| format!("starting the lab: {e}"))?;
    let result = drill_on(&lab, &args, listener).await;
    lab.shutdown().await;
    result
}

/// The configuration `pgdrill` would get from the command line, pointed at the lab, with
/// the lab's failover as the drill's trigger.
fn load_config(
    lab: &Lab,
    args: &DemoArgs,
    total: Duration,
    trigger: InProcessTrigger,
) -> Result<crate::Config, String> {
    let mut argv = vec![
        "pgdrill".to_string(),
        "--dsn".to_string(),
        lab.multi_host_dsn(),
        "--rate".to_string(),
        args.rate.to_string(),
        "--duration".to_string(),
        humantime::format_duration(total).to_string(),
        "--progress-interval".to_string(),
        "1s".to_string(),
        "--listen".to_string(),
        args.listen.to_string(),
        // Validated like any drill (schedule against --duration, objectives); the command
        // only names the action, which is swapped for the in-process one below.
        "--failover-command".to_string(),
        trigger.name.clone(),
        "--failover-after".to_string(),
        args.failover_after.to_string(),
        "--rto-objective".to_string(),
        args.rto_objective.to_string(),
        "--rpo-objective".to_string(),
        args.rpo_objective.to_string(),
    ];
    if let Some(path) = &args.summary_json {
        argv.push("--summary-json".to_string());
        argv.push(path.display().to_string());
    }
    let mut config = Cli::try_parse_from(&argv)
        .map_err(|e| e.to_string())?
        .run
        .validate(|_| None)
        .map_err(|e| e.to_string())?;
    if let Some(t) = config.drill.trigger.as_mut() {
        t.action = TriggerAction::InProcess(trigger);
    }
    Ok(config)
}

/// The lab's failure mode: what the drill's trigger does.
async fn fail(lab: &Lab, args: &DemoArgs) -> Result<FailoverReport, LabError> {
    match args.failover {
        DemoFailover::Forced => lab.force_failover().await,
        DemoFailover::Switchover => lab.switchover().await,
    }
}

/// Load, a failover in the middle (the drill's trigger), the report.
async fn drill_on(
    lab: &Lab,
    args: &DemoArgs,
    listener: tokio::net::TcpListener,
) -> Result<u8, String> {
    let failover_after: Duration = args.failover_after.into();
    let total = failover_after + Duration::from(args.run_after);
    let name = format!("lab {:?} failover", args.failover).to_lowercase();
    let (trigger, mut requests) = InProcessTrigger::new(name);
    let config = load_config(lab, args, total, trigger)?;
    eprintln!(
        "pgdrill demo: {} INSERT/s for {:?}, {:?} failover after {:?}; metrics on http://{}/metrics",
        args.rate, total, args.failover, failover_after, args.listen
    );

    let stop = CancellationToken::new();
    crate::shutdown::cancel_on_signals(stop.clone());
    let summary_json = config.summary_json.clone();
    let mut load = tokio::spawn(crate::run(config, listener, stop.clone()));

    // Serve the trigger's request (the run asks when --failover-after has passed) until
    // the run ends.
    let mut report = None;
    let summary = loop {
        tokio::select! {
            done = &mut load => break done,
            Some(reply) = requests.recv() => {
                eprintln!("pgdrill demo: failing over now ({:?})", args.failover);
                let answer = match fail(lab, args).await {
                    Ok(r) => {
                        let line = format!("lab ground truth: {r}");
                        report = Some(r);
                        Ok(line)
                    }
                    Err(e) => Err(format!("failing over: {e}")),
                };
                let _ = reply.send(answer);
            }
        }
    };
    let summary = summary
        .map_err(|e| format!("load task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    println!("{summary}");
    if let Some(report) = report {
        println!("lab ground truth: {report}");
        // The drill's outage: an earlier one (a stall before the trigger) is not the failover's.
        let drill = summary.drill.as_ref().and_then(|d| d.drills.first());
        if let Some(d) = drill {
            println!(
                "pgdrill measured {} of write unavailability; the lab took {:.3}s from stopping the primary to the first write on the new one",
                d.write_unavailable_seconds
                    .map_or_else(|| "-".to_string(), |s| format!("{s:.3}s")),
                report.stop_to_writable().as_secs_f64()
            );
        }
    }
    if let Some(path) = summary_json {
        summary
            .write_json(&path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(summary.exit_code())
}
