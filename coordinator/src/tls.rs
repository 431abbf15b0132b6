//! TLS on the secure client port (zoo.cfg `secureClientPort`, `ssl.*`): the PEM files turned
//! into a rustls server configuration, reloaded when they change, client certificate
//! subjects as ZooKeeper's `x509` identities (in RFC 2253 form, by
//! [`tuning::x509_name`]), and the blocking stream halves the
//! connection threads of [`crate::server`] read and write through.
//!
//! Files, as ZooKeeper's PEM key stores: `ssl.keyStore.location` is one PEM file holding
//! the private key and the certificate chain (server certificate first);
//! `ssl.trustStore.location` holds the CA certificates client certificates must chain to.
//!
//! Reload: [`TlsAcceptor::config`] is asked once per accepted connection; at most once per
//! [`RELOAD_CHECK_INTERVAL`] it compares the files' modification time, length and inode
//! with those it loaded, and when one changed it builds a new configuration. Connections
//! already open keep the one they started with; a file that does not load (a half-written
//! replacement) is logged and the previous configuration stays in use until the files
//! change again.
//!
//! Threads: one rustls session is shared by a connection's reader and writer thread behind
//! a mutex. The reader reads the socket without the lock and takes it only to decrypt what
//! arrived (and to send handshake records); the writer takes it to encrypt and write a
//! burst. Every record is written to the socket under that lock, so records leave in the
//! order rustls numbered them. The plain client port does not go through any of this.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, TlsSettings, TlsVersion};

/// How often, at most, the certificate files are checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Ciphertext read from the socket per read call: one TLS record at most.
const RECORD_BYTES_MAX: usize = 16 * 1024 + 2048;

/// Why the TLS files could not be turned into a configuration; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Builds the rustls configuration the settings describe, reading the files now.
pub fn load_server_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    // ring, not aws-lc-rs: it builds with a C compiler alone (aws-lc-rs also needs cmake).
    // rustls marks it deprecated only because ring lacks post-quantum key exchange; the
    // classical groups it offers are what ZooKeeper clients (Java, Python ssl) speak.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_store = &settings.key_store;
    let pem = std::fs::read(key_store).map_err(|e| file_error(key_store, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key_store, format!("bad PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(
            key_store,
            "no CERTIFICATE section (the key store holds the private key and the certificate chain)",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        file_error(
            key_store,
            format!("no usable private key (PKCS#8, RSA or EC, unencrypted): {e}"),
        )
    })?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = settings
        .versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (settings.client_auth, &settings.trust_store) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (auth, Some(trust_store)) => {
            let roots = load_roots(trust_store)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Want {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| file_error(trust_store, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        (_, None) => {
            // config.rs refuses clientAuth want/need without a trust store.
            return Err(TlsError::Config(
                "client certificates are asked for but ssl.trustStore.location is not set".into(),
            ));
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| file_error(key_store, format!("key and certificate: {e}")))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| file_error(path, format!("bad PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a CA certificate rustls accepts: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file_error(path, "no CERTIFICATE section"));
    }
    Ok(roots)
}

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The secure port's current configuration, reloaded when its files change.
pub struct TlsAcceptor {
    settings: TlsSettings,
    state: Mutex<Loaded>,
}

struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<FileStamp>>,
    checked_at: Instant,
}

impl TlsAcceptor {
    /// Loads the files now: a server whose TLS files are bad does not start.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let stamps = Self::stamps(&settings);
        let config = Arc::new(load_server_config(&settings)?);
        Ok(TlsAcceptor {
            settings,
            state: Mutex::new(Loaded {
                config,
                stamps,
                checked_at: Instant::now(),
            }),
        })
    }

    fn stamps(settings: &TlsSettings) -> Vec<Option<FileStamp>> {
        std::iter::once(&settings.key_store)
            .chain(settings.trust_store.as_ref())
            .map(|p| stamp(p))
            .collect()
    }

    /// The configuration for a connection accepted now.
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked_at.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.checked_at = Instant::now();
            let stamps = Self::stamps(&self.settings);
            if stamps != state.stamps {
                // Remembered even when loading fails: the next change is tried again, a
                // broken file is not re-read every second.
                state.stamps = stamps;
                match load_server_config(&self.settings) {
                    Ok(config) => {
                        tracing::info!("secure client port: reloaded {}", self.describe_files());
                        state.config = Arc::new(config);
                    }
                    Err(e) => tracing::error!(
                        "secure client port: the changed TLS files do not load, the previous \
                         ones stay in use: {e}"
                    ),
                }
            }
        }
        state.config.clone()
    }

    fn describe_files(&self) -> String {
        match &self.settings.trust_store {
            Some(t) => format!("{} and {}", self.settings.key_store.display(), t.display()),
            None => self.settings.key_store.display().to_string(),
        }
    }
}

