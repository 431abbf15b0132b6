//! The broker's listeners and what each demands of its clients: Kafka's listener form
//! (`--listener NAME://host:port`, repeatable, Kafka's `listeners`), the security protocol of
//! each (its name, or `--listener-security-protocol-map NAME:PROTOCOL,...`, Kafka's
//! `listener.security.protocol.map`), the endpoint each advertises (`--advertised-listener`,
//! Kafka's `advertised.listeners`), the listener brokers use between themselves
//! (`--inter-broker-listener-name`), the SASL mechanisms offered (`--sasl-enabled-mechanisms`)
//! and the TLS files of SSL and SASL_SSL listeners. The credentials SASL checks are the
//! broker's [`super::credentials::LiveCredentials`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::sasl::SaslMechanism;

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// No authentication, no TLS.
    #[default]
    Plaintext,
    /// SASL authentication, no TLS.
    SaslPlaintext,
    /// TLS; the principal is the client certificate's subject when one is required.
    Ssl,
    /// TLS, then SASL authentication.
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }

    pub fn requires_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// One listener: its name, protocol, the address it binds and the endpoint it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Kafka's listener name (upper case; the protocol's name unless mapped).
    pub name: String,
    pub protocol: SecurityProtocol,
    pub address: SocketAddr,
    /// Host and port clients are told to connect to; the bound address when absent.
    pub advertised: Option<(String, u16)>,
}

/// The PEM files of the TLS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The broker's certificate chain (`--tls-cert`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key`).
    pub key: PathBuf,
    /// CAs whose client certificates are required on SSL listeners (`--tls-client-ca`);
    /// none: clients present no certificate.
    pub client_ca: Option<PathBuf>,
    /// CAs the broker trusts when it connects to another broker's TLS listener (`--tls-ca`;
    /// `client_ca` when absent).
    pub trust_ca: Option<PathBuf>,
}

/// The listeners of the broker and their security.
#[derive(Debug, Clone, Default)]
pub struct ListenerSecurity {
    /// Every listener, in the order given; empty: the server's `listen` address as one
    /// PLAINTEXT listener advertising `advertise`.
    pub listeners: Vec<Listener>,
    /// The listener other brokers reach this one on (Kafka's `inter.broker.listener.name`);
    /// the first listener when absent.
    pub inter_broker_listener: Option<String>,
    /// The mechanisms a SASL listener offers, in the order SaslHandshake lists them.
    pub sasl_mechanisms: Vec<SaslMechanism>,
    /// The certificate and key of SSL and SASL_SSL listeners.
    pub tls: Option<TlsFiles>,
}

impl ListenerSecurity {
    /// The listeners the server binds: the configured ones, or `listen` as PLAINTEXT.
    pub fn effective_listeners(
        &self,
        listen: SocketAddr,
        advertise: Option<&(String, u16)>,
    ) -> Vec<Listener> {
        if !self.listeners.is_empty() {
            return self.listeners.clone();
        }
        vec![Listener {
            name: SecurityProtocol::Plaintext.name().to_string(),
            protocol: SecurityProtocol::Plaintext,
            address: listen,
            advertised: advertise.cloned(),
        }]
    }

    /// Brokers authenticate to each other with SASL: the inter-broker listener is
    /// SASL_PLAINTEXT or SASL_SSL.
    pub fn inter_broker_requires_sasl(&self) -> bool {
        let name = self.inter_broker_listener_name();
        self.listeners
            .iter()
            .any(|l| l.name == name && l.protocol.requires_sasl())
    }

    /// The name of the listener brokers use between themselves.
    pub fn inter_broker_listener_name(&self) -> String {
        match (&self.inter_broker_listener, self.listeners.first()) {
            (Some(name), _) => name.clone(),
            (None, Some(first)) => first.name.clone(),
            (None, None) => SecurityProtocol::Plaintext.name().to_string(),
        }
    }
}

/// Parses `listener.security.protocol.map`: `NAME:PROTOCOL,...` (names upper-cased).
pub fn parse_protocol_map(text: &str) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let mut map = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry.split_once(':').ok_or_else(|| {
            format!("listener security protocol map entry `{entry}`: expected NAME:PROTOCOL")
        })?;
        let protocol =
            SecurityProtocol::from_name(&protocol.to_ascii_uppercase()).ok_or_else(|| {
                format!(
                    "listener security protocol map entry `{entry}`: unknown protocol \
                     (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                )
            })?;
        if map.insert(name.to_ascii_uppercase(), protocol).is_some() {
            return Err(format!(
                "listener security protocol map: `{name}` is mapped twice"
            ));
        }
    }
    Ok(map)
}

