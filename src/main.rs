//! The pgdrill binary: parse, validate, then hand over to the library.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue};
use clap::{CommandFactory, Parser};
#[cfg(feature = "lab")]
use pgdrill::config::ProxyArgs;
use pgdrill::config::{CleanupArgs, Cli, Command, LogFormat, ReportArgs, RunArgs};
use pgdrill::RunError;

fn main() -> ExitCode {
    // Before anything could print one (clap quotes an argument it cannot place).
    let text = |s: std::ffi::OsString| s.to_string_lossy().into_owned();
    pgdrill::remember_given(
        std::env::args_os().map(text),
        std::env::vars_os().map(|(k, v)| (text(k), text(v))),
    );
    let cli = Cli::try_parse_from(argv()).unwrap_or_else(|err| usage_exit(err));
    match cli.command {
        None => run(cli.run),
        Some(Command::Report(args)) => report(args),
        Some(Command::Cleanup(args)) => cleanup(args),
        #[cfg(feature = "lab")]
        Some(Command::Demo(args)) => {
            init_logging(LogFormat::Text, "info,tokio_postgres=warn");
            pgdrill::demo::check(&args).unwrap_or_else(|e| usage_error_at("demo", None, e));
            // Before the runtime's threads exist (a private /etc/hosts for --failover dns).
            match pgdrill::demo::prepare(&args) {
                Ok(hosts) => block_on(0, async {
                    pgdrill::demo::drill(args, hosts)
                        .await
                        .map_or_else(|e| error_exit(e, 1), ExitCode::from)
                }),
                Err(err) => error_exit(err, 1),
            }
        }
        #[cfg(feature = "lab")]
        Some(Command::Proxy(args)) => proxy(args),
    }
}

