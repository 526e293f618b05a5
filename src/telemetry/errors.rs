//! Every distinct error of a failed write, visible: the first of each (class, SQLSTATE) is logged
//! with the server's message (again after a minute without it; per message where one SQLSTATE
//! has several causes: PgBouncer's 08P01, a privilege, a constraint, a trigger), and
//! the summary lists each with its count and one message. One count per failed write, as in
//! `pgdrill_transaction_errors_total`; failed connection attempts are counted apart.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ErrorClass;

/// Distinct (class, SQLSTATE) pairs kept; SQLSTATEs are a finite set, this only bounds memory
/// against a server inventing codes. Later pairs are not listed.
const MAX_KINDS: usize = 128;
/// The SQLSTATE of the row that counts the kinds beyond [`MAX_KINDS`].
const OTHER_SQLSTATES: &str = "*";
/// The message kept per kind is cut here (server messages can quote long values).
pub(crate) const MAX_MESSAGE: usize = 500;

/// One kind of error seen, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorKind {
    #[serde(deserialize_with = "class_name")]
    pub class: ClassName,
    /// Empty for failures without one (refused connects, closed connections).
    pub sqlstate: String,
    pub count: u64,
    /// The first occurrence's message.
    pub message: String,
}

/// An error class's name read back from a summary, as the `&'static str` the running code
/// uses; a name this version does not know reads as `other`.
fn known(name: &str) -> &'static str {
    ErrorClass::from_label(name)
        .unwrap_or(ErrorClass::Other)
        .as_str()
}

/// A class name; the alias keeps serde from borrowing a `&'static str` from the input.
pub type ClassName = &'static str;

/// `deserialize_with` for one class name.
pub fn class_name<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    String::deserialize(d).map(|s| known(&s))
}

/// `deserialize_with` for a list of class names.
pub fn class_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<&'static str>, D::Error> {
    Vec::<String>::deserialize(d).map(|v| v.iter().map(|s| known(s)).collect())
}

/// A kind seen again after this long without it is logged again: a canary's privilege
/// revoked on day 60 is said as on day 3, and a second failover's errors as the first's,
/// not only counted. A kind that keeps coming is said once.
const SAID_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// One kind's count, first message, and when it was last seen.
struct Seen {
    count: u64,
    message: String,
    last: Instant,
}

/// Errors by (class, SQLSTATE, [`variant`]), first message kept.
#[derive(Default)]
pub struct ErrorBook {
    kinds: Mutex<BTreeMap<(ErrorClass, String, String), Seen>>,
}

/// Where one SQLSTATE has several causes, each message is its own kind, so that a second cause is
/// logged, not only counted: PgBouncer sends all its own errors as 08P01 (`query_wait_timeout`,
/// `server conn crashed?`...); 42501 names the table, then the sequence, once INSERT is granted
/// back; a second CHECK constraint, a trigger's own `RAISE` (P0001). Bounded by [`MAX_VARIANTS`].
fn variant(class: ErrorClass, sqlstate: &str, message: &str) -> String {
    if sqlstate == "08P01" || class == ErrorClass::Rejected {
        let message = crate::error::without_endpoint(message);
        message.chars().take(80).collect()
    } else {
        String::new()
    }
}

/// Messages kept apart; beyond them (a message quoting a value), one kind per SQLSTATE: the 128
/// kinds stay for other SQLSTATEs.
const MAX_VARIANTS: usize = 16;

/// What to change for errors that the database will keep returning (`rejected`, see
/// [`crate::error::classify_sqlstate`]): `None` for those a retry, a reconnect or a failover
/// can end.
pub fn hint(class: ErrorClass, sqlstate: &str) -> Option<&'static str> {
    if class != ErrorClass::Rejected {
        return None;
    }
    Some(match sqlstate {
        "42501" => "pgdrill's user lacks a privilege (the message names it): it needs CONNECT on the database, INSERT and SELECT on the table, USAGE on its id sequence",
        "42P01" => "the table does not exist (dropped or renamed?); pgdrill creates it only at startup",
        "42703" => "a column pgdrill writes does not exist (dropped or renamed?)",
        "42704" => "something the statement or a startup option (options= in --dsn, PGOPTIONS) names does not exist (the message says what)",
        s if s.starts_with("42") => "the statement does not fit the table any more (changed by DDL?)",
        "2200H" => "the id sequence reached its maximum value: ALTER SEQUENCE … AS bigint MAXVALUE … (an int4 serial ends at 2147483647)",
        s if s.starts_with("22") => "a column's type or size does not take pgdrill's values",
        s if s.starts_with("23") => "a constraint (NOT NULL, CHECK, UNIQUE, FOREIGN KEY) rejects pgdrill's rows",
        s if s.starts_with("P0") => "a trigger or rule on the table raised it (the message says why)",
        _ => "a trigger or rule on the table suppressed the row, or refused it (the message says why)",
    })
}

