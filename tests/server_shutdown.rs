//! A shutdown that parked requests cannot hold up, over real sockets.
//!
//! The bug: SIGTERM waited for every parked reply, so a JoinGroup held
//! the broker for its rebalance timeout and a long-polling fetch for its max wait (minutes).
//! The waits here are bounded far below those timeouts; no test measures time.
#![cfg(not(madsim))]

use std::sync::Arc;
use std::time::Duration;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tests that talk to a broker run one at a time: they learn that a request was read by
/// counting the process's dispatched requests.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Far below the parked requests' 5 minutes; generous for a loaded machine.
const BOUND: Duration = Duration::from_secs(60);
/// The parked requests' own timeouts.
const FIVE_MINUTES_MS: i32 = 300_000;

async fn send<R: Encodable>(stream: &mut TcpStream, api: ApiKey, version: i16, request: &R) {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("server-limits-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.unwrap();
    stream.flush().await.unwrap();
}

/// The next response frame's body, or `None` if the broker closed the connection.
async fn receive<R: Decodable>(stream: &mut TcpStream, api: ApiKey, version: i16) -> Option<R> {
    let size = stream.read_i32().await.ok()?;
    let mut frame = vec![0; size as usize];
    stream.read_exact(&mut frame).await.ok()?;
    let mut frame = Bytes::from(frame);
    ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
    Some(R::decode(&mut frame, version).unwrap())
}

struct Running {
    broker: Arc<Broker>,
    addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(configure: impl FnOnce(&mut BrokerConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = BrokerConfig {
        data_dir: dir.path().join("data"),
        listen: addr.clone(),
        ..BrokerConfig::default()
    };
    configure(&mut config);
    let broker = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(broker::server::serve(
        Arc::clone(&broker),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        broker,
        addr,
        stop,
        server,
        _dir: dir,
    }
}

fn join_request() -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("parked")))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(FIVE_MINUTES_MS)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

fn fetch_request() -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(FIVE_MINUTES_MS)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("quiet")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

#[tokio::test]
async fn a_shutdown_answers_a_parked_join_and_a_parked_fetch_and_returns_without_waiting_out_their_timeouts(
) {
    let _serial = SERIAL.lock().await;
    // The group's first join waits out the initial delay (capped by the rebalance timeout):
    // five minutes, parked.
    let running = start(|c| c.group_initial_rebalance_delay_ms = FIVE_MINUTES_MS as i64).await;
    running
        .broker
        .create_topic("quiet", 1, -1, &[], false)
        .await
        .unwrap();
    let handled = broker::protocol::requests_handled();
    let mut joiner = TcpStream::connect(&running.addr).await.unwrap();
    let mut fetcher = TcpStream::connect(&running.addr).await.unwrap();
    // JoinGroup v3: no KIP-394 round trip, the first join parks at once.
    send(&mut joiner, ApiKey::JoinGroup, 3, &join_request()).await;
    send(&mut fetcher, ApiKey::Fetch, 4, &fetch_request()).await;

    // Both are parked: the join in the group, the fetch for lack of data. The fetch is parked
    // once both request frames reached the dispatcher.
    tokio::time::timeout(BOUND, async {
        loop {
            let join_parked = running
                .broker
                .groups()
                .read_group("parked", |g| g.members.len() == 1)
                .ok()
                .flatten()
                .unwrap_or(false);
            if join_parked && broker::protocol::requests_handled() >= handled + 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both requests parked");

    let _ = running.stop.send(());
    tokio::time::timeout(BOUND, running.server)
        .await
        .expect("the server returned within the bound, not after the parked timeouts")
        .unwrap();

    // The parked requests got their answers before the server returned.
    let join: JoinGroupResponse =
        tokio::time::timeout(BOUND, receive(&mut joiner, ApiKey::JoinGroup, 3))
            .await
            .unwrap()
            .expect("the parked join was answered");
    assert_eq!(join.error_code, ResponseError::NotCoordinator.code());
    let fetch: FetchResponse = tokio::time::timeout(BOUND, receive(&mut fetcher, ApiKey::Fetch, 4))
        .await
        .unwrap()
        .expect("the parked fetch was answered");
    let partition = &fetch.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "answered with what is there");
    assert_eq!(partition.records.as_ref().map(|r| r.len()), Some(0));

    // Then the logs close cleanly: the next open finds the clean-shutdown marker.
    running.broker.shutdown().await;
    let config = running.broker.config.clone();
    drop(running.broker);
    let reopened = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    assert!(reopened.partition("quiet", 0).unwrap().log.recovery().clean);
}

// Unloading the groups (parked joins and syncs answered NOT_COORDINATOR, nothing parked after)
// is tested step by step in broker::group::coordinator's tests.

#[tokio::test]
async fn a_connection_still_waiting_at_the_shutdown_bound_is_closed_and_the_logs_still_close_cleanly(
) {
    let _serial = SERIAL.lock().await;
    let running = start(|c| c.shutdown_timeout_ms = 200).await;
    // An offset write decided and never carried out (its future is kept, never polled): an
    // OffsetFetch of its group waits for it, a wait no shutdown step answers.
    running.broker.offsets_topic().await.unwrap();
    let key = broker::group::offsets::OffsetKey {
        group: "stuck".into(),
        topic: "t".into(),
        partition: 0,
    };
    let value = broker::group::offsets::CommittedOffset {
        offset: 1,
        leader_epoch: -1,
        metadata: None,
        commit_timestamp_ms: 0,
    };
    let _stuck = running
        .broker
        .groups()
        .commit("stuck", "", None, -1, vec![(key, Some(value))])
        .unwrap();
    let handled = broker::protocol::requests_handled();
    let mut waiting = TcpStream::connect(&running.addr).await.unwrap();
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("stuck")))
        .with_topics(None);
    send(&mut waiting, ApiKey::OffsetFetch, 7, &request).await;
    tokio::time::timeout(BOUND, async {
        while broker::protocol::requests_handled() < handled + 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();

    let _ = running.stop.send(());
    tokio::time::timeout(BOUND, running.server)
        .await
        .expect("the server returned at its bound")
        .unwrap();
    let answer: Option<OffsetFetchResponse> =
        tokio::time::timeout(BOUND, receive(&mut waiting, ApiKey::OffsetFetch, 7))
            .await
            .unwrap();
    assert!(answer.is_none(), "closed regardless: {answer:?}");
    running.broker.shutdown().await;
    let config = running.broker.config.clone();
    drop(running.broker);
    let reopened = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    assert!(
        reopened
            .partition("__consumer_offsets", 0)
            .unwrap()
            .log
            .recovery()
            .clean
    );
}
