//! A DSN parse error's text: the parser's reason, unless it would quote a piece of the password.

use std::error::Error;

use super::UNSUPPORTED_KEYS;
use crate::secrets::{redact, REDACTED};

/// `shown` cut after the `=` of the key the parser did not know: a misspelled `password`
/// (`pasword=…`) is still a password.
pub(super) fn without_unknown_value(shown: &str, err: &tokio_postgres::Error) -> String {
    let detail = err.source().map(ToString::to_string).unwrap_or_default();
    let Some(key) = detail
        .strip_prefix("unknown option `")
        .and_then(|k| k.strip_suffix('`'))
    else {
        return shown.to_string();
    };
    // The key as a word, then `=` (libpq and tokio-postgres allow spaces around it).
    let at = shown.match_indices(key).find_map(|(i, _)| {
        let word = i == 0 || shown[..i].ends_with([' ', '\t', '\n', '?', '&']);
        let after = &shown[i + key.len()..];
        let value = after.trim_start().strip_prefix('=').filter(|_| word)?;
        Some(shown.len() - value.len())
    });
    match at {
        Some(end) => format!("{}(not shown) …", &shown[..end]),
        None => shown.to_string(),
    }
}

/// The parser's reason for rejecting `parsed`, unless it found its fault in or after the
/// password (an unquoted space in it: the reason would quote a piece of it). The parser names
/// the byte it did not expect, or quotes a key: one named before the password is kept.
pub(super) fn describe_parse_error(err: &tokio_postgres::Error, parsed: &str) -> String {
    let Some(source) = err.source() else {
        return err.to_string();
    };
    let detail = source.to_string();
    let (_, password_from) = crate::secrets::redact_unparsed(parsed);
    let (before, from_password) = parsed.split_at(password_from);
    // In a URL the password ends at its `@`: a fault in the query after it is no piece of it.
    let url_password = crate::secrets::url_password_at(parsed, false);
    let from_password = url_password.clone().map_or(from_password, |p| &parsed[p]);
    let keys_before = unquoted(before);
    let named_before = |key: &str| {
        keys_before
            .split_whitespace()
            .any(|w| w.split_once('=').map_or(w, |(k, _)| k) == key)
    };
    let at_byte = detail
        .strip_prefix("unexpected character at byte ")
        .and_then(|rest| rest.split(':').next()?.parse::<usize>().ok());
    let in_password = match at_byte {
        Some(byte) => byte >= password_from,
        None => {
            let names_a_known_key = detail.starts_with("invalid value for option");
            let mut quoted = detail.split('`').skip(1).step_by(2);
            // A key the parser quotes from before the password may run into it (a URL the
            // parser does not take for one): shown only with the password hidden.
            let runs_into = |t: &str| {
                parsed.find(t).is_some_and(|i| {
                    i < password_from
                        && i + t.len() > password_from
                        && !(redact(t).get(password_from - i..))
                            .is_some_and(|rest| rest.starts_with(REDACTED))
                })
            };
            !names_a_known_key
                && quoted.any(|t| {
                    !t.is_empty()
                        && !UNSUPPORTED_KEYS.split(' ').any(|key| key == t)
                        && (from_password.contains(t) && !named_before(t) || runs_into(t))
                })
        }
    };
    if in_password && url_password.is_some() {
        return format!(
            "{err} in the password (not shown); in a URL, a password's @ : / ? # % and spaces \
             are percent-encoded (%40 for @)"
        );
    }
    if in_password {
        return format!(
            "{err} in or after the password (not shown); a password with spaces, quotes or \
             backslashes goes in single quotes, with \\' and \\\\ inside"
        );
    }
    // Each quoted piece alone, as `runs_into` judged it (one starting with a URL is read as one).
    let pieces: Vec<String> = detail.split('`').map(redact).collect();
    format!("{err}: {}", pieces.join("`"))
}

/// `text` without what libpq reads as quoted (a value that starts with `'`) or escaped: a
/// word in a quoted value is no key.
fn unquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut quoted, mut escaped, mut value_starts) = (false, false, false);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' if quoted => quoted = false,
            '\'' if value_starts => quoted = true,
            _ if quoted => {}
            c => out.push(c),
        }
        value_starts = !quoted && !escaped && (c == '=' || value_starts && c.is_whitespace());
    }
    out
}
