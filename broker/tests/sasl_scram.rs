//! Proves the SCRAM client a broker runs towards other brokers (`security::inter_broker`)
//! authenticates against the broker's server side over real connections, and that a user
//! added with AlterUserScramCredentials is live on every shard at once. How: a two-shard
//! single node with a SASL_PLAINTEXT listener, its first user written to the data directory
//! before start; blocking sockets driven through the async client with `block_on`.

use std::net::TcpStream;

use bytes::Bytes;
use futures_lite::future::block_on;
use futures_lite::io::AssertAsync;
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, MetadataRequest};
use kafka_protocol::protocol::StrBytes;

use broker::cli::client::round_trip;
use broker::security::credentials::CredentialStore;
use broker::security::inter_broker::{authenticate, InterBrokerSasl};
use broker::security::listener::{parse_listeners, parse_mechanisms, ListenerSecurity};
use broker::security::scram::{Mechanism, ScramCredential};
use broker::server::{self, ServeConfig, ServerHandle};

mod kafka_support;

fn start(data_dir: &std::path::Path) -> ServerHandle {
    let plaintext = kafka_support::config(kafka_support::two_shards_profile(), data_dir);
    server::start(ServeConfig {
        security: ListenerSecurity {
            listeners: parse_listeners(
                &["SASL_PLAINTEXT://127.0.0.1:0".to_string()],
                &[],
                &Default::default(),
            )
            .unwrap(),
            sasl_mechanisms: parse_mechanisms("SCRAM-SHA-256,SCRAM-SHA-512").unwrap(),
            ..Default::default()
        },
        ..plaintext
    })
    .expect("server starts")
}

fn sasl(mechanism: Mechanism, user: &str, password: &str) -> InterBrokerSasl {
    InterBrokerSasl {
        mechanism,
        user: user.into(),
        password: password.as_bytes().to_vec(),
    }
}

/// A new connection, authenticated (or not) with `as_user`; the stream and correlation id.
fn connect(
    server: &ServerHandle,
    as_user: &InterBrokerSasl,
) -> Result<(AssertAsync<TcpStream>, i32), String> {
    let socket = TcpStream::connect(server.addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut stream = AssertAsync::new(socket);
    let mut correlation_id = 0;
    block_on(authenticate(
        &mut stream,
        as_user,
        "test",
        &mut correlation_id,
    ))?;
    Ok((stream, correlation_id))
}

#[test]
fn the_scram_client_authenticates_and_a_new_user_is_live_on_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    CredentialStore::open(dir.path())
        .unwrap()
        .upsert(
            "admin",
            ScramCredential::new_random(Mechanism::Sha512, b"admin-pw", 4096),
        )
        .unwrap();
    let server = start(dir.path());
    let admin = sasl(Mechanism::Sha512, "admin", "admin-pw");

    // Authenticated: the connection is served.
    let (mut stream, correlation_id) = connect(&server, &admin).unwrap();
    let metadata = block_on(round_trip(
        &mut stream,
        &MetadataRequest::default(),
        12,
        correlation_id + 1,
        "test",
        1 << 20,
    ))
    .unwrap();
    assert_eq!(metadata.brokers.len(), 1);

    // Refused: wrong password, unknown user, a mechanism the user has no credential for.
    for bad in [
        sasl(Mechanism::Sha512, "admin", "wrong"),
        sasl(Mechanism::Sha512, "nobody", "admin-pw"),
        sasl(Mechanism::Sha256, "admin", "admin-pw"),
    ] {
        let err = connect(&server, &bad).unwrap_err();
        assert!(err.contains("SaslAuthenticate refused (error 58)"), "{err}");
    }

    // carol does not exist yet; admin adds her (salted, as the AdminClient sends it).
    let carol = sasl(Mechanism::Sha256, "carol", "carol-pw");
    assert!(connect(&server, &carol).is_err());
    let salt = b"carol-salt";
    let salted = Mechanism::Sha256.salted_password(b"carol-pw", salt, 4096);
    let alter = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_static_str("carol"))
            .with_mechanism(Mechanism::Sha256.kafka_type())
            .with_iterations(4096)
            .with_salt(Bytes::from_static(salt))
            .with_salted_password(Bytes::from(salted)),
    ]);
    let answer = block_on(round_trip(
        &mut stream,
        &alter,
        0,
        correlation_id + 2,
        "test",
        1 << 20,
    ))
    .unwrap();
    assert_eq!(answer.results.len(), 1);
    assert_eq!(answer.results[0].error_code, 0);
    // Connections land on either shard (SO_REUSEPORT): every one of them knows carol.
    for _ in 0..16 {
        connect(&server, &carol).unwrap();
    }
    server.shutdown();
    // And the file holds her for the next start.
    assert!(CredentialStore::open(dir.path())
        .unwrap()
        .get("carol", Mechanism::Sha256)
        .is_some());
}
