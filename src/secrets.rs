//! Every secret pgdrill knows, and the one function that removes them from text. A secret is
//! remembered once, where it enters the process (the DSN or `PGPASSWORD`, each value read from
//! `--password-file` or returned by `--password-command`); from then on [`scrub`] replaces it in
//! everything pgdrill writes: log lines (the log writer scrubs each event), a trigger's command
//! line and output, error messages kept for the summary, the report and `/metrics`. Patterns catch
//! what was never remembered: connection strings, `key=value` and `--option value` pairs whose key
//! names a secret.

use parking_lot::RwLock;
use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

pub const REDACTED: &str = "REDACTED";

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
    for forms in with_lines(secret).filter_map(forms) {
        KNOWN.write().add(forms, false);
    }
}

/// [`remember`] for a secret that rotates (a `--password-command`'s): kept among the newest.
pub fn remember_rotated(secret: &str) {
    for forms in with_lines(secret).filter_map(forms) {
        KNOWN.write().add(forms, true);
    }
}

/// A secret and, if it has several, each of its lines (a PEM key): output is scrubbed by line.
fn with_lines(secret: &str) -> impl Iterator<Item = &str> {
    let text = secret.trim_end_matches(['\r', '\n']);
    let lines = text.contains('\n').then(|| text.lines().map(str::trim));
    std::iter::once(secret).chain(lines.into_iter().flatten())
}

/// Secrets the process was given before any of them is parsed: the password of each argument (or
/// `--flag=` value) and environment value that is a URL (`scheme://user:password@…`, up to its last
/// `@`, as a parser may end it), and the value of each environment variable whose name says it is a
/// secret (`PGPASSWORD`, `VAULT_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `SSHPASS`; not `…_FILE` and the
/// like, which say where one is), which a trigger's `set -x` may echo.
pub fn remember_given(
    args: impl Iterator<Item = String>,
    env: impl Iterator<Item = (String, String)>,
) {
    let flag_value = |arg: String| match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => value.to_string(),
        _ => arg,
    };
    let url_password = |text: &str| url_password_at(text, false).map(|p| text[p].to_string());
    let args = args.map(flag_value).filter_map(|a| url_password(&a));
    let env = env.filter_map(|(name, value)| {
        url_password(&value).or_else(|| names_a_secret_variable(&name).then_some(value))
    });
    for secret in args.chain(env) {
        remember(secret.trim());
    }
}

/// Where the password of `text` is if it is a URL: its user info's, up to the last `@`; with
/// `authority_only`, in its authority: up to the last `@` before the first `/`, `?` or white
/// space (a log line that starts with a URL goes on in words).
pub(crate) fn url_password_at(text: &str, authority_only: bool) -> Option<std::ops::Range<usize>> {
    let (scheme, after) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let is_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    let after = match authority_only {
        true => (after.split(['/', '?', ' ', '\t', '\r', '\n']).next()).unwrap_or_default(),
        false => after,
    };
    let user_info = &after[..after.rfind('@').filter(|_| is_scheme)?];
    let (user, password) = user_info.split_once(':')?;
    let start = scheme.len() + "://".len() + user.len() + 1;
    Some(start..start + password.len()).filter(|p| !p.is_empty())
}

/// Remembers each secret the patterns find in a command line, by its words: a quoted value
/// (`--password 'correct horse'`) that the program then prints unquoted, or alone, is hidden too.
pub fn remember_in_command(line: &str) {
    let Some(words) = shlex::split(line) else {
        return;
    };
    let Ok(quoted) = shlex::try_join(words.iter().map(String::as_str)) else {
        return;
    };
    let scrubbed = shlex::split(&scrub_patterns(&quoted)).unwrap_or_default();
    if scrubbed.len() != words.len() {
        return;
    }
    for (word, clean) in words.iter().zip(&scrubbed).filter(|(w, c)| w != c) {
        let same = |a: &mut dyn Iterator<Item = (char, char)>| {
            a.take_while(|(x, y)| x == y)
                .map(|(x, _)| x.len_utf8())
                .sum::<usize>()
        };
        let start = same(&mut word.chars().zip(clean.chars()));
        let rest = (&word[start..], clean.get(start..).unwrap_or_default());
        // Redacted up to white space inside one word (`--token=rho sigma`): the value is
        // the whole rest of the argument; else up to what follows it (a URL's `@host`).
        let after = rest.1.strip_prefix(REDACTED).unwrap_or_default();
        let end = match after.starts_with(char::is_whitespace) {
            true => word.len(),
            false => word.len() - same(&mut rest.0.chars().rev().zip(rest.1.chars().rev())),
        };
        let secret = &word[start..end];
        remember(secret);
        // As a shell line may have written it: `kappa\ lambda`.
        remember(&secret.replace(' ', "\\ "));
    }
}

