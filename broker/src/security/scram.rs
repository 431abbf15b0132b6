//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses them: the salted
//! credential a broker stores per user and mechanism, the server side of the three
//! messages a client sends in SaslAuthenticate, and the client side a broker runs towards
//! another broker (inter-broker SASL), also used by tests and the command line.
//!
//! Sans-IO: [`ScramServer`] takes the client's bytes and returns the bytes to answer, or an
//! error that ends the authentication; [`ScramClient`] the other way round. Nothing here
//! touches a socket, a file or a clock.
//!
//! A credential holds the salt, the iteration count, `StoredKey = H(HMAC(SaltedPassword,
//! "Client Key"))` and `ServerKey = HMAC(SaltedPassword, "Server Key")`, never the password:
//! a stolen credential file does not let anyone log in (it lets them impersonate the server
//! to a client, as in Kafka). PLAIN is checked against the same credential
//! ([`ScramCredential::verify_password`]).

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The SCRAM mechanisms Kafka offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

/// Fewest PBKDF2 iterations a credential may have (Kafka's minimum for both mechanisms).
pub const ITERATIONS_MIN: u32 = 4096;
/// Most PBKDF2 iterations a credential may have (Kafka's maximum): a client cannot make the
/// broker spend unbounded time, nor an administrator lock clients out by accident.
pub const ITERATIONS_MAX: u32 = 16384;
/// Bytes of the random salt of a new credential.
pub const SALT_BYTES: usize = 32;
/// The longest client message accepted (names and nonces are short).
const MESSAGE_BYTES_MAX: usize = 4096;

impl Mechanism {
    /// The SASL name, as clients send it in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's `ScramMechanism` type in Describe/AlterUserScramCredentials (1, 2).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Mechanism> {
        match t {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// Bytes of the hash: of a salted password, a stored key and a server key.
    pub fn key_bytes(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes a key of any length");
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Mechanism::Sha256 => run::<Hmac<Sha256>>(key, parts),
            Mechanism::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    fn hash(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(bytes).to_vec(),
            Mechanism::Sha512 => Sha512::digest(bytes).to_vec(),
        }
    }

    /// `Hi(password, salt, iterations)` of RFC 5802 (PBKDF2 with this hash's HMAC): what
    /// AlterUserScramCredentials carries instead of the password.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Mechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a broker stores for one user and mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are secrets: never in logs.
        write!(
            f,
            "ScramCredential({}, iterations={})",
            self.mechanism, self.iterations
        )
    }
}

impl ScramCredential {
    /// The credential for `password` with `salt` and `iterations` (checked by the caller
    /// against [`ITERATIONS_MIN`]..=[`ITERATIONS_MAX`]).
    pub fn derive(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = mechanism.salted_password(password, salt, iterations);
        Self::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// The credential from an already salted password (AlterUserScramCredentials carries
    /// the salted password, not the password).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = mechanism.hmac(salted, &[b"Client Key"]);
        ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted, &[b"Server Key"]),
        }
    }

    /// A credential for `password` with a fresh random salt.
    pub fn new_random(mechanism: Mechanism, password: &[u8], iterations: u32) -> Self {
        let salt: [u8; SALT_BYTES] = rand::random();
        Self::derive(mechanism, password, &salt, iterations)
    }

    /// Whether `password` is the one this credential was made from (SASL/PLAIN).
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = Self::derive(self.mechanism, password, &self.salt, self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange failed; the text goes back to the client in SaslAuthenticate's error
/// message (it never says whether the user exists).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    InvalidCredentials(Mechanism),
    #[error("invalid SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM message out of order")]
    OutOfOrder,
}

