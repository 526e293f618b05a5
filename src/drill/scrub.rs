//! Removes anything that looks like a password from text a trigger printed or from the
//! command line itself, before it reaches a log line, the summary or the report.

use crate::config::dsn;

const REDACTED: &str = "REDACTED";

/// Key names whose values are secrets, matched case-insensitively as a suffix of the key
/// (`PGPASSWORD=`, `"administratorLoginPassword": "…"`, `accessToken: …`, `client_secret=`).
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

/// Scrubs text with the known secret values (the DSN's password, the last password read
/// from a file or command) and with the patterns in [`scrub_patterns`].
#[derive(Clone, Default)]
pub struct Scrubber {
    literals: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} literal secrets)", self.literals.len())
    }
}

impl Scrubber {
    pub fn new(literals: impl IntoIterator<Item = String>) -> Scrubber {
        let mut literals: Vec<String> = literals.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so that a secret containing another is replaced whole.
        literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
        literals.dedup();
        Scrubber { literals }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.literals {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        scrub_patterns(&out)
    }
}

/// Connection strings (URL user info, `password=`) as [`dsn::redact`] does, then the value
/// after any key ending in one of [`SECRET_KEYS`] followed by `=` or `:`.
pub fn scrub_patterns(text: &str) -> String {
    let text = dsn::redact(text);
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
        let Some(mut value_start) = value_start(bytes, key_end) else {
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
            None => b.is_ascii_whitespace() || matches!(b, b',' | b';' | b'&' | b'}' | b')'),
        };
        if end {
            break;
        }
        // A backslash escapes the next byte inside quotes (JSON, libpq).
        i += if quote.is_some() && b == b'\\' { 2 } else { 1 };
    }
    i.min(bytes.len())
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
            "x",
            "pwd",
            "\n",
            "secret",
            "REDACTED",
        ];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(14);
        for _ in 0..20_000 {
            let n = rng.random_range(0..12);
            let text: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let out = Scrubber::new(["x".to_string()]).scrub(&text);
            // Each secret becomes REDACTED at most once per character of the input.
            assert!(out.len() <= text.len() * 9 + 8, "{text:?} -> {out:?}");
            assert!(!out.contains('x'), "{text:?} -> {out:?}");
        }
    }

    #[test]
    fn known_secret_values_are_scrubbed_anywhere() {
        let s = Scrubber::new(["pa55".to_string(), String::new(), "pa55word!".to_string()]);
        assert_eq!(s.scrub("x pa55word! y pa55"), "x REDACTED y REDACTED");
        assert_eq!(format!("{s:?}"), "Scrubber(2 literal secrets)");
        // An empty secret would otherwise replace between every character.
        assert_eq!(Scrubber::new([String::new()]).scrub("abc"), "abc");
    }
}
