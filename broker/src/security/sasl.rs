//! One connection's SASL authentication as Kafka runs it (KIP-43, KIP-152), sans-IO:
//! SaslHandshake names a mechanism, then SaslAuthenticate requests carry the mechanism's
//! messages until the client is authenticated or refused.
//!
//! Mechanisms: PLAIN (`authzid NUL user NUL password`, checked against the user's SCRAM
//! credential, so no password is stored for it either) and SCRAM-SHA-256/512
//! ([`super::scram`]). Until a connection is authenticated, only ApiVersions, SaslHandshake
//! and SaslAuthenticate are served ([`SaslSession::allows`]); a failed authentication
//! answers SASL_AUTHENTICATION_FAILED and the caller closes the connection after the answer,
//! as Kafka does.

use super::scram::{Mechanism, ScramCredential, ScramError, ScramServer};

/// UNSUPPORTED_SASL_MECHANISM.
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// ILLEGAL_SASL_STATE.
pub const ILLEGAL_SASL_STATE: i16 = 34;
/// SASL_AUTHENTICATION_FAILED.
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// API keys served before authentication: ApiVersions, SaslHandshake, SaslAuthenticate.
const PRE_AUTH_API_KEYS: [i16; 3] = [18, 17, 36];

/// A mechanism a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        match name {
            "PLAIN" => Some(SaslMechanism::Plain),
            other => Mechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }
}

/// The outcome of one SaslAuthenticate request.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslStep {
    /// Answer with these bytes; the exchange goes on.
    Continue(Vec<u8>),
    /// Answer with these bytes; the connection is now `principal` (`User:name`).
    Authenticated { answer: Vec<u8>, principal: String },
    /// Answer with this error code and message, then close the connection.
    Failed { code: i16, message: String },
}

enum State {
    /// No SaslHandshake yet.
    Start,
    /// SaslHandshake chose PLAIN.
    Plain,
    /// SaslHandshake chose a SCRAM mechanism; the exchange is under way.
    Scram {
        server: ScramServer,
        first_done: bool,
    },
    Authenticated {
        principal: String,
    },
    Failed,
}

/// One connection's authentication.
pub struct SaslSession {
    state: State,
}

impl Default for SaslSession {
    fn default() -> Self {
        Self::new()
    }
}

impl SaslSession {
    pub fn new() -> Self {
        SaslSession {
            state: State::Start,
        }
    }

    /// A session that authenticated as `principal` on the shard its connection moved from.
    pub fn authenticated(principal: String) -> Self {
        SaslSession {
            state: State::Authenticated { principal },
        }
    }

    /// The authenticated principal, once there is one.
    pub fn principal(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated { principal } => Some(principal),
            _ => None,
        }
    }

    /// Whether a request with `api_key` may be served now.
    pub fn allows(&self, api_key: i16) -> bool {
        matches!(self.state, State::Authenticated { .. }) || PRE_AUTH_API_KEYS.contains(&api_key)
    }

    /// SaslHandshake: Ok when `mechanism` is among `enabled`, else the error code (the
    /// answer lists `enabled` either way).
    pub fn handshake(&mut self, mechanism: &str, enabled: &[SaslMechanism]) -> Result<(), i16> {
        if !matches!(self.state, State::Start) {
            return Err(ILLEGAL_SASL_STATE);
        }
        let chosen = SaslMechanism::from_name(mechanism)
            .filter(|m| enabled.contains(m))
            .ok_or(UNSUPPORTED_SASL_MECHANISM)?;
        self.state = match chosen {
            SaslMechanism::Plain => State::Plain,
            SaslMechanism::Scram(m) => State::Scram {
                server: ScramServer::new(m),
                first_done: false,
            },
        };
        Ok(())
    }

    /// SaslAuthenticate with the mechanism's bytes; `credential_of(user, mechanism)` looks
    /// up stored credentials (PLAIN uses whichever SCRAM credential the user has).
    pub fn authenticate(
        &mut self,
        auth_bytes: &[u8],
        credential_of: &dyn Fn(&str, Mechanism) -> Option<ScramCredential>,
    ) -> SaslStep {
        let state = std::mem::replace(&mut self.state, State::Failed);
        match state {
            State::Plain => match check_plain(auth_bytes, credential_of) {
                Ok(user) => {
                    let principal = format!("User:{user}");
                    self.state = State::Authenticated {
                        principal: principal.clone(),
                    };
                    SaslStep::Authenticated {
                        answer: Vec::new(),
                        principal,
                    }
                }
                Err(message) => failed(SASL_AUTHENTICATION_FAILED, message),
            },
            State::Scram {
                mut server,
                first_done: false,
            } => {
                let m = server.mechanism();
                match server.client_first(auth_bytes, |user| credential_of(user, m)) {
                    Ok(answer) => {
                        self.state = State::Scram {
                            server,
                            first_done: true,
                        };
                        SaslStep::Continue(answer)
                    }
                    Err(e) => scram_failed(e),
                }
            }
            State::Scram {
                mut server,
                first_done: true,
            } => match server.client_final(auth_bytes) {
                Ok((answer, user)) => {
                    let principal = format!("User:{user}");
                    self.state = State::Authenticated {
                        principal: principal.clone(),
                    };
                    SaslStep::Authenticated { answer, principal }
                }
                Err(e) => scram_failed(e),
            },
            State::Start | State::Authenticated { .. } | State::Failed => failed(
                ILLEGAL_SASL_STATE,
                "SaslAuthenticate without a SaslHandshake before it, or after the exchange \
                 ended"
                    .into(),
            ),
        }
    }
}

