//! Proves several listeners on one in-process server with two shards: every shard accepts on
//! every listener, and Metadata, FindCoordinator and DescribeCluster answer each connection
//! with the endpoint of the listener it came in on (a listener's advertised endpoint, else its
//! bound address).

mod kafka_support;

use broker::cli::client::Client;
use broker::security::listener::{self, ListenerSecurity};
use broker::server::{self, ServeConfig};
use kafka_protocol::messages::{DescribeClusterRequest, FindCoordinatorRequest, MetadataRequest};
use kafka_protocol::protocol::StrBytes;

#[test]
fn each_connection_sees_its_own_listeners_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let map = listener::parse_protocol_map("INTERNAL:PLAINTEXT").unwrap();
    let listeners = listener::parse_listeners(
        &[
            "PLAINTEXT://127.0.0.1:0".to_string(),
            "INTERNAL://127.0.0.1:0".to_string(),
        ],
        &["INTERNAL://broker-0.internal:19092".to_string()],
        &map,
    )
    .unwrap();
    let server = server::start(ServeConfig {
        node_id: 7,
        security: ListenerSecurity {
            listeners,
            ..Default::default()
        },
        ..kafka_support::config(kafka_support::two_shards_profile(), dir.path())
    })
    .expect("server starts");
    let names: Vec<&str> = server.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["PLAINTEXT", "INTERNAL"]);
    let plain = server.listeners[0].address;
    let internal = server.listeners[1].address;
    assert_ne!(plain.port(), internal.port());
    assert_eq!(server.addr, plain);
    let expected = [
        (plain, ("127.0.0.1".to_string(), plain.port() as i32)),
        (internal, ("broker-0.internal".to_string(), 19092)),
    ];
    // Several connections per listener, so both shards' sockets answer (SO_REUSEPORT spreads
    // them); each answers with the endpoint of the listener.
    for (address, (host, port)) in &expected {
        for _ in 0..8 {
            let mut client = Client::connect(&address.to_string()).unwrap();
            let meta = client
                .call(&MetadataRequest::default().with_topics(None), 12)
                .unwrap();
            let brokers: Vec<(i32, String, i32)> = meta
                .brokers
                .iter()
                .map(|b| (b.node_id.0, b.host.to_string(), b.port))
                .collect();
            assert_eq!(brokers, [(7, host.clone(), *port)]);
            let found = client
                .call(
                    &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
                    2,
                )
                .unwrap();
            assert_eq!(found.error_code, 0);
            assert_eq!((found.host.to_string(), found.port), (host.clone(), *port));
            let cluster = client
                .call(&DescribeClusterRequest::default().with_endpoint_type(1), 1)
                .unwrap();
            assert_eq!(
                (cluster.brokers[0].host.to_string(), cluster.brokers[0].port),
                (host.clone(), *port)
            );
        }
    }
    assert!(server
        .metrics
        .iter()
        .all(|m| broker::server::metrics::ShardMetrics::get(&m.connections_accepted) > 0));
}
