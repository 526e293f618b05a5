//! `--web.config.file`: TLS and basic auth on pgdrill's HTTP endpoints, in the file format of
//! Prometheus' exporter-toolkit, so the same file and `scrape_config` work as for node_exporter.
//! The subset implemented is in docs/configuration.md ("TLS and basic auth on `/metrics`"); any
//! other key is refused at start. `/healthz` answers without credentials, so probes need no secret.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use regex::Regex;

use base64::{engine::general_purpose::STANDARD, Engine};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::error::ConfigError;

const OPTION: &str = "--web.config.file";
/// What a hash in `basic_auth_users` must be, as a refusal says.
const NOT_BCRYPT: &str = "not a bcrypt hash ($2a$/$2b$/$2y$, cost 4 to 31, salt and hash; e.g. \
    from `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)";
/// Verified credentials remembered (as SHA-256 digests), so that a scrape every few seconds
/// does not cost a bcrypt verification (~50 ms of CPU at cost 10) each time. Only the ones
/// that were right: wrong passwords, however many, never push the scraper's out.
const CACHE_ENTRIES: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    tls_server_config: Option<TlsFormat>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFormat {
    cert_file: PathBuf,
    key_file: PathBuf,
    min_version: Option<String>,
}

/// The loaded file: a TLS server configuration and/or users with bcrypt hashes.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    /// Checked for a user not configured, so that the answer takes as long as for one that
    /// is (a quick refusal would tell which user names exist).
    unknown_user_hash: String,
    /// SHA-256 of (user, password, hash) of credentials verified right, never the password itself.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt at a time (as Prometheus' exporter-toolkit does): clients sending wrong
    /// passwords cannot take every core from the load.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Places in the line for [`Self::hashing`]; a request finding none is refused at once.
    queue: Arc<tokio::sync::Semaphore>,
}

/// Requests hashing or waiting to: each holds an HTTP connection that counts as serving,
/// so a flood of wrong passwords must not take every place (a scrape whose credentials are
/// cached, and `/healthz`, need no hashing).
const HASHING_QUEUE: usize = 4;

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A YAML error without the values it quotes (`invalid type: string "user:$2y$…"`): the
/// file holds password hashes, or passwords put there by mistake.
fn unquoted(message: &str) -> String {
    // To the closing quote, over escaped ones (`"a\"b"`), or to the end.
    static QUOTED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#""(?:[^"\\]|\\.)*"?"#).expect("a valid pattern"));
    QUOTED.replace_all(message, "\"…\"").into_owned()
}

fn error(path: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(OPTION, path.display().to_string(), reason.into())
}

impl WebConfig {
    /// Reads and checks the file, the certificate and key it names, and every hash.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| error(path, format!("cannot read: {e}")))?;
        let file: FileFormat =
            serde_norway::from_str(&text).map_err(|e| error(path, unquoted(&e.to_string())))?;
        let tls = file
            .tls_server_config
            .map(|t| tls_config(path, &t))
            .transpose()?;
        let mut cost = None;
        for (user, hash) in &file.basic_auth_users {
            // bcrypt's error repeats the value, maybe a password put there by mistake. A hash it
            // would refuse at the first scrape (other version, cost outside 4-31) is refused now.
            let versions = ["$2a$", "$2b$", "$2y$"];
            let user_cost = bcrypt::HashParts::from_str(hash)
                .ok()
                .filter(|_| versions.iter().any(|v| hash.starts_with(v)))
                .map(|parts| parts.get_cost())
                .filter(|cost| (4..=31).contains(cost))
                .ok_or_else(|| error(path, format!("basic_auth_users.{user}: {NOT_BCRYPT}")))?;
            cost = cost.max(Some(user_cost));
        }
        // The users' cost (htpasswd's default is 10), at most 12: a start is not held for long.
        let unknown_user_hash = match cost {
            None => String::new(),
            Some(cost) => bcrypt::hash("pgdrill: no such user", cost.min(12))
                .map_err(|e| error(path, format!("hashing: {e}")))?,
        };
        Ok(WebConfig {
            tls,
            users: file.basic_auth_users,
            unknown_user_hash,
            cache: Mutex::new(HashSet::new()),
            hashing: Arc::new(tokio::sync::Semaphore::new(1)),
            queue: Arc::new(tokio::sync::Semaphore::new(HASHING_QUEUE)),
        })
    }

    /// Whether an `Authorization` header value carries a configured user and its password;
    /// always, without hashing anything, when no user is configured (TLS only). Runs bcrypt
    /// on a blocking thread, one at a time; remembers the outcome by digest.
    pub async fn authorized(&self, header: Option<&[u8]>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.unknown_user_hash).clone();
        let known = known.is_some();
        let key = digest(&user, &password, &hash);
        if self.cache.lock().contains(&key) {
            return true;
        }
        let Ok(queued) = self.queue.clone().try_acquire_owned() else {
            return false;
        };
        // The turn goes with the hash: a client hanging up does not free it early.
        let turn = self.hashing.clone().acquire_owned().await;
        let verify = tokio::task::spawn_blocking(move || {
            let _turn = (queued, turn);
            bcrypt::verify(password, &hash)
        });
        let ok = matches!(verify.await, Ok(Ok(true))) && known;
        let mut cache = self.cache.lock();
        if ok && cache.len() < CACHE_ENTRIES {
            cache.insert(key);
        }
        ok
    }
}

