//! Every secret pgdrill knows, and the one function that removes them from text.
//!
//! A secret is remembered once, where it enters the process (the DSN or `PGPASSWORD`, each
//! value read from `--password-file` or returned by `--password-command`); from then on
//! [`scrub`] replaces it in everything pgdrill writes: log lines (the log writer scrubs
//! each event), a trigger's command line and output, error messages kept for the summary,
//! the report and `/metrics`. Patterns catch what was never remembered: connection strings,
//! `key=value` and `--option value` pairs whose key names a secret.

use parking_lot::RwLock;
use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

const REDACTED: &str = "REDACTED";

/// The secret values seen so far, longest first (a secret containing another is replaced
/// whole). Those the configuration gives (the DSN's password, secret-named environment
/// variables) are kept for the whole run; those a `--password-command` returns rotate, so
/// only the newest [`MAX_ROTATED`] of them are, oldest forgotten first.
struct Known {
    fixed: Vec<String>,
    /// Each value's forms together: a value is forgotten whole.
    rotated: Vec<[String; 3]>,
    longest_first: Vec<String>,
}

static KNOWN: RwLock<Known> = RwLock::new(Known {
    fixed: Vec::new(),
    rotated: Vec::new(),
    longest_first: Vec::new(),
});
const MAX_ROTATED: usize = 256;

/// Remembers a secret value for the whole run: from now on it never appears in anything
/// pgdrill writes, as it is or as JSON and HTML escape it (JSON log lines, the report).
pub fn remember(secret: &str) {
    if let Some(forms) = forms(secret) {
        KNOWN.write().add(forms, false);
    }
}

/// [`remember`] for a secret that rotates (a `--password-command`'s): kept among the newest.
pub fn remember_rotated(secret: &str) {
    if let Some(forms) = forms(secret) {
        KNOWN.write().add(forms, true);
    }
}

/// Secrets the process was given before any of them is parsed: the password of each
/// argument (or `--flag=` value) and environment value that is a URL
/// (`scheme://user:password@…`, up to its last `@`, as a parser may end it), and the value of
/// each environment variable whose name says it is a secret (`PGPASSWORD`, `VAULT_TOKEN`,
/// `AWS_SECRET_ACCESS_KEY`; not `…_FILE` and the like, which say where one is), which a
/// trigger's `set -x` may echo. Values under 6 characters are left to the patterns:
/// remembered, a `1` would be hidden everywhere.
pub fn remember_given(
    args: impl Iterator<Item = String>,
    env: impl Iterator<Item = (String, String)>,
) {
    let flag_value = |arg: String| match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => value.to_string(),
        _ => arg,
    };
    let args = args
        .map(flag_value)
        .filter_map(|a| url_password(&a).map(str::to_string));
    let env = env.filter_map(|(name, value)| match url_password(&value) {
        Some(password) => Some(password.to_string()),
        None => names_a_secret_variable(&name).then_some(value),
    });
    for secret in args.chain(env) {
        let secret = secret.trim();
        if secret.chars().count() >= 6 {
            remember(secret);
        }
    }
}

/// The password of `text` if it is a URL: its user info's, up to the last `@`.
fn url_password(text: &str) -> Option<&str> {
    let (scheme, after) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let is_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    let user_info = &after[..after.rfind('@').filter(|_| is_scheme)?];
    let (_, password) = user_info.split_once(':')?;
    Some(password).filter(|p| !p.is_empty())
}

/// Name endings that say where a secret is, not what it is (`PGDRILL_PASSWORD_FILE`).
const A_PLACE: &[&str] = &["_FILE", "_URL", "_NAME", "_PATH", "_DIR", "_COMMAND"];

fn names_a_secret_variable(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let secret = ["PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN"]
        .iter()
        .any(|word| name.contains(word))
        || name.ends_with("_KEY");
    secret && !A_PLACE.iter().any(|s| name.ends_with(s))
}

