//! Every secret pgdrill knows, and the one function that removes them from text.
//!
//! A secret is remembered once, where it enters the process (the DSN or `PGPASSWORD`, each
//! value read from `--password-file` or returned by `--password-command`); from then on
//! [`scrub`] replaces it in everything pgdrill writes: log lines (the log writer scrubs
//! each event), a trigger's command line and output, error messages kept for the summary,
//! the report and `/metrics`. Patterns catch what was never remembered: connection strings,
//! `key=value` and `--option value` pairs whose key names a secret.

use parking_lot::RwLock;
use std::borrow::Cow;

const REDACTED: &str = "REDACTED";

/// Key names whose values are secrets, matched case-insensitively as a suffix of the key
/// (`PGPASSWORD=`, `"administratorLoginPassword": "…"`, `accessToken: …`, `client_secret=`,
/// `--admin-password …`).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "authorization",
];

/// Schemes written before a credential (`Authorization: Bearer eyJ…`): the word after
/// them is the secret.
const AUTH_SCHEMES: &[&str] = &["bearer ", "basic "];

/// The secret values seen so far, longest first (a secret containing another is replaced
/// whole). Bounded: a rotating token adds one value per rotation, and old values stay
/// secret, but a process never needs more than the last few hundred.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());
const MAX_KNOWN: usize = 256;

/// Remembers a secret value: from now on it never appears in anything pgdrill writes,
/// as it is or as JSON and HTML escape it (JSON log lines, the report).
pub fn remember(secret: &str) {
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return;
    }
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    let html = html_escaped(secret);
    let mut known = KNOWN.write();
    for form in [secret.to_string(), json, html] {
        if form.is_empty() || known.contains(&form) {
            continue;
        }
        if known.len() >= MAX_KNOWN {
            known.remove(0);
        }
        known.push(form);
    }
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// A secret's form on an HTML page: exactly as maud, which writes the pages, escapes text
/// and attributes.
pub fn html_escaped(s: &str) -> String {
    maud::html! { (s) }.into_string()
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
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    drop(known);
    scrub_patterns(&out)
}

/// Connection strings (URL user info, `password=`) as [`redact`] does, then the value
/// after any key ending in one of [`SECRET_KEYS`] followed by `=` or `:`.
pub fn scrub_patterns(text: &str) -> String {
    let text = redact(text);
    // Byte-wise, so that stepping through multi-byte characters never splits one.
    let lower = text.to_ascii_lowercase().into_bytes();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let Some(key_end) = SECRET_KEYS
            .iter()
            .find(|k| lower[i..].starts_with(k.as_bytes()))
            .map(|k| i + k.len())
        else {
            i += 1;
            continue;
        };
        // The key must end here: `tokens_used=` is a count, not a secret.
        let next = bytes.get(key_end).copied();
        if next.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            i = key_end;
            continue;
        }
        let Some(mut value_start) =
            value_start(bytes, key_end).or_else(|| option_value_start(bytes, i, key_end))
        else {
            i = key_end;
            continue;
        };
        if let Some(scheme) = AUTH_SCHEMES
            .iter()
            .find(|s| lower[value_start..].starts_with(s.as_bytes()))
        {
            value_start += scheme.len();
        }
        let value_end = value_end(bytes, value_start);
        if value_end > value_start && &text[value_start..value_end] != REDACTED {
            out.push_str(&text[copied..value_start]);
            out.push_str(REDACTED);
            copied = value_end;
        }
        i = value_end.max(key_end);
    }
    out.push_str(&text[copied..]);
    out
}

/// A command-line option that names a secret (`--admin-password VALUE`, `-token VALUE`):
/// the word holding the key starts with `-` and ends with it; its value is the next word.
fn option_value_start(bytes: &[u8], key_start: usize, key_end: usize) -> Option<usize> {
    let word_start = bytes[..key_start]
        .iter()
        .rposition(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\''))
        .map_or(0, |p| p + 1);
    if bytes.get(word_start) != Some(&b'-') || !bytes.get(key_end)?.is_ascii_whitespace() {
        return None;
    }
    let mut i = key_end;
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    if matches!(bytes.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    (i < bytes.len() && bytes[i] != b'-').then_some(i)
}

/// After a key: an optional closing quote, spaces, `=` or `:`, spaces, then the value
/// (its opening quote included in what is kept).
fn value_start(bytes: &[u8], mut i: usize) -> Option<usize> {
    if matches!(bytes.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    if !matches!(bytes.get(i), Some(b'=' | b':')) {
        return None;
    }
    i += 1;
    while bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    if matches!(bytes.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    Some(i)
}

/// A value runs to its closing quote, or to white space or a separator when unquoted.
fn value_end(bytes: &[u8], start: usize) -> usize {
    let quote = start
        .checked_sub(1)
        .and_then(|p| bytes.get(p))
        .filter(|b| matches!(b, b'"' | b'\''));
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        let end = match quote {
            Some(q) => b == *q,
            // A quote ends it too: an unquoted value inside a JSON or HTML string.
            None => {
                b.is_ascii_whitespace()
                    || matches!(b, b',' | b';' | b'&' | b'}' | b')' | b'"' | b'\'' | b'\\')
            }
        };
        if end {
            break;
        }
        // A backslash escapes the next byte inside quotes (JSON, libpq).
        i += if quote.is_some() && b == b'\\' { 2 } else { 1 };
    }
    i.min(bytes.len())
}

/// Removes the password from a URL or key=value connection string, even one
/// that does not parse, so that error messages can quote the rest.
pub fn redact(dsn: &str) -> String {
    let mut out = dsn.to_string();
    // URL form: scheme://user:password@host
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "REDACTED");
            }
        }
    }
    // key=value form, and URL query parameters: password=...
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(pos) = find_password_key(rest) {
        let (before, after) = rest.split_at(pos);
        result.push_str(before);
        let eq = after.find('=').map_or(after.len(), |i| i + 1);
        result.push_str(&after[..eq]);
        result.push_str("REDACTED");
        let value = after[eq..].trim_start();
        rest = &value[dsn_value_end(value)..];
    }
    result.push_str(rest);
    result
}

fn find_password_key(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let at = from + i;
        let boundary = at == 0 || matches!(lower.as_bytes()[at - 1], b' ' | b'?' | b'&' | b'\t');
        let after = lower[at + 8..].trim_start();
        if boundary && after.starts_with('=') {
            return Some(at);
        }
        from = at + 8;
    }
    None
}

fn dsn_value_end(value: &str) -> usize {
    if let Some(quoted) = value.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return i + 2,
                _ => escaped = false,
            }
        }
        value.len()
    } else {
        value.find([' ', '&', '\t']).unwrap_or(value.len())
    }
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
        ];
        for (input, want) in cases {
            let got = scrub_patterns(input);
            assert_eq!(got, want, "input {input:?}");
            assert!(!got.contains("hunter2") && !got.contains("s3cret"), "{got}");
        }
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
    }
}
