//! `pgdrill demo`: a whole drill on this machine in one command — start a
//! primary + standby, run load, fail over, print the report, clean up.

use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{Cli, DemoArgs, DemoFailover, DemoReplication};
use pgdrill_lab::{Lab, LabOptions, ReplicationMode};

/// The whole drill; the binary provides the runtime and logging.
pub async fn drill(args: DemoArgs) -> Result<(), String> {
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

/// The configuration `pgdrill` would get from the command line, pointed at the lab.
/// Returns it with the arguments it was parsed from (for the report's flags).
fn load_config(
    lab: &Lab,
    args: &DemoArgs,
    total: Duration,
) -> Result<(crate::Config, Vec<String>), String> {
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
        "--report".to_string(),
        args.report.display().to_string(),
    ];
    if let Some(path) = &args.summary_json {
        argv.push("--summary-json".to_string());
        argv.push(path.display().to_string());
    }
    let config = Cli::try_parse_from(&argv)
        .map_err(|e| e.to_string())?
        .run
        .validate(|_| None)
        .map_err(|e| e.to_string())?;
    Ok((config, argv))
}

/// Load, a failover in the middle, the report.
async fn drill_on(
    lab: &Lab,
    args: &DemoArgs,
    listener: tokio::net::TcpListener,
) -> Result<(), String> {
    let failover_after: Duration = args.failover_after.into();
    let total = failover_after + Duration::from(args.run_after);
    let (config, argv) = load_config(lab, args, total)?;
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let flags = crate::config::flags_as_run(&argv, &config.target.redacted);
    let report_path = config.report.clone();
    eprintln!(
        "pgdrill demo: {} INSERT/s for {:?}, {:?} failover after {:?}; metrics on http://{}/metrics",
        args.rate, total, args.failover, failover_after, args.listen
    );

    let stop = CancellationToken::new();
    crate::shutdown::cancel_on_signals(stop.clone());
    let summary_json = config.summary_json.clone();
    let load = tokio::spawn(crate::run(config, listener, stop.clone()));

    let report = tokio::select! {
        _ = tokio::time::sleep(failover_after) => {
            eprintln!("pgdrill demo: failing over now ({:?})", args.failover);
            let report = match args.failover {
                DemoFailover::Forced => lab.force_failover().await,
                DemoFailover::Switchover => lab.switchover().await,
            };
            Some(report.map_err(|e| format!("failing over: {e}"))?)
        }
        _ = stop.cancelled() => None,
    };
    let mut summary = load
        .await
        .map_err(|e| format!("load task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    summary.set_flags(flags);
    println!("{summary}");
    if let Some(report) = report {
        println!("lab ground truth: {report}");
        if let Some(o) = summary.outages.first() {
            println!(
                "pgdrill measured {} of write unavailability; the lab took {:.3}s from stopping the primary to the first write on the new one",
                o.write_unavailable_seconds
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
    if let Some(path) = report_path {
        summary
            .write_report(&path)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("drill report: {}", path.display());
    }
    Ok(())
}
