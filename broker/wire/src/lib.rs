//! # Kafka's wire, without a policy
//!
//! The two pieces of Kafka's protocol that both ends of a connection need, and nothing above
//! them: [`frame`] (a 4-byte length, then the bytes, with a bound checked before any of it is
//! read) and [`connection`] (one pipelined TCP connection: correlation ids, ApiVersions
//! negotiation, a timeout on every request). The broker serves frames with [`frame`]; the Rust
//! client (`client`) adds retries, metadata and batching on top of [`connection`]; a follower's
//! fetcher can reuse the connection without the client's retry policy.
//!
//! Runs on real tokio and inside the madsim simulator alike (tokio is madsim-tokio).

pub mod connection;
pub mod frame;

pub use connection::{
    ConnectError, Connection, ConnectionConfig, OutgoingRequest, Release, RequestError, RequestHold,
};
