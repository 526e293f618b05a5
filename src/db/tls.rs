//! TLS the libpq way, on rustls (ring provider).
//!
//! tokio-postgres only understands `sslmode` disable/prefer/require and never verifies anything
//! itself, so `config::dsn` takes `sslmode` and `sslrootcert` (and `PGSSLMODE`/`PGSSLROOTCERT`)
//! into [`TlsSettings`], which this module turns into rustls with libpq's verification rules (the
//! table in docs/configuration.md#tls: prefer and require check no certificate unless
//! `sslrootcert` is given). When the chain is checked without `sslrootcert` (or with
//! `sslrootcert=system`), it is against the system's trusted roots, not libpq's
//! `~/.postgresql/root.crt`: pgdrill's users run in containers whose system store they manage.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::ConfigError;

labelled! {
    /// libpq's `sslmode` values (`allow` is treated as `prefer`: both accept either).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SslMode {
        Disable = "disable",
        Prefer = "prefer",
        Require = "require",
        VerifyCa = "verify-ca",
        VerifyFull = "verify-full",
    }
}

impl SslMode {
    pub fn parse(value: &str) -> Option<SslMode> {
        SslMode::from_label(if value == "allow" { "prefer" } else { value })
    }

    /// The mode tokio-postgres gets: whether to ask for TLS and whether it is mandatory.
    pub fn for_tokio_postgres(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        }
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// Not given: the system store, used only by verify-ca / verify-full.
    Default,
    /// `sslrootcert=system`: the system store, also for prefer / require.
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

/// What the server certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// TLS as configured by the connection string, validated.
#[derive(Clone)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: RootCert,
    pub connector: MakeRustlsConnect,
}

impl TlsSettings {
    /// Builds the rustls configuration now, so that an unreadable `sslrootcert` is a
    /// configuration error at start rather than a connection error forever after.
    pub fn new(mode: SslMode, root_cert: RootCert) -> Result<TlsSettings, ConfigError> {
        let verify = verification(mode, &root_cert);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("sslmode", mode.as_str(), e.to_string()))?;
        let algorithms = provider.signature_verification_algorithms;
        let chain = match verify {
            Verify::Nothing => None,
            Verify::Chain | Verify::ChainAndName => {
                let roots = Arc::new(load_roots(&root_cert)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider).build();
                let label = root_cert_label(&root_cert);
                Some(webpki.map_err(|e| ConfigError::new("sslrootcert", label, e.to_string()))?)
            }
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (verify, chain) {
            (Verify::ChainAndName, Some(webpki)) => webpki,
            (_, chain) => Arc::new(LibpqVerifier { chain, algorithms }),
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsSettings {
            mode,
            root_cert,
            connector: MakeRustlsConnect::new(config),
        })
    }

    /// The CA certificates a server certificate's chain is checked against, for messages.
    pub fn trusted_cas(&self) -> String {
        match &self.root_cert {
            RootCert::File(p) => format!("the CA certificates in sslrootcert={}", p.display()),
            RootCert::Default | RootCert::System => {
                "the system's trusted CA certificates".to_string()
            }
        }
    }

    /// `sslmode=... [sslrootcert=...]` for printable descriptions.
    pub fn describe(&self) -> String {
        let mode = self.mode.as_str();
        match &self.root_cert {
            RootCert::Default => format!("sslmode={mode}"),
            other => format!("sslmode={mode} sslrootcert={}", root_cert_label(other)),
        }
    }
}

fn verification(mode: SslMode, root_cert: &RootCert) -> Verify {
    match mode {
        SslMode::VerifyFull => Verify::ChainAndName,
        SslMode::VerifyCa => Verify::Chain,
        // libpq verifies the chain whenever a root certificate is configured.
        SslMode::Prefer | SslMode::Require if *root_cert != RootCert::Default => Verify::Chain,
        SslMode::Prefer | SslMode::Require | SslMode::Disable => Verify::Nothing,
    }
}

fn root_cert_label(root_cert: &RootCert) -> String {
    match root_cert {
        RootCert::Default => String::new(),
        RootCert::System => "system".to_string(),
        RootCert::File(p) => p.display().to_string(),
    }
}

fn load_roots(root_cert: &RootCert) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    let path = match root_cert {
        RootCert::Default | RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = "no trusted CA certificates found in the system store; set sslrootcert \
                           to the PEM file of the CA that signed the server certificate";
                return Err(ConfigError::new("sslrootcert", "system", why));
            }
            return Ok(roots);
        }
        RootCert::File(path) => path,
    };
    let bad = |why: String| ConfigError::new("sslrootcert", path.display(), why);
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        let why = "contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)";
        return Err(bad(why.into()));
    }
    Ok(roots)
}