/// Splits `NAME://host:port` into the upper-cased name, host and port (IPv6 in brackets).
fn split_listener(text: &str) -> Result<(String, String, u16), String> {
    let (name, address) = text
        .split_once("://")
        .ok_or_else(|| format!("listener `{text}`: expected NAME://host:port"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("listener `{text}`: expected NAME://host:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("listener `{text}`: bad port `{port}`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || host.is_empty() {
        return Err(format!("listener `{text}`: expected NAME://host:port"));
    }
    Ok((name.to_ascii_uppercase(), host.to_string(), port))
}

/// The protocol of listener `name`: mapped, else the name itself when it is a protocol.
fn protocol_of(
    name: &str,
    map: &BTreeMap<String, SecurityProtocol>,
) -> Result<SecurityProtocol, String> {
    map.get(name)
        .copied()
        .or_else(|| SecurityProtocol::from_name(name))
        .ok_or_else(|| {
            format!(
                "listener name {name} is neither a security protocol (PLAINTEXT, SSL, \
                 SASL_PLAINTEXT, SASL_SSL) nor in --listener-security-protocol-map"
            )
        })
}

/// Parses Kafka's `listeners` and `advertised.listeners`: each listener `NAME://ip:port`
/// binds an IP address; each advertised one names a listener and the host:port it
/// advertises. Names are unique; an advertised listener must name a listener.
pub fn parse_listeners(
    listeners: &[String],
    advertised: &[String],
    map: &BTreeMap<String, SecurityProtocol>,
) -> Result<Vec<Listener>, String> {
    let mut out: Vec<Listener> = Vec::new();
    for text in listeners {
        let (name, host, port) = split_listener(text)?;
        let ip = host.parse::<std::net::IpAddr>().map_err(|_| {
            format!("listener `{text}`: expected an IP address to bind, not `{host}`")
        })?;
        if out.iter().any(|l| l.name == name) {
            return Err(format!("listener name {name} is given twice"));
        }
        out.push(Listener {
            protocol: protocol_of(&name, map)?,
            name,
            address: SocketAddr::new(ip, port),
            advertised: None,
        });
    }
    for text in advertised {
        let (name, host, port) = split_listener(text)?;
        let listener = out.iter_mut().find(|l| l.name == name).ok_or_else(|| {
            format!("advertised listener `{text}`: no --listener is named {name}")
        })?;
        if listener.advertised.replace((host, port)).is_some() {
            return Err(format!("advertised listener {name} is given twice"));
        }
    }
    Ok(out)
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

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listeners_and_mechanisms_parse() {
        let map = parse_protocol_map("internal:ssl, CLIENT:SASL_SSL").unwrap();
        let listeners = parse_listeners(
            &strings(&[
                "PLAINTEXT://127.0.0.1:9092",
                "INTERNAL://0.0.0.0:9093",
                "client://[::1]:9094",
            ]),
            &strings(&["INTERNAL://broker-1.lan:9093"]),
            &map,
        )
        .unwrap();
        assert_eq!(
            listeners
                .iter()
                .map(|l| (l.name.as_str(), l.protocol))
                .collect::<Vec<_>>(),
            [
                ("PLAINTEXT", SecurityProtocol::Plaintext),
                ("INTERNAL", SecurityProtocol::Ssl),
                ("CLIENT", SecurityProtocol::SaslSsl)
            ]
        );
        assert_eq!(
            listeners[2].address,
            "[::1]:9094".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            listeners[1].advertised,
            Some(("broker-1.lan".to_string(), 9093))
        );
        assert_eq!(listeners[0].advertised, None);
        for bad in [
            "127.0.0.1:9092",
            "FOO://1.2.3.4:1",
            "PLAINTEXT://host",
            "PLAINTEXT://localhost:9092",
        ] {
            assert!(
                parse_listeners(&strings(&[bad]), &[], &map).is_err(),
                "{bad}"
            );
        }
        let two = strings(&["SSL://127.0.0.1:1", "SSL://127.0.0.1:2"]);
        assert!(parse_listeners(&two, &[], &map).is_err());
        let one = strings(&["SSL://127.0.0.1:1"]);
        assert!(parse_listeners(&one, &strings(&["PLAINTEXT://h:1"]), &map).is_err());
        assert!(parse_protocol_map("A:TLS").is_err());
        assert!(parse_protocol_map("A:SSL,a:SSL").is_err());
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
