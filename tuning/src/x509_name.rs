//! A certificate's subject as a string, in the RFC 2253 form Java's
//! `X500Principal.getName()` writes, which is how both Kafka (`User:` + the subject, the
//! default principal of a TLS client) and ZooKeeper (the `x509` scheme's identity) name a
//! client certificate; the broker and the coordinator both use it.
//!
//! The form: the most specific RDN first (`CN=client,OU=ops,O=Example`), `+` between the
//! values of a multi-valued RDN, the keywords of RFC 2253 (CN, C, L, ST, STREET, O, OU, DC,
//! UID) for those attribute types, values escaped as its section 2.4 says. Any other type is
//! written as its dotted OID, and its value, as a value that is not a string, as `#` and the
//! hex of its DER encoding (`1.2.840.113549.1.9.1=#16056140622e63`).

use x509_parser::der_parser::asn1_rs::ToDer as _;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The subject of the DER certificate `cert_der` in RFC 2253 form; the parser's reason when
/// it is no X.509 certificate.
pub fn subject_rfc2253(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| e.to_string())?;
    Ok(name_rfc2253(cert.subject()))
}

/// A distinguished name in RFC 2253 form: its RDNs last to first.
pub fn name_rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// `TYPE=value` of one attribute.
fn attribute(attr: &AttributeTypeAndValue<'_>) -> String {
    let oid = attr.attr_type().to_id_string();
    match (keyword(&oid), attr.as_str()) {
        (Some(keyword), Ok(text)) => format!("{keyword}={}", escape(text)),
        (keyword, _) => {
            let der = attr.attr_value().to_der_vec().unwrap_or_default();
            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}=#{hex}", keyword.unwrap_or(&oid))
        }
    }
}

/// The attribute keywords RFC 2253 defines (others are written as dotted OIDs).
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 section 2.4: `,+"\<>;` escaped, and a leading `#` or space, a trailing space.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    //! Proves a real certificate's subject comes out in Java's RFC 2253 form (order, a
    //! multi-valued RDN, escapes, an attribute without keyword as DER hex), values are escaped
    //! as RFC 2253 says, and bytes that are no certificate are an error.
    use super::*;

    /// Made with `openssl req -x509 -multivalue-rdn -subj '/DC=example/O=Example\, Inc./
    /// OU=ops+UID=u1/CN=#client /emailAddress=a@b.c'`.
    const CERTIFICATE_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIICSzCCAfGgAwIBAgIUONFSjLlgUzMp13jPNK4Ie61jDkYwCgYIKoZIzj0EAwIw
ejEXMBUGCgmSJomT8ixkARkWB2V4YW1wbGUxFjAUBgNVBAoMDUV4YW1wbGUsIElu
Yy4xHjAKBgNVBAsMA29wczAQBgoJkiaJk/IsZAEBDAJ1MTERMA8GA1UEAwwII2Ns
aWVudCAxFDASBgkqhkiG9w0BCQEWBWFAYi5jMCAXDTI2MTIwNjE5MjEwNloYDzIx
MjYxMTEyMTkyMTA2WjB6MRcwFQYKCZImiZPyLGQBGRYHZXhhbXBsZTEWMBQGA1UE
CgwNRXhhbXBsZSwgSW5jLjEeMAoGA1UECwwDb3BzMBAGCgmSJomT8ixkAQEMAnUx
MREwDwYDVQQDDAgjY2xpZW50IDEUMBIGCSqGSIb3DQEJARYFYUBiLmMwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAASgVrQP1QAEIs+0t3PfFrrtHzElssDvO9nrWNAW
FIDbgnUHeMVAVaeEmtpd4IvpyBKH91C/TxuvoZSArsb2paVEo1MwUTAdBgNVHQ4E
FgQUh93xTdZ6qDdKqAf7Yw+Y2GiCwX8wHwYDVR0jBBgwFoAUh93xTdZ6qDdKqAf7
Yw+Y2GiCwX8wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiBltDDq
V9uZX15Sv5OHTb7udKvqIe53avT5aQdWWT0VHQIhAITzreVSlqZUIFqWQ3hlH/iC
J3jvblQ7dNZKeu2cXYxu
-----END CERTIFICATE-----
";

    #[test]
    fn a_certificate_subject_is_written_as_java_writes_it() {
        let (_, pem) = x509_parser::pem::parse_x509_pem(CERTIFICATE_PEM.as_bytes()).unwrap();
        assert_eq!(
            subject_rfc2253(&pem.contents).unwrap(),
            "1.2.840.113549.1.9.1=#1605614062\
             2e63,CN=\\#client\\ ,OU=ops+UID=u1,O=Example\\, Inc.,DC=example"
        );
    }

    #[test]
    fn values_are_escaped_as_rfc_2253_says() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape("plain name"), "plain name");
        assert_eq!(keyword("2.5.4.3"), Some("CN"));
        assert_eq!(keyword("1.2.3"), None);
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert!(subject_rfc2253(b"not a certificate").is_err());
    }
}
