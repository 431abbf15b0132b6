//! SaslHandshake and SaslAuthenticate on a SASL listener (KIP-43/KIP-152): until a connection
//! is authenticated, its reader hands every frame here, in order, before any handler task
//! runs. ApiVersions passes through to the dispatcher; SaslHandshake and SaslAuthenticate are
//! answered from the connection's [`SaslSession`]; anything else, and a failed
//! authentication, closes the connection after the answer, as Kafka's authenticator does.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::frame;
use crate::kafka::response::Response;
use crate::security::sasl::{SaslSession, SaslStep};

use super::dispatch::{decode, encode_answer, Close};
use super::shard::Shard;

/// What the reader does with a frame that arrived before authentication.
pub enum Gate {
    /// Serve it as usual (ApiVersions).
    Serve(Bytes),
    /// Send this answer; then close the connection with the reason, if any.
    Answer {
        response: Response,
        close: Option<String>,
    },
}

/// Handles one frame of a connection that is not authenticated yet.
pub fn before_authentication(
    shard: &Shard,
    session: &mut SaslSession,
    peer: &str,
    frame: Bytes,
) -> Result<Gate, Close> {
    let (key, _, _) = frame::peek_ids(&frame).ok_or_else(|| Close("truncated request".into()))?;
    if !session.allows(key) {
        return Err(Close(format!(
            "{peer}: request with api key {key} before SASL authentication"
        )));
    }
    if key == ApiKey::ApiVersions as i16 {
        return Ok(Gate::Serve(frame));
    }
    let mut request = frame::parse(frame).map_err(|err| Close(err.to_string()))?;
    let security = &shard.config.security;
    if request.api_key == ApiKey::SaslHandshake {
        if request.api_version == 0 {
            return Err(Close(format!(
                "{peer}: SaslHandshake v0 (raw SASL tokens) is not supported; clients that \
                 know SaslAuthenticate send v1"
            )));
        }
        let body: SaslHandshakeRequest = decode(&mut request)?;
        let result = session.handshake(body.mechanism.as_str(), &security.sasl_mechanisms);
        let reply = SaslHandshakeResponse::default()
            .with_error_code(result.err().unwrap_or(0))
            .with_mechanisms(
                security
                    .sasl_mechanisms
                    .iter()
                    .map(|m| StrBytes::from_static_str(m.name()))
                    .collect(),
            );
        let close = result.err().map(|code| {
            format!(
                "{peer}: SaslHandshake for mechanism {:?} refused (error {code})",
                body.mechanism.as_str()
            )
        });
        let response = encode_answer(&request, &reply);
        return Ok(Gate::Answer { response, close });
    }
    let body: SaslAuthenticateRequest = decode(&mut request)?;
    let credentials = shard.credentials.current();
    let lookup = |user: &str, m| credentials.get(user, m).cloned();
    let (reply, close) = match session.authenticate(&body.auth_bytes, &lookup) {
        SaslStep::Continue(bytes) => (
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
            None,
        ),
        SaslStep::Authenticated { answer, principal } => {
            tracing::info!("shard {}: {peer} authenticated as {principal}", shard.id);
            (
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(answer)),
                None,
            )
        }
        SaslStep::Failed { code, message } => {
            tracing::warn!(
                "shard {}: {peer}: SASL authentication failed: {message}",
                shard.id
            );
            (
                SaslAuthenticateResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message.clone()))),
                Some(format!("{peer}: SASL authentication failed")),
            )
        }
    };
    let response = encode_answer(&request, &reply);
    Ok(Gate::Answer { response, close })
}