/// The server configuration `t` describes; its files are relative to `path`'s directory.
fn tls_config(path: &Path, t: &TlsFormat) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let cert_path = base.join(&t.cert_file);
    let key_path = base.join(&t.key_file);
    let bad = |field: &str, what: &dyn Display, why: &dyn Display| {
        error(path, format!("tls_server_config.{field} {what}: {why}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| bad("cert_file", &cert_path.display(), &e))?;
    if certs.is_empty() {
        return Err(bad("cert_file", &cert_path.display(), &"no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| bad("key_file", &key_path.display(), &e))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => return Err(bad("min_version", &other, &"must be TLS12 or TLS13")),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| error(path, format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| error(path, format!("tls_server_config: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn basic_auth_accepts_the_user_and_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let path = write(
            dir.path(),
            "web.yml",
            &format!("basic_auth_users:\n  prom: '{hash}'\n"),
        );
        let mut web = WebConfig::load(&path).unwrap();
        assert!(!web.users.is_empty() && web.tls.is_none());
        let header = |user: &str, pw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
            )
        };
        assert!(
            web.authorized(Some(header("prom", "s3cret").as_bytes()))
                .await
        );
        // Cached the second time; still right.
        assert!(
            web.authorized(Some(header("prom", "s3cret").as_bytes()))
                .await
        );
        assert!(
            !web.authorized(Some(header("prom", "wrong").as_bytes()))
                .await
        );
        // Wrong passwords are not remembered: the right one stays, however many come.
        for n in 0..100 {
            let wrong = header("prom", &format!("wrong-{n}"));
            assert!(!web.authorized(Some(wrong.as_bytes())).await);
        }
        assert_eq!(web.cache.lock().len(), 1);
        assert!(
            !web.authorized(Some(header("other", "s3cret").as_bytes()))
                .await
        );
        assert!(!web.authorized(Some(b"Bearer x")).await);
        assert!(!web.authorized(None).await);
        assert!(!format!("{web:?}").contains(&hash));
        // No users (TLS only): every request passes.
        web.users.clear();
        assert!(web.authorized(None).await);
    }

    #[test]
    fn bad_files_name_the_flag_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("basic_auth_users:\n  prom: plain-text\n", "not a bcrypt hash"),
            // A cost bcrypt refuses to check, another version: refused at start.
            (
                "basic_auth_users:\n  prom: $2y$03$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui\n",
                "cost 4",
            ),
            (
                "basic_auth_users:\n  prom: $2x$10$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui\n",
                "not a bcrypt hash",
            ),
            ("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_ca_file: ca.crt\n", "client_ca_file"),
            ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "missing.crt"),
            ("http_server_config:\n  http2: false\n", "http_server_config"),
            // No space after the colon: a string where a map belongs, quoted by serde.
            ("basic_auth_users: prom:plain-text\n", "invalid type: string \"…\""),
            // Quoted by serde with the quote inside escaped.
            ("basic_auth_users: 'prom:a\"plain-text'\n", "invalid type: string \"…\""),
        ];
        for (text, want) in cases {
            let path = write(dir.path(), "web.yml", text);
            let e = WebConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(OPTION) && e.contains(want), "{text}: {e}");
            assert!(!e.contains("plain-text"), "the value is not repeated: {e}");
        }
        let e = WebConfig::load(&dir.path().join("nope.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
