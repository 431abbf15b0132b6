//! Certificates for TLS tests, made with the openssl CLI in a temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