/// Name endings that say where a secret is, not what it is (`PGDRILL_PASSWORD_FILE`).
const A_PLACE: &[&str] = &["_FILE", "_URL", "_NAME", "_PATH", "_DIR", "_COMMAND"];

fn names_a_secret_variable(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let last_word = name.rsplit('_').next().unwrap_or_default();
    let secret = ["PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN"]
        .iter()
        .any(|word| name.contains(word))
        || name.ends_with("_KEY")
        || last_word.ends_with("PASS") && !a_pass_word(last_word);
    secret && !A_PLACE.iter().any(|s| name.ends_with(s))
}

/// Shorter secrets go to the patterns: remembered, `150` would hide in every count, `1` everywhere.
const MIN_REMEMBERED: usize = 6;

/// A secret as it is and as JSON and HTML (as maud, which writes the pages) escape it.
fn forms(secret: &str) -> Option<[String; 3]> {
    let secret = secret.trim_end_matches(['\r', '\n']);
    // Hidden first, a secret that is (part of) a key the patterns look for would hide the
    // key and so leave every other value after it in clear (`password=` read as `…=`).
    let lower = secret.to_ascii_lowercase();
    let a_key_word = KEYS.split('|').chain(SCHEMES).any(|k| k.contains(&lower));
    if secret.chars().count() < MIN_REMEMBERED || a_key_word {
        return None;
    }
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    let html = maud::html! { (secret) }.into_string();
    Some([secret.to_string(), json, html])
}

/// The words a secret is found after ([`SECRET_VALUE`]), as a pattern's alternatives: keys (in any
/// case, `pass` and `pwd` also ending a longer one), and the authorization schemes before a value.
const KEYS: &str = concat!(
    "password|passwd|passphrase|pass|pwd|pw|secret|token|authorization|",
    "api_key|api-key|apikey|access_key|access-key|accesskey|private_key|private-key|privatekey|",
    // `--oauth2-bearer …` (curl); `--auth …` (httpie), `X-Auth: …` (the dash: `auth:` is an
    // error class).
    "bearer|-auth|",
    // `--key …`, `--ssh-key=…`, `--credentials …` (the dash: a `key: value` in prose, or
    // the log target `pgdrill::db::credentials:`, is no secret).
    "-key|-credentials|-credential",
);
const SCHEMES: [&str; 2] = ["bearer", "basic"];

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
            out = Cow::Owned(replace_secret(&out, secret));
        }
    }
    drop(known);
    scrub_patterns(&out)
}

/// `text` with `secret` replaced; a secret of digits only is a number, replaced where it
/// stands alone, not inside a longer one (a count, a timestamp, an id).
fn replace_secret(text: &str, secret: &str) -> String {
    if !secret.bytes().all(|b| b.is_ascii_digit()) {
        return text.replace(secret, REDACTED);
    }
    let digit = |b: Option<&u8>| b.is_some_and(u8::is_ascii_digit);
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices(secret) {
        let bytes = text.as_bytes();
        let (before, after) = (&bytes[..at], &bytes[at + secret.len()..]);
        let number_before = digit(before.last())
            || before.ends_with(b".") && digit(before.len().checked_sub(2).map(|i| &before[i]));
        let number_after = digit(after.first()) || after.starts_with(b".") && digit(after.get(1));
        if at < copied || number_before || number_after {
            continue;
        }
        out.push_str(&text[copied..at]);
        out.push_str(REDACTED);
        copied = at + secret.len();
    }
    out.push_str(&text[copied..]);
    out
}

