//! The Kafka wire protocol, without sockets: a request frame in, a response frame out.
//!
//! [`handle_request`] decodes the request header, checks the version against what we
//! advertise, decodes the body with the `kafka-protocol` crate (record batches stay raw bytes),
//! runs the handler and encodes the response. Handlers live one API per module. Errors from the
//! broker are mapped to Kafka error codes here, at the boundary ([`errors`]), and nowhere else.
//!
//! A request that cannot be decoded yields [`RequestError`]: the server logs it with the peer
//! address and closes that connection only, as Kafka does.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod admin;
pub mod api_versions;
pub mod authorized_operations;
pub mod delete_groups;
pub mod describe_groups;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod errors;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offsets_for_leader_epoch;
pub mod produce;
pub mod reassignments;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::broker::Broker;

/// A response produced later (acks=all produce, long-polling fetch, a parked JoinGroup), with
/// the error response to send instead if the task computing it dies (panics, or is dropped):
/// the client then gets an answer at once instead of waiting out its request timeout.
pub struct Deferred {
    future: Pin<Box<dyn Future<Output = Bytes> + Send + 'static>>,
    fallback: Box<dyn FnOnce() -> Bytes + Send + 'static>,
}

impl Deferred {
    pub fn new(
        future: impl Future<Output = Bytes> + Send + 'static,
        fallback: impl FnOnce() -> Bytes + Send + 'static,
    ) -> Deferred {
        Deferred {
            future: Box::pin(future),
            fallback: Box::new(fallback),
        }
    }

    /// Pinned, for polling by hand (tests).
    pub fn as_mut(&mut self) -> Pin<&mut Deferred> {
        Pin::new(self)
    }

    /// The response future and the error response that stands in for it if it never ends.
    pub fn into_parts(self) -> (DeferredFuture, Fallback) {
        (self.future, self.fallback)
    }
}

/// The future half of a [`Deferred`].
pub type DeferredFuture = Pin<Box<dyn Future<Output = Bytes> + Send + 'static>>;
/// The error half of a [`Deferred`]: encodes the API's error response (UNKNOWN_SERVER_ERROR).
pub type Fallback = Box<dyn FnOnce() -> Bytes + Send + 'static>;

impl Future for Deferred {
    type Output = Bytes;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Bytes> {
        self.future.as_mut().poll(cx)
    }
}

/// What the connection sends back for one request.
pub enum Reply {
    /// Nothing (a produce with acks=0).
    None,
    /// A response frame, ready now.
    Now(Bytes),
    /// A response frame, once the future completes. Responses still go out in request order.
    Later(Deferred),
}

/// A request that is not valid Kafka: the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request too short for a header")]
    Truncated,
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Everything a handler knows about the request beyond its body.
#[derive(Clone)]
pub struct RequestContext {
    pub broker: Arc<Broker>,
    pub peer: SocketAddr,
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    /// A slice of the request frame: cloning the context (every deferred reply does) copies
    /// no string.
    pub client_id: Option<kafka_protocol::protocol::StrBytes>,
}

impl RequestContext {
    /// Encodes `response` as a full frame: size, response header, body.
    pub fn encode<R: Encodable>(&self, response: &R) -> Bytes {
        encode_frame(self.api_key, self.version, self.correlation_id, response)
    }

    /// A reply ready now.
    pub fn now<R: Encodable>(&self, response: &R) -> Reply {
        Reply::Now(self.encode(response))
    }

    /// A reply produced later by `future`; if the task running it dies, the client gets
    /// `error_response(UNKNOWN_SERVER_ERROR)` instead, as Kafka answers a request whose
    /// handling threw.
    pub fn later<R, F, E>(&self, future: F, error_response: E) -> Reply
    where
        R: Encodable + Send + 'static,
        F: Future<Output = R> + Send + 'static,
        E: FnOnce(ResponseError) -> R + Send + 'static,
    {
        let ctx = self.clone();
        let fallback_ctx = self.clone();
        Reply::Later(Deferred::new(
            async move { ctx.encode(&future.await) },
            move || fallback_ctx.encode(&error_response(ResponseError::UnknownServerError)),
        ))
    }
}

