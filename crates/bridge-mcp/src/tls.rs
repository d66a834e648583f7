//! HTTPS for the HTTP server: a certificate chain and its private key from
//! PEM files, served with rustls and its `ring` provider (the one provider
//! of the whole workspace: mixing `ring` and `aws-lc-rs` in one process
//! panics when rustls picks a default).
//!
//! The files are read again on `SIGHUP` ([`Certificates::reload`]): a
//! renewed certificate is served to every new connection, open connections
//! keep theirs, and a bad file leaves the previous certificate in place
//! (with a warning naming the file), so a botched renewal never takes the
//! hub down.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The crypto provider of the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a certificate or key cannot be served. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read the TLS {what} {}: {cause}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (said in the message, so not a `source`).
        cause: io::Error,
    },
    /// No PEM certificate in the certificate file.
    #[error(
        "the TLS certificate {} holds no PEM certificate (a block starting \
         -----BEGIN CERTIFICATE-----)",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No PEM private key in the key file.
    #[error(
        "the TLS key {} holds no PEM private key (a block starting -----BEGIN PRIVATE KEY-----, \
         -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key cannot sign, or does not belong to the certificate.
    #[error("the TLS key {} does not go with the certificate {}: {reason}", key.display(), certificate.display())]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        certificate: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// Where the certificate chain and its key are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificates: the server's first, then its chain.
    pub certificate: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files.
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = read(&self.certificate, "certificate")?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.certificate.clone(),
            });
        }
        let key = read(&self.key, "key")?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| TlsError::NoKey {
            path: self.key.clone(),
        })?;
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|error| {
            TlsError::Mismatch {
                key: self.key.clone(),
                certificate: self.certificate.clone(),
                reason: error.to_string(),
            }
        })?;
        Ok(Arc::new(certified))
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

/// The certificate being served, replaceable while the server runs.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads `files`; fails with a sentence naming the file at fault.
    pub fn load(files: TlsFiles) -> Result<Arc<Certificates>, TlsError> {
        let current = files.load()?;
        Ok(Arc::new(Certificates {
            files,
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again and serves them to new connections; on an
    /// error, keeps serving the previous ones.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.files.load()?;
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = fresh;
        Ok(())
    }

    /// The files, for log lines.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A server configuration that serves the current certificate, HTTP/1.1
    /// only (what the MCP server speaks).
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, rustls::Error> {
        let resolver: Arc<dyn ResolvesServerCert> = Arc::clone(self) as _;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        ))
    }
}

/// Reloads `certificates` at every signal of `hangups` (`SIGHUP`), saying in
/// the log what came of it; without TLS, says there is nothing to reload
/// (rather than let the signal end the server).
pub async fn reload_on_hangup(
    certificates: Option<Arc<Certificates>>,
    mut hangups: tokio::signal::unix::Signal,
) {
    while hangups.recv().await.is_some() {
        let Some(certificates) = &certificates else {
            tracing::info!("SIGHUP: nothing to read again (no --tls-cert)");
            continue;
        };
        let files = certificates.files();
        match certificates.reload() {
            Ok(()) => tracing::info!(
                certificate = %files.certificate.display(),
                "SIGHUP: serving the TLS certificate read again to new connections"
            ),
            Err(error) => tracing::warn!("SIGHUP: {error}; still serving the previous certificate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn generated(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    #[test]
    fn each_bad_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (certificate, key) = generated("hub.test");
        let (_, other_key) = generated("other.test");
        let good_certificate = write(dir.path(), "cert.pem", &certificate);
        let good_key = write(dir.path(), "key.pem", &key);
        let load = |certificate: &Path, key: &Path| {
            Certificates::load(TlsFiles {
                certificate: certificate.to_path_buf(),
                key: key.to_path_buf(),
            })
            .map(|_| ())
            .map_err(|error| error.to_string())
        };
        assert_eq!(load(&good_certificate, &good_key), Ok(()));

        let missing = dir.path().join("missing.pem");
        let error = load(&missing, &good_key).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "cannot read the TLS certificate {}: No such file",
                missing.display()
            )),
            "{error}"
        );
        let error = load(&good_certificate, &missing).unwrap_err();
        assert!(
            error.starts_with(&format!("cannot read the TLS key {}", missing.display())),
            "{error}"
        );

        let not_pem = write(dir.path(), "not.pem", "hello\n");
        assert_eq!(
            load(&not_pem, &good_key).unwrap_err(),
            format!(
                "the TLS certificate {} holds no PEM certificate (a block starting \
                 -----BEGIN CERTIFICATE-----)",
                not_pem.display()
            )
        );
        // A certificate given as the key: PEM, but no key in it.
        let error = load(&good_certificate, &good_certificate).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "the TLS key {} holds no PEM private key",
                good_certificate.display()
            )),
            "{error}"
        );

        let stranger = write(dir.path(), "other-key.pem", &other_key);
        let error = load(&good_certificate, &stranger).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "the TLS key {} does not go with the certificate {}",
                stranger.display(),
                good_certificate.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (first, key) = generated("hub.test");
        let files = TlsFiles {
            certificate: write(dir.path(), "cert.pem", &first),
            key: write(dir.path(), "key.pem", &key),
        };
        let certificates = Certificates::load(files.clone()).unwrap();
        let served = |certificates: &Certificates| {
            certificates
                .current
                .read()
                .unwrap()
                .end_entity_cert()
                .unwrap()
                .to_vec()
        };
        let before = served(&certificates);

        std::fs::write(&files.certificate, "broken").unwrap();
        assert!(certificates.reload().is_err());
        assert_eq!(served(&certificates), before);

        let (second, key) = generated("hub.test");
        std::fs::write(&files.certificate, second).unwrap();
        std::fs::write(&files.key, key).unwrap();
        certificates.reload().unwrap();
        assert_ne!(served(&certificates), before);
    }
}