/// A line on stdout. A closed stdout (`pgdrill | head`) loses it, and nothing else.
fn say(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// [`say`] on stderr.
fn tell(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Prints `error: {message}`, without secrets; exit `code` (1: a plain failure).
fn error_exit(message: impl std::fmt::Display, code: u8) -> ExitCode {
    tell(format!("error: {}", pgdrill::scrub(&message.to_string())));
    ExitCode::from(code)
}

fn cannot_write(option: &str, path: &std::path::Path, err: impl std::fmt::Display) -> ExitCode {
    let message = format!("cannot write {option} {}: {err}", path.display());
    error_exit(message, 1)
}

/// What clap parses: the command line, a negative value joined to its flag.
fn argv() -> Vec<std::ffi::OsString> {
    pgdrill::config::join_negative_values(std::env::args_os())
}

/// Exits with a usage error naming the option, like clap's own, with the subcommand's
/// usage line (`""` for the top level); about `flag`, the message may trace it to its variable.
fn usage_error_at(subcommand: &str, flag: Option<&str>, message: impl std::fmt::Display) -> ! {
    let message = pgdrill::scrub(&message.to_string());
    let mut cli = Cli::command();
    cli.build();
    let mut command = cli.find_subcommand(subcommand).cloned().unwrap_or(cli);
    let mut err = command.error(clap::error::ErrorKind::ValueValidation, message);
    if let Some(flag) = flag {
        err.insert(ContextKind::InvalidArg, ContextValue::String(flag.into()));
    }
    usage_exit(err)
}

/// Prints clap's error (or help) and exits with its code. An error quotes the arguments
/// it could not place (`pgdrill postgres://u:pw@h/db`, without `--dsn`): scrubbed.
fn usage_exit(err: clap::Error) -> ! {
    if !err.use_stderr() {
        err.exit()
    }
    let message = pgdrill::config::usage_message(&err, &argv());
    let _ = write!(std::io::stderr(), "{}", pgdrill::scrub(&message));
    std::process::exit(err.exit_code())
}

fn init_logging(format: LogFormat, filter: &str) {
    pgdrill::init_logging(format, filter).unwrap_or_else(|e| usage_error_at("", Some(e.option), e));
}

/// Runs `work` on `threads` runtime threads (0 = one per core); 1 is a
/// current-thread runtime, with no cross-thread wake-ups at all.
fn block_on(threads: usize, work: impl Future<Output = ExitCode>) -> ExitCode {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    match builder.enable_all().build() {
        Ok(runtime) => {
            let code = runtime.block_on(work);
            // Not waiting for host name lookups that never end (each on a blocking thread
            // nothing can stop): the summary is out, and an orchestrator's grace is short.
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            code
        }
        Err(err) => error_exit(format!("cannot start the async runtime: {err}"), 1),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = args
        .validate(|key| std::env::var(key).ok())
        .and_then(|config| config.check_programs().map(|()| config))
        .unwrap_or_else(|err| usage_error_at("", Some(err.option), err));
    init_logging(config.log_format, &config.log_filter);
    block_on(usize::from(args.worker_threads), async {
        let bound = tokio::net::TcpListener::bind(config.listen).await;
        let listener = bound.unwrap_or_else(|err| {
            let at = config.listen;
            let why = format!("invalid value '{at}' for --listen: cannot listen there: {err}");
            usage_error_at("", Some("--listen"), why)
        });
        let stop = pgdrill::shutdown::cancel_on_signals();
        let (summary_path, report_path) = (config.summary_json.clone(), config.report.clone());
        let redacted = config.target.redacted.clone();
        let (exit, late) = pgdrill::run(config, listener, stop, |result| {
            publish(result, &redacted, summary_path, report_path)
        })
        .await;
        match late {
            Some(error) => error_exit(&error, error.exit_code()),
            None => exit,
        }
    })
}

/// Prints the summary and writes its files; the exit code.
fn publish(
    result: Result<pgdrill::Summary, RunError>,
    redacted: &str,
    summary_path: Option<std::path::PathBuf>,
    report_path: Option<std::path::PathBuf>,
) -> ExitCode {
    let (mut summary, crashed) = match result {
        Ok(summary) => (summary, None),
        // What a run measured before it crashed is printed and written, then the error.
        Err(RunError {
            error,
            summary: Some(summary),
        }) => (*summary, Some(error)),
        Err(RunError { error, .. }) => return error_exit(&error, error.exit_code()),
    };
    // Scrubbed after the run: the patterns compile then, not on top of the load's memory.
    let argv: Vec<_> = std::env::args_os().collect();
    summary.set_flags(pgdrill::config::flags_as_run(&argv, redacted));
    say(summary.printable());
    // Each file is written whatever became of the other; a failure is said, and decides the
    // exit status only where the drill's verdict does not.
    let mut unwritten = None;
    if let Some(path) = summary_path {
        let written = if path.as_os_str() == "-" {
            summary.json_line().map(say)
        } else {
            let written = summary.write_json(&path).map_err(serde_json::Error::io);
            // Logged, not printed: with --log-format json every stderr line is JSON.
            written.inspect(|()| tracing::info!("summary written to {}", path.display()))
        };
        if let Err(err) = written {
            unwritten = Some(cannot_write("--summary-json", &path, err));
        }
    }
    if let Some(path) = report_path {
        match summary.write_report(&path) {
            Ok(()) => tracing::info!("drill report written to {}", path.display()),
            Err(err) => unwritten = Some(cannot_write("--report", &path, err)),
        }
    }
    if let Some(error) = crashed.or_else(|| summary.nothing_written()) {
        return error_exit(&error, error.exit_code());
    }
    // 0 pass or canary, 3 a failed drill, 4 an invalid one (docs/drills.md).
    match (summary.exit_code(), unwritten) {
        (0, Some(code)) => code,
        (verdict, _) => ExitCode::from(verdict),
    }
}

/// `pgdrill report SUMMARY.json… -o PAGE.html [--json MERGED.json]`; bad input is a usage
/// error (exit 2); then the drill's verdict: 0 pass (or a canary), 3 fail, 4 invalid.
fn report(args: ReportArgs) -> ExitCode {
    args.validate()
        .unwrap_or_else(|e| usage_error_at("report", None, e));
    let merged = pgdrill::merge_summary_files(&args.summaries).unwrap_or_else(|err| {
        usage_error_at("report", None, format!("invalid value for SUMMARY: {err}"))
    });
    if let Err(err) = std::fs::write(&args.output, &merged.page) {
        return cannot_write("--output", &args.output, err);
    }
    if let Some(path) = &args.json {
        let written = merged
            .json()
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(err) = written {
            return cannot_write("--json", path, err);
        }
    }
    let what = if merged.report.canary {
        "canary"
    } else {
        "drill"
    };
    tell(format!("{what} verdict: {}", merged.report.verdict));
    say(args.output.display());
    ExitCode::from(merged.report.exit_code())
}

/// `pgdrill cleanup`: prints what it removed; refusals exit 2, a target it cannot reach 5.
fn cleanup(args: CleanupArgs) -> ExitCode {
    let config = args
        .validate(|key| std::env::var(key).ok())
        .unwrap_or_else(|err| usage_error_at("cleanup", Some(err.option), err));
    // Warnings only (a password file passed over, a PG* variable not read): the result
    // is one line.
    init_logging(LogFormat::Text, "warn");
    block_on(1, async {
        match pgdrill::cleanup(config).await {
            Ok(done) => {
                say(done);
                ExitCode::SUCCESS
            }
            Err(err) => error_exit(&err, err.exit_code()),
        }
    })
}

#[cfg(feature = "lab")]
fn proxy(args: ProxyArgs) -> ExitCode {
    init_logging(LogFormat::Text, "info");
    let opts = pgdrill_lab::proxy::ProxyOptions {
        listen: args.listen,
        upstream: args.upstream,
        delay: args.delay.into(),
    };
    // One thread: the delay line measured cheaper per transaction than a multi-thread runtime.
    block_on(1, async {
        let stop = pgdrill::shutdown::cancel_on_signals();
        match pgdrill_lab::proxy::run_cli(opts, stop.cancelled()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => error_exit(format!("proxy on --listen {}: {err}", args.listen), 1),
        }
    })
}