/// A secret as it is and as JSON and HTML (as maud, which writes the pages) escape it.
fn forms(secret: &str) -> Option<[String; 3]> {
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return None;
    }
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    let html = maud::html! { (secret) }.into_string();
    Some([secret.to_string(), json, html])
}

impl Known {
    fn add(&mut self, forms: [String; 3], rotated: bool) {
        if rotated {
            if self.rotated.contains(&forms) {
                return;
            }
            if self.rotated.len() >= MAX_ROTATED {
                self.rotated.remove(0);
            }
            self.rotated.push(forms);
        } else {
            for form in forms {
                if !form.is_empty() && !self.fixed.contains(&form) {
                    self.fixed.push(form);
                }
            }
        }
        let rotated = self.rotated.iter().flatten().filter(|f| !f.is_empty());
        let mut all: Vec<String> = self.fixed.iter().chain(rotated).cloned().collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        self.longest_first = all;
    }
}

/// Every string in `value` scrubbed, the structure kept (the summary file).
pub fn scrub_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => *s = scrub(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(scrub_json),
        _ => {}
    }
}

/// `text` without any remembered secret and without values that look like secrets.
pub fn scrub(text: &str) -> String {
    let known = KNOWN.read();
    let mut out = Cow::Borrowed(text);
    for secret in &known.longest_first {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    drop(known);
    scrub_patterns(&out)
}

/// Key names whose values are secrets, matched case-insensitively as a suffix of the key
/// (`PGPASSWORD=`, `"administratorLoginPassword": "…"`, `accessToken: …`, `client_secret=`,
/// `--admin-password …`, `X-Api-Key: …`) or, in an environment variable's name, before
/// more of it (`AWS_SECRET_ACCESS_KEY=`), then `=` or `:` and the value, or (for an option, see
/// [`scrub_patterns`]) white space and the value, unless that is another option. The one
/// capture group that matched is the value.
static SECRET_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    let key = "(?:pass(?:word|wd|phrase)?|pwd|secret|token|authorization\
               |(?:api|access|private)[-_]?key|(?-i:(?:SECRET|PASSWORD|TOKEN)_[A-Z0-9_]*))";
    let pair = format!(r#"["']? *[=:] *{}"#, value(""));
    let option = format!(r"(?P<option>[[:space:]]+){}", value("-"));
    Regex::new(&format!("(?i)(?P<key>{key})(?:{pair}|{option})")).expect("a valid pattern")
});

/// A value: quoted (to its closing quote; a backslash escapes the next character, as in
/// JSON and libpq) or bare (to white space, a separator or a quote, so that a bare value
/// inside a JSON or HTML string ends with it). An authorization scheme before it
/// (`Bearer eyJ…`) is kept; otherwise it must not start with a character of `not_first`.
fn value(not_first: &str) -> String {
    let quoted = |q: char| {
        let char = format!(r"[^{q}\\]|\\(?s:.)?");
        format!(
            r"{q}(?:(?:bearer |basic )((?:{char})+)|((?:[^{q}\\{not_first}]|\\(?s:.)?)(?:{char})*))"
        )
    };
    let bare = r#"[^[:space:],;&})"'\\"#;
    format!(
        r"(?:{}|{}|(?:bearer |basic )({bare}]+)|({bare}{not_first}]{bare}]*))",
        quoted('"'),
        quoted('\'')
    )
}

/// A URL's user info: `scheme://user:password@` (group 1 or 2 all but the password). For
/// `postgres://`, the password runs to the last `@` before white space, a quote, `<`, `>` or
/// `,` (tokio-postgres ends it at the first `@`, libpq at a `/`: an unencoded `@`, `/` or
/// `?` in it must leave no piece behind, and a user name may hold an `@`); for any other
/// scheme, it is what the standard allows there.
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    // ASCII white space only: Unicode classes cost half a megabyte of compiled pattern.
    let postgres = r#"(postgres(?:ql)?://[^:/? \t\r\n"'<>,]*:)[^ \t\r\n"'<>,]*@"#;
    let other = r#"(://[^:/?@ \t\r\n"'<>]*:)[^/?@ \t\r\n"'<>]*@"#;
    Regex::new(&format!("{postgres}|{other}")).expect("a valid pattern")
});