/// Key names whose values are secrets, matched case-insensitively as a suffix of the key
/// (`PGPASSWORD=`, `"administratorLoginPassword": "…"`, `accessToken: …`, `client_secret=`,
/// `--admin-password …`, `X-Api-Key: …`) or, in an environment variable's name, before
/// more of it (`AWS_SECRET_ACCESS_KEY=`), then `=` or `:` and the value, or (for an option, see
/// [`scrub_patterns`]) white space and the value, unless that is another option. The one
/// capture group that matched is the value.
static SECRET_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    let key = format!("(?:{KEYS}|(?-i:(?:SECRET|PASSWORD|TOKEN)_[A-Z0-9_]*))");
    let pair = format!(r#"["']? *[=:] *{}"#, value(""));
    let option = format!(r"(?P<option>[[:space:]]+){}", value("-"));
    Regex::new(&format!("(?i)(?P<key>{key})(?:{pair}|{option})")).expect("a valid pattern")
});

/// A value: quoted (to its closing quote; a backslash escapes the next character, as in
/// JSON and libpq) or bare (to white space, a separator or a quote, so that a bare value
/// inside a JSON or HTML string ends with it). An authorization scheme before it
/// (`Bearer eyJ…`) is kept; otherwise it must not start with a character of `not_first`.
fn value(not_first: &str) -> String {
    let schemes = SCHEMES.map(|s| format!("{s} ")).join("|");
    let quoted = |q: char| {
        let char = format!(r"[^{q}\\]|\\(?s:.)?");
        format!(r"{q}(?:(?:{schemes})((?:{char})+)|((?:[^{q}\\{not_first}]|\\(?s:.)?)(?:{char})*))")
    };
    let bare = r#"[^[:space:],;&})"'\\"#;
    let (double, single) = (quoted('"'), quoted('\''));
    // Quoted inside a JSON string (a JSON log line's server message): to the escaped quote.
    let escaped = format!(r#"\\"([^"\\{not_first}][^"\\]*)"#);
    format!(r"(?:{escaped}|{double}|{single}|(?:{schemes})({bare}]+)|({bare}{not_first}]{bare}]*))")
}

/// A URL's user info: `scheme://user:password@` (group 1 or 2 all but the password). For
/// `postgres://`, the password runs to the last `@` before white space, a quote, `<`, `>` or
/// `,` (tokio-postgres ends it at the first `@`, libpq at a `/`: an unencoded `@`, `/` or
/// `?` in it must leave no piece behind, and a user name may hold an `@`); for any other
/// scheme, it is what the standard allows there.
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    // ASCII white space only: Unicode classes cost half a megabyte of compiled pattern.
    let postgres = r#"((?i:postgres(?:ql)?)://[^:/? \t\r\n"'<>,]*:)[^ \t\r\n"'<>,]*@"#;
    let other = r#"(://[^:/?@ \t\r\n"'<>]*:)[^/?@ \t\r\n"'<>]*@"#;
    Regex::new(&format!("{postgres}|{other}")).expect("a valid pattern")
});

/// A URL's user info without its scheme (`app:pw@db.example:5432/app`, as a `host=` or
/// `PGHOST` may hold by mistake): after white space, `host=`, `,` or a quote, a user (which may
/// hold an `@`), `:`, and the password (not starting `//`, a URL's) to the last `@` before
/// white space or a quote (group 1 all but the password).
static USER_INFO: LazyLock<Regex> = LazyLock::new(|| {
    let password = r#"(?:[^/ \t\r\n"'][^ \t\r\n"']*)?"#;
    Regex::new(&format!(
        r#"((?:^|[ \t\r\n,"']|(?i:host)=)[^ \t\r\n=,"'/:]*:){password}@"#
    ))
    .expect("a valid pattern")
});

/// `password=` and any key ending in it (`sslpassword=`): in a connection string (also right after
/// a closing quote, as libpq reads it), the value to white space with libpq's quoting and backslash
/// escapes, or in double quotes as a shell writes it (group 1 the key); in a URL query, to the next
/// `&` (group 2 the key), and the value of any percent-encoded key (`pass%77ord=` is `password=`).
static DSN_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)((?:^|[\s'])[a-z0-9_]*password\s*=)\s*(?:'(?:[^'\\]|\\(?s:.)?)*'?|"(?:[^"\\]|\\(?s:.)?)*"?|(?:[^\s\\]|\\(?s:.)?)*)|([?&](?:[a-z0-9_]*password|[^=&\s]*%[^=&\s]*)=)[^&\s]*"#,
    )
    .expect("a valid pattern")
});