/// verify-ca (`chain`): the chain must lead to a trusted root; the name in it is not checked.
/// prefer / require without a root certificate (no `chain`): encrypted, not authenticated (libpq's
/// semantics). Either way the handshake signatures are checked against the presented key.
#[derive(Debug)]
struct LibpqVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name last, after the chain and validity succeeded.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS failure in libpq's words, with what to fix (`trusted`: [`TlsSettings::trusted_cas`]), from
/// tokio-postgres's and rustls's error chain (`invalid peer certificate: UnknownIssuer`).
pub fn explain(detail: &str, trusted: &str) -> String {
    let unknown_issuer;
    let (what, fix) = if detail.contains("server does not support TLS") {
        (
            "server does not support SSL, but SSL was required",
            "enable ssl on the server, or use sslmode=prefer (encrypt when offered) or \
             sslmode=disable",
        )
    } else if detail.contains("NotValidForName") || detail.contains("not valid for name") {
        (
            "server certificate verification failed: the server certificate does not match \
             the host name connected to",
            "connect with a host name listed in the certificate (hostaddr= can pin the IP), \
             or use sslmode=verify-ca",
        )
    } else if detail.contains("CaUsedAsEndEntity") || detail.contains("SelfSigned") {
        (
            "server certificate verification failed: self-signed certificate (the server \
             presents a CA certificate as its own, which rustls never accepts, even as \
             sslrootcert)",
            "give the server a certificate issued by a CA and set sslrootcert to that CA, or \
             use sslmode=require to encrypt without verifying",
        )
    } else if detail.contains("UnknownIssuer") || detail.contains("unknown issuer") {
        unknown_issuer = format!(
            "server certificate verification failed: unable to get local issuer certificate \
             (the certificate is signed by none of {trusted})"
        );
        (
            unknown_issuer.as_str(),
            "set sslrootcert to the PEM file of the CA that issued it (for Azure, the \
             DigiCert/Microsoft roots)",
        )
    } else if detail.contains("Expired") || detail.contains("certificate expired") {
        (
            "server certificate verification failed: certificate has expired",
            "renew the server certificate, or fix this machine's clock",
        )
    } else if detail.contains("NotValidYet") || detail.contains("certificate not valid yet") {
        (
            "server certificate verification failed: certificate is not yet valid",
            "fix this machine's clock, or the certificate's validity period",
        )
    } else if detail.contains("BadSignature") {
        (
            "server certificate verification failed: certificate signature failure",
            "the certificate chain is broken or tampered with: check sslrootcert and the \
             server's certificate files",
        )
    } else if detail.contains("received corrupt message") {
        (
            "the server's answer to the TLS request is not TLS",
            "check the port: is a PostgreSQL server listening there, not SSH or another \
             service?",
        )
    } else {
        return format!(
            "SSL error: {detail} (fix: check sslmode and sslrootcert against the server's TLS setup)"
        );
    };
    format!("{what} (fix: {fix})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_verification_rules() {
        let file = RootCert::File("/ca.pem".into());
        assert_eq!(
            verification(SslMode::Prefer, &RootCert::Default),
            Verify::Nothing
        );
        assert_eq!(
            verification(SslMode::Require, &RootCert::Default),
            Verify::Nothing
        );
        assert_eq!(verification(SslMode::Require, &file), Verify::Chain);
        assert_eq!(
            verification(SslMode::VerifyCa, &RootCert::Default),
            Verify::Chain
        );
        assert_eq!(
            verification(SslMode::VerifyFull, &file),
            Verify::ChainAndName
        );
        assert_eq!(SslMode::VerifyCa.for_tokio_postgres(), PgSslMode::Require);
        assert_eq!(SslMode::parse("allow"), Some(SslMode::Prefer));
        assert_eq!(SslMode::parse("verify_full"), None);
    }

    #[test]
    fn missing_or_empty_root_cert_is_a_config_error() {
        let e = TlsSettings::new(
            SslMode::VerifyFull,
            RootCert::File("/nonexistent/ca.pem".into()),
        )
        .map(drop)
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sslrootcert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = TlsSettings::new(SslMode::VerifyCa, RootCert::File(empty))
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        assert!(TlsSettings::new(SslMode::Require, RootCert::Default).is_ok());
    }

    const SYSTEM: &str = "the system's trusted CA certificates";

    #[test]
    fn failures_read_as_libpq_words_them() {
        let system = TlsSettings::new(SslMode::Require, RootCert::Default).map(|t| t.trusted_cas());
        assert_eq!(system.as_deref().ok(), Some(SYSTEM));
        let e = explain(
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer",
            "the CA certificates in sslrootcert=/etc/ca.pem",
        );
        assert!(
            e.contains("unable to get local issuer")
                && e.contains("signed by none of the CA certificates in sslrootcert=/etc/ca.pem")
                && e.contains("fix: set sslrootcert"),
            "{e}"
        );
        let e = explain(
            "invalid peer certificate: NotValidForNameContext { .. }",
            SYSTEM,
        );
        assert!(
            e.contains("does not match the host name") && e.contains("verify-ca"),
            "{e}"
        );
        let e = explain(
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
            SYSTEM,
        );
        assert!(
            e.starts_with("server certificate verification failed: self-signed"),
            "{e}"
        );
        assert!(!e.contains("OtherError"), "{e}");
        let e = explain(
            "error performing TLS handshake: server does not support TLS",
            SYSTEM,
        );
        assert!(
            e.starts_with("server does not support SSL, but SSL was required"),
            "{e}"
        );
        assert!(explain("invalid peer certificate: Expired", SYSTEM).contains("has expired"));
        // As rustls 0.23 says them, with the verification time.
        let expired = "invalid peer certificate: certificate expired: verification time \
                       1800000000 (UNIX), but certificate is not valid after 1700000000 \
                       (100000000 seconds ago)";
        assert!(
            explain(expired, SYSTEM).contains("has expired"),
            "{}",
            explain(expired, SYSTEM)
        );
        let early = "invalid peer certificate: certificate not valid yet: verification time 1";
        assert!(
            explain(early, SYSTEM).contains("not yet valid"),
            "{}",
            explain(early, SYSTEM)
        );
        // An SSH server's banner taken for a TLS yes.
        let ssh = "error performing TLS handshake: received corrupt message of type \
                   InvalidContentType";
        assert!(
            explain(ssh, SYSTEM).contains("check the port"),
            "{}",
            explain(ssh, SYSTEM)
        );
    }
}
