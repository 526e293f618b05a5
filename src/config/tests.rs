use super::*;
use clap::Parser;

pub(crate) fn args(extra: &[&str]) -> Result<Config, String> {
    let mut argv = vec!["pgdrill"];
    argv.extend_from_slice(extra);
    let argv = super::join_negative_values(argv.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    cli.run.validate(|_| None).map_err(|e| e.to_string())
}

#[test]
fn a_url_of_another_scheme_or_with_a_bad_percent_escape_is_refused() {
    let e = dsn::parse(Some("mysql://u:s3cret@h/db"), |_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--dsn") && e.contains("scheme mysql://"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    // No scheme, or a mistyped one holding the password: not named, the password not shown.
    for bad in ["//u:hunter2@h/db", "postgres:/u:hun://ter2@h/db"] {
        let e = dsn::parse(Some(bad), |_| None).unwrap_err().to_string();
        assert!(e.contains("not a postgresql:// or postgres:// URL"), "{e}");
        assert!(!e.contains("hun") && !e.contains("ter2"), "{e}");
    }
    for bad in [
        "postgres://u:p%zzss@h/db",
        "postgres://u@h/d%4",
        "postgres://u@h/?application_name=5%",
    ] {
        let e = dsn::parse(Some(bad), |_| None).unwrap_err().to_string();
        assert!(e.contains("--dsn") && e.contains("%25"), "{bad}: {e}");
        assert!(!e.contains("zzss"), "{e}");
    }
    let t = dsn::parse(
        Some("postgres://u:p%40ss@h/d%62?application_name=5%25"),
        |_| None,
    )
    .unwrap();
    assert_eq!(t.pg.get_dbname(), Some("db"));
}

#[test]
fn defaults_are_sensible() {
    let c = args(&[]).unwrap();
    assert_eq!(c.rate, Some(100.0));
    assert_eq!(c.pool_size, 4);
    assert_eq!(c.max_backlog, 100);
    assert_eq!(args(&["--rate", "1000"]).unwrap().pool_size, 4);
    assert_eq!(c.listen.port(), DEFAULT_PORT);
    assert_eq!(c.table.quoted, "\"pgdrill_writes\"");
    assert!(c.table_policy.create && !c.table_policy.named && !c.table_policy.alter);
    assert!(
        args(&["--table", "Transactions"])
            .unwrap()
            .table_policy
            .named
    );
    assert_eq!(c.startup_timeout, Duration::from_secs(60));
    assert_eq!(c.pipeline_depth, 16);
    let c = args(&["--rate", "8000"]).unwrap();
    assert_eq!(c.pool_size, 32);
    // Pipelining does not shrink the pool: it carries the rate over slow links.
    let c = args(&["--rate", "8000", "--pipeline-depth", "4"]).unwrap();
    assert_eq!(c.pool_size, 32);
    let c = args(&["--rate", "0"]).unwrap();
    assert_eq!(c.rate, None);
}

#[test]
fn the_password_file_is_read_only_when_the_dsn_is_the_password_source() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let pgpass = home.path().join(".pgpass");
    std::fs::write(&pgpass, "*:*:*:*:pw-from-pgpass\n").unwrap();
    let chmod = |mode| std::fs::set_permissions(&pgpass, PermissionsExt::from_mode(mode));
    let home_dir = home.path().display().to_string();
    let run = |extra: &[&str]| {
        let mut argv = vec!["pgdrill", "--dsn", "host=db1 user=app"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).unwrap();
        cli.run
            .validate(|k| (k == "HOME").then(|| home_dir.clone()))
            .unwrap()
    };
    let command = ["--password-command", "echo tok"];
    chmod(0o600).unwrap();
    let read = run(&[]).target;
    assert_eq!(read.pg.get_password(), Some(&b"pw-from-pgpass"[..]));
    assert_eq!(run(&command).target.pg.get_password(), None);
    // Passed over with a warning only when it would have been used.
    chmod(0o644).unwrap();
    assert!(!run(&[]).target.passed_over.is_empty());
    assert!(run(&command).target.passed_over.is_empty());
}

#[test]
fn a_zero_rate_is_written_as_one_and_listen_takes_the_exporters_forms() {
    assert_eq!(args(&["--rate", "0.0e5"]).unwrap().rate, None);
    for tiny in ["1e-400", "-0", "-0.0"] {
        let e = args(&["--rate", tiny]).unwrap_err();
        assert!(e.contains("--rate") && e.contains(tiny), "{e}");
    }
    let listen = |v: &str| args(&["--listen", v]).map(|c| c.listen.to_string());
    assert_eq!(listen(":9100").unwrap(), "0.0.0.0:9100");
    assert_eq!(listen("[::1]:9100").unwrap(), "[::1]:9100");
    assert!(listen("localhost:9100").unwrap().ends_with(":9100"));
    let e = listen(":99999").unwrap_err();
    assert!(e.contains("--listen") && e.contains(":99999"), "{e}");
    for bare in ["::1", ":::9743", "::1:9743"] {
        let e = listen(bare).unwrap_err();
        assert!(e.contains("an IPv6 address goes in brackets"), "{e}");
    }
}

#[test]
fn bad_values_name_the_flag_value_and_reason() {
    let e = args(&["--rate", "-5"]).unwrap_err();
    assert!(e.contains("--rate") && e.contains("-5"), "{e}");
    let e = args(&["--duration", "5 parsecs"]).unwrap_err();
    assert!(e.contains("--duration") && e.contains("5 parsecs"), "{e}");
    let e = args(&["--table", "x; drop table y"]).unwrap_err();
    assert!(e.contains("--table"), "{e}");
    // One range, 0 and -1 alike (not "not in 0..", then "at least 1").
    for n in ["0", "-1"] {
        let e = args(&["--pool-size", n]).unwrap_err();
        assert!(e.contains("--pool-size") && e.contains("not in 1.."), "{e}");
    }
    let e = args(&["--listen", "nowhere"]).unwrap_err();
    assert!(e.contains("--listen"), "{e}");
    let e = args(&["--dsn", "postgres://u:hunter2@h:99999/db"]).unwrap_err();
    assert!(e.contains("--dsn") && !e.contains("hunter2"), "{e}");
    let e = args(&["--password-file", "/no/such/pw"]).unwrap_err();
    assert!(
        e.contains("--password-file") && e.contains("/no/such/pw"),
        "{e}"
    );
    let e = args(&[
        "--password-file",
        "/etc/hostname",
        "--password-command",
        "true",
    ])
    .unwrap_err();
    assert!(
        e.contains("--password-command") && e.contains("cannot be used"),
        "{e}"
    );
    let e = args(&["--password-command", "az 'get-token"]).unwrap_err();
    assert!(
        e.contains("--password-command") && e.contains("unbalanced") && !e.contains("get-token"),
        "{e}"
    );
    let e = args(&["--password-command", "  "]).unwrap_err();
    assert!(
        e.contains("--password-command") && e.contains("empty"),
        "{e}"
    );
    let e = args(&["--retention", "0s"]).unwrap_err();
    assert!(e.contains("--retention"), "{e}");
    let e = args(&["--retention", "20s"]).unwrap_err();
    assert!(
        e.contains("--retention") && e.contains("--verify-window"),
        "{e}"
    );
    assert!(args(&["--retention", "20s", "--verify-window", "10s"]).is_ok());
}

#[test]
fn values_that_would_overflow_or_mean_something_else_are_refused() {
    let refused = |argv: &[&str], flag: &str, reason: &str| {
        let e = args(argv).unwrap_err();
        assert!(e.contains(flag) && e.contains(reason), "{argv:?}: {e}");
    };
    // 0 ms would turn the server's limit off; 25 days would fail every connection.
    refused(
        &["--statement-timeout", "500us"],
        "--statement-timeout",
        "between 1ms",
    );
    refused(
        &["--statement-timeout", "25d"],
        "--statement-timeout",
        "between 1ms",
    );
    assert!(args(&["--statement-timeout", "24d"]).is_ok());
    refused(
        &["--connect-timeout", "18446744073709551615s"],
        "--connect-timeout",
        "",
    );
    refused(
        &["--connect-timeout", "1ns"],
        "--connect-timeout",
        "at least 100ms",
    );
    refused(
        &["--max-connection-lifetime", "1ns"],
        "--max-connection-lifetime",
        "at least 1s",
    );
    refused(
        &["--shutdown-grace", "101y"],
        "--shutdown-grace",
        "at most 100 years",
    );
    refused(
        &["--failover-timeout", "200y"],
        "--failover-timeout",
        "at most 100 years",
    );
    assert!(args(&["--failover-command", "true", "--failover-timeout", "100y"]).is_ok());
    // Not clap's "unexpected argument '-5'": the flag, the value and why.
    refused(
        &["--duration", "-5s"],
        "'-5s' for '--duration",
        "cannot be negative",
    );
    refused(
        &["--duration", "--rate", "5"],
        "--duration",
        "a value is required",
    );
    refused(&["--rate", "1e-20"], "--rate", "too slow");
    let slowest = args(&["--rate", "0.001", "--rto-objective", "1h"]).unwrap();
    assert_eq!(slowest.rate, Some(0.001));
    refused(
        &["--max-backlog", "1000000000"],
        "--max-backlog",
        "between 1 and 1000000",
    );
    refused(&["--max-backlog", "0"], "--max-backlog", "between 1");
    refused(
        &["--summary-json", "/no/such/dir/s.json"],
        "--summary-json",
        "does not exist",
    );
    assert!(args(&["--summary-json", "-"]).is_ok());
    // A '?' in the password would hide sslmode=require; a second '@' puts part of the
    // password into the host. Neither is guessed at, and neither is shown.
    for dsn in [
        "postgres://u:a?b@h/db?sslmode=require",
        "postgres://app:P@ssw0rd@db.example/app",
        "postgresql://pgadmin@myserver:S3cret@myserver.example/postgres",
        "postgres://u:pass word@h/db",
    ] {
        let e = args(&["--dsn", dsn]).unwrap_err();
        assert!(!e.contains("S3cret") && !e.contains("pass word"), "{e}");
        assert!(e.contains("--dsn") && e.contains("%3F, %40"), "{e}");
        assert!(!e.contains("a?b") && !e.contains("ssw0rd"), "{e}");
    }
    let c = args(&["--dsn", "postgres://u:a%3Fb%40c@h/db?sslmode=require"]).unwrap();
    assert_eq!(c.target.pg.get_password(), Some(&b"a?b@c"[..]));
    assert_eq!(c.target.tls.mode, crate::db::tls::SslMode::Require);
}

#[test]
fn production_flags_parse() {
    let c = args(&[
        "--password-command",
        "echo x",
        "--password-ttl",
        "5m",
        "--retention",
        "7d",
    ])
    .unwrap();
    assert_eq!(
        c.password,
        PasswordSource::Command {
            argv: vec!["echo".into(), "x".into()],
            ttl: Duration::from_secs(300)
        }
    );
    let r = c.retention.unwrap();
    assert_eq!(r.window, Duration::from_secs(7 * 86400));
    assert_eq!(r.batch_size, 5000);
    assert!(args(&[]).unwrap().retention.is_none());
}

#[test]
fn the_connect_timeout_flag_wins_then_the_dsn_then_the_environment() {
    let with = |argv: &[&str], env: Option<&str>| {
        let mut all = vec!["pgdrill"];
        all.extend_from_slice(argv);
        let cli = Cli::try_parse_from(all).expect("flags");
        let c = cli
            .run
            .validate(|k| (k == "PGCONNECT_TIMEOUT").then(|| env.map(str::to_string))?)
            .expect("valid");
        (c.connect_timeout, c.connect_timeout_from)
    };
    let secs = Duration::from_secs;
    assert_eq!(with(&[], None), (secs(2), "default"));
    assert_eq!(with(&[], Some("7")), (secs(7), "PGCONNECT_TIMEOUT"));
    let dsn = ["--dsn", "host=h connect_timeout=9"];
    assert_eq!(with(&dsn, Some("7")), (secs(9), "connect_timeout in --dsn"));
    let flag = [
        "--dsn",
        "host=h connect_timeout=9",
        "--connect-timeout",
        "500ms",
    ];
    assert_eq!(
        with(&flag, Some("7")),
        (Duration::from_millis(500), "--connect-timeout")
    );
    let url = ["--dsn", "postgres://h/db?connect_timeout=4"];
    assert_eq!(with(&url, None), (secs(4), "connect_timeout in --dsn"));
    // Zero or less waits forever in libpq: refused, naming where it came from.
    let refused = |argv: &[&str], env: Option<&str>| {
        let mut all = vec!["pgdrill"];
        all.extend_from_slice(argv);
        let cli = Cli::try_parse_from(all).expect("flags");
        let env = |k: &str| (k == "PGCONNECT_TIMEOUT").then(|| env.map(str::to_string))?;
        cli.run.validate(env).expect_err("refused").to_string()
    };
    let e = refused(&["--dsn", "host=h connect_timeout=0"], None);
    assert!(e.contains("--dsn") && e.contains("waits forever"), "{e}");
    let e = refused(&[], Some("-1"));
    assert!(
        e.contains("for PGCONNECT_TIMEOUT") && e.contains("'-1'"),
        "{e}"
    );
    // Not in force: the flag wins.
    let flag = ["--connect-timeout", "5s"];
    assert_eq!(with(&flag, Some("0")), (secs(5), "--connect-timeout"));
}

#[test]
fn outage_threshold_never_below_three_intervals() {
    let c = args(&["--rate", "1"]).unwrap();
    assert_eq!(c.effective_outage_threshold(), Duration::from_secs(3));
    let c = args(&["--rate", "1000"]).unwrap();
    assert_eq!(c.effective_outage_threshold(), Duration::from_millis(20));
    // Never longer than the RTO objective: an outage between the two would pass unseen.
    let e = args(&["--outage-threshold", "5s", "--rto-objective", "1s"]).unwrap_err();
    assert!(
        e.contains("--outage-threshold") && e.contains("'5s'"),
        "{e}"
    );
    let e = args(&["--rate", "0.5", "--rto-objective", "1s"]).unwrap_err();
    assert!(e.contains("--rate") && e.contains("pass unseen"), "{e}");
    assert!(args(&["--outage-threshold", "1s", "--rto-objective", "1s"]).is_ok());
}

#[test]
fn a_negative_value_is_joined_to_its_flag_and_nothing_else_is() {
    let join = |argv: &[&str]| -> Vec<String> {
        let argv = argv.iter().map(|a| std::ffi::OsString::from(*a));
        let joined = super::join_negative_values(argv);
        joined
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(join(&["p", "--duration", "-5s"]), ["p", "--duration=-5s"]);
    assert_eq!(
        join(&["p", "--rate", "-3", "--duration", "5s"]),
        ["p", "--rate=-3", "--duration", "5s"]
    );
    // Not after a value, a short flag, a flag with its value, or the end of options.
    for argv in [
        &["p", "--duration", "5s", "-5"][..],
        &["p", "-h", "-5"],
        &["p", "--duration=1s", "-5"],
        &["p", "--", "--x", "-5"],
        &["p", "--duration", "-x"],
    ] {
        assert_eq!(join(argv), argv, "{argv:?}");
    }
}

#[test]
fn a_dsn_split_by_the_shell_shows_no_part_of_its_password() {
    let argv: Vec<std::ffi::OsString> = ["pgdrill", "--dsn", "postgres://u:Tr0ub4dor", "3xyz@h/db"]
        .iter()
        .map(Into::into)
        .collect();
    let err = Cli::try_parse_from(&argv).expect_err("a bare word");
    let text = crate::config::usage_message(&err, &argv);
    assert!(!text.contains("3xyz"), "{text}");
    assert!(
        text.contains("--dsn: unexpected word after its value"),
        "{text}"
    );
    // A bare word elsewhere is still quoted.
    let argv: Vec<std::ffi::OsString> = ["pgdrill", "--rate", "5", "stray"]
        .iter()
        .map(Into::into)
        .collect();
    let err = Cli::try_parse_from(&argv).expect_err("a bare word");
    assert!(crate::config::usage_message(&err, &argv).contains("'stray'"));
}

#[test]
fn a_verify_window_past_an_hour_is_refused_for_the_memory_it_would_hold() {
    let e = args(&["--verify-window", "7d"]).unwrap_err().to_string();
    assert!(
        e.contains("--verify-window") && e.contains("7days") && e.contains("at most 1h"),
        "{e}"
    );
    assert!(args(&["--verify-window", "1h"]).is_ok());
}

#[test]
fn a_password_command_whose_program_is_missing_is_refused_before_start_without_its_arguments() {
    let c = args(&[
        "--password-command",
        "azz account get-access-token --secret s3cret",
    ])
    .unwrap();
    let e = c.check_programs().unwrap_err().to_string();
    assert!(
        e.contains("--password-command") && e.contains("`azz`"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    let c = args(&["--password-command", "env true"]).unwrap();
    assert!(c.check_programs().is_ok());
    // `pgdrill cleanup` too, before it connects.
    let argv = [
        "pgdrill",
        "cleanup",
        "--all-runs",
        "--password-command",
        "azz --secret s3cret",
    ];
    let Some(Command::Cleanup(cleanup)) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("a cleanup command");
    };
    let e = cleanup.validate(|_| None).unwrap_err().to_string();
    assert!(
        e.contains("--password-command") && e.contains("`azz`"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn the_default_backlog_spans_one_second_at_any_rate() {
    let span = |a: &[&str]| args(a).unwrap().backlog_span;
    assert_eq!(span(&["--rate", "10"]), Some(Duration::from_secs(1)));
    assert_eq!(args(&["--rate", "10"]).unwrap().max_backlog, 64);
    assert_eq!(span(&["--rate", "5000"]), Some(Duration::from_secs(1)));
    let given = span(&["--rate", "10", "--max-backlog", "100"]);
    assert_eq!(given, Some(Duration::from_secs(10)));
    assert_eq!(span(&["--rate", "0"]), None);
}

#[test]
fn cleanup_takes_its_connect_timeout_as_a_run_does() {
    let cleanup = |extra: &[&str], env: &'static [(&str, &str)]| {
        let argv = [&["pgdrill", "cleanup", "--all-runs"], extra].concat();
        let Some(Command::Cleanup(c)) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("a cleanup command");
        };
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        c.validate(lookup).map(|c| c.connect_timeout)
    };
    if std::env::var_os("PGDRILL_CONNECT_TIMEOUT").is_some() {
        // Read by clap from this process's environment, ahead of everything tested here.
        eprintln!("SKIPPED: PGDRILL_CONNECT_TIMEOUT is set in the environment");
        return;
    }
    let secs = Duration::from_secs;
    assert_eq!(cleanup(&[], &[]).unwrap(), secs(10));
    let dsn = ["--dsn", "host=h connect_timeout=30"];
    assert_eq!(cleanup(&dsn, &[]).unwrap(), secs(30));
    assert_eq!(
        cleanup(&[], &[("PGCONNECT_TIMEOUT", "20")]).unwrap(),
        secs(20)
    );
    let flag = [
        "--dsn",
        "host=h connect_timeout=30",
        "--connect-timeout",
        "5s",
    ];
    assert_eq!(cleanup(&flag, &[]).unwrap(), secs(5));
    let e = cleanup(&["--connect-timeout", "1ns"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--connect-timeout"), "{e}");
}

#[test]
fn a_run_ending_within_the_rto_objective_of_its_last_trigger_is_cautioned() {
    let dsn = ["--failover-command", "true", "--rto-objective", "30s"];
    let caution = |extra: &[&str]| args(&[&dsn[..], extra].concat()).unwrap().caution();
    let short = caution(&["--duration", "5m", "--failover-after", "4m55s"]).expect("cautioned");
    assert!(
        short.contains("--duration (5m) leaves 5s after the last failover trigger"),
        "{short}"
    );
    assert_eq!(
        caution(&["--duration", "5m", "--failover-after", "4m"]),
        None
    );
    let many = [
        "--failovers",
        "3",
        "--failover-every",
        "100s",
        "--failover-after",
        "60s",
    ];
    assert!(caution(&[&many[..], &["--duration", "4m30s"]].concat()).is_some());
    assert!(caution(&[&many[..], &["--duration", "5m"]].concat()).is_none());
    // A canary has no trigger: nothing to caution.
    assert_eq!(args(&["--duration", "5s"]).unwrap().caution(), None);
}

#[test]
fn one_file_under_two_names_is_found_through_links() {
    let dir = tempfile::tempdir().expect("temp dir");
    let at = |name: &str| dir.path().join(name);
    std::fs::write(at("summary.json"), "{}").expect("write");
    std::os::unix::fs::symlink("summary.json", at("link.json")).expect("symlink");
    std::fs::hard_link(at("summary.json"), at("hard.json")).expect("hard link");
    std::os::unix::fs::symlink("later.json", at("dangling.json")).expect("symlink");
    let same = |a: &str, b: &str| super::same_file(&at(a), &at(b));
    assert!(same("summary.json", "link.json"));
    assert!(same("summary.json", "hard.json"));
    assert!(same("later.json", "dangling.json"));
    assert!(same("summary.json", "./summary.json"));
    assert!(!same("summary.json", "later.json"));
    assert!(!same("link.json", "dangling.json"));
}

#[test]
fn values_that_cannot_work_are_refused_before_anything_starts() {
    let e = args(&["--startup-timeout", "1ms"]).unwrap_err();
    assert!(
        e.contains("--startup-timeout") && e.contains("at least 1s"),
        "{e}"
    );
    for also in [&[][..], &["--summary-json", "-"]] {
        let e = args(&[&["--report", "-"], also].concat()).unwrap_err();
        assert!(e.contains("standard output"), "{e}");
    }
    for id in ["0", "-1"] {
        let argv = ["pgdrill", "cleanup", "--run-id", id];
        let argv = super::join_negative_values(argv.into_iter().map(Into::into));
        let e = Cli::try_parse_from(argv)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--run-id") && e.contains(id), "{e}");
    }
}
