//! The Kafka wire protocol as this broker speaks it: frames, request headers, the table of
//! supported API versions, error codes, and the encoders the hot path writes by hand (Fetch
//! responses whose records are byte ranges of segment files).
//!
//! Messages off the hot path are decoded and encoded with the `kafka-protocol` crate, after a
//! pre-pass ([`precheck`]) has checked every length the body declares against its size; this
//! module holds only what that crate does not do for us. It knows nothing about shards,
//! partitions or sockets (see [`crate::server`]).

pub mod codes;
pub mod fetch_response;
pub mod frame;
pub mod offsets_legacy;
pub mod plain_batch;
pub mod precheck;
pub mod produce_legacy;
pub mod request_schemas;
pub mod response;
pub mod versions;
