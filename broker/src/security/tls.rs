//! TLS of SSL and SASL_SSL listeners (rustls): the server configuration built from the PEM
//! files (`--tls-cert`, `--tls-key`, `--tls-client-ca`), rebuilt when the files change
//! ([`TlsReloader`], checked at most once a second at accept, so a renewed certificate is
//! served to new connections without a restart), the client configuration a broker uses
//! towards another broker's TLS listener, and the principal of a client certificate in Kafka's
//! default form (`User:` + the subject DN as RFC 2253 writes it, e.g. `User:CN=client,O=example`,
//! by [`tuning::x509_name`], the coordinator's formatter too).

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::listener::TlsFiles;

/// How often at most the files' modification times are looked at.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// rustls with *ring*: no C toolchain beyond a compiler (aws-lc-rs wants cmake). rustls
/// 0.23.48 deprecates it for lacking post-quantum key exchange (X25519MLKEM768); the classic
/// groups (X25519, P-256, P-384) are what Kafka clients offer today.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("{}: {err}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM CERTIFICATE in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|err| format!("{}: {err}", path.display()))?;
    }
    Ok(roots)
}

/// The server configuration of the TLS listeners: the broker's certificate and key; with a
/// client CA, a certificate signed by it is required of every client.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|err| format!("{}: {err}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|err| format!("{}: {err}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|err| {
        format!(
            "{} and {}: {err}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.ignore_client_order = true;
    Ok(config)
}

/// What a broker uses to connect to another broker's TLS listener: it trusts `--tls-ca` (else
/// `--tls-client-ca`) and presents its own certificate when the other asks for one.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, String> {
    let ca = files.trust_ca.as_ref().or(files.client_ca.as_ref()).ok_or(
        "an inter-broker TLS listener needs --tls-ca (or --tls-client-ca): the CA \
                of the other brokers' certificates",
    )?;
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|err| format!("{}: {err}", files.key.display()))?;
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(chain, key)
        .map_err(|err| {
            format!(
                "{} and {}: {err}",
                files.cert.display(),
                files.key.display()
            )
        })
}

/// The modification times of the files a configuration was built from.
fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
    .collect()
}

struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

/// One shard's TLS server configuration, rebuilt when the PEM files change. A rebuild that
/// fails (a half-written file) keeps the previous configuration and is tried again at the next
/// check.
pub struct TlsReloader {
    files: TlsFiles,
    loaded: RefCell<Loaded>,
}

impl TlsReloader {
    pub fn load(files: &TlsFiles) -> Result<TlsReloader, String> {
        let stamps = stamps(files);
        let config = Arc::new(server_config(files)?);
        Ok(TlsReloader {
            files: files.clone(),
            loaded: RefCell::new(Loaded {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for a connection accepted now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let mut loaded = self.loaded.borrow_mut();
        if loaded.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            loaded.checked = Instant::now();
            let now = stamps(&self.files);
            if now != loaded.stamps {
                match server_config(&self.files) {
                    Ok(config) => {
                        tracing::info!("TLS: reloaded {}", self.files.cert.display());
                        loaded.config = Arc::new(config);
                        loaded.stamps = now;
                    }
                    Err(err) => tracing::warn!("TLS: keeping the previous certificate: {err}"),
                }
            }
        }
        loaded.config.clone()
    }
}

/// Kafka's default principal of a client certificate: `User:` and its subject DN in RFC 2253
/// form as Java writes it ([`tuning::x509_name`]).
pub fn certificate_principal(cert: &CertificateDer<'_>) -> Result<String, String> {
    let subject = tuning::x509_name::subject_rfc2253(cert.as_ref())
        .map_err(|err| format!("client certificate: {err}"))?;
    Ok(format!("User:{subject}"))
}