enum State {
    /// Waiting for client-first.
    Initial,
    /// Waiting for client-final.
    FirstSent {
        user: String,
        credential: Box<ScramCredential>,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        /// The client's nonce followed by ours.
        nonce: String,
        /// Bytes of `nonce` that are the client's.
        client_nonce_bytes: usize,
    },
    Done,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> Self {
        ScramServer {
            mechanism,
            state: State::Initial,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// client-first (`n,,n=user,r=cnonce`) -> server-first (`r=cnonce+snonce,s=salt,i=n`).
    /// `credential_of` looks the user up for this mechanism.
    pub fn client_first(
        &mut self,
        message: &[u8],
        credential_of: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Done;
        let text = utf8(message)?;
        // gs2-header: channel binding flag, optional authzid, then the bare message.
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(ScramError::Malformed("channel binding is not supported"))
            }
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        let gs2_header = format!("{flag},{authzid},");
        let mut fields = bare.split(',');
        let user = match fields.next() {
            Some(f) if f.starts_with("n=") => decode_saslname(&f[2..])?,
            _ => return Err(ScramError::Malformed("no user name")),
        };
        let cnonce = match fields.next() {
            Some(f) if f.starts_with("r=") && f.len() > 2 => &f[2..],
            _ => return Err(ScramError::Malformed("no client nonce")),
        };
        if !cnonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        for extension in fields {
            // Kafka's only extension is delegation-token authentication, which this broker
            // does not offer.
            if extension.starts_with("tokenauth=") && extension != "tokenauth=false" {
                return Err(ScramError::InvalidCredentials(self.mechanism));
            }
        }
        if !authzid.is_empty()
            && authzid.strip_prefix("a=").map(decode_saslname) != Some(Ok(user.clone()))
        {
            return Err(ScramError::Malformed(
                "authorization id differs from the user",
            ));
        }
        let credential = credential_of(&user)
            .filter(|c| c.mechanism == self.mechanism)
            .ok_or(ScramError::InvalidCredentials(self.mechanism))?;
        // Letters and digits only, as Kafka's own server nonce (librdkafka 2.0 mangles a
        // nonce with `+` or `/` in its final message).
        let snonce: [u8; 20] = rand::random();
        let snonce: String = snonce.iter().map(|b| format!("{b:02x}")).collect();
        let nonce = format!("{cnonce}{snonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let answer = server_first.clone().into_bytes();
        self.state = State::FirstSent {
            user,
            credential: Box::new(credential),
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first,
            client_nonce_bytes: cnonce.len(),
            nonce,
        };
        Ok(answer)
    }

    /// client-final (`c=..,r=..,p=proof`) -> server-final (`v=signature`) and the user
    /// name, once the proof shows the client knows the password.
    pub fn client_final(&mut self, message: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let State::FirstSent {
            user,
            credential,
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
            client_nonce_bytes,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let text = utf8(message)?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        match fields.next() {
            Some(f) if f.strip_prefix("c=") == Some(&BASE64.encode(&gs2_header)) => {}
            _ => {
                return Err(ScramError::Malformed(
                    "channel binding differs from the first message",
                ))
            }
        }
        // librdkafka before 2.6.1 (Debian 12's kcat has 2.0.2) sends its own nonce again in
        // front of the combined one; Kafka 3.x accepts that, so this does too. The server's
        // nonce is in both forms, so a reply made for another exchange still fails.
        let buggy_librdkafka = format!("{}{nonce}", &nonce[..client_nonce_bytes]);
        match fields.next().and_then(|f| f.strip_prefix("r=")) {
            Some(r) if r == nonce || r == buggy_librdkafka => {}
            _ => return Err(ScramError::Malformed("nonce differs from the server's")),
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let m = self.mechanism;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = m.hmac(&credential.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != client_signature.len() {
            return Err(ScramError::InvalidCredentials(m));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        if !constant_time_eq(&m.hash(&client_key), &credential.stored_key) {
            return Err(ScramError::InvalidCredentials(m));
        }
        let server_signature = m.hmac(&credential.server_key, &[auth_message.as_bytes()]);
        Ok((
            format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            user,
        ))
    }
}

/// The client side of one SCRAM exchange: client-first, then client-final from the
/// server's first message, then a check of the server's signature (the server proves it
/// knows the credential too, so a broker does not replicate from an impostor).
pub struct ScramClient {
    mechanism: Mechanism,
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    /// After client-final: the server signature expected in server-final.
    expected_server_signature: Option<Vec<u8>>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        write!(f, "ScramClient({})", self.mechanism)
    }
}

impl ScramClient {
    /// A new exchange for `user` with a fresh random nonce.
    pub fn new(mechanism: Mechanism, user: &str, password: &[u8]) -> ScramClient {
        let nonce: [u8; 24] = rand::random();
        Self::with_nonce(mechanism, user, password, &BASE64.encode(nonce))
    }

    /// A new exchange with the given nonce (printable ASCII without `,`).
    pub fn with_nonce(
        mechanism: Mechanism,
        user: &str,
        password: &[u8],
        nonce: &str,
    ) -> ScramClient {
        debug_assert!(nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b','));
        let name = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            mechanism,
            password: password.to_vec(),
            client_first_bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_owned(),
            expected_server_signature: None,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// client-first: `n,,n=user,r=nonce`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// server-first (`r=..,s=..,i=..`) -> client-final (`c=biws,r=..,p=proof`).
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        if self.expected_server_signature.is_some() {
            return Err(ScramError::OutOfOrder);
        }
        let server_first = utf8(message)?;
        let mut fields = server_first.split(',');
        let nonce = match fields.next().and_then(|f| f.strip_prefix("r=")) {
            Some(r) if r.len() > self.nonce.len() && r.starts_with(&self.nonce) => r,
            _ => return Err(ScramError::Malformed("server nonce does not extend ours")),
        };
        let salt = match fields.next().and_then(|f| f.strip_prefix("s=")) {
            Some(s) => BASE64
                .decode(s)
                .map_err(|_| ScramError::Malformed("salt is not base64"))?,
            None => return Err(ScramError::Malformed("no salt")),
        };
        let iterations: u32 = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("no iteration count"))?;
        // A server asking for fewer makes the proof cheap to brute-force; more, slow to make.
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Malformed("iteration count out of bounds"));
        }
        let salted = self
            .mechanism
            .salted_password(&self.password, &salt, iterations);
        let (client_final, server_signature) = client_final_message(
            self.mechanism,
            &salted,
            &self.client_first_bare,
            server_first,
            nonce,
        );
        self.expected_server_signature = Some(server_signature);
        Ok(client_final.into_bytes())
    }

    /// server-final (`v=signature`, or `e=error`): Ok when the server proved it holds the
    /// user's credential.
    pub fn server_final(&mut self, message: &[u8]) -> Result<(), ScramError> {
        let expected = self
            .expected_server_signature
            .take()
            .ok_or(ScramError::OutOfOrder)?;
        let text = utf8(message)?;
        if text.starts_with("e=") {
            return Err(ScramError::InvalidCredentials(self.mechanism));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or(ScramError::Malformed("no server signature"))?;
        if !constant_time_eq(&signature, &expected) {
            return Err(ScramError::Malformed("server signature does not match"));
        }
        Ok(())
    }
}

/// client-final (`c=biws,r=nonce,p=proof`) from the salted password, and the server
/// signature that must answer it (RFC 5802 section 3).
fn client_final_message(
    m: Mechanism,
    salted: &[u8],
    client_first_bare: &str,
    server_first: &str,
    nonce: &str,
) -> (String, Vec<u8>) {
    let client_key = m.hmac(salted, &[b"Client Key"]);
    let stored_key = m.hash(&client_key);
    let without_proof = format!("c={},r={nonce}", BASE64.encode("n,,"));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = m.hmac(&stored_key, &[auth_message.as_bytes()]);
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = m.hmac(salted, &[b"Server Key"]);
    let server_signature = m.hmac(&server_key, &[auth_message.as_bytes()]);
    (
        format!("{without_proof},p={}", BASE64.encode(proof)),
        server_signature,
    )
}

fn utf8(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(ScramError::Malformed("message too long"));
    }
    std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// RFC 5802 saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SCRAM client, as librdkafka or the Java client run it (for the tests only).
    fn client_final(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        client_final_echoing(m, password, client_first_bare, server_first, "")
    }

    /// [`client_final`] echoing `prefix` in front of the server's nonce (old librdkafka
    /// echoes its own nonce there again).
    fn client_final_echoing(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        prefix: &str,
    ) -> (String, Vec<u8>) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = format!("{prefix}{}", &fields[0][2..]);
        let salt = BASE64.decode(&fields[1][2..]).unwrap();
        let iterations: u32 = fields[2][2..].parse().unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let (message, expected) =
            client_final_message(m, &salted, client_first_bare, server_first, &nonce);
        (
            message,
            format!("v={}", BASE64.encode(expected)).into_bytes(),
        )
    }

