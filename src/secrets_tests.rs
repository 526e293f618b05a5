//! Scrubbing: the patterns, remembered secrets, and what is left alone.
use super::*;

#[test]
fn connection_strings_and_secret_keys_are_scrubbed() {
    let cases = [
        (
            "connecting to postgres://admin:hunter2@db:5432/app",
            "connecting to postgres://admin:REDACTED@db:5432/app",
        ),
        (
            "host=db password=hunter2 user=u",
            "host=db password=REDACTED user=u",
        ),
        ("PGPASSWORD=hunter2 psql", "PGPASSWORD=REDACTED psql"),
        (r#"PGPASSWORD="hun ter2" psql"#, "PGPASSWORD=REDACTED psql"),
        (
            r#"  "administratorLoginPassword": "hun\"ter2","#,
            r#"  "administratorLoginPassword": "REDACTED","#,
        ),
        (
            r#"{"accessToken":"eyJ0eXAi.x.y"}"#,
            r#"{"accessToken":"REDACTED"}"#,
        ),
        ("client_secret: abc123", "client_secret: REDACTED"),
        ("Password: s3cret", "Password: REDACTED"),
        (
            "Authorization: Bearer eyJhbGci.x.y rest",
            "Authorization: Bearer REDACTED rest",
        ),
        ("token: ünïcødé!", "token: REDACTED"),
        (
            "AWS_SECRET_ACCESS_KEY=wJalr true",
            "AWS_SECRET_ACCESS_KEY=REDACTED true",
        ),
        ("curl -H 'X-Api-Key: k3y'", "curl -H 'X-Api-Key: REDACTED'"),
        (
            r#"{"user":"u","pass":"p4ss"}"#,
            r#"{"user":"u","pass":"REDACTED"}"#,
        ),
        ("--passphrase hunter2", "--passphrase REDACTED"),
        // YAML's bare value runs to the end of its line (or of a JSON string).
        ("password: correct horse battery", "password: REDACTED"),
        ("secret: a b\nnext: c", "secret: REDACTED\nnext: c"),
        // Scrubbed once (a trigger's output line), then again whole with the log's fields.
        (
            "password: REDACTED event=\"trigger_output\" trigger=1",
            "password: REDACTED event=\"trigger_output\" trigger=1",
        ),
        (
            r#"{"msg":"token: ab cd","x":1}"#,
            r#"{"msg":"token: REDACTED","x":1}"#,
        ),
        // Or of an HTML-escaped value: the report's markup after it stays.
        (
            "<td>curl -H &quot;X-Api-Key: k3y&quot;</td><td>0.512</td>",
            "<td>curl -H &quot;X-Api-Key: REDACTED&quot;</td><td>0.512</td>",
        ),
    ];
    for (input, want) in cases {
        let got = scrub_patterns(input);
        assert_eq!(got, want, "input {input:?}");
        assert!(!got.contains("hunter2") && !got.contains("s3cret"), "{got}");
    }
}

#[test]
fn output_is_written_as_text_without_control_bytes() {
    assert_eq!(printable("plain\tline é"), "plain\tline é");
    assert_eq!(printable("a\0b\u{1b}[31mc\r"), "a\\x00b\\x1b[31mc\\x0d");
}

#[test]
fn ordinary_output_is_left_alone() {
    for text in [
        "Failover of server pg-prod started; tokens_used=3",
        "password authentication failed for user \"app\"",
        "The token expires in 3600 s",
        "{\"state\": \"Ready\", \"haState\": \"Healthy\"}",
        "",
        "naïve password — ünïcode: ok",
        "INFO pgdrill::db::credentials: running --password-command",
        "test result: 3 passed; 0 failed",
        "Bypass: enabled; compass: north; BYPASS=1",
        "mkdir -p ./out; mkdir -p ../logs; mkdir -p ~/.ssh",
        "PASSWORD_FILE=/run/secrets/pg TOKEN_URL=https://login.example/token",
        "mkdir -p /run/pgdrill && psql -p 5432 -h db",
        "docker run -p 127.0.0.1:5432:5432/tcp -p 8000-8010:8000-8010 postgres",
        "sshpass -p \"$PGPASSWORD\" ssh pg1",
        "authentication: ok; signature=valid; ?signal=1",
        "class=auth error=auth: FATAL: role \"nobody\" does not exist",
        "host=sk-prod-postgres-eastus-01.postgres.database.azure.com",
    ] {
        assert_eq!(scrub_patterns(text), text);
    }
}

#[test]
fn arbitrary_text_never_panics_and_keeps_its_length_bounded() {
    use rand::{Rng, SeedableRng};
    let pieces = [
        "password",
        "=",
        ":",
        " ",
        "\"",
        "'",
        "\\",
        "é",
        "ü",
        "💥",
        "token",
        "Bearer ",
        "postgres://",
        "@",
        "/",
        "?",
        "&",
        "qqz",
        "q",
        "z",
        "pwd",
        "\n",
        "secret",
        "REDACTED",
    ];
    remember("qqzqqz");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(14);
    for _ in 0..20_000 {
        let n = rng.random_range(0..12);
        let text: String = (0..n)
            .map(|_| pieces[rng.random_range(0..pieces.len())])
            .collect();
        let out = scrub(&text);
        // Each secret becomes REDACTED at most once per character of the input.
        assert!(out.len() <= text.len() * 9 + 8, "{text:?} -> {out:?}");
        assert!(!out.contains("qqzqqz"), "{text:?} -> {out:?}");
    }
}

#[test]
fn known_secret_values_are_scrubbed_anywhere() {
    remember("pa55wd");
    remember("");
    remember("pa55wd-word!\n");
    assert_eq!(scrub("x pa55wd-word! y pa55wd"), "x REDACTED y REDACTED");
    remember("a\"b<c>d");
    assert_eq!(scrub(r#"{"out":"a\"b<c>d"}"#), r#"{"out":"REDACTED"}"#);
    assert_eq!(scrub("<td>a&quot;b&lt;c&gt;d</td>"), "<td>REDACTED</td>");
    // Under 6 characters a secret is left to the patterns: a `150` would hide every count.
    remember("150");
    assert_eq!(scrub("ok=150 failed=0"), "ok=150 failed=0");
    // A number is hidden where it stands alone, not inside a longer one.
    remember("8675309");
    assert_eq!(
        scrub("-p8675309 ok=18675309 at 8675309.5 x 1.8675309 pw 8675309."),
        "-pREDACTED ok=18675309 at 8675309.5 x 1.8675309 pw REDACTED."
    );
    // An empty secret would otherwise replace between every character.
    assert_eq!(scrub("abc"), "abc");
}

#[test]
fn each_line_of_a_secret_of_several_is_remembered_as_output_is_scrubbed_by_line() {
    remember("-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQ\nE2pl3mW+KdA=\n-----END KEY-----");
    assert_eq!(scrub("  MIIEvQIBADANBgkqhkiG9w0BAQ"), "  REDACTED");
    assert_eq!(scrub("E2pl3mW+KdA= ok"), "REDACTED ok");
}

#[test]
fn options_that_name_a_secret_hide_their_value() {
    let cases = [
        (
            "az postgres flexible-server update -n pg --admin-password Hx9#k2 -g rg",
            "az postgres flexible-server update -n pg --admin-password REDACTED -g rg",
        ),
        (
            "tool --token 'abc def' --x 1",
            "tool --token 'REDACTED' --x 1",
        ),
        ("tool --api-secret=abc", "tool --api-secret=REDACTED"),
        // An option's bare value is one shell word, separators and all.
        (
            "tool --password=Abc,123xyz --pass Ab;c}d) --user=x",
            "tool --password=REDACTED --pass REDACTED --user=x",
        ),
        (
            r#"{"c":"t --password=ab,cd","x":1}"#,
            r#"{"c":"t --password=REDACTED","x":1}"#,
        ),
        ("tool -password  abc", "tool -password  REDACTED"),
        (
            r#"{"c": "x --token abc"}"#,
            r#"{"c": "x --token REDACTED"}"#,
        ),
        // Not an option value: the next word is another option, or no option at all.
        ("tool --password --next", "tool --password --next"),
        ("reset the password now", "reset the password now"),
        ("tool --token-file /run/t", "tool --token-file /run/t"),
        // Keys that end in `auth` or `bearer`, and tokens known by their shape.
        (
            "echo --auth admin:pw1 --oauth2-bearer pw2 --auth-type=bearer --auth=tok3 X-Auth: pw4",
            "echo --auth REDACTED --oauth2-bearer REDACTED --auth-type=bearer --auth=REDACTED X-Auth: REDACTED",
        ),
        (
            "run ghp_abcdefghijklmnopqrstuvwx012345 xoxb-1234567890-abcdefghij",
            "run REDACTED REDACTED",
        ),
        (
            "curl 'https://a.blob.core.windows.net/c?sv=2022&SIG=ab%2Bcd&se=1' -d eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig_x",
            "curl 'https://a.blob.core.windows.net/c?sv=2022&SIG=REDACTED&se=1' -d REDACTED",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(scrub_patterns(input), want, "input {input:?}");
    }
}

#[test]
fn redact_handles_every_form() {
    assert_eq!(
        redact("postgresql://u:p%40ss@h:5/db?sslmode=require"),
        "postgresql://u:REDACTED@h:5/db?sslmode=require"
    );
    assert_eq!(
        redact("host=h password='a b\\'c' user=u"),
        "host=h password=REDACTED user=u"
    );
    assert_eq!(
        redact("host=h password = x user=u"),
        "host=h password =REDACTED user=u"
    );
    assert_eq!(
        redact("postgres://h/db?password=x&user=u"),
        "postgres://h/db?password=REDACTED&user=u"
    );
    assert_eq!(redact("host=h"), "host=h");
    // Keys ending in password, values with `&` or escapes, keys after a newline.
    assert_eq!(
        redact("host=db sslkey=/k sslpassword=KeyPass1 port=5"),
        "host=db sslkey=/k sslpassword=REDACTED port=5"
    );
    assert_eq!(
        redact("host=db password=a&hunter2 gssencmode=disable"),
        "host=db password=REDACTED gssencmode=disable"
    );
    assert_eq!(redact("password=ab\\ cd x=1"), "password=REDACTED x=1");
    assert_eq!(
        redact("host=db\npassword=s3cret\nport=5"),
        "host=db\npassword=REDACTED\nport=5"
    );
    // Unencoded `@`, `/` and `?` in a URL's password, an `@` in its user name: nothing
    // of the password is left.
    for url in [
        "postgres://app:P@ssw0rd@db.example/app",
        "postgres://u:a/b@h:99999/db",
        "postgres://u:a?b@h/db?sslmode=require",
        "postgresql://pgadmin@myserver:S3cret@myserver.example/postgres",
    ] {
        let out = redact(url);
        assert!(
            out.starts_with("postgres") && out.contains(":REDACTED@"),
            "{out}"
        );
        for piece in ["ssw0rd", "a/b", "a?b", "S3cret"] {
            assert!(!out.contains(piece), "{url} -> {out}");
        }
    }
    // A quote inside a bare value, a `#` inside a query value: part of the password.
    assert_eq!(
        redact("host=db password=ab'cd user=u"),
        "host=db password=REDACTED user=u"
    );
    assert_eq!(
        redact("postgres://h/db?password=ab#cd"),
        "postgres://h/db?password=REDACTED"
    );
    // Other schemes keep what their user info cannot hold: not a port and a path's `@`.
    for text in [
        "GET https://api.example.com:443/v1/users/alice@example.com",
        r#"{"url":"http://h:80/x","who":"a@b"}"#,
    ] {
        assert_eq!(redact(text), text);
    }
    assert_eq!(redact("https://u:pw@h/x"), "https://u:REDACTED@h/x");
}

#[test]
fn a_user_and_password_given_to_an_option_hide_the_password() {
    for (input, want) in [
        (
            "curl -u patroni:s3cret -XPOST http://pg1:8008/failover",
            "curl -u patroni:REDACTED -XPOST http://pg1:8008/failover",
        ),
        ("curl --user=a:b x", "curl --user=a:REDACTED x"),
        ("curl -u 'a:b c' x", "curl -u 'a:REDACTED' x"),
        ("curl -ua:b", "curl -ua:REDACTED"),
        ("curl -u patroni http://h", "curl -u patroni http://h"),
        (
            "az login --service-principal -u app -p Xy9~secret --tenant t",
            "az login --service-principal -u app -p REDACTED --tenant t",
        ),
        (
            "sshpass -p 's3 cret' ssh pg1",
            "sshpass -p 'REDACTED' ssh pg1",
        ),
        ("tool -p --next", "tool -p --next"),
        (
            "redis-cli -h r1 -a SecretValA3 ping",
            "redis-cli -h r1 -a REDACTED ping",
        ),
        (
            "ldapsearch -x -D cn=admin -w 'Secret Val' -b dc=x",
            "ldapsearch -x -D cn=admin -w 'REDACTED' -b dc=x",
        ),
        (
            "ls -a /tmp; curl -w '%{http_code}' x",
            "ls -a /tmp; curl -w '%{http_code}' x",
        ),
        (
            "ldappasswd -x -wBindPw44 -s NewPw55 -a \"Old Pw\" uid=u; ldapsearch -s sub -w x",
            "ldappasswd -x -wREDACTED -s REDACTED -a \"REDACTED\" uid=u; ldapsearch -s sub -w REDACTED",
        ),
        ("sshpass -p 123abc ssh", "sshpass -p REDACTED ssh"),
        // Digits no port can be: a password.
        ("sshpass -p 20240917 ssh", "sshpass -p REDACTED ssh"),
        ("x -p 65536 -p127.0.0.1:123456", "x -p REDACTED -pREDACTED"),
        ("x -p '5432x'", "x -p 'REDACTED'"),
        ("DB_PASS=x dbPass: y", "DB_PASS=REDACTED dbPass: REDACTED"),
        (
            "dbpass=x tool --adminpass z rootpass: y",
            "dbpass=REDACTED tool --adminpass REDACTED rootpass: REDACTED",
        ),
        ("sshpass -p '$ecret' ssh", "sshpass -p 'REDACTED' ssh"),
        ("sshpass -p /b64+x= ssh", "sshpass -p REDACTED ssh"),
        ("sshpass -p /b6/4+x ssh", "sshpass -p REDACTED ssh"),
        ("MY_SECRET_KEY=k", "MY_SECRET_KEY=REDACTED"),
        // Inside a JSON log line, where the quotes come escaped.
        (
            r#""sshpass -p \"s3 cret\" ssh""#,
            r#""sshpass -p \"REDACTED\" ssh""#,
        ),
        ("tool --username=a:b", "tool --username=a:b"),
        // Attached to `-p` (mysql), unless a port, a path or an option's name.
        ("mysql -pTrigS3cretA -P3306 x", "mysql -pREDACTED -P3306 x"),
        (
            "psql -p5432 -h db; find . -print; cc -pthread; cp -pR a b; rsync -paAX x",
            "psql -p5432 -h db; find . -print; cc -pthread; cp -pR a b; rsync -paAX x",
        ),
        (
            "tool --pw TrigS3cretG --key=TrigS3cretK --credentials admin:TrigS3cretL",
            "tool --pw REDACTED --key=REDACTED --credentials REDACTED",
        ),
        (
            "sudo -u postgres pg_ctl promote",
            "sudo -u postgres pg_ctl promote",
        ),
    ] {
        assert_eq!(scrub_patterns(input), want, "input {input:?}");
    }
}

#[test]
fn the_oldest_rotated_secret_is_forgotten_first_and_a_given_one_never() {
    let mut known = Known {
        fixed: Vec::new(),
        rotated: Vec::new(),
        longest_first: Vec::new(),
    };
    let forms = |s: &str| [s.to_string(), String::new(), String::new()];
    known.add(forms("the-dsn-password"), false);
    let three = |s: &str| [s.to_string(), format!("{s}-json"), format!("{s}-html")];
    known.add(three("the-first-and-longest-rotated-secret"), true);
    for i in 0..MAX_ROTATED {
        known.add(forms(&format!("rotated-{i}")), true);
    }
    // Forgotten whole, every form of it.
    assert!(!known
        .longest_first
        .iter()
        .any(|s| s.starts_with("the-first")));
    assert_eq!(known.rotated.len(), MAX_ROTATED);
    let kept = |s: &str| known.longest_first.contains(&s.to_string());
    assert!(!kept("the-first-and-longest-rotated-secret"));
    assert!(
        kept("the-dsn-password"),
        "a given secret is never forgotten"
    );
    assert!(kept(&format!("rotated-{}", MAX_ROTATED - 1)));
    assert_eq!(known.longest_first[0], "the-dsn-password");
}

#[test]
fn secrets_given_to_the_process_are_remembered_before_anything_parses_them() {
    let args = [
        "pgdrill",
        "--failover-command=curl http://patroni:8008/failover -H 'From: ops@corp.example'",
        "POSTGRES://app:q\"u'o<te>7d1e@db.example/app",
        "--dsn=postgresql://app:pw-e5a1/with@slash@db/app",
    ];
    let env = [
        ("VAULT_TOKEN", "s.vault-9c2d41"),
        ("MY_API_KEY", "key-31b7f0"),
        ("SSHPASS", "ssh-6a0c93"),
        ("NO_PROXY_BYPASS", "bypass-host-4e2a"),
        ("PWD", "/home/app/checkout"),
        ("DISABLE_TOKEN", "1"),
        ("PGDRILL_PASSWORD_FILE", "/run/secrets/pg-file"),
        ("CACHE_URL", "redis://:a@cache:6379"),
        ("DATABASE_URL", "postgres://app:url-4f0b@db/app"),
    ];
    remember_given(
        args.iter().map(|s| s.to_string()),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let text = "unexpected argument 'POSTGRES://app:q\"u'o<te>7d1e@db.example/app' \
                + vault login s.vault-9c2d41 key-31b7f0 pw-e5a1/with@slash in /home/app/checkout 1";
    let text = format!("{text} url-4f0b ssh-6a0c93");
    let out = scrub(&text);
    for secret in ["7d1e", "9c2d41", "31b7f0", "pw-e5a1", "url-4f0b", "6a0c93"] {
        assert!(!out.contains(secret), "{out}");
    }
    assert!(out.contains("/home/app/checkout 1"), "{out}");
    assert!(scrub("at bypass-host-4e2a").ends_with("bypass-host-4e2a"));
    for place in ["/run/secrets/pg-file", "cache", "8008/failover -H"] {
        assert!(scrub(&format!("at {place} and a")).ends_with(&format!("{place} and a")));
    }
    assert!(out.contains("@db.example/app"), "{out}");
}

#[test]
fn a_secret_that_is_a_key_word_does_not_hide_the_key() {
    let env = [("POSTGRES_PASSWORD", "Password"), ("JWT_SECRET", "secret")];
    remember_given(
        std::iter::empty(),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    );
    remember("pass");
    let out = scrub("psql \"host=db password=Other1\" --token tok-6b1e secret: s3-77c1");
    for secret in ["Other1", "tok-6b1e", "s3-77c1"] {
        assert!(!out.contains(secret), "{out}");
    }
    assert!(out.contains("password="), "{out}");
}

#[test]
fn a_cut_moves_an_option_with_its_word_and_leaves_a_remembered_secret_room() {
    // Far enough from the end that no remembered secret moves the cut first.
    let text = format!(
        "{} --password hunter2 {}",
        "x".repeat(100),
        "y".repeat(200_000)
    );
    // Inside the value, right before the key, or inside its dashes.
    for at in [110, 103, 102] {
        assert_eq!(
            safe_cut(&text, at, 50),
            101,
            "at {at}: before `--`, not `password`"
        );
        let (first, rest) = text.split_at(safe_cut(&text, at, 50));
        assert!(!scrub(first).contains("hunter2") && !scrub(rest).contains("hunter2"));
    }
    // A token whose second dot is past the end of what was read: the cut goes before it.
    // (Long, so that no secret another test remembers moves the cut below it first.)
    let token = format!(
        "{} eyJ{}.{}",
        "x".repeat(100_000),
        "a".repeat(50),
        "b".repeat(10_000)
    );
    let cut = safe_cut(&token, token.len() - 10, 50_000);
    assert!(cut <= 100_001, "{cut}");
    // Its word starts below the floor: cut where asked, regardless (and the search ends).
    assert_eq!(safe_cut(&text, 110, 104), 110);

    // A remembered secret that goes on after the text is not split by the cut.
    let secret: String = (0..500).map(|i| format!("lc{i:04}")).collect();
    remember(&secret);
    let text = format!("{}{}", "y".repeat(10_000), &secret[..1_000]);
    let cut = safe_cut(&text, 10_500, 5_000);
    assert!(cut <= 10_000, "{cut}");

    // A floor inside a character (byte 42,006 of 84,012, the second of an `é`): the cut is
    // still between two.
    let text = format!("a{}password={}", "é".repeat(32_000), "z".repeat(20_002));
    let floor = text.len() / 2;
    assert!(!text.is_char_boundary(floor));
    assert!(text.is_char_boundary(safe_cut(&text, text.len() - 10, floor)));
}

#[test]
fn a_dsn_that_does_not_parse_hides_a_password_key_without_its_equals_sign_or_scheme() {
    for (dsn, shown) in [
        (
            "host=db.example password hunter2xyz dbname=app",
            "host=db.example password REDACTED …",
        ),
        ("host=h Password:hunter2xyz", "host=h Password:REDACTED …"),
        (
            "postgres:/app:Hunter2xyz@db.example/app",
            "postgres:REDACTED@ …",
        ),
        (
            "postgres//app:Hunter2xyz@db/app",
            "postgres//app:REDACTED@ …",
        ),
        // `password=` is still `redact`'s.
        ("password=a\"b port=x", "password=REDACTED …"),
    ] {
        assert_eq!(redact_unparsed(dsn).0, shown);
    }
    // Where the parser's reason (`expected '=' but got 'h'`) is not quoted from.
    assert_eq!(redact_unparsed("password hunter2xyz").1, "password ".len());
}

#[test]
fn a_url_that_does_not_parse_shows_nothing_of_its_password_whatever_it_holds() {
    for (dsn, shown) in [
        ("postgres://u:a\"b@h:x/db", "postgres://u:REDACTED@ …"),
        ("postgres://u:a'b@c<d@h:x/db", "postgres://u:REDACTED@ …"),
        ("host=h password=a\"b port=x", "host=h password=REDACTED …"),
        // An `@` in the query is no user info's end.
        (
            "postgres://u@h/db?password=ab cd:ef@g&bogus=1",
            "postgres://u@h/db?password=REDACTED …",
        ),
        // User info in the authority: to the last `@` before a `/` or `?`.
        (
            "postgres://u:p\"w@h1,h2/db?port=1,2,3",
            "postgres://u:REDACTED@ …",
        ),
        // One after a `/` or `?`, which no pattern finds before it: nothing after the scheme.
        ("POSTGRES://u?x:pw12@h/db", "POSTGRES://REDACTED …"),
        (
            "POSTGRES://u?x:a%2Fb@h/db?sslmode=require",
            "POSTGRES://REDACTED …",
        ),
        ("POSTGRES://u:p/\"w@h", "POSTGRES://REDACTED …"),
        ("POSTGRES://dom/u:pw@h/db", "POSTGRES://REDACTED …"),
        // An `@` and a `:` in the query are no password.
        (
            "postgres://u@h/db?application_name=a:b@c&bogus=1",
            "postgres://u@h/db?application_name=a:b@c&bogus=1",
        ),
        (
            "postgres://u@h?application_name=a:b@c&bogus=1",
            "postgres://u@h?application_name=a:b@c&bogus=1",
        ),
    ] {
        assert_eq!(redact_unparsed(dsn).0, shown);
    }
    assert_eq!(
        redact_unparsed("postgres://u:a\"b@h:x/db").1,
        "postgres://u:".len()
    );
    // Whatever the password holds (a port count is checked before anything parses).
    assert_eq!(
        redact("postgres://u:p\"w@h1,h2/db?port=1,2,3"),
        "postgres://u:REDACTED@h1,h2/db?port=1,2,3"
    );
    // A log line that starts with a URL goes on in words.
    let line = "http://patroni:8008 failover ok, paged oncall@example.com";
    assert_eq!(redact(line), line);
    // A scheme in capitals, as a parser's reason may quote it.
    assert_eq!(
        redact("unknown option `POSTGRES://u:p@w@h/db?sslmode`"),
        "unknown option `POSTGRES://u:REDACTED@h/db?sslmode`"
    );
}

#[test]
fn a_secret_in_a_command_line_is_hidden_when_its_program_prints_it_alone() {
    remember_in_command("notify --password 'tall giraffe 42' --token=s3cr3t-value -v x");
    remember_in_command("curl -u 'ops:blue whale 7' https://example.test");
    let printed = "using tall giraffe 42; then s3cr3t-value; then blue whale 7; -v x";
    assert_eq!(
        scrub(printed),
        "using REDACTED; then REDACTED; then REDACTED; -v x"
    );
    // A key and value quoted as one word, or its value with escaped spaces: all of it.
    remember_in_command(r#"t "--token=rho sigma 77" --password="alpha beta 11" -x"#);
    remember_in_command(r"t --client-secret kappa\ lambda\ 55");
    assert_eq!(
        scrub("rho sigma 77 / alpha beta 11 / kappa lambda 55 / kappa\\ lambda\\ 55"),
        "REDACTED / REDACTED / REDACTED / REDACTED"
    );
    // A line that does not split, or holds no secret, remembers nothing.
    remember_in_command("echo 'unbalanced plain-words-here");
    remember_in_command("echo plain-words-there");
    assert_eq!(
        scrub("plain-words-here plain-words-there"),
        "plain-words-here plain-words-there"
    );
}

#[test]
fn an_output_line_ending_in_a_key_keeps_the_logs_own_fields() {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    for format in ["text", "coloured", "json"] {
        for line in [
            "usage: mysql -p",
            "usage: mysql -p ",
            "Enter password:",
            "see --password",
            "password: ",
        ] {
            let buf = Buf::default();
            let out = buf.clone();
            let log = tracing_subscriber::fmt()
                .with_ansi(format == "coloured")
                .with_writer(move || out.clone());
            let events = || {
                tracing::info!(
                    event = "trigger_output",
                    trigger = 1,
                    stream = "stdout",
                    "{line}"
                );
                tracing::info!(stream = "stderr", "--password-command: {line}");
                tracing::warn!(error = %line, sqlstate = "28P01", "cannot connect");
            };
            match format {
                "json" => tracing::subscriber::with_default(log.json().finish(), events),
                _ => tracing::subscriber::with_default(log.finish(), events),
            }
            let written = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
            let scrubbed = scrub_patterns(&written);
            assert!(
                !scrubbed.contains(REDACTED),
                "{format}: {written:?} -> {scrubbed:?}"
            );
        }
    }
    // What the log's structure looks like, but is not: secrets after their keys.
    for (leak, secret) in [
        ("mysql -p event=1", "event=1"),
        ("password: stream", "stream"),
        (r#"{"password":",x"}"#, ",x"),
        (r#"{"password":"]}"}"#, "]}"),
        ("--password=]}Xy7q more", "Xy7q"),
        ("--token ]&abc9 more", "abc9"),
        (r#"token="hunter=""#, "hunter"),
        (r#"--password 'abc="def"'"#, "def"),
        (r#"SECRET_KEY=xyz="abc" python"#, "xyz"),
        (r#"Authorization: Bearer abc="x""#, "abc"),
        ("sshpass -p letmein= ssh db1", "letmein"),
        (r#"{"message":"run -p \"s3cret\" now"}"#, "s3cret"),
        (r#"{"error":"token: \"s3cret\" n"}"#, "s3cret"),
        (r#"{"error":"password=\"s3cret\""}"#, "s3cret"),
    ] {
        let got = scrub_patterns(leak);
        assert!(!got.contains(secret), "{leak} -> {got}");
    }
}