/// Encodes a response frame. The response header version follows the request's API and
/// version (ApiVersions always uses header v0, as clients expect).
pub fn encode_frame<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Bytes {
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // Sized once: a fetch response carries a megabyte of records, and growing the buffer
    // by doubling would copy it again at every step.
    let capacity = 4
        + header.compute_size(header_version).unwrap_or(0)
        + response.compute_size(version).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_i32(0); // size, patched below
    header
        .encode(&mut buf, header_version)
        .expect("response header encodes");
    if let Err(e) = response.encode(&mut buf, version) {
        // A handler set a field the negotiated version lacks: a bug, caught by the per-version
        // encoding tests. Never send a malformed frame.
        panic!("encoding {api_key:?} v{version} response: {e}");
    }
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    debug_assert_eq!(buf.len(), capacity, "compute_size agrees with encode");
    buf.freeze()
}

fn decode<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, RequestError> {
    // Trailing bytes are ignored, as Kafka does (librdkafka 2.16 sends some in Metadata).
    T::decode(body, version).map_err(|e| RequestError::Decode {
        api,
        version,
        reason: e.to_string(),
    })
}

/// Request frames handed to [`handle_request`] in this process, by every broker in it.
static REQUESTS_HANDLED: AtomicU64 = AtomicU64::new(0);

/// How many request frames [`handle_request`] has been given in this process (all brokers,
/// every outcome). The simulator divides it by wall time for its speed line.
pub fn requests_handled() -> u64 {
    REQUESTS_HANDLED.load(Ordering::Relaxed)
}

