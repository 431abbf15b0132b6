//! The TLS files of a broker: a client certificate's subject becomes Kafka's default principal
//! (RFC 2253: last RDN first, special characters escaped), and files that are not what they
//! should be give an error naming the file instead of a panic. Certificates are made with the
//! openssl CLI in a temp dir.

mod tls_support;

use broker::security::listener::TlsFiles;
use broker::security::tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tls_support::self_signed;

#[test]
fn a_client_certificate_subject_is_kafkas_rfc_2253_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed(
        dir.path(),
        "client",
        "/DC=com/DC=example/O=Example, Inc./OU=R\\+D/CN=client",
    );
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    assert_eq!(
        tls::certificate_principal(&der).unwrap(),
        "User:CN=client,OU=R\\+D,O=Example\\, Inc.,DC=example,DC=com"
    );
    let (cert, _) = self_signed(dir.path(), "plain", "/O=example/CN=client");
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    assert_eq!(
        tls::certificate_principal(&der).unwrap(),
        "User:CN=client,O=example"
    );
    assert!(tls::certificate_principal(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
}

#[test]
fn bad_tls_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "broker", "/CN=localhost");
    let good = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: Some(cert.clone()),
        trust_ca: None,
    };
    tls::server_config(&good).unwrap();
    tls::client_config(&good).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let (other_cert, _) = self_signed(dir.path(), "other", "/CN=other");
    for (files, named) in [
        (
            TlsFiles {
                cert: garbage.clone(),
                ..good.clone()
            },
            &garbage,
        ),
        (
            TlsFiles {
                key: garbage.clone(),
                ..good.clone()
            },
            &garbage,
        ),
        (
            TlsFiles {
                cert: missing.clone(),
                ..good.clone()
            },
            &missing,
        ),
        (
            TlsFiles {
                client_ca: Some(garbage.clone()),
                ..good.clone()
            },
            &garbage,
        ),
        // A key that is not the certificate's.
        (
            TlsFiles {
                cert: other_cert.clone(),
                ..good.clone()
            },
            &other_cert,
        ),
    ] {
        let err = tls::server_config(&files).unwrap_err();
        assert!(
            err.contains(&named.display().to_string()),
            "{err} names {}",
            named.display()
        );
    }
    let no_ca = TlsFiles {
        client_ca: None,
        ..good
    };
    assert!(tls::client_config(&no_ca).unwrap_err().contains("--tls-ca"));
}

#[test]
fn the_reloader_serves_a_renewed_certificate_and_keeps_the_old_one_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "broker", "/CN=first");
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
        trust_ca: None,
    };
    let reloader = tls::TlsReloader::load(&files).unwrap();
    let first = reloader.server_config();
    // A half-written certificate: the previous configuration stays.
    std::thread::sleep(tls::RELOAD_CHECK_INTERVAL);
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &reloader.server_config()));
    // The renewed pair: a new configuration once the check interval passed.
    let (renewed_cert, renewed_key) = self_signed(dir.path(), "renewed", "/CN=renewed");
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::thread::sleep(tls::RELOAD_CHECK_INTERVAL);
    let renewed = reloader.server_config();
    assert!(!std::sync::Arc::ptr_eq(&first, &renewed));
    // Nothing changed since: the same configuration.
    std::thread::sleep(tls::RELOAD_CHECK_INTERVAL);
    assert!(std::sync::Arc::ptr_eq(&renewed, &reloader.server_config()));
}
