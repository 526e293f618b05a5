//! Connection strings: both forms, the environment, and what is refused.
use super::*;
use std::time::Duration;

use crate::db::tls::SslMode;
use tokio_postgres::config::{ChannelBinding, LoadBalanceHosts};

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn target_info_names_hosts_ports_database_and_pooler_never_the_password() {
    let t = parse(
        Some("host=a.example,b.example port=5432,6432 dbname=orders user=app password=s3cret"),
        no_env,
    )
    .unwrap();
    let info = t.info();
    assert_eq!(info.len(), 2);
    assert_eq!(info[0], ["a.example", "5432", "orders", "none"]);
    assert_eq!(info[1], ["b.example", "6432", "orders", "pgbouncer"]);
    assert!(!format!("{info:?}").contains("s3cret"));
}

#[test]
fn url_and_key_value_forms_parse() {
    let t = parse(Some("postgres://app:s3cret@db.example:6432/orders"), no_env).unwrap();
    assert_eq!(t.hosts, vec!["db.example:6432"]);
    assert_eq!(t.pg.get_dbname(), Some("orders"));
    assert!(!t.redacted.contains("s3cret"));

    let t = parse(
        Some("host=a,b port=5432,5433 user=u password=s3cret target_session_attrs=read-write"),
        no_env,
    )
    .unwrap();
    assert_eq!(t.hosts, vec!["a:5432", "b:5433"]);
    assert!(!format!("{t:?}").contains("s3cret"));
    // libpq's words in the startup line, not Rust's (`ReadWrite`).
    assert!(
        t.redacted.contains("target_session_attrs=read-write"),
        "{}",
        t.redacted
    );
}