std::thread_local! {
    /// Request frames handled on this thread: the simulator runs each simulation on a thread of
    /// its own, so this counts one run's requests while other runs go on beside it.
    static REQUESTS_ON_THREAD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many request frames [`handle_request`] has been given on the calling thread.
pub fn requests_handled_on_this_thread() -> u64 {
    REQUESTS_ON_THREAD.with(|n| n.get())
}

/// Handles one request frame (without its size prefix).
pub async fn handle_request(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    frame: Bytes,
) -> Result<Reply, RequestError> {
    REQUESTS_HANDLED.fetch_add(1, Ordering::Relaxed);
    REQUESTS_ON_THREAD.with(|n| n.set(n.get() + 1));
    if frame.len() < 8 {
        return Err(RequestError::Truncated);
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| RequestError::UnknownApi(api_key_raw))?;

    if api_key == ApiKey::ApiVersions && !api_versions::supports(api_key, version) {
        // KIP-511: answer a version we do not know in the v0 format, without decoding the body.
        return Ok(Reply::Now(api_versions::unsupported_version_reply(
            correlation_id,
        )));
    }
    if !api_versions::supports(api_key, version) || version < api_key.valid_versions().min {
        return Err(RequestError::UnsupportedVersion {
            api: api_key,
            version,
        });
    }
    let mut body = frame;
    let header_version = api_key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut body, header_version).map_err(|e| RequestError::Decode {
            api: api_key,
            version,
            reason: format!("header: {e}"),
        })?;
    let ctx = RequestContext {
        broker: Arc::clone(broker),
        peer,
        api_key,
        version,
        correlation_id,
        client_id: header.client_id,
    };
    let body = &mut body;
    Ok(match api_key {
        ApiKey::ApiVersions => {
            ctx.now(&api_versions::handle(&ctx, decode(api_key, version, body)?))
        }
        ApiKey::Metadata => ctx.now(&metadata::handle(&ctx, decode(api_key, version, body)?).await),
        ApiKey::Produce => produce::handle(&ctx, decode(api_key, version, body)?).await,
        ApiKey::Fetch => fetch::handle(&ctx, decode(api_key, version, body)?).await,
        ApiKey::InitProducerId => {
            ctx.now(&init_producer_id::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::AddPartitionsToTxn => {
            ctx.now(&add_partitions_to_txn::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::AddOffsetsToTxn => {
            ctx.now(&add_offsets_to_txn::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::TxnOffsetCommit => {
            ctx.now(&txn_offset_commit::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::EndTxn => ctx.now(&end_txn::handle(&ctx, decode(api_key, version, body)?).await),
        ApiKey::WriteTxnMarkers => {
            ctx.now(&write_txn_markers::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::DescribeTransactions => ctx.now(&describe_transactions::handle(
            &ctx,
            decode(api_key, version, body)?,
        )),
        ApiKey::ListTransactions => ctx.now(&list_transactions::handle(
            &ctx,
            decode(api_key, version, body)?,
        )),
        ApiKey::DescribeProducers => {
            ctx.now(&describe_producers::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::DescribeTopicPartitions => ctx.now(&describe_topic_partitions::handle(
            &ctx,
            decode(api_key, version, body)?,
        )),
        ApiKey::ListOffsets => {
            ctx.now(&list_offsets::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::OffsetForLeaderEpoch => {
            ctx.now(&offsets_for_leader_epoch::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::CreateTopics => {
            ctx.now(&admin::create_topics(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::DeleteTopics => {
            ctx.now(&admin::delete_topics(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::CreatePartitions => {
            ctx.now(&admin::create_partitions(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::DescribeConfigs => {
            ctx.now(&admin::describe_configs(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::AlterConfigs => {
            ctx.now(&admin::alter_configs(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::IncrementalAlterConfigs => {
            ctx.now(&admin::incremental_alter_configs(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::DeleteRecords => {
            ctx.now(&admin::delete_records(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::AlterPartitionReassignments => {
            ctx.now(&reassignments::alter(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::ListPartitionReassignments => {
            ctx.now(&reassignments::list(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::ElectLeaders => {
            ctx.now(&elect_leaders::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::DescribeCluster => ctx.now(&admin::describe_cluster(
            &ctx,
            decode(api_key, version, body)?,
        )),
        ApiKey::DescribeQuorum => {
            let plane = ctx.broker.plane();
            ctx.now(&describe_quorum::describe_quorum(
                &decode(api_key, version, body)?,
                version,
                ctx.broker.config.node_id,
                &plane.quorum_status(),
                &plane.image(),
            ))
        }
        ApiKey::FindCoordinator => {
            ctx.now(&find_coordinator::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::JoinGroup => join_group::handle(&ctx, decode(api_key, version, body)?).await,
        ApiKey::SyncGroup => sync_group::handle(&ctx, decode(api_key, version, body)?).await,
        ApiKey::Heartbeat => ctx.now(&heartbeat::handle(&ctx, decode(api_key, version, body)?)),
        ApiKey::LeaveGroup => leave_group::handle(&ctx, decode(api_key, version, body)?).await,
        ApiKey::OffsetCommit => offset_commit::handle(&ctx, decode(api_key, version, body)?).await,
        ApiKey::OffsetFetch => offset_fetch::handle(&ctx, decode(api_key, version, body)?),
        ApiKey::ListGroups => ctx.now(&list_groups::handle(&ctx, decode(api_key, version, body)?)),
        ApiKey::DescribeGroups => ctx.now(&describe_groups::handle(
            &ctx,
            decode(api_key, version, body)?,
        )),
        ApiKey::DeleteGroups => {
            ctx.now(&delete_groups::handle(&ctx, decode(api_key, version, body)?).await)
        }
        ApiKey::OffsetDelete => {
            ctx.now(&offset_delete::handle(&ctx, decode(api_key, version, body)?).await)
        }
        other => unreachable!("{other:?} passed the version check but has no handler"),
    })
}