/// A message as kept and logged: scrubbed, cut at [`MAX_MESSAGE`] characters.
fn cut(message: &str) -> String {
    crate::secrets::scrub(message)
        .chars()
        .take(MAX_MESSAGE)
        .collect()
}

/// Logs a kind (`again`: after a minute without it); at ERROR with a hint if retrying cannot fix it.
fn log(class: ErrorClass, sqlstate: &str, message: &str, again: bool) {
    match (hint(class, sqlstate), again) {
        (Some(hint), false) => tracing::error!(class = %class, sqlstate, error = %message, hint,
            "error that retrying will not fix (first occurrence)"),
        (Some(hint), true) => tracing::error!(class = %class, sqlstate, error = %message, hint,
            "error that retrying will not fix (again, after a minute without it)"),
        (None, false) => tracing::warn!(class = %class, sqlstate, error = %message,
            "first error of this kind (later ones are counted)"),
        (None, true) => tracing::warn!(class = %class, sqlstate, error = %message,
            "error of this kind again, after a minute without it (later ones are counted)"),
    }
}

impl ErrorBook {
    /// Counts one error; logs the first of a kind, and one after [`SAID_AGAIN_AFTER`] without it.
    pub fn note(&self, class: ErrorClass, sqlstate: Option<&str>, message: &str) {
        self.note_at(class, sqlstate, message, Instant::now());
    }

    /// [`ErrorBook::note`] at `now`; whether it was logged.
    fn note_at(
        &self,
        class: ErrorClass,
        sqlstate: Option<&str>,
        message: &str,
        now: Instant,
    ) -> bool {
        // A SQLSTATE has five characters: a server sending more gets no more memory here.
        let sqlstate = sqlstate.unwrap_or("");
        let sqlstate = &sqlstate[..sqlstate.floor_char_boundary(5)];
        let mut key = (
            class,
            sqlstate.to_string(),
            variant(class, sqlstate, message),
        );
        let mut kinds = self.kinds.lock();
        let variants = || kinds.keys().filter(|k| !k.2.is_empty()).count();
        if !key.2.is_empty() && !kinds.contains_key(&key) && variants() >= MAX_VARIANTS {
            key.2 = String::new();
        }
        if let Some(seen) = kinds.get_mut(&key) {
            seen.count += 1;
            let quiet = now.saturating_duration_since(seen.last) >= SAID_AGAIN_AFTER;
            seen.last = now;
            drop(kinds);
            if quiet {
                log(class, sqlstate, &cut(message), true);
            }
            return quiet;
        }
        if kinds.len() >= MAX_KINDS {
            // Listed together per class, so that the table still adds up to the total.
            let rest = kinds
                .entry((class, OTHER_SQLSTATES.to_string(), String::new()))
                .or_insert(Seen {
                    count: 0,
                    message: "SQLSTATEs beyond the first 128 kinds, counted together".into(),
                    last: now,
                });
            rest.count += 1;
            return false;
        }
        let message = cut(message);
        let seen = Seen {
            count: 1,
            message: message.clone(),
            last: now,
        };
        kinds.insert(key, seen);
        drop(kinds);
        log(class, sqlstate, &message, false);
        true
    }

    /// Every kind seen, by class then SQLSTATE (then message, see [`variant`]).
    pub fn kinds(&self) -> Vec<ErrorKind> {
        self.kinds
            .lock()
            .iter()
            .map(|((class, sqlstate, _), seen)| ErrorKind {
                class: class.as_str(),
                sqlstate: sqlstate.clone(),
                count: seen.count,
                message: seen.message.clone(),
            })
            .collect()
    }

