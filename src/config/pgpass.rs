//! libpq's password file (`passfile=`, `PGPASSFILE`, else `~/.pgpass`): the password of a
//! connection string that names none, found as libpq finds it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// libpq's default socket directories: a connection through one matches `localhost`.
const SOCKET_DIRS: [&str; 3] = ["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// The password on the first line of `file` that matches the first of `hosts` (host, port)
/// that any line matches, with `dbname` and `user`; `None` without a file or a match. A file
/// that group or others may read is refused: libpq ignores one with a warning, and the run
/// would fail its authentication instead of saying why.
pub fn lookup(
    file: &Path,
    hosts: &[(String, u16)],
    dbname: &str,
    user: &str,
) -> Result<Option<String>, String> {
    let meta = match std::fs::metadata(file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    if !meta.is_file() {
        return Err("not a plain file".into());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err("group or others can read it, so libpq would ignore it: \
                    chmod 0600 it (u=rw)"
            .into());
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read it: {e}"))?;
    let entries: Vec<[Field; 5]> = text.lines().filter_map(fields).collect();
    Ok(hosts.iter().find_map(|(host, port)| {
        let host = match SOCKET_DIRS.contains(&host.as_str()) {
            true => "localhost",
            false => host.as_str(),
        };
        let wanted = [host, &port.to_string(), dbname, user];
        entries
            .iter()
            .find(|e| (0..4).all(|i| e[i].any || e[i].text == wanted[i]))
            .map(|e| e[4].text.clone())
    }))
}

/// One field of a line: its text unescaped, and whether it was a bare `*` (`\*` is a star).
#[derive(Default)]
struct Field {
    text: String,
    any: bool,
}

/// `host:port:database:user:password` with `\:` and `\\` escaped, as libpq reads it (the
/// password ends at an unescaped `:` too). `None` for a comment or a line with fewer fields.
fn fields(line: &str) -> Option<[Field; 5]> {
    let line = line.trim_end_matches('\r');
    if line.starts_with('#') {
        return None;
    }
    let mut out: [Field; 5] = Default::default();
    let (mut field, mut chars, mut escaped) = (0, line.chars(), false);
    while let Some(c) = chars.next() {
        match c {
            // A backslash ending the line is itself, as libpq keeps it.
            '\\' => {
                out[field].text.push(chars.next().unwrap_or('\\'));
                escaped = true;
            }
            ':' if field == 4 => break,
            ':' => {
                out[field].any = out[field].text == "*" && !escaped;
                (field, escaped) = (field + 1, false);
            }
            c => out[field].text.push(c),
        }
    }
    (field == 4).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn the_first_matching_line_gives_the_password_as_libpq_reads_it() {
        let f = file(
            "# comment\n\
             db1:5432:orders:app:first\\:one\r\n\
             *:*:orders:app:any\\\\host\\:with:colons\n\
             short:line\n",
            0o600,
        );
        let hosts = |h: &[(&str, u16)]| h.iter().map(|(h, p)| (h.to_string(), *p)).collect();
        let find = |h: Vec<(String, u16)>, db, user| lookup(f.path(), &h, db, user).unwrap();
        assert_eq!(
            find(hosts(&[("db1", 5432)]), "orders", "app"),
            Some("first:one".into())
        );
        assert_eq!(
            find(hosts(&[("db2", 6432), ("db1", 5432)]), "orders", "app"),
            Some("any\\host:with".into())
        );
        assert_eq!(find(hosts(&[("db1", 5432)]), "other", "app"), None);
        // An escaped star is a star, not a wildcard.
        let star = file("\\*:5432:*:*:star\n", 0o600);
        let one = |h: &str| vec![(h.to_string(), 5432)];
        assert_eq!(lookup(star.path(), &one("db9"), "d", "u").unwrap(), None);
        let found = lookup(star.path(), &one("*"), "d", "u").unwrap();
        assert_eq!(found, Some("star".into()));
        let trailing = file("*:*:*:*:ends\\\n", 0o600);
        assert_eq!(
            lookup(trailing.path(), &one("h"), "d", "u").unwrap(),
            Some("ends\\".into())
        );
        let g = file("localhost:5432:*:*:sock\n", 0o400);
        let h = vec![("/var/run/postgresql".to_string(), 5432)];
        assert_eq!(lookup(g.path(), &h, "d", "u").unwrap(), Some("sock".into()));
    }

    #[test]
    fn a_missing_file_is_none_and_one_others_can_read_is_refused() {
        let h = vec![("db1".to_string(), 5432)];
        assert_eq!(
            lookup(Path::new("/no/such/.pgpass"), &h, "d", "u"),
            Ok(None)
        );
        let f = file("*:*:*:*:pw\n", 0o644);
        let e = lookup(f.path(), &h, "d", "u").unwrap_err();
        assert!(e.contains("chmod 0600"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        assert!(lookup(dir.path(), &h, "d", "u").is_err());
    }
}
