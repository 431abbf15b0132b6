//! Mutual authentication of ensemble peers with a shared secret (zoo.cfg
//! `quorum.auth.secretFile`), run on every peer connection right after the handshake that
//! names the two servers, before either side hands the connection to ZAB.
//!
//! Without it anyone who reaches a peer port can claim a server id and vote, or lead. With
//! it, each side proves it knows the secret without sending it, bound to this connection:
//!
//! 1. acceptor -> dialer: a fresh 32-byte nonce `Na`;
//! 2. dialer -> acceptor: its own nonce `Nd` and `HMAC-SHA256(secret, "zab-dialer" | dialer
//!    id | acceptor id | Na | Nd)`;
//! 3. acceptor -> dialer: `HMAC-SHA256(secret, "zab-acceptor" | dialer id | acceptor id |
//!    Na | Nd)`.
//!
//! A recorded exchange is useless on another connection (the other side's nonce differs), a
//! proof for one pair of ids is useless for another, and the MACs are compared in constant
//! time. A side that fails to prove closes the connection (the acceptor logs the address).
//! Servers configured with different secrets, or one with and one without, never connect:
//! the check fails closed. This is ours, not ZooKeeper's quorum SASL (DIGEST-MD5/Kerberos
//! through JAAS), which this server does not offer.

use std::io::{Read, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::zxid::ServerId;

const NONCE_BYTES: usize = 32;
const MAC_BYTES: usize = 32;
/// The shortest secret accepted (128 bits).
pub const SECRET_BYTES_MIN: usize = 16;

/// The ensemble's shared secret.
#[derive(Clone)]
pub struct QuorumSecret(Vec<u8>);

impl std::fmt::Debug for QuorumSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuorumSecret(..)")
    }
}

impl QuorumSecret {
    /// The secret in `bytes` (surrounding whitespace, such as a final newline, ignored).
    pub fn new(bytes: &[u8]) -> Result<QuorumSecret, String> {
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
        let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace());
        let trimmed = match (start, end) {
            (Some(s), Some(e)) => &bytes[s..=e],
            _ => &[][..],
        };
        if trimmed.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "the quorum secret must be at least {SECRET_BYTES_MIN} bytes (it has {})",
                trimmed.len()
            ));
        }
        Ok(QuorumSecret(trimmed.to_vec()))
    }

    /// Reads the secret from `path`.
    pub fn from_file(path: &Path) -> Result<QuorumSecret, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        QuorumSecret::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn mac(
        &self,
        role: &[u8],
        dialer: ServerId,
        acceptor: ServerId,
        na: &[u8],
        nd: &[u8],
    ) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(role);
        mac.update(&dialer.to_be_bytes());
        mac.update(&acceptor.to_be_bytes());
        mac.update(na);
        mac.update(nd);
        mac
    }
}

/// The dialer's side: proves itself to `acceptor`, then checks the acceptor's proof.
pub fn prove_as_dialer(
    stream: &mut (impl Read + Write),
    secret: &QuorumSecret,
    me: ServerId,
    acceptor: ServerId,
) -> Result<(), String> {
    let mut na = [0u8; NONCE_BYTES];
    stream
        .read_exact(&mut na)
        .map_err(|e| format!("reading the acceptor's nonce: {e}"))?;
    let nd: [u8; NONCE_BYTES] = rand::random();
    let proof = secret
        .mac(b"zab-dialer", me, acceptor, &na, &nd)
        .finalize()
        .into_bytes();
    let mut out = Vec::with_capacity(NONCE_BYTES + MAC_BYTES);
    out.extend_from_slice(&nd);
    out.extend_from_slice(&proof);
    stream
        .write_all(&out)
        .map_err(|e| format!("sending the proof: {e}"))?;
    let mut theirs = [0u8; MAC_BYTES];
    stream
        .read_exact(&mut theirs)
        .map_err(|e| format!("server {acceptor} did not prove the quorum secret: {e}"))?;
    secret
        .mac(b"zab-acceptor", me, acceptor, &na, &nd)
        .verify_slice(&theirs)
        .map_err(|_| format!("server {acceptor} does not know the quorum secret"))
}

/// The acceptor's side: challenges `dialer`, checks its proof, then proves itself.
pub fn prove_as_acceptor(
    stream: &mut (impl Read + Write),
    secret: &QuorumSecret,
    dialer: ServerId,
    me: ServerId,
) -> Result<(), String> {
    let na: [u8; NONCE_BYTES] = rand::random();
    stream
        .write_all(&na)
        .map_err(|e| format!("sending the nonce: {e}"))?;
    let mut answer = [0u8; NONCE_BYTES + MAC_BYTES];
    stream
        .read_exact(&mut answer)
        .map_err(|e| format!("peer claiming server {dialer} sent no proof: {e}"))?;
    let (nd, theirs) = answer.split_at(NONCE_BYTES);
    secret
        .mac(b"zab-dialer", dialer, me, &na, nd)
        .verify_slice(theirs)
        .map_err(|_| format!("peer claiming server {dialer} does not know the quorum secret"))?;
    let proof = secret
        .mac(b"zab-acceptor", dialer, me, &na, nd)
        .finalize()
        .into_bytes();
    stream
        .write_all(&proof)
        .map_err(|e| format!("sending the proof: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// Runs both sides over loopback; returns (dialer result, acceptor result).
    fn exchange(
        dialer_secret: QuorumSecret,
        acceptor_secret: QuorumSecret,
        claimed: ServerId,
    ) -> (Result<(), String>, Result<(), String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dialer = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            prove_as_dialer(&mut s, &dialer_secret, claimed, 1)
        });
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let accepted = prove_as_acceptor(&mut s, &acceptor_secret, 2, 1);
        drop(s);
        (dialer.join().unwrap(), accepted)
    }

    fn secret(text: &str) -> QuorumSecret {
        QuorumSecret::new(text.as_bytes()).unwrap()
    }

    #[test]
    fn peers_with_the_same_secret_prove_themselves_to_each_other() {
        let (d, a) = exchange(
            secret("0123456789abcdef!"),
            secret("0123456789abcdef!\n"),
            2,
        );
        assert_eq!((d, a), (Ok(()), Ok(())));
    }

    #[test]
    fn a_wrong_secret_is_refused_on_both_sides() {
        let (d, a) = exchange(
            secret("0123456789abcdef!"),
            secret("another secret, 16+"),
            2,
        );
        assert!(a.unwrap_err().contains("does not know the quorum secret"));
        assert!(d.is_err());
    }

    #[test]
    fn a_proof_for_another_server_id_is_refused() {
        // The dialer proves it is server 3; the acceptor expects the handshake's server 2.
        let (_, a) = exchange(secret("0123456789abcdef!"), secret("0123456789abcdef!"), 3);
        assert!(a.is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(QuorumSecret::new(b"short\n").is_err());
        assert!(QuorumSecret::new(b"   ").is_err());
    }
}