    /// Counts per SQLSTATE (summed over classes), for the progress line.
    pub fn per_sqlstate(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for kind in self.kinds().into_iter().filter(|k| !k.sqlstate.is_empty()) {
            *out.entry(kind.sqlstate).or_insert(0) += kind.count;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::error::SqlState;

    #[test]
    fn a_kind_quiet_for_a_minute_is_said_again() {
        let book = ErrorBook::default();
        let t0 = Instant::now();
        let note = |at| book.note_at(ErrorClass::AdminShutdown, Some("57P01"), "terminating", at);
        let s = Duration::from_secs;
        // A failover, another 90 s later, then one every 50 s: a kind that keeps coming.
        let said: Vec<bool> = [t0, t0 + s(1), t0 + s(91), t0 + s(141), t0 + s(191)]
            .into_iter()
            .map(note)
            .collect();
        assert_eq!(said, [true, false, true, false, false]);
        assert_eq!(book.kinds()[0].count, 5);
    }

    #[test]
    fn kinds_are_counted_and_the_first_message_kept() {
        let book = ErrorBook::default();
        book.note(
            ErrorClass::Rejected,
            Some("42703"),
            "column \"seq\" does not exist",
        );
        let shutdown = |message| book.note(ErrorClass::AdminShutdown, Some("57P01"), message);
        shutdown("terminating connection due to administrator command");
        shutdown("a later message");
        book.note(ErrorClass::ConnectRefused, None, "connection refused");
        let kinds = book.kinds();
        assert_eq!(kinds.len(), 3);
        let stopped = kinds.iter().find(|k| k.sqlstate == "57P01").unwrap();
        assert_eq!(
            (stopped.count, stopped.message.as_str()),
            (2, "terminating connection due to administrator command")
        );
        let per = book.per_sqlstate();
        assert_eq!(per.get("42703"), Some(&1));
        assert_eq!(per.get("57P01"), Some(&2));
        assert_eq!(per.len(), 2, "no SQLSTATE, no entry: {per:?}");
    }

    #[test]
    fn each_pgbouncer_message_is_said_once() {
        let book = ErrorBook::default();
        let t0 = Instant::now();
        let note = |sqlstate, message| {
            book.note_at(ErrorClass::ConnectionClosed, Some(sqlstate), message, t0)
        };
        let said = [
            note("08P01", "server conn crashed?"),
            note("08P01", "server conn crashed?"),
            note("08P01", "no more connections allowed (max_client_conn)"),
            // Elsewhere the SQLSTATE is the kind: its first message stands for it.
            note(
                "57P01",
                "terminating connection due to administrator command",
            ),
            note(
                "57P01",
                "terminating connection due to idle-session timeout",
            ),
        ];
        assert_eq!(said, [true, false, true, true, false]);
        let per = book.per_sqlstate();
        assert_eq!((per["08P01"], per["57P01"]), (3, 2));
    }

    /// INSERT granted back, the sequence still revoked: the new cause is said, not counted under
    /// the table's message.
    #[test]
    fn a_second_cause_under_the_same_sqlstate_is_logged_and_listed() {
        let book = ErrorBook::default();
        let table = "permission denied for table pgdrill_writes";
        let sequence = "permission denied for sequence pgdrill_writes_transaction_id_seq";
        let said: Vec<bool> = [table, table, sequence, sequence]
            .into_iter()
            .map(|m| book.note_at(ErrorClass::Rejected, Some("42501"), m, Instant::now()))
            .collect();
        assert_eq!(said, [true, false, true, false]);
        let kinds = book.kinds();
        let listed: Vec<(&str, u64)> = kinds.iter().map(|k| (&*k.message, k.count)).collect();
        assert_eq!(listed, [(sequence, 2), (table, 2)]);
        assert_eq!(book.per_sqlstate()["42501"], 4);
    }

    #[test]
    fn pgbouncer_messages_beyond_sixteen_are_one_kind() {
        let book = ErrorBook::default();
        for i in 0..40 {
            let message = format!("server conn crashed? cached error {i}");
            book.note(ErrorClass::ConnectionClosed, Some("08P01"), &message);
        }
        book.note(ErrorClass::Rejected, Some("42501"), "permission denied");
        let kinds = book.kinds();
        assert_eq!(kinds.len(), MAX_VARIANTS + 2, "{kinds:?}");
        assert_eq!(kinds.iter().map(|k| k.count).sum::<u64>(), 41, "adds up");
    }

    #[test]
    fn memory_is_bounded() {
        let book = ErrorBook::default();
        for i in 0..1000 {
            book.note(
                ErrorClass::Other,
                Some(&format!("X{i:04}")),
                &"m".repeat(10_000),
            );
        }
        let kinds = book.kinds();
        assert_eq!(kinds.len(), MAX_KINDS + 1, "the rest in one row");
        assert!(kinds.iter().all(|k| k.message.len() <= MAX_MESSAGE));
        assert_eq!(kinds.iter().map(|k| k.count).sum::<u64>(), 1000, "adds up");
    }

    #[test]
    fn only_what_retrying_cannot_fix_has_a_hint() {
        // Classified as the lanes classify them: the class decides, the code words the hint.
        let hint_of = |code| {
            let class = crate::error::classify_sqlstate(&SqlState::from_code(code));
            hint(class, code)
        };
        for code in [
            "42501", "42703", "42P01", "42601", "22003", "23502", "23503", "P0001",
        ] {
            assert!(hint_of(code).is_some(), "{code}");
        }
        for code in ["57P01", "25006", "40001", "53300", "57014", "", "42P05"] {
            assert!(hint_of(code).is_none(), "{code}");
        }
        // A suppressed row has no SQLSTATE, and no retry ends it either.
        assert!(hint(ErrorClass::Rejected, "").is_some());
    }
}