    #[test]
    fn rfc_7677_credential() {
        // RFC 7677 section 3: user "user", password "pencil", this salt and 4096 iterations
        // give this server signature for this exchange.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::derive(Mechanism::Sha256, b"pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = Mechanism::Sha256.hmac(&cred.server_key, &[auth_message.as_bytes()]);
        assert_eq!(
            BASE64.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn a_client_with_the_password_authenticates_with_both_mechanisms() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let cred = ScramCredential::new_random(m, b"s3cret", ITERATIONS_MIN);
            let mut server = ScramServer::new(m);
            let first_bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
            let server_first = server
                .client_first(format!("n,,{first_bare}").as_bytes(), |u| {
                    (u == "alice").then(|| cred.clone())
                })
                .unwrap();
            let server_first = String::from_utf8(server_first).unwrap();
            assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
            let (final_msg, expected) = client_final(m, "s3cret", first_bare, &server_first);
            let (server_final, user) = server.client_final(final_msg.as_bytes()).unwrap();
            assert_eq!((server_final, user.as_str()), (expected, "alice"));
        }
    }

    #[test]
    fn wrong_password_unknown_user_and_replays_are_refused() {
        let m = Mechanism::Sha512;
        let cred = ScramCredential::new_random(m, b"right", ITERATIONS_MIN);
        let lookup = |u: &str| (u == "alice").then(|| cred.clone());
        let first_bare = "n=alice,r=abcdef";
        let mut server = ScramServer::new(m);
        let sf = server
            .client_first(format!("n,,{first_bare}").as_bytes(), lookup)
            .unwrap();
        let (wrong, _) = client_final(m, "wrong", first_bare, std::str::from_utf8(&sf).unwrap());
        assert_eq!(
            server.client_final(wrong.as_bytes()),
            Err(ScramError::InvalidCredentials(m))
        );
        // A finished exchange takes nothing more.
        assert_eq!(
            server.client_final(wrong.as_bytes()),
            Err(ScramError::OutOfOrder)
        );
        let mut server = ScramServer::new(m);
        assert_eq!(
            server.client_first(b"n,,n=bob,r=abc", lookup),
            Err(ScramError::InvalidCredentials(m))
        );
        // A credential of the other mechanism does not serve this one.
        let mut server = ScramServer::new(Mechanism::Sha256);
        assert!(server.client_first(b"n,,n=alice,r=abc", lookup).is_err());
        // A proof made for one server nonce fails with another.
        let mut first = ScramServer::new(m);
        let sf1 = first.client_first(b"n,,n=alice,r=abc", lookup).unwrap();
        let (recorded, _) = client_final(
            m,
            "right",
            "n=alice,r=abc",
            std::str::from_utf8(&sf1).unwrap(),
        );
        let mut second = ScramServer::new(m);
        second.client_first(b"n,,n=alice,r=abc", lookup).unwrap();
        assert!(second.client_final(recorded.as_bytes()).is_err());
    }