fn failed(code: i16, message: String) -> SaslStep {
    SaslStep::Failed { code, message }
}

fn scram_failed(e: ScramError) -> SaslStep {
    failed(SASL_AUTHENTICATION_FAILED, e.to_string())
}

/// PLAIN: `[authzid] NUL user NUL password`; the authzid, when given, must be the user.
fn check_plain(
    message: &[u8],
    credential_of: &dyn Fn(&str, Mechanism) -> Option<ScramCredential>,
) -> Result<String, String> {
    let invalid = || "Authentication failed: Invalid username or password".to_string();
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    let user = std::str::from_utf8(user).map_err(|_| invalid())?;
    if user.is_empty() || password.is_empty() {
        return Err(invalid());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(
            "Authentication failed: Client requested an authorization id that is \
                    different from username"
                .into(),
        );
    }
    let verified = [Mechanism::Sha512, Mechanism::Sha256]
        .into_iter()
        .filter_map(|m| credential_of(user, m))
        .any(|c| c.verify_password(password));
    if verified {
        Ok(user.to_owned())
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::ITERATIONS_MIN;

    fn lookup(user: &str, m: Mechanism) -> Option<ScramCredential> {
        (user == "alice" && m == Mechanism::Sha512)
            .then(|| ScramCredential::derive(m, b"secret", b"fixed salt for tests", ITERATIONS_MIN))
    }

    const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(Mechanism::Sha256),
        SaslMechanism::Scram(Mechanism::Sha512),
    ];

    #[test]
    fn plain_checks_the_scram_credential() {
        let mut s = SaslSession::new();
        assert!(!s.allows(0), "Produce before authentication");
        assert!(s.allows(18) && s.allows(17) && s.allows(36));
        s.handshake("PLAIN", &ALL).unwrap();
        let step = s.authenticate(b"\0alice\0secret", &lookup);
        assert_eq!(
            step,
            SaslStep::Authenticated {
                answer: vec![],
                principal: "User:alice".into()
            }
        );
        assert!(s.allows(0));
        assert_eq!(s.principal(), Some("User:alice"));
        // Nothing more after the exchange.
        assert!(matches!(
            s.authenticate(b"x", &lookup),
            SaslStep::Failed {
                code: ILLEGAL_SASL_STATE,
                ..
            }
        ));
    }

    #[test]
    fn plain_refusals() {
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0secret",
            b"bob\0alice\0secret",
            b"alice\0secret",
            b"\0alice\0secret\0more",
            b"\0\0",
        ] {
            let mut s = SaslSession::new();
            s.handshake("PLAIN", &ALL).unwrap();
            assert!(
                matches!(
                    s.authenticate(bad, &lookup),
                    SaslStep::Failed {
                        code: SASL_AUTHENTICATION_FAILED,
                        ..
                    }
                ),
                "{bad:?}"
            );
            assert!(!s.allows(0));
        }
    }

    #[test]
    fn handshake_errors() {
        let mut s = SaslSession::new();
        assert_eq!(s.handshake("GSSAPI", &ALL), Err(UNSUPPORTED_SASL_MECHANISM));
        assert_eq!(
            s.handshake("PLAIN", &[SaslMechanism::Scram(Mechanism::Sha512)]),
            Err(UNSUPPORTED_SASL_MECHANISM)
        );
        s.handshake("SCRAM-SHA-512", &ALL).unwrap();
        assert_eq!(s.handshake("PLAIN", &ALL), Err(ILLEGAL_SASL_STATE));
        let mut fresh = SaslSession::new();
        assert!(matches!(
            fresh.authenticate(b"n,,n=alice,r=x", &lookup),
            SaslStep::Failed {
                code: ILLEGAL_SASL_STATE,
                ..
            }
        ));
    }

    #[test]
    fn scram_runs_two_round_trips() {
        let mut s = SaslSession::new();
        s.handshake("SCRAM-SHA-512", &ALL).unwrap();
        let SaslStep::Continue(server_first) = s.authenticate(b"n,,n=alice,r=abc", &lookup) else {
            panic!("no server-first");
        };
        assert!(server_first.starts_with(b"r=abc"));
        assert!(!s.allows(0));
        // A wrong proof ends it.
        let text = String::from_utf8(server_first).unwrap();
        let nonce = text.split(',').next().unwrap();
        let bad_final = format!("c=biws,{nonce},p=AAAA");
        assert!(matches!(
            s.authenticate(bad_final.as_bytes(), &lookup),
            SaslStep::Failed {
                code: SASL_AUTHENTICATION_FAILED,
                ..
            }
        ));
        assert!(!s.allows(0));
        // An unknown user fails at the first message.
        let mut s = SaslSession::new();
        s.handshake("SCRAM-SHA-256", &ALL).unwrap();
        assert!(matches!(
            s.authenticate(b"n,,n=alice,r=abc", &lookup),
            SaslStep::Failed {
                code: SASL_AUTHENTICATION_FAILED,
                ..
            }
        ));
    }
}
