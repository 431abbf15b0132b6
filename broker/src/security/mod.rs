//! Authentication and authorization of Kafka clients: SASL mechanisms and the credentials
//! they check.
//!
//! [`client`]: who is on the other end of a connection (principal, host);
//! [`scram`]: SCRAM-SHA-256/512 credentials and the server side of the exchange (sans-IO);
//! [`credentials`]: where a single node keeps them; [`authorizer`]: Kafka's ACL model and
//! its decisions (sans-IO); [`sasl`]: one connection's SaslHandshake/SaslAuthenticate
//! exchange (PLAIN and SCRAM, sans-IO); [`listener`]: the listeners and what each demands;
//! [`tls`]: TLS configurations, their reload and the principal of a client certificate;
//! [`inter_broker`]: the SASL step a broker runs on its connections to other brokers;
//! [`acl_store`]: where ACLs are kept and how shards share them; [`access`]: one request's
//! checks against them.
pub mod access;
pub mod acl_store;
pub mod authorizer;
pub mod client;
pub mod credentials;
pub mod inter_broker;
pub mod listener;
pub mod sasl;
pub mod scram;
pub mod tls;