/// `password=` and any key ending in it (`sslpassword=`): in a connection string (also
/// right after a closing quote, as libpq reads it), the value to white space with libpq's
/// quoting and backslash escapes, or in double quotes as a shell writes it (group 1 the
/// key); in a URL query, to the next `&` (group 2 the key), and the value of any
/// percent-encoded key (`pass%77ord=` is `password=`).
static DSN_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)((?:^|[\s'])[a-z0-9_]*password\s*=)\s*(?:'(?:[^'\\]|\\(?s:.)?)*'?|"(?:[^"\\]|\\(?s:.)?)*"?|(?:[^\s\\]|\\(?s:.)?)*)|([?&](?:[a-z0-9_]*password|[^=&\s]*%[^=&\s]*)=)[^&\s]*"#,
    )
    .expect("a valid pattern")
});

/// A user name and password given to an option (`curl -u patroni:s3cret`,
/// `--user=name:pass`, quoted or not), or a password to `-p` (`az login -u app -p …`,
/// `sshpass -p …`): the one capture group that matched is the password; groups 4 to 6 are
/// `-p`'s (4 single-quoted), whose value is kept when it is a port or a path ([`a_port_or_a_path`]).
static PASSWORD_OPTION: LazyLock<Regex> = LazyLock::new(|| {
    let option = r#"(?:^|[ \t'"])(?:-u[ \t]*|--user(?:[ \t]+|=))"#;
    let value = r#"'[^ \t:']*:([^']*)|"[^ \t:"]*:([^"]*)|[^ \t:'"]*:([^ \t'"]+)"#;
    let p = r#"(?:^|[ \t'"])-p[ \t]+(?:\\?'([^'\\]*)|\\?"([^"\\]*)|([^- \t'"\\][^ \t'"\\]*))"#;
    Regex::new(&format!("{option}(?:{value})|{p}")).expect("a valid pattern")
});

/// Connection strings (URL user info, `password=`) as [`redact`] does, an option's
/// `user:password` or `-p` ([`PASSWORD_OPTION`]), then the value
/// after each key that names a secret ([`SECRET_VALUE`]): the first such key from the left,
/// its `key=value` form before its option form; an option's word (from the last white
/// space or quote before the key) must start with `-`.
pub fn scrub_patterns(text: &str) -> String {
    let text = redact(text);
    let text = PASSWORD_OPTION.replace_all(&text, |caps: &regex::Captures| {
        let all = caps.get(0).expect("group 0 is the match");
        let (group, password) = (1..caps.len())
            .find_map(|i| caps.get(i).map(|m| (i, m)))
            .unwrap_or((0, all));
        if group >= 4 && a_port_or_a_path(password.as_str(), group == 4) {
            return all.as_str().to_string();
        }
        let (start, end) = (password.start() - all.start(), password.end() - all.start());
        format!(
            "{}{REDACTED}{}",
            &all.as_str()[..start],
            &all.as_str()[end..]
        )
    });
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(caps) = SECRET_VALUE.captures_at(&text, from) {
        let key = caps.get(0).expect("group 0 is the match");
        let word = text[..key.start()]
            .rsplit(|c: char| c.is_ascii_whitespace() || c == '"' || c == '\'')
            .next()
            .unwrap_or_default();
        let named = caps.name("key").expect("every match has its key");
        if caps.name("option").is_some() && !word.starts_with('-') || !names_a_secret(&text, named)
        {
            // The key's first character is ASCII: the next one starts a character.
            from = key.start() + 1;
            continue;
        }
        let value = caps
            .iter()
            .flatten()
            .last()
            .expect("every alternative captures its value");
        out.push_str(&text[copied..value.start()]);
        out.push_str(REDACTED);
        (copied, from) = (value.end(), value.end());
    }
    out.push_str(&text[copied..]);
    out
}

