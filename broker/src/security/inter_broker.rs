//! Inter-broker SASL: the client side a broker runs on a connection it opens to another
//! broker (replica fetchers) when the listener it reaches requires SASL, as Kafka does with
//! `sasl.mechanism.inter.broker.protocol` and the broker's own SCRAM user.
//!
//! One step right after connect, before any other request: SaslHandshake v1 naming the
//! mechanism, then SaslAuthenticate v2 carrying [`ScramClient`]'s messages; the server's
//! final signature is checked, so a broker replicates only from a peer that knows its
//! credential. Generic over the stream, so it runs the same over TCP or TLS.

use std::fmt;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::cli::client::round_trip;

use super::scram::{Mechanism, ScramClient};

const HANDSHAKE_VERSION: i16 = 1;
const AUTHENTICATE_VERSION: i16 = 2;
/// The largest SASL answer accepted (SCRAM messages are a few hundred bytes).
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// How this broker authenticates to the others (`--sasl-inter-broker-mechanism`,
/// `--inter-broker-user`, `--inter-broker-password-file`).
#[derive(Clone)]
pub struct InterBrokerSasl {
    pub mechanism: Mechanism,
    pub user: String,
    pub password: Vec<u8>,
}

impl fmt::Debug for InterBrokerSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        write!(f, "InterBrokerSasl({} as {:?})", self.mechanism, self.user)
    }
}

/// Authenticates `stream` as `sasl.user`; `correlation_id` is advanced past the requests
/// sent. An error names the step that failed (never the password).
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sasl: &InterBrokerSasl,
    client_id: &'static str,
    correlation_id: &mut i32,
) -> Result<(), String> {
    let handshake = SaslHandshakeRequest::default()
        .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
    let answer: SaslHandshakeResponse = call(
        stream,
        &handshake,
        HANDSHAKE_VERSION,
        client_id,
        correlation_id,
    )
    .await?;
    if answer.error_code != 0 {
        return Err(format!(
            "SaslHandshake for {} refused (error {}); the peer offers {:?}",
            sasl.mechanism,
            answer.error_code,
            answer
                .mechanisms
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
        ));
    }
    let mut client = ScramClient::new(sasl.mechanism, &sasl.user, &sasl.password);
    let server_first =
        authenticate_step(stream, client.client_first(), client_id, correlation_id).await?;
    let client_final = client
        .server_first(&server_first)
        .map_err(|err| format!("SCRAM server-first: {err}"))?;
    let server_final = authenticate_step(stream, client_final, client_id, correlation_id).await?;
    client
        .server_final(&server_final)
        .map_err(|err| format!("SCRAM server-final: {err}"))
}

async fn authenticate_step<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    message: Vec<u8>,
    client_id: &'static str,
    correlation_id: &mut i32,
) -> Result<Bytes, String> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
    let answer: SaslAuthenticateResponse = call(
        stream,
        &request,
        AUTHENTICATE_VERSION,
        client_id,
        correlation_id,
    )
    .await?;
    if answer.error_code != 0 {
        return Err(format!(
            "SaslAuthenticate refused (error {}): {}",
            answer.error_code,
            answer.error_message.as_deref().unwrap_or("")
        ));
    }
    Ok(answer.auth_bytes)
}

async fn call<S, R>(
    stream: &mut S,
    request: &R,
    version: i16,
    client_id: &'static str,
    correlation_id: &mut i32,
) -> Result<R::Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: kafka_protocol::protocol::Request,
{
    *correlation_id = correlation_id.wrapping_add(1);
    round_trip(
        stream,
        request,
        version,
        *correlation_id,
        client_id,
        ANSWER_BYTES_MAX,
    )
    .await
}