    #[test]
    fn the_client_nonce_sent_twice_by_old_librdkafka_is_accepted() {
        let m = Mechanism::Sha256;
        let cred = ScramCredential::new_random(m, b"pw", ITERATIONS_MIN);
        let mut server = ScramServer::new(m);
        let sf = server
            .client_first(b"n,,n=bob,r=CLIENT", |_| Some(cred.clone()))
            .unwrap();
        let sf = String::from_utf8(sf).unwrap();
        // The final message as librdkafka 2.0 builds it: r=<client nonce><server's r>.
        let (msg, _) = client_final_echoing(m, "pw", "n=bob,r=CLIENT", &sf, "CLIENT");
        let (_, user) = server.client_final(msg.as_bytes()).unwrap();
        assert_eq!(user, "bob");
        // Any other nonce is refused.
        let mut server = ScramServer::new(m);
        server
            .client_first(b"n,,n=bob,r=CLIENT", |_| Some(cred.clone()))
            .unwrap();
        assert_eq!(
            server.client_final(b"c=biws,r=CLIENTother,p=AAAA"),
            Err(ScramError::Malformed("nonce differs from the server's"))
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cred = ScramCredential::new_random(Mechanism::Sha256, b"pw", ITERATIONS_MIN);
        for bad in [
            &b""[..],
            b"n",
            b"x,,n=a,r=b",
            b"p=tls-unique,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=zz,r=b",
            b"n,a=bob,n=alice,r=b",
            b"n,,n=alice,r=b,tokenauth=true",
            b"\xff\xfe",
        ] {
            let mut server = ScramServer::new(Mechanism::Sha256);
            assert!(
                server.client_first(bad, |_| Some(cred.clone())).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'a'; MESSAGE_BYTES_MAX + 1];
        assert!(ScramServer::new(Mechanism::Sha256)
            .client_first(&long, |_| Some(cred.clone()))
            .is_err());
    }

    /// Runs our client against our server; the server's user name and the client's result.
    fn exchange(
        m: Mechanism,
        user: &str,
        password: &[u8],
        stored: &ScramCredential,
    ) -> Result<String, ScramError> {
        let mut client = ScramClient::new(m, user, password);
        let mut server = ScramServer::new(m);
        let server_first = server.client_first(&client.client_first(), |u| {
            (u == user).then(|| stored.clone())
        })?;
        let client_final = client.server_first(&server_first)?;
        let (server_final, name) = server.client_final(&client_final)?;
        client.server_final(&server_final)?;
        Ok(name)
    }

    #[test]
    fn our_client_authenticates_against_our_server() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let stored = ScramCredential::new_random(m, b"inter-broker", ITERATIONS_MIN);
            assert_eq!(
                exchange(m, "broker", b"inter-broker", &stored).unwrap(),
                "broker"
            );
            // A name with the characters saslname escapes.
            let odd = "a,b=c";
            let mut client = ScramClient::new(m, odd, b"pw");
            let mut server = ScramServer::new(m);
            let odd_cred = ScramCredential::new_random(m, b"pw", ITERATIONS_MIN);
            let sf = server
                .client_first(&client.client_first(), |u| {
                    (u == odd).then(|| odd_cred.clone())
                })
                .unwrap();
            let cf = client.server_first(&sf).unwrap();
            let (sfinal, name) = server.client_final(&cf).unwrap();
            client.server_final(&sfinal).unwrap();
            assert_eq!(name, odd);
            assert_eq!(
                exchange(m, "broker", b"wrong", &stored),
                Err(ScramError::InvalidCredentials(m))
            );
        }
    }