#[test]
fn a_url_without_ports_takes_its_query_port_or_pgport_as_libpq_does() {
    let pgport = |v: &'static str| move |k: &str| (k == "PGPORT").then(|| v.to_string());
    let t = parse(Some("postgres://h/db?port=6432&application_name=x"), no_env).unwrap();
    assert_eq!(t.hosts, ["h:6432"]);
    assert_eq!(t.pg.get_application_name(), Some("x"));
    let t = parse(Some("postgres://app@db/orders"), pgport("6432")).unwrap();
    assert_eq!(t.hosts, ["db:6432"]);
    let t = parse(Some("postgresql://u:pw@a,b/db?port=1,2"), no_env).unwrap();
    assert_eq!(t.hosts, ["a:1", "b:2"]);
    assert_eq!(t.pg.get_password(), Some(&b"pw"[..]));
    let t = parse(Some("postgres://[::1]/db"), pgport("6432")).unwrap();
    assert_eq!(t.pg.get_ports(), [6432]);
    // A port in the URL wins over PGPORT; none anywhere is 5432.
    let t = parse(Some("postgres://h:5433/db"), pgport("6432")).unwrap();
    assert_eq!(t.hosts, ["h:5433"]);
    assert_eq!(
        parse(Some("postgres://h/db"), no_env).unwrap().hosts,
        ["h:5432"]
    );
    let e = parse(Some("postgres://a,b,c/db"), pgport("1,2"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("PGPORT") && e.contains("2 ports for 3 hosts"),
        "{e}"
    );
}

#[test]
fn port_count_must_match_the_hosts() {
    let e = parse(Some("host=a,b,c port=1,2 password=s3cret"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--dsn") && e.contains("2 ports for 3 hosts") && !e.contains("s3cret"),
        "{e}"
    );
    let e = parse(Some("postgres://a:1,b:2,c/db"), no_env);
    assert!(
        e.is_ok(),
        "a URL gives each host its own (default) port: {e:?}"
    );
    let env = |k: &str| (k == "PGPORT").then(|| "1,2".to_string());
    let e = parse(Some("host=a,b,c"), env).unwrap_err().to_string();
    assert!(e.contains("PGPORT") && e.contains("1,2"), "{e}");
    let t = parse(Some("host=a,b,c port=6"), no_env).unwrap();
    assert_eq!(t.hosts, vec!["a:6", "b:6", "c:6"]);
    assert!(parse(Some("host=a,b port=1,2"), no_env).is_ok());
    let e = parse(Some("host=a port=0"), no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--dsn") && e.contains("port 0"), "{e}");
    let env = |k: &str| (k == "PGPORT").then(|| "0".to_string());
    let e = parse(Some("host=a"), env).unwrap_err().to_string();
    assert!(e.contains("PGPORT") && e.contains("port 0"), "{e}");
}

#[test]
fn hostaddr_alone_is_the_host_as_libpq_has_it() {
    let t = parse(Some("hostaddr=10.0.0.5,10.0.0.6 port=6432"), no_env).unwrap();
    assert_eq!(t.hosts, vec!["10.0.0.5:6432", "10.0.0.6:6432"]);
    assert!(t.pg.get_hosts().is_empty(), "no localhost added");
    let env = |k: &str| (k == "PGHOSTADDR").then(|| "10.0.0.7".to_string());
    assert_eq!(parse(None, env).unwrap().hosts, vec!["10.0.0.7:5432"]);
    let t = parse(Some("host=db hostaddr=10.0.0.5"), env).unwrap();
    assert_eq!(
        t.pg.get_hostaddrs(),
        [std::net::IpAddr::from([10, 0, 0, 5])]
    );
    let e = parse(Some("host=a,b hostaddr=10.0.0.5"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--dsn") && e.contains("1 hostaddrs for 2 hosts"),
        "{e}"
    );
    let e = parse(Some("host=a,b"), env).unwrap_err().to_string();
    assert!(e.contains("PGHOSTADDR") && e.contains("10.0.0.7"), "{e}");
    let e = parse(Some("hostaddr=10.0.0.5,10.0.0.6 port=1,2,3"), no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 ports for 2 hosts"), "{e}");
}

#[test]
fn libpq_variables_pgdrill_does_not_read_are_named_at_start() {
    let env = |k: &str| match k {
        "PGCLIENTENCODING" => Some("LATIN1".to_string()),
        "PGSSLMAXPROTOCOLVERSION" => Some("TLSv1.2".to_string()),
        "PGSERVICE" => Some(String::new()),
        _ => None,
    };
    let t = parse(Some("host=db"), env).unwrap();
    assert_eq!(
        t.passed_over,
        ["libpq environment variables pgdrill does not read are set and ignored: PGSSLMAXPROTOCOLVERSION PGCLIENTENCODING"]
    );
    assert!(parse(Some("host=db"), no_env)
        .unwrap()
        .passed_over
        .is_empty());
}

#[test]
fn a_root_crt_libpq_would_read_is_named_at_start() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    std::fs::write(home.path().join(".postgresql/root.crt"), "x").unwrap();
    let dir = home.path().display().to_string();
    let env = |k: &str| (k == "HOME").then(|| dir.clone());
    let said = |dsn| parse(Some(dsn), env).unwrap().passed_over;
    let told = said("host=db sslmode=require");
    assert!(
        told.len() == 1 && told[0].contains(&format!("sslrootcert={dir}/.postgresql/root.crt")),
        "{told:?}"
    );
    // Not when a root certificate is named, or TLS is off.
    assert!(said("host=db sslrootcert=system").is_empty());
    assert!(said("host=db sslmode=disable").is_empty());
}

#[test]
fn environment_fills_what_the_dsn_leaves_unset() {
    let env = |k: &str| match k {
        "PGHOST" => Some("envhost".to_string()),
        "PGPORT" => Some("6000".to_string()),
        "PGUSER" => Some("envuser".to_string()),
        "PGPASSWORD" => Some("envpw".to_string()),
        "PGDATABASE" => Some("envdb".to_string()),
        _ => None,
    };
    let t = parse(None, env).unwrap();
    assert_eq!(t.hosts, vec!["envhost:6000"]);
    assert_eq!(t.pg.get_user(), Some("envuser"));
    assert_eq!(t.pg.get_password(), Some(&b"envpw"[..]));
    assert_eq!(t.pg.get_dbname(), Some("envdb"));

    let t = parse(Some("host=dsnhost dbname=dsndb"), env).unwrap();
    assert_eq!(t.hosts, vec!["dsnhost:6000"]);
    assert_eq!(t.pg.get_dbname(), Some("dsndb"));
}

#[test]
fn pgtargetsessionattrs_applies_unless_the_dsn_names_it() {
    let env = |v: &'static str| move |k: &str| (k == "PGTARGETSESSIONATTRS").then(|| v.to_string());
    let t = parse(Some("host=a,b"), env("read-write")).unwrap();
    assert_eq!(
        t.pg.get_target_session_attrs(),
        TargetSessionAttrs::ReadWrite
    );
    assert!(
        t.redacted.contains("target_session_attrs=read-write"),
        "{}",
        t.redacted
    );
    let t = parse(
        Some("postgresql://a,b/db?target_session_attrs=any"),
        env("read-write"),
    );
    assert_eq!(
        t.unwrap().pg.get_target_session_attrs(),
        TargetSessionAttrs::Any
    );
    // libpq's newer words: primary is what a writer needs; a standby cannot take writes.
    for dsn in [
        "host=a,b target_session_attrs=primary",
        "postgres://a,b/db?target_session_attrs=primary",
    ] {
        let t = parse(Some(dsn), env("any")).unwrap();
        assert_eq!(
            t.pg.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
    }
    let err = parse(Some("host=a,b target_session_attrs=prefer-standby"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--dsn") && err.contains("needs a primary"),
        "{err}"
    );
    let err = parse(Some("host=a,b"), env("primary-ish"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PGTARGETSESSIONATTRS") && err.contains("primary-ish"),
        "{err}"
    );
}

#[test]
fn malformed_dsn_is_a_config_error_without_the_password() {
    for dsn in [
        "host=a port=notaport password=s3cret",
        "host='a'password=s3cret port=x",
        "host='a'password=s3cret port=1,2,3",
        "postgres://u@a:notaport/db?pass%77ord=s3cret",
        "host=postgres://app:s3cret@db.example/app hostaddr=127.0.0.1 port=1",
        // Unquoted spaces split a password: what follows is not shown, nor quoted.
        "host=h password=pass s3cret",
        "password=a s3cret=c host=h",
        // Not a URL to the parser (a scheme in capitals): its reason quotes it whole.
        "POSTGRES://u:s3cret/x@h/db?sslmode=require",
        "POSTGRES://u:p@s3cret@h/db?sslmode=require",
        "POSTGRES://u?x:s3cret@h/db?application_name=a@b",
        "postgres://u@h1,h2/db?port=1,2,3&password=ab s3cret",
        "POSTGRES://u:s3cret\"@h/db?sslmode=require",
        // A password key without its `=`, user info after a mistyped scheme.
        "host=db.example password s3cret dbname=app",
        "postgres:/app:s3cret@db.example/app",
        "postgres//app:s3cret@db/app",
    ] {
        let text = parse(Some(dsn), no_env).unwrap_err().to_string();
        assert!(text.contains("--dsn"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    // The parser quotes the character it did not expect: a password's, here.
    let text = parse(Some("host=h password=ab cd qz"), no_env)
        .unwrap_err()
        .to_string();
    assert!(text.contains("after the password (not shown)"), "{text}");
    // Inside double quotes (which libpq does not read as quotes), or a key a prefix of
    // `password`: still the password's.
    for dsn in [
        r#"host=h password="Zm9v YmFy==" user=u"#,
        r#"host=h password="ab c d""#,
        "host=db password=Xy7 pass=9",
    ] {
        let text = parse(Some(dsn), no_env).unwrap_err().to_string();
        assert!(text.contains("after the password (not shown)"), "{text}");
        for piece in ["YmFy", "`d`", "`c`", "Xy7", "`pass`"] {
            assert!(!text.contains(piece), "{text}");
        }
    }
    assert!(!text.contains("cd") && !text.contains("`q`"), "{text}");
    // A URL libpq does not take for one (its scheme is case-sensitive): named, its password hidden.
    let text = parse(Some("POSTGRES://u:pw1@h/db?sslmode=require"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains(
            "'POSTGRES://REDACTED@h/db?sslmode=require' for --dsn: is a URL of scheme POSTGRES://"
        ),
        "{text}"
    );
    assert!(!text.contains("pw1"), "{text}");
    // A word of a quoted value before the password is no key named before it.
    let text = parse(Some("application_name='a cd b' password=xy cd=1"), no_env)
        .unwrap_err()
        .to_string();
    assert!(text.contains("after the password (not shown)"), "{text}");
    assert!(!text.contains("`cd`"), "{text}");
    // An apostrophe inside a value quotes nothing: a key after it is named.
    let text = parse(
        Some("application_name=o'neil bogus=1 password=bogus1"),
        no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("unknown option `bogus`"), "{text}");
    // A fault before the password is named, though what the parser expected (`=`) is
    // also in the hidden text.
    let text = parse(Some("host=h usr password=s3cret x=y"), no_env)
        .unwrap_err()
        .to_string();
    assert!(text.contains("expected `=` but got `p`"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    // A misspelled `password` key is still a password: its value is not shown.
    for dsn in [
        "host=h pasword=TypoS3cret port=1",
        "host=h pasword = TypoS3cret",
        "postgres://u@h/db?pasword=TypoS3cret&sslmode=require",
    ] {
        let text = parse(Some(dsn), no_env).unwrap_err().to_string();
        assert!(text.contains("unknown option `pasword`"), "{text}");
        assert!(text.contains("=(not shown) …"), "{text}");
        assert!(!text.contains("TypoS3cret"), "{text}");
    }
    // A reason quoting text before the password is kept.
    let text = parse(Some("hots=h password=s3cret"), no_env)
        .unwrap_err()
        .to_string();
    assert!(text.contains("unknown option `hots`"), "{text}");
    // In a URL the password ends at its `@`: a misspelled key in the query is named.
    for key in ["sslmod", "target_session_attr"] {
        let dsn = format!("postgres://u:Zq7-hunter-Secret@h:5/db?{key}=x");
        let text = parse(Some(&dsn), no_env).unwrap_err().to_string();
        assert!(text.contains(&format!("unknown option `{key}`")), "{text}");
        assert!(
            !text.contains("hunter") && !text.contains("single quotes"),
            "{text}"
        );
    }
    // A known key after the password is named.
    let text = parse(Some("host=h password=s3cret connect_timeout=abc"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("`connect_timeout`") && !text.contains("s3cret"),
        "{text}"
    );
    let env = |k: &str| (k == "PGHOST").then(|| "postgres://app:s3cret@db/app".to_string());
    let text = parse(None, env).unwrap_err().to_string();
    assert!(text.contains("PGHOST") && text.contains("'@'"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn tls_keys_are_taken_out_for_us() {
    let (rest, taken) = take_our_params(
        "host=h sslmode=verify-full user=u sslrootcert='/a b/ca.pem' password='x y'",
    );
    assert_eq!(rest, "host=h user=u password='x y'");
    assert_eq!(
        taken,
        vec![
            ("sslmode".to_string(), "verify-full".to_string()),
            ("sslrootcert".to_string(), "/a b/ca.pem".to_string())
        ]
    );
    let (rest, taken) = take_our_params(
        "postgres://u@h/db?sslmode=verify-ca&application_name=x&sslrootcert=%2Fca.pem",
    );
    assert_eq!(rest, "postgres://u@h/db?application_name=x");
    assert_eq!(taken[1], ("sslrootcert".to_string(), "/ca.pem".to_string()));

    let t = parse(Some("host=h sslmode=require"), no_env).unwrap();
    assert_eq!(t.tls.mode, SslMode::Require);
    assert_eq!(
        t.pg.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    assert!(t.redacted.contains("sslmode=require"), "{}", t.redacted);
    let t = parse(Some("host=h"), no_env).unwrap();
    assert_eq!(t.tls.mode, SslMode::Prefer);
    let env = |k: &str| (k == "PGSSLMODE").then(|| "disable".to_string());
    let t = parse(Some("host=h"), env).unwrap();
    assert_eq!(t.tls.mode, SslMode::Disable);
    let t = parse(Some("postgres://h/db?sslmode=require"), env).unwrap();
    assert_eq!(t.tls.mode, SslMode::Require, "the DSN wins over PGSSLMODE");
}

#[test]
fn bad_tls_settings_name_the_option() {
    let e = parse(Some("host=h sslmode=verify password=s3cret"), no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--dsn") && e.contains("sslmode=verify") && !e.contains("s3cret"),
        "{e}"
    );
    // As libpq: sslrootcert=system checks names by default, and refuses a weaker mode.
    let t = parse(Some("host=h sslrootcert=system"), no_env).unwrap();
    assert_eq!(t.tls.mode, SslMode::VerifyFull);
    for weak in ["require", "verify-ca", "prefer"] {
        let e = parse(
            Some(&format!("host=h sslrootcert=system sslmode={weak}")),
            no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("sslmode={weak}")) && e.contains("verify-full"),
            "{e}"
        );
    }
    let env = |k: &str| (k == "PGSSLROOTCERT").then(|| "/no/such/ca.pem".to_string());
    let e = parse(Some("host=h sslmode=verify-full"), env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("PGSSLROOTCERT") && e.contains("'/no/such/ca.pem'"),
        "{e}"
    );
}

#[test]
fn gssencmode_without_gssapi_is_disable_or_prefer_as_in_a_libpq_without_it() {
    for dsn in [
        "postgres://u:s3cret@h/db?gssencmode=disable&sslmode=require",
        "host=h gssencmode=prefer password=s3cret",
    ] {
        assert!(parse(Some(dsn), no_env).is_ok(), "{dsn}");
    }
    let env = |k: &str| (k == "PGGSSENCMODE").then(|| "require".to_string());
    let e = parse(Some("host=h"), env).unwrap_err().to_string();
    assert!(e.contains("PGGSSENCMODE") && e.contains("'require'"), "{e}");
}

#[test]
fn a_libpq_option_pgdrill_lacks_is_named_not_blamed_on_the_password() {
    for dsn in [
        "postgres://u:s3cret@127.0.0.1/db?sslcert=/c.pem&sslkey=/k.pem",
        "host=h password=s3cret sslkey=/k.pem",
    ] {
        let e = parse(Some(dsn), no_env).unwrap_err().to_string();
        assert!(
            e.contains("unknown option `ssl") && !e.contains("password (not shown)"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }
}

#[test]
fn a_dsn_without_a_password_takes_the_password_file_as_libpq_does() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let pgpass = home.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        "db1:5432:orders:app:pw-from-file\n*:*:*:*:any-pw\n",
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home_str = home.path().display().to_string();
    let env = |k: &str| (k == "HOME").then(|| home_str.clone());
    let password = |dsn: &str, env: &dyn Fn(&str) -> Option<String>| {
        let mut t = parse(Some(dsn), env).unwrap();
        t.use_password_file();
        let pw =
            t.pg.get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned());
        (pw, t.passed_over.into_iter().next())
    };
    let found = Some("pw-from-file".to_string());
    assert_eq!(
        password("host=db1 dbname=orders user=app", &env),
        (found.clone(), None)
    );
    assert_eq!(password("postgres://app@db1/orders", &env).0, found);
    assert_eq!(password("host=db2 user=app", &env).0, Some("any-pw".into()));
    // The DSN's own password wins; without HOME or a file, no password.
    assert_eq!(
        password("host=db1 user=app password=given", &env).0,
        Some("given".into())
    );
    // An empty password is none, as libpq has it.
    let empty = password("host=db1 dbname=orders user=app password=''", &env);
    assert_eq!(empty.0, found);
    assert_eq!(
        password("host=db1 dbname=orders user=app", &no_env),
        (None, None)
    );
    // passfile= and PGPASSFILE name another file.
    let other = home.path().join("other");
    std::fs::write(&other, "*:*:*:*:other-pw\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dsn = format!(
        "host=db1 dbname=orders user=app passfile={}",
        other.display()
    );
    assert_eq!(password(&dsn, &env).0, Some("other-pw".into()));
    let other_str = other.display().to_string();
    let env_file = |k: &str| (k == "PGPASSFILE").then(|| other_str.clone());
    assert_eq!(
        password("host=db1 user=app", &env_file).0,
        Some("other-pw".into())
    );
    // A file others can read is passed over, and the reason kept for the log.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (pw, skipped) = password("host=db1 dbname=orders user=app", &env);
    assert_eq!(pw, None);
    let skipped = skipped.unwrap();
    assert!(
        skipped.contains(".pgpass") && skipped.contains("chmod 0600"),
        "{skipped}"
    );
}

#[test]
fn user_info_without_a_scheme_never_shows_its_password() {
    let pghost = |name: &str| (name == "PGHOST").then(|| "admin:s3cretpw@db.example".into());
    for (dsn, env) in [
        (
            Some("admin:s3cretpw@db.example:5432/x"),
            no_env as fn(&str) -> Option<String>,
        ),
        (Some("host=admin:s3cretpw@db.example port=5432"), no_env),
        (Some("host=user@corp:s3c@retpw@db port=5432"), no_env),
        (None, pghost),
        // Two hosts for one hostaddr: the count is refused before the names are looked at.
        (Some("hostaddr=10.0.0.5"), |name: &str| {
            (name == "PGHOST").then(|| "admin:s3cretpw@db.example,other".into())
        }),
    ] {
        let e = parse(dsn, env).unwrap_err().to_string();
        assert!(!e.contains("s3c") && !e.contains("retpw"), "{e}");
        assert!(e.contains("REDACTED"), "{e}");
    }
}

#[test]
fn an_at_sign_in_a_url_query_is_a_value_not_the_user_info() {
    let t = parse(
        Some("postgresql://srv.example.com/postgres?user=alice@contoso.com&sslmode=require"),
        no_env,
    )
    .unwrap();
    assert_eq!(t.hosts, ["srv.example.com:5432"]);
    assert_eq!(t.pg.get_user(), Some("alice@contoso.com"));
    assert_eq!(t.pg.get_dbname(), Some("postgres"));
    assert_eq!(t.tls.mode, SslMode::Require);
    // Before the path, an '@' still ends the user info, as in libpq.
    let t = parse(
        Some("postgres://bob:pw@db/app?application_name=a@b"),
        no_env,
    )
    .unwrap();
    assert_eq!(t.pg.get_user(), Some("bob"));
    assert_eq!(t.pg.get_application_name(), Some("a@b"));
    assert!(parse(Some("postgres://u:pa/ss@h/db"), no_env).is_err());
}

#[test]
fn a_bad_pgport_is_named_for_a_url_as_for_a_key_value_dsn() {
    for value in ["abc", "0", "5432 x"] {
        let env = |k: &str| (k == "PGPORT").then(|| value.to_string());
        for dsn in ["postgres://db/app", "host=db dbname=app"] {
            let e = parse(Some(dsn), env).unwrap_err();
            assert_eq!(
                (e.option, e.value.as_str()),
                ("PGPORT", value),
                "{dsn}: {e}"
            );
        }
    }
}

#[test]
fn an_unusable_root_certificate_is_named_where_it_was_set() {
    let env = |k: &str| (k == "PGSSLROOTCERT").then(|| "/no/such/ca.pem".to_string());
    let e = parse(Some("host=h sslmode=verify-full"), env).unwrap_err();
    assert_eq!(e.option, "PGSSLROOTCERT", "{e}");
    // The variable's value as it was set, not as a DSN key.
    assert_eq!(e.value, "/no/such/ca.pem", "{e}");
    let e = parse(
        Some("host=h sslmode=verify-ca sslrootcert=/no/ca.pem"),
        no_env,
    )
    .unwrap_err();
    assert_eq!(
        (e.option, e.value.as_str()),
        ("--dsn", "sslrootcert=/no/ca.pem")
    );
}

#[test]
fn a_variable_that_picks_the_server_or_tightens_security_is_refused_by_name() {
    for (var, value) in [
        ("PGSERVICE", "prod"),
        ("PGSSLCERT", "/home/app/client.crt"),
        ("PGREQUIREAUTH", "scram-sha-256"),
        ("PGSSLMINPROTOCOLVERSION", "TLSv1.3"),
    ] {
        let env = |k: &str| (k == var).then(|| value.to_string());
        let e = parse(Some("host=db"), env).unwrap_err().to_string();
        assert!(
            e.contains(var) && e.contains(value) && e.contains("unset it"),
            "{e}"
        );
    }
}

#[test]
fn options_channel_binding_and_balancing_come_from_the_dsn_or_their_variables() {
    let env = |k: &str| match k {
        "PGOPTIONS" => Some("-c search_path=drill".to_string()),
        "PGCHANNELBINDING" => Some("require".to_string()),
        "PGLOADBALANCEHOSTS" => Some("disable".to_string()),
        _ => None,
    };
    let t = parse(Some("host=db"), env).unwrap();
    assert_eq!(t.pg.get_options(), Some("-c search_path=drill"));
    assert_eq!(t.pg.get_channel_binding(), ChannelBinding::Require);
    assert_eq!(t.pg.get_load_balance_hosts(), LoadBalanceHosts::Disable);
    let random = |k: &str| (k == "PGLOADBALANCEHOSTS").then(|| "random".to_string());
    let t = parse(Some("host=a,b"), random).unwrap();
    assert_eq!(t.pg.get_load_balance_hosts(), LoadBalanceHosts::Random);
    let t = parse(
        Some("host=db options='-c work_mem=4MB' channel_binding=disable"),
        env,
    )
    .unwrap();
    assert_eq!(t.pg.get_options(), Some("-c work_mem=4MB"));
    assert_eq!(t.pg.get_channel_binding(), ChannelBinding::Disable);
    let t = parse(Some("postgres://db/x?options=-c%20a%3Db"), no_env).unwrap();
    assert_eq!(t.pg.get_options(), Some("-c a=b"));
    for (dsn, named) in [
        (
            "host=db load_balance_hosts=sometimes",
            "load_balance_hosts=sometimes",
        ),
        ("host=db sslnegotiation=direct", "sslnegotiation=direct"),
        ("host=db channel_binding=maybe", "channel_binding=maybe"),
    ] {
        let e = parse(Some(dsn), no_env).unwrap_err().to_string();
        assert!(e.contains("--dsn") && e.contains(named), "{e}");
    }
}

#[test]
fn tcp_user_timeout_is_milliseconds_as_in_libpq() {
    let t = parse(Some("host=db tcp_user_timeout=10000"), no_env).unwrap();
    assert_eq!(t.pg.get_tcp_user_timeout(), Some(&Duration::from_secs(10)));
    let t = parse(Some("host=db tcp_user_timeout=0"), no_env).unwrap();
    assert_eq!(t.pg.get_tcp_user_timeout(), None, "pgdrill's default");
    for bad in ["-1", "ten"] {
        let e = parse(Some(&format!("host=db tcp_user_timeout={bad}")), no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("milliseconds"), "{e}");
    }
}

#[test]
fn empty_hosts_huge_timeouts_and_encoded_keys_are_refused_or_read_as_libpq_does() {
    for dsn in ["dbname=app host=''", "host=a,,b", "postgresql://:5433/db"] {
        let err = parse(Some(dsn), no_env).expect_err(dsn).to_string();
        assert!(err.contains("a host name is empty"), "{dsn}: {err}");
    }
    // No host at all is libpq's default host, as before.
    let t = parse(Some("postgresql:///db"), no_env).expect("postgresql:///db");
    assert_eq!(t.hosts, ["localhost:5432"]);
    let huge = "host=h connect_timeout=9223372036854775807";
    let err = parse(Some(huge), no_env).expect_err(huge).to_string();
    assert!(err.contains("at most 2147483647 seconds"), "{err}");
    let huge = "host=h tcp_user_timeout=3000000000";
    let err = parse(Some(huge), no_env).expect_err(huge).to_string();
    assert!(err.contains("at most 2147483647"), "{err}");
    // A percent-encoded key is the key (libpq decodes keys as values).
    let t = parse(
        Some("postgresql://h/db?ssl%6Dode=require&target%5Fsession%5Fattrs=read-write"),
        no_env,
    )
    .expect("encoded keys");
    assert_eq!(t.tls.mode, SslMode::Require);
    assert_eq!(
        t.pg.get_target_session_attrs(),
        tokio_postgres::config::TargetSessionAttrs::ReadWrite
    );
}
