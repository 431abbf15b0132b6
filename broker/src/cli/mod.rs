//! The `broker` binary's commands: `serve` runs the server; `topics`, `produce` and `consume`
//! are thin Kafka-protocol clients for operators.
