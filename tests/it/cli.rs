//! The binary's command line: bad flags exit non-zero before anything starts, naming the
//! flag, the value and the reason.

use std::time::Duration;

use crate::support::drill::Binary;

#[tokio::test]
async fn bad_flags_exit_non_zero_naming_flag_value_and_reason() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--rate", "-3"], &["--rate", "-3"]),
        (&["--rate", "fast"], &["--rate", "fast"]),
        (&["--duration", "5 parsecs"], &["--duration", "5 parsecs"]),
        (
            &["--duration", "-5s"],
            &["--duration", "-5s", "cannot be negative"],
        ),
        (
            &["--duration", "--rate", "5"],
            &["--duration", "a value is required"],
        ),
        (&["--no-such-flag"], &["--no-such-flag"]),
        (
            &["--dsn", "host=h port=notaport password=hunter2"],
            &["--dsn", "port"],
        ),
        (
            &["--listen", &busy_addr],
            &["--listen", &busy_addr, "in use"],
        ),
        (&["--pipeline-depth", "0"], &["--pipeline-depth", "0"]),
        (&["--rate", "1e-400"], &["--rate", "1e-400", "0.001/s"]),
        // Flags of a feature not asked for are refused, not ignored.
        (
            &["--failover-timeout", "1m"],
            &[
                "--failover-timeout",
                "'1m'",
                "--failover-command, which is not given",
            ],
        ),
        (
            &["--password-ttl", "5m"],
            &[
                "--password-ttl",
                "'5m'",
                "--password-command, which is not given",
            ],
        ),
        (
            &["--member-index", "1"],
            &["--member-index", "'1'", "needs --members"],
        ),
        (
            &["--rpo-objective", "-1"],
            &["--rpo-objective", "'-1'", "not a count"],
        ),
        (
            &["--worker-threads", "100000"],
            &["--worker-threads", "100000", "0..=256"],
        ),
        // Checked before a lab starts, with the subcommand's own usage line.
        (
            &["demo", "--run-after", "0s"],
            &["--run-after", "0s", "Usage: pgdrill demo"],
        ),
        (
            &["cleanup", "--dsn", "host=h port=x", "--run-id", "1"],
            &["--dsn", "port", "Usage: pgdrill cleanup"],
        ),
        (
            &["--progress-interval", "1ns"],
            &["--progress-interval", "1ns", "at least 1s"],
        ),
        (
            &["--duration", "1ns"],
            &["--duration", "1ns", "at least 1s"],
        ),
        (
            &["--retention-batch-size", "7"],
            &[
                "--retention-batch-size",
                "'7'",
                "--retention, which is not given",
            ],
        ),
        (
            &[
                "--summary-json",
                "./run.out",
                "--report",
                "tests/../run.out",
            ],
            &["--report", "run.out", "would overwrite the summary"],
        ),
        (
            &["--failover-command", "patronictll failover --force"],
            &[
                "--failover-command",
                "`patronictll` is not an executable file",
            ],
        ),
        (
            &["report", "run.json", "-o", "./run.json"],
            &["--output", "run.json", "is also a SUMMARY"],
        ),
        (
            &["report", "run.json", "-o", "run.html", "--json", "run.html"],
            &["--json", "run.html", "is also --output's file"],
        ),
        // What clap cannot place is quoted back, scrubbed: a DSN without --dsn, a URL given
        // as its host, a password to a trigger.
        (
            &["postgres://u:hunter2@127.0.0.1:1/db"],
            &["unrecognized subcommand", "postgres://u:REDACTED@"],
        ),
        (
            &["POSTGRES://u:hunter2\"<q>@127.0.0.1:1/db"],
            &["unrecognized subcommand", "POSTGRES://u:REDACTED"],
        ),
        (
            &["--dsn", "postgres://u:'hunter2'@127.0.0.1,h2/db?port=1,2,3"],
            &["--dsn", "3 ports for 2 hosts"],
        ),
        // A password too short to remember, which the patterns end at its quote.
        (
            &["--dsn", "postgres://u:a\"b@h:x/db"],
            &["--dsn", "'postgres://u:REDACTED@ …'", "port"],
        ),
        // A word after --dsn's value is not shown at all: it may be part of the password.
        (
            &["--dsn", "host=127.0.0.1", "password=hunter2"],
            &[
                "--dsn: unexpected word after its value",
                "quote the whole DSN",
            ],
        ),
        (
            &["--dsn", "postgres://u:hun", "ter2@127.0.0.1:1/db"],
            &["--dsn: unexpected word after its value"],
        ),
        // A password key without its `=`, user info after a mistyped scheme.
        (
            &["--dsn", "host=db.example password hunter2xyz dbname=app"],
            &["--dsn", "password REDACTED …", "after the password"],
        ),
        (
            &["--dsn", "postgres//app:hunter2@db/app"],
            &["--dsn", "postgres//app:REDACTED@ …"],
        ),
        (
            &["--dsn", "host=postgres://app:hunter2@db/app port=1"],
            &["--dsn", "cannot hold '@'"],
        ),
        (
            &["--failover-command", "az login -u app -p hunter2 | jq"],
            &["--failover-command", "-p REDACTED"],
        ),
    ];
    for (args, expect) in cases {
        let (status, out, err) = Binary::spawn(args).wait(Duration::from_secs(10)).await;
        assert!(!status.success(), "{args:?} must fail");
        assert_eq!(status.code(), Some(2), "{args:?}: usage errors exit 2");
        for word in *expect {
            assert!(
                err.contains(word),
                "{args:?}: stderr lacks {word:?}:\n{err}"
            );
        }
        // `ter2@`: the tail of a password the shell split.
        assert!(
            !err.contains("hunter2") && !out.contains("hunter2") && !err.contains("ter2@"),
            "password leaked: {err}"
        );
        assert!(
            !out.contains("summary"),
            "{args:?}: nothing may start:\n{out}"
        );
    }
    // A bad value from the environment names its variable, not only the flag it stands for;
    // the same flag typed wins over the variable and is what the message names. So does one
    // refused after clap, by pgdrill's own checks, and one beside a subcommand's flag of the
    // same name.
    let rate = ("PGDRILL_RATE", "fast");
    let cases = [
        (
            rate,
            &[][..],
            "'fast' for '--rate <RATE>' (set by PGDRILL_RATE)",
        ),
        (rate, &["--rate", "slow"], "'slow' for '--rate <RATE>': "),
        (
            ("PGDRILL_STATEMENT_TIMEOUT", "25d"),
            &[],
            "for --statement-timeout (set by PGDRILL_STATEMENT_TIMEOUT): must be",
        ),
        // Empty (a container template's `RUST_LOG=`): it would turn off every log line.
        (
            ("RUST_LOG", ""),
            &[],
            "'' for --log-filter (set by RUST_LOG): is empty",
        ),
        (
            ("PGDRILL_CONNECT_TIMEOUT", "-5s"),
            &["cleanup", "--all-runs", "--connect-timeout", "5s"],
            "'-5s' for '--connect-timeout <CONNECT_TIMEOUT>' (set by PGDRILL_CONNECT_TIMEOUT)",
        ),
    ];
    for (env, args, expect) in cases {
        let (status, _, err) = Binary::spawn_with(&[env], args)
            .wait(Duration::from_secs(10))
            .await;
        assert_eq!(status.code(), Some(2), "{env:?} {args:?}: {err}");
        assert!(err.contains(expect), "{env:?} {args:?}: {err}");
    }
    // A boolean variable set to false (a ConfigMap shared with canaries) asks for nothing.
    let off = ("PGDRILL_FAILOVER_SHELL", "false");
    let (status, _, err) = Binary::spawn_with(&[off], &["--pipeline-depth", "0"])
        .wait(Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--pipeline-depth") && !err.contains("failover"),
        "{err}"
    );
}