/// `-p`'s value in the commands where it is no password: a port (`psql -p 5432`, `docker run
/// -p 127.0.0.1:5432:5432/tcp`), a relative path or an absolute one of two levels or more
/// (`mkdir -p ./out /run/x`; a base64 password may start with `/`) or, unless single-quoted (where the shell does not
/// expand it, as `bash -x` shows an expanded value), a variable (`-p "$PW"`).
fn a_port_or_a_path(value: &str, single_quoted: bool) -> bool {
    let port = value.trim_end_matches("/tcp").trim_end_matches("/udp");
    let a_port = port.starts_with(|c: char| c.is_ascii_digit())
        && port
            .bytes()
            .all(|b| b.is_ascii_digit() || b".:-".contains(&b));
    // Base64 never starts with `.` or `~`; it may with `/`, so such a path needs a second
    // level and none of base64's `+` and `=`.
    let a_path = ["./", "../", "~/"].iter().any(|p| value.starts_with(p))
        || value.starts_with('/') && value.matches('/').count() >= 2 && !value.contains(['+', '=']);
    let name = value.strip_prefix('$').map(|v| {
        v.strip_prefix('{')
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or(v)
    });
    let a_variable = !single_quoted
        && name.is_some_and(|n| {
            n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    a_port || a_path || a_variable
}

/// Whether a key [`SECRET_VALUE`] matched names a secret: not `pass` ending a word that
/// has nothing to do with one (`bypass`, `compass`), nor a variable that says where a
/// secret is (`PASSWORD_FILE`, `TOKEN_URL`).
fn names_a_secret(text: &str, key: regex::Match) -> bool {
    const WORDS: &[&str] = &[
        "bypass",
        "compass",
        "encompass",
        "overpass",
        "surpass",
        "trespass",
        "underpass",
    ];
    let name = key.as_str();
    let start = text[..key.start()]
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .len();
    let word = &text[start..key.end()];
    let in_a_word =
        name.eq_ignore_ascii_case("pass") && WORDS.iter().any(|w| w.eq_ignore_ascii_case(word));
    let a_place = name.contains('_') && A_PLACE.iter().any(|s| name.ends_with(s));
    !in_a_word && !a_place
}

/// A place at or before `at` to cut `text` in two that no remembered secret and no match
/// of the secret patterns crosses, so that each part scrubbed alone hides all a scrub of the
/// whole would; not before `floor` (a "secret" longer than that is cut regardless).
pub fn safe_cut(text: &str, mut at: usize, floor: usize) -> usize {
    let known = KNOWN.read();
    loop {
        let secrets = (known.longest_first.iter()).flat_map(|s| {
            text.match_indices(s.as_str())
                .map(|(i, m)| (i, i + m.len()))
        });
        let patterns = [
            &*URL_PASSWORD,
            &*DSN_PASSWORD,
            &*PASSWORD_OPTION,
            &*SECRET_VALUE,
        ]
        .into_iter()
        .flat_map(|p| p.find_iter(text).map(|m| (m.start(), m.end())));
        let crossing = (secrets.chain(patterns))
            .filter(|&(start, end)| start < at && at < end)
            .map(|(start, _)| start)
            .min();
        match crossing {
            Some(start) if start >= floor => at = start,
            _ => return at,
        }
    }
}

/// Removes the password from a URL or key=value connection string, even one
/// that does not parse, so that error messages can quote the rest.
pub fn redact(dsn: &str) -> String {
    // Both patterns capture what precedes the password in group 1 or 2.
    let kept = |caps: &regex::Captures, after: &str| {
        let before = caps.get(1).or_else(|| caps.get(2));
        format!("{}{REDACTED}{after}", before.map_or("", |m| m.as_str()))
    };
    let url = URL_PASSWORD.replace_all(dsn, |caps: &regex::Captures| kept(caps, "@"));
    let dsn = DSN_PASSWORD.replace_all(&url, |caps: &regex::Captures| kept(caps, ""));
    dsn.into_owned()
}

/// [`redact`] for a connection string that does not parse: nothing after its first password
/// is shown (an unquoted space splits `password=pass word`, and `word` is the password's);
/// and where that password's value begins, for the parser's reason not to quote from there.
pub fn redact_unparsed(dsn: &str) -> (String, usize) {
    let first = [&*URL_PASSWORD, &*DSN_PASSWORD]
        .iter()
        .filter_map(|pattern| pattern.captures(dsn))
        .min_by_key(|caps| caps.get(0).map_or(usize::MAX, |m| m.start()));
    let Some(caps) = first else {
        return (redact(dsn), dsn.len());
    };
    let all = caps.get(0).expect("group 0 is the match");
    let value_from = caps
        .get(1)
        .or_else(|| caps.get(2))
        .map_or(all.start(), |m| m.end());
    match all.end() < dsn.len() {
        true => (format!("{} …", redact(&dsn[..all.end()])), value_from),
        false => (redact(dsn), value_from),
    }
}

/// A line as text a terminal and a log file show as it is: control bytes (NUL, escape
/// sequences, carriage returns) are written as escapes, not passed on.
pub fn printable(line: &str) -> String {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return line.to_string();
    }
    line.chars()
        .map(|c| match c {
            c if c.is_control() && c != '\t' => format!("\\x{:02x}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
        remember("qqz");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(14);
        for _ in 0..20_000 {
            let n = rng.random_range(0..12);
            let text: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let out = scrub(&text);
            // Each secret becomes REDACTED at most once per character of the input.
            assert!(out.len() <= text.len() * 9 + 8, "{text:?} -> {out:?}");
            assert!(!out.contains("qqz"), "{text:?} -> {out:?}");
        }
    }

    #[test]
    fn known_secret_values_are_scrubbed_anywhere() {
        remember("pa55");
        remember("");
        remember("pa55word!\n");
        assert_eq!(scrub("x pa55word! y pa55"), "x REDACTED y REDACTED");
        remember("a\"b<c");
        assert_eq!(scrub(r#"{"out":"a\"b<c"}"#), r#"{"out":"REDACTED"}"#);
        assert_eq!(scrub("<td>a&quot;b&lt;c</td>"), "<td>REDACTED</td>");
        // An empty secret would otherwise replace between every character.
        assert_eq!(scrub("abc"), "abc");
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
            ("tool -password  abc", "tool -password  REDACTED"),
            (
                r#"{"c": "x --token abc"}"#,
                r#"{"c": "x --token REDACTED"}"#,
            ),
            // Not an option value: the next word is another option, or no option at all.
            ("tool --password --next", "tool --password --next"),
            ("reset the password now", "reset the password now"),
            ("tool --token-file /run/t", "tool --token-file /run/t"),
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
            ("sshpass -p 123abc ssh", "sshpass -p REDACTED ssh"),
            ("x -p '5432x'", "x -p 'REDACTED'"),
            ("DB_PASS=x dbPass: y", "DB_PASS=REDACTED dbPass: REDACTED"),
            (
                "dbpass=x rootpass: y tool --adminpass z",
                "dbpass=REDACTED rootpass: REDACTED tool --adminpass REDACTED",
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
        let text = format!("{text} url-4f0b");
        let out = scrub(&text);
        for secret in ["7d1e", "9c2d41", "31b7f0", "pw-e5a1", "url-4f0b"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("/home/app/checkout 1"), "{out}");
        for place in ["/run/secrets/pg-file", "cache", "8008/failover -H"] {
            assert!(scrub(&format!("at {place} and a")).ends_with(&format!("{place} and a")));
        }
        assert!(out.contains("@db.example/app"), "{out}");
    }
}
