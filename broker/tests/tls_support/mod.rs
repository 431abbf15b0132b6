//! TLS test helpers: certificates made with the openssl CLI in a temp dir, and a broker with a
//! PLAINTEXT and an SSL listener reached by a rustls client. A test file using [`TlsNode`]
//! declares `mod kafka_support;` too.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `subject` (openssl's -subj form) and its key in `dir`.
pub fn self_signed(dir: &Path, name: &str, subject: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        subject,
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// A CA, and a certificate it signed for 127.0.0.1 with its key, in `dir`: (CA, certificate,
/// key).
pub fn ca_and_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = self_signed(dir, "ca", "/CN=test-ca");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (cert, key, csr, ext) = (
        path("broker.pem"),
        path("broker.key"),
        path("broker.csr"),
        path("broker.ext"),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &cert,
        "-extfile",
        &ext,
    ]);
    (ca, cert.into(), key.into())
}

/// A broker with a PLAINTEXT listener (`server.addr`) and an SSL one (`ssl`), its certificate
/// signed by a CA the client trusts.
pub struct TlsNode {
    pub server: broker::server::ServerHandle,
    pub ssl: SocketAddr,
    client: Arc<rustls::ClientConfig>,
}

impl TlsNode {
    /// Starts `config` with those two listeners and certificates made in `dir`.
    pub fn start(mut config: broker::server::ServeConfig, dir: &Path) -> TlsNode {
        use broker::security::listener::{Listener, SecurityProtocol, TlsFiles};
        let (ca, cert, key) = ca_and_certificate(dir);
        let listener = |name: &str, protocol| Listener {
            name: name.into(),
            protocol,
            address: "127.0.0.1:0".parse().unwrap(),
            advertised: None,
        };
        config.security.listeners = vec![
            listener("PLAINTEXT", SecurityProtocol::Plaintext),
            listener("SSL", SecurityProtocol::Ssl),
        ];
        let files = TlsFiles {
            cert,
            key,
            client_ca: None,
            trust_ca: Some(ca),
        };
        config.security.tls = Some(files.clone());
        let server = broker::server::start(config).expect("server starts");
        // The broker's own client configuration (it trusts the CA); the SSL listener asks for
        // no client certificate, so the one it carries is not sent.
        let client = Arc::new(broker::security::tls::client_config(&files).unwrap());
        let ssl = server.listeners[1].address;
        TlsNode {
            server,
            ssl,
            client,
        }
    }

    /// A TLS session to the SSL listener (the handshake runs with the first read or write).
    pub fn connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let stream = TcpStream::connect(self.ssl).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let session = rustls::ClientConnection::new(self.client.clone(), name).unwrap();
        rustls::StreamOwned::new(session, stream)
    }
}
