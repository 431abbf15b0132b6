//! What a listener demands of its clients: Kafka's security protocol of the listener
//! (`--listener SASL_PLAINTEXT://host:port`), the SASL mechanisms it offers
//! (`--sasl-enabled-mechanisms`, Kafka's `sasl.enabled.mechanisms`). The credentials they
//! check are the broker's [`super::credentials::LiveCredentials`].

use std::net::SocketAddr;

use super::sasl::SaslMechanism;

/// Kafka's security protocols this broker offers on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// No authentication.
    #[default]
    Plaintext,
    /// SASL authentication, no TLS.
    SaslPlaintext,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
        }
    }
}

/// The security of the broker's listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerSecurity {
    pub protocol: SecurityProtocol,
    /// The mechanisms a SASL listener offers, in the order SaslHandshake lists them.
    pub sasl_mechanisms: Vec<SaslMechanism>,
}

impl ListenerSecurity {
    pub fn requires_sasl(&self) -> bool {
        self.protocol == SecurityProtocol::SaslPlaintext
    }
}

/// Parses Kafka's listener form `PROTOCOL://host:port` (the listener's name is its
/// protocol). SSL and SASL_SSL are refused: TLS is not implemented.
pub fn parse_listener(text: &str) -> Result<(SecurityProtocol, SocketAddr), String> {
    let (protocol, address) = text
        .split_once("://")
        .ok_or_else(|| format!("listener `{text}`: expected PROTOCOL://host:port"))?;
    let protocol = match protocol {
        "PLAINTEXT" => SecurityProtocol::Plaintext,
        "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
        "SSL" | "SASL_SSL" => {
            return Err(format!(
                "listener `{text}`: TLS listeners (SSL, SASL_SSL) are not implemented"
            ))
        }
        other => {
            return Err(format!(
                "listener `{text}`: unknown security protocol {other} (PLAINTEXT or \
                 SASL_PLAINTEXT)"
            ))
        }
    };
    let address = address
        .parse::<SocketAddr>()
        .map_err(|_| format!("listener `{text}`: expected an IP address and port"))?;
    Ok((protocol, address))
}

/// Parses `sasl.enabled.mechanisms`: a comma list of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
pub fn parse_mechanisms(text: &str) -> Result<Vec<SaslMechanism>, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m = SaslMechanism::from_name(name).ok_or_else(|| {
            format!("unknown SASL mechanism {name} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err("no SASL mechanism enabled".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_mechanisms_parse() {
        assert_eq!(
            parse_listener("SASL_PLAINTEXT://127.0.0.1:9093").unwrap(),
            (
                SecurityProtocol::SaslPlaintext,
                "127.0.0.1:9093".parse().unwrap()
            )
        );
        assert_eq!(
            parse_listener("PLAINTEXT://0.0.0.0:9092").unwrap().0,
            SecurityProtocol::Plaintext
        );
        for bad in [
            "127.0.0.1:9092",
            "SSL://127.0.0.1:9093",
            "FOO://1.2.3.4:1",
            "PLAINTEXT://host",
        ] {
            assert!(parse_listener(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_mechanisms("PLAIN, SCRAM-SHA-512,PLAIN")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_mechanisms("GSSAPI").is_err());
        assert!(parse_mechanisms("").is_err());
    }
}
