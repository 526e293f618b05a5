//! The pgdrill binary: parse, validate, then hand over to the library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use pgdrill::config::{Cli, Command, RunArgs};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run),
        Some(Command::Demo(args)) => pgdrill::demo::main(args),
        Some(Command::Proxy(args)) => proxy(args),
    }
}

fn proxy(args: pgdrill::config::ProxyArgs) -> ExitCode {
    pgdrill::logging::init(pgdrill::config::LogFormat::Text, "info")
        .unwrap_or_else(|e| usage_error(e));
    let opts = pgdrill::proxy::ProxyOptions {
        listen: args.listen,
        upstream: args.upstream,
        delay: args.delay.into(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    let result = runtime.block_on(async {
        pgdrill::shutdown::cancel_on_signals(stop.clone());
        pgdrill::proxy::run_cli(opts, stop.cancelled()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: proxy on --listen {}: {err}", args.listen);
            ExitCode::FAILURE
        }
    }
}

/// Exits with a usage error naming the option, like clap's own.
fn usage_error(message: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

fn run(args: RunArgs) -> ExitCode {
    let config = args
        .validate(|key| std::env::var(key).ok())
        .unwrap_or_else(|err| usage_error(err));
    pgdrill::logging::init(config.log_format, &config.log_filter)
        .unwrap_or_else(|e| usage_error(e));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(err) => usage_error(format!(
                "invalid value '{}' for --listen: cannot listen there: {err}",
                config.listen
            )),
        };
        let stop = CancellationToken::new();
        pgdrill::shutdown::cancel_on_signals(stop.clone());
        let summary_path = config.summary_json.clone();
        let summary = pgdrill::run(config, listener, stop).await;
        println!("{summary}");
        if let Some(path) = summary_path {
            let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
            if let Err(err) = std::fs::write(&path, json) {
                eprintln!(
                    "error: cannot write --summary-json {}: {err}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
        ExitCode::SUCCESS
    })
}