/// What only a connection string that does not parse is read for: a `password` key without
/// its `=` (`password hunter2`, `password: …`; group 1 all but the password), or user info
/// after a mistyped scheme (`postgres:/u:pw@`, `postgres//u:pw@`; group 2).
static UNPARSED_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    let key = r"(?i)([a-z0-9_]*password(?:\s+|[^a-z0-9_\s]\s*))\S";
    // Not in a URL (`scheme://`, [`redact`]'s): no `//` after a `:`.
    let password = r#"(?:(?:[^/\s"']|/[^/\s"'])[^\s"']*)?"#;
    Regex::new(&format!(
        r#"{key}|((?:^|[\s,"':]|:/|[^:]//)[^\s=,"'/:]*:){password}@"#
    ))
    .expect("a valid pattern")
});

/// Tokens that say what they are whatever stands before them: JSON web tokens (Entra's),
/// GitHub, GitLab and Slack keys, and an Azure SAS signature (`&sig=…`).
static TOKEN_SHAPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
        r"|\b(?:gh[pousr]_|github_pat_|glpat-|xox[abeprs]-)[A-Za-z0-9_-]{16,}",
        r#"|(?P<keep>(?i:[?&]sig=))[^&\s"'<>]+"#,
    ))
    .expect("a valid pattern")
});

/// The start of a JSON web token that runs to the end of the text: its second dot (which
/// [`TOKEN_SHAPE`] needs) may be in what has not been read yet, so no cut goes inside it.
static TOKEN_START_AT_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\beyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?\z").expect("a valid pattern")
});

/// A user name and password given to an option (`curl -u patroni:s3cret`, `--user=name:pass`,
/// httpie's `--auth name:pass`, quoted or not), or a password to `-p` (`az login -u app -p …`,
/// `sshpass -p …`, `mysql -p…`): the one capture group that matched is the password; groups 4 to 7
/// are `-p`'s (4 single-quoted, 7 attached), whose value is kept when it is a port or a path
/// ([`a_port_or_a_path`]), or, attached, letters that read as options.
static PASSWORD_OPTION: LazyLock<Regex> = LazyLock::new(|| {
    let option = r#"(?:^|[ \t'"])(?:-u[ \t]*|--(?:user|auth|credentials?)(?:[ \t]+|=))"#;
    let value = r#"'[^ \t:']*:([^']*)|"[^ \t:"]*:([^"]*)|[^ \t:'"]*:([^ \t'"]+)"#;
    let p = r#"(?:^|[ \t'"])-p[ \t]+(?:\\?'([^'\\]*)|\\?"([^"\\]*)|([^- \t'"\\][^ \t'"\\]*))"#;
    let attached = r#"(?:^|[ \t'"])-p([^- \t'"\\=;&|][^ \t'"\\;&|]*)"#;
    Regex::new(&format!("{option}(?:{value})|{p}|{attached}")).expect("a valid pattern")
});

/// A command of a program whose password options are common letters elsewhere (`ls -a`,
/// `curl -w`, `ldapsearch -s sub` keep theirs): group 1 names it.
static PROGRAM_COMMAND: LazyLock<Regex> = LazyLock::new(|| {
    let programs = r"redis-cli|valkey-cli|keydb-cli|ldap(?:search|modify|add|delete|passwd|whoami|compare|modrdn|exop|url)";
    Regex::new(&format!(r"\b({programs})\b[^\n;&|]*")).expect("a valid pattern")
});

/// A short option and its value, attached or not: group 1 the letter, then the one group that
/// matched is the value (single-quoted, double-quoted, or bare and not itself an option).
static SHORT_OPTION: LazyLock<Regex> = LazyLock::new(|| {
    let value = r#"(?:\\?'([^'\\]*)|\\?"([^"\\]*)|([^- \t'"\\][^ \t'"\\]*))"#;
    Regex::new(&format!(r"[ \t]-([A-Za-z])[ \t]*{value}")).expect("a valid pattern")
});