    #[test]
    fn our_client_matches_rfc_7677_and_refuses_a_server_without_the_credential() {
        // RFC 7677 section 3, the client's side.
        let mut client =
            ScramClient::with_nonce(Mechanism::Sha256, "user", b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let final_msg = client
            .server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            final_msg,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(client
            .server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .is_ok());
        // A server that does not know the credential cannot sign.
        let mut client = ScramClient::new(Mechanism::Sha256, "user", b"pencil");
        let nonce = String::from_utf8(client.client_first()).unwrap();
        let nonce = nonce.rsplit_once("r=").unwrap().1.to_owned();
        let sf = format!("r={nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        client.server_first(sf.as_bytes()).unwrap();
        assert!(client.server_final(b"v=AAAA").is_err());
        // A nonce that is not ours extended, or too few iterations, is refused.
        let mut client = ScramClient::new(Mechanism::Sha256, "user", b"pencil");
        assert!(client.server_first(b"r=other,s=AAAA,i=4096").is_err());
        let mut client = ScramClient::with_nonce(Mechanism::Sha256, "user", b"pencil", "abc");
        assert!(client.server_first(b"r=abcdef,s=AAAA,i=1").is_err());
        assert!(client.server_final(b"v=AAAA").is_err());
    }

    #[test]
    fn names_are_unescaped_and_plain_checks_the_same_credential() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        let cred = ScramCredential::new_random(Mechanism::Sha256, b"pw", ITERATIONS_MIN);
        assert!(cred.verify_password(b"pw"));
        assert!(!cred.verify_password(b"pw2"));
        assert!(!format!("{cred:?}").contains(&BASE64.encode(&cred.stored_key)));
    }
}