fn lock(session: &Mutex<ServerConnection>) -> MutexGuard<'_, ServerConnection> {
    session.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a TLS session on an accepted socket; returns its reading and writing halves.
pub fn split(config: Arc<ServerConfig>, stream: &TcpStream) -> io::Result<(TlsReader, TlsWriter)> {
    let session = ServerConnection::new(config).map_err(io::Error::other)?;
    let session = Arc::new(Mutex::new(session));
    Ok((
        TlsReader {
            tcp: stream.try_clone()?,
            session: session.clone(),
            ciphertext: vec![0; RECORD_BYTES_MAX].into_boxed_slice(),
            plaintext: Vec::new(),
            taken: 0,
            eof: false,
            handshake_done: false,
            peer_subject: None,
        },
        TlsWriter {
            tcp: stream.try_clone()?,
            session,
        },
    ))
}

/// The reading half: decrypted bytes, as a `Read`.
pub struct TlsReader {
    tcp: TcpStream,
    session: Arc<Mutex<ServerConnection>>,
    ciphertext: Box<[u8]>,
    /// Decrypted bytes not yet handed out: at most what one socket read decrypts to.
    plaintext: Vec<u8>,
    taken: usize,
    eof: bool,
    handshake_done: bool,
    peer_subject: Option<String>,
}

impl TlsReader {
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The verified client certificate's subject, once the handshake is done (given once).
    pub fn take_peer_subject(&mut self) -> Option<String> {
        self.peer_subject.take()
    }

    /// Reads the socket once and decrypts what came; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        debug_assert!(self.taken == self.plaintext.len());
        self.plaintext.clear();
        self.taken = 0;
        // Without the lock: the writer may be encrypting meanwhile.
        let n = (&self.tcp).read(&mut self.ciphertext)?;
        let mut session = lock(&self.session);
        if n == 0 {
            return Ok(false);
        }
        let mut incoming = &self.ciphertext[..n];
        while !incoming.is_empty() {
            session.read_tls(&mut incoming)?;
            let state = match session.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Tell the client why (a TLS alert), then give up on the connection.
                    let _ = session.write_tls(&mut &self.tcp);
                    let peer = self
                        .tcp
                        .peer_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    tracing::info!("secure client port: TLS with {peer} failed: {e}");
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = self.plaintext.len();
                self.plaintext.resize(start + ready, 0);
                session.reader().read_exact(&mut self.plaintext[start..])?;
            }
            if state.peer_has_closed() {
                self.eof = true;
            }
        }
        while session.wants_write() {
            session.write_tls(&mut &self.tcp)?;
        }
        if !self.handshake_done && !session.is_handshaking() {
            self.handshake_done = true;
            self.peer_subject = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| tuning::x509_name::subject_rfc2253(cert).ok());
        }
        Ok(true)
    }
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.taken == self.plaintext.len() {
            if self.eof || !self.fill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.plaintext.len() - self.taken);
        out[..n].copy_from_slice(&self.plaintext[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

/// The writing half: encrypts and writes, as a `Write`.
pub struct TlsWriter {
    tcp: TcpStream,
    session: Arc<Mutex<ServerConnection>>,
}

impl TlsWriter {
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Sends close_notify (best effort) and shuts the socket.
    pub fn close(&self) {
        {
            let mut session = lock(&self.session);
            session.send_close_notify();
            while session.wants_write() {
                if session.write_tls(&mut &self.tcp).is_err() {
                    break;
                }
            }
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let mut session = lock(&self.session);
        while !buf.is_empty() {
            // rustls takes what fits its outgoing buffer; written out before the next part.
            let n = session.writer().write(buf)?;
            buf = &buf[n..];
            while session.wants_write() {
                session.write_tls(&mut &self.tcp)?;
            }
            if n == 0 && !buf.is_empty() && !session.wants_write() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "TLS session takes no more data",
                ));
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