/// The values of [`PROGRAM_COMMAND`]'s password options: `redis-cli -a`, `ldappasswd -a -s -w`
/// (old, new and bind passwords), the other LDAP tools' `-w`.
fn redact_program_passwords(text: &str) -> String {
    PROGRAM_COMMAND
        .replace_all(text, |command: &regex::Captures| {
            let letters = match &command[1] {
                p if p.ends_with("-cli") => "a",
                "ldappasswd" => "asw",
                _ => "w",
            };
            SHORT_OPTION
                .replace_all(&command[0], |caps: &regex::Captures| {
                    let all = caps.get(0).expect("group 0 is the match");
                    match (2..caps.len()).find_map(|i| caps.get(i)) {
                        Some(value) if letters.contains(&caps[1]) => redacted_within(all, value),
                        _ => all.as_str().to_string(),
                    }
                })
                .into_owned()
        })
        .into_owned()
}

/// Connection strings (URL user info, `password=`) as [`redact`] does, an option's `user:password`
/// or `-p` ([`PASSWORD_OPTION`]), then the value after each key that names a secret
/// ([`SECRET_VALUE`]): the first such key from the left, its `key=value` form before its option
/// form; an option's word (from the last white space or quote before the key) must start with `-`.
pub fn scrub_patterns(text: &str) -> String {
    let text = redact(text);
    let text = TOKEN_SHAPE.replace_all(&text, format!("${{keep}}{REDACTED}"));
    let text = redact_program_passwords(&text);
    let text = PASSWORD_OPTION.replace_all(&text, |caps: &regex::Captures| {
        let all = caps.get(0).expect("group 0 is the match");
        let option_end = all.start() + all.as_str().find("-p").unwrap_or(0) + 2;
        let (group, password) = (1..caps.len())
            .find_map(|i| caps.get(i).map(|m| (i, m)))
            .unwrap_or((0, all));
        // `-print`, `-pthread`; `cp -pR`, `rsync -paAX`: options, not a password.
        let a_word = |p: &str| {
            p.bytes().all(|b| b.is_ascii_alphabetic())
                && (p.len() <= 4 || p.bytes().all(|b| b.is_ascii_lowercase()))
        };
        if group >= 4 && a_port_or_a_path(password.as_str(), group == 4)
            || group == 7 && a_word(password.as_str())
            || (5..=6).contains(&group) && log_structure(&text, option_end, password)
        {
            return all.as_str().to_string();
        }
        redacted_within(all, password)
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
        let value = caps
            .iter()
            .flatten()
            .last()
            .expect("every alternative captures its value");
        if caps.name("option").is_some() && !word.starts_with('-')
            || !names_a_secret(&text, named)
            || log_structure(&text, named.end(), value)
        {
            // The key's first character is ASCII: the next one starts a character.
            from = key.start() + 1;
            continue;
        }
        // An option's bare value (`--password=ab,cd`) is one shell word: it runs on past the
        // separators that end a value in JSON or YAML, to white space or a quote; one after
        // `key: ` (YAML's, `password: correct horse`) to the end of its line, a quote or
        // markup (the report is scrubbed as HTML: `&quot;`, `<td>`).
        let rest = &text[value.end()..];
        let sep = &text[named.end()..value.start()];
        // One scrubbed before, then again as part of a log line, keeps the fields after it.
        let scrubbed = text[value.start()..]
            .strip_prefix(REDACTED)
            .is_some_and(|after| after.starts_with(' ') || after.is_empty());
        let end = match word.starts_with('-') {
            true => rest.find(|c: char| c.is_ascii_whitespace() || "\"'\\".contains(c)),
            false if scrubbed => Some(0),
            false if sep.ends_with(' ') && sep.trim_end().ends_with(':') => {
                rest.find(['\r', '\n', '"', '\'', '\\', '&', '<', '>'])
            }
            false => Some(0),
        };
        let end = value.end() + end.unwrap_or(rest.len());
        out.push_str(&text[copied..value.start()]);
        out.push_str(REDACTED);
        (copied, from) = (end, end);
    }
    out.push_str(&text[copied..]);
    out
}

/// Whether what a pattern took for the value of the key ending at `key_end` is the log line's own
/// structure: others' text (a trigger's output line, a server's message) that ends in a key
/// (`Enter password:`, `-p`) is followed by the end of the JSON string it stands in, or by the
/// text format's next string field (`stream="stdout"`, coloured at a terminal or not).
fn log_structure(text: &str, key_end: usize, value: regex::Match) -> bool {
    let sep = &text[key_end..value.start()];
    let line = &text[text[..key_end].rfind('\n').map_or(0, |i| i + 1)..key_end];
    if sep.ends_with('"') && !sep.ends_with("\\\"") {
        // An unescaped quote in a JSON string ends it; the key stands in one after an odd
        // number of unescaped quotes (a quoted key's own closing quote starts `sep`).
        let quotes = line
            .match_indices('"')
            .filter(|(i, _)| !line[..*i].ends_with('\\'));
        return line.starts_with('{') && !sep.starts_with('"') && quotes.count() % 2 == 1;
    }
    let field = text[value.start()..].strip_prefix("\x1b[3m");
    let field = field.unwrap_or(&text[value.start()..]);
    let name = field.find(|c: char| !(c.is_ascii_lowercase() || c == '_'));
    let rest = &field[name.unwrap_or(0)..];
    sep.ends_with(char::is_whitespace)
        && sep.trim().len() <= 1
        && name >= Some(3)
        && (rest.starts_with("=\"") || rest.starts_with("\x1b[0m\x1b[2m=\x1b[0m\""))
}

/// The match `all` with its part `secret` redacted.
fn redacted_within(all: regex::Match, secret: regex::Match) -> String {
    let (start, end) = (secret.start() - all.start(), secret.end() - all.start());
    format!(
        "{}{REDACTED}{}",
        &all.as_str()[..start],
        &all.as_str()[end..]
    )
}

/// `-p`'s value in the commands where it is no password: a port (`psql -p 5432`, `docker run -p
/// 127.0.0.1:5432:5432/tcp`), a relative path or an absolute one of two levels or more (`mkdir -p
/// ./out /run/x`; a base64 password may start with `/`) or, unless single-quoted (where the shell
/// does not expand it, as `bash -x` shows an expanded value), a variable (`-p "$PW"`).
fn a_port_or_a_path(value: &str, single_quoted: bool) -> bool {
    let port = value.trim_end_matches("/tcp").trim_end_matches("/udp");
    // Each number one a port can be: `-p 20240917` is a password.
    let a_port = port.starts_with(|c: char| c.is_ascii_digit())
        && port.split(['.', ':', '-']).all(|n| {
            n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()) && n.parse().unwrap_or(0) <= 65535
        });
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

/// Words that end in `pass` and have nothing to do with a secret.
const PASS_WORDS: &str = "bypass compass encompass overpass surpass trespass underpass";

fn a_pass_word(word: &str) -> bool {
    PASS_WORDS.split(' ').any(|p| p.eq_ignore_ascii_case(word))
}

/// Whether a key [`SECRET_VALUE`] matched names a secret: not `pass` ending an unrelated word
/// (`bypass`), nor a variable that says where a secret is (`PASSWORD_FILE`, `TOKEN_URL`).
fn names_a_secret(text: &str, key: regex::Match) -> bool {
    let name = key.as_str();
    let start = text[..key.start()]
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .len();
    let word = &text[start..key.end()];
    let in_a_word = name.eq_ignore_ascii_case("pass") && a_pass_word(word);
    let a_place = name.contains('_') && A_PLACE.iter().any(|s| name.ends_with(s));
    !in_a_word && !a_place
}

/// A place at or before `at` to cut `text` in two that no remembered secret and no match
/// of the secret patterns crosses, so that each part scrubbed alone hides all a scrub of the
/// whole would; not before `floor` (a "secret" longer than that is cut regardless). A
/// remembered secret may go on after `text`: the cut leaves the longest one room before its
/// end. A match is moved whole with its word (`--password`), which the patterns read.
pub fn safe_cut(text: &str, mut at: usize, floor: usize) -> usize {
    let floor = text.floor_char_boundary(floor);
    let known = KNOWN.read();
    let longest = known.longest_first.first().map_or(0, String::len);
    at = at.min(text.floor_char_boundary(text.len().saturating_sub(longest).max(floor)));
    loop {
        let secrets = known.longest_first.iter().flat_map(|s| {
            text.match_indices(s.as_str())
                .map(|(i, m)| (i, i + m.len()))
        });
        let patterns = [
            &*URL_PASSWORD,
            &*USER_INFO,
            &*DSN_PASSWORD,
            &*PASSWORD_OPTION,
            &*SECRET_VALUE,
            &*TOKEN_SHAPE,
        ]
        .into_iter()
        .flat_map(|p| p.find_iter(text).map(|m| (m.start(), m.end())));
        // Ends with the text, but may go on past it: as if it did.
        let token_start = TOKEN_START_AT_END
            .find(text)
            .map(|m| (m.start(), text.len() + 1));
        // From the start of its word: a cut in `--` or right before `password` would leave
        // the value to a part that no longer reads it as an option's.
        let crossing = secrets
            .chain(patterns)
            .chain(token_start)
            .map(|(start, end)| {
                let word =
                    text[..start].rfind(|c: char| c.is_ascii_whitespace() || "\"'".contains(c));
                (word.map_or(0, |i| i + 1).min(start), start, end)
            })
            .filter(|&(word, _, end)| word < at && at < end)
            .map(|(word, start, _)| word.max(floor).min(start))
            .min();
        match crossing {
            // Only ever earlier: a match that starts before the floor is cut there.
            Some(start) if start >= floor && start < at => at = start,
            _ => return at,
        }
    }
}

/// Removes the password from a URL or key=value connection string, even one
/// that does not parse, so that error messages can quote the rest.
pub fn redact(dsn: &str) -> String {
    // A URL's password in its authority, whatever it holds (the pattern stops at a quote,
    // which may end a URL in other text).
    let dsn = match url_password_at(dsn, true) {
        Some(p) => Cow::Owned(format!("{}{REDACTED}{}", &dsn[..p.start], &dsn[p.end..])),
        None => Cow::Borrowed(dsn),
    };
    // The patterns capture what precedes the password in group 1 or 2 (one of them only).
    let url = URL_PASSWORD.replace_all(&dsn, format!("${{1}}${{2}}{REDACTED}@"));
    let url = USER_INFO.replace_all(&url, format!("${{1}}{REDACTED}@"));
    let dsn = DSN_PASSWORD.replace_all(&url, format!("${{1}}${{2}}{REDACTED}"));
    dsn.into_owned()
}

/// [`redact`] for a connection string that does not parse: nothing after its first password
/// is shown (an unquoted space splits `password=pass word`, and `word` is the password's);
/// and where that password's value begins, for the parser's reason not to quote from there.
pub fn redact_unparsed(dsn: &str) -> (String, usize) {
    // A URL's password in its authority, whatever it holds (as in `redact`).
    if let Some(password) = url_password_at(dsn, true) {
        let shown = format!("{}{REDACTED}@ …", &dsn[..password.start]);
        return (shown, password.start);
    }
    // The first match from the left (on a tie, the earlier pattern's).
    let first = [
        &*URL_PASSWORD,
        &*USER_INFO,
        &*DSN_PASSWORD,
        &*UNPARSED_PASSWORD,
    ]
    .into_iter()
    .filter_map(|pattern| Some((pattern, pattern.captures(dsn)?)))
    .min_by_key(|(_, caps)| caps.get(0).map_or(usize::MAX, |m| m.start()));
    // Where the first pattern's password begins: what is shown ends there.
    let value_from = first.as_ref().map_or(dsn.len(), |(_, caps)| {
        let all = caps.get(0).expect("group 0 is the match");
        caps.get(1)
            .or_else(|| caps.get(2))
            .map_or(all.start(), |m| m.end())
    });
    // One after a `/` or `?` (tokio-postgres reads the user info to the `@`, and a user name
    // may hold them) that would be shown: nothing after the scheme.
    let scheme_end = dsn.find("://").map_or(0, |i| i + 3);
    let hidden = url_password_at(dsn, false)
        .filter(|p| value_from > p.start && !dsn[scheme_end..p.start].contains('@'));
    if hidden.is_some() {
        return (format!("{}{REDACTED} …", &dsn[..scheme_end]), scheme_end);
    }
    let Some((pattern, caps)) = first else {
        return (redact(dsn), dsn.len());
    };
    if std::ptr::eq(pattern, &*UNPARSED_PASSWORD) {
        let at = if caps.get(2).is_some() { "@" } else { "" };
        let shown = format!("{}{REDACTED}{at} …", &dsn[..value_from]);
        return (shown, value_from);
    }
    let all = caps.get(0).expect("group 0 is the match");
    match all.end() < dsn.len() {
        true => (format!("{} …", redact(&dsn[..all.end()])), value_from),
        false => (redact(dsn), value_from),
    }
}

/// A line as text a terminal and a log file show as it is: control bytes (NUL, escape
/// sequences, carriage returns) are written as escapes, not passed on.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c.is_control() && c != '\t' {
            true => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            false => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
