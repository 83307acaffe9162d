//! Every deferred reply carries the error response the connection sends if the task making the
//! reply dies (the bug: such a reply was dropped and the client waited out its timeout). This
//! checks that response for every API that defers, at every advertised version: it encodes,
//! the codec decodes it back, and it carries UNKNOWN_SERVER_ERROR where the version has a code.
#![cfg(not(madsim))]

use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::log::batch::builder;
use broker::protocol::{self, api_versions, Reply};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn frame<R: Encodable>(api: ApiKey, version: i16, request: &R) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("deferred-errors")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    request.encode(&mut buf, version).unwrap();
    buf.freeze()
}

/// The fallback frame's body, decoded; its correlation id checked.
fn decode_fallback<R: Decodable>(api: ApiKey, version: i16, mut frame: Bytes) -> R {
    let size = frame.get_i32() as usize;
    assert_eq!(size, frame.len());
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 42);
    R::decode(&mut frame, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"))
}

async fn fallback(broker: &Arc<Broker>, frame: Bytes) -> Bytes {
    match protocol::handle_request(broker, "127.0.0.1:3".parse().unwrap(), frame)
        .await
        .expect("a valid request")
    {
        Reply::Later(deferred) => {
            let (_future, fallback) = deferred.into_parts();
            fallback()
        }
        Reply::Now(_) | Reply::None => panic!("expected a deferred reply"),
    }
}

fn versions(api: ApiKey) -> impl Iterator<Item = i16> {
    let min = api.valid_versions().min;
    (min..=api.valid_versions().max).filter(move |v| api_versions::supports(api, *v))
}

#[tokio::test]
async fn every_deferred_reply_has_an_error_response_the_codec_decodes_at_every_version() {
    let disk = chaos::FaultyDisk::new(1, chaos::FaultyDiskConfig::default());
    let config = BrokerConfig {
        data_dir: "/deferred".into(),
        group_initial_rebalance_delay_ms: 60_000,
        ..BrokerConfig::default()
    };
    let broker = Broker::open(config, Arc::new(disk), Arc::new(SystemClock))
        .await
        .unwrap();
    let topic = broker.create_topic("t", 1, -1, &[], false).await.unwrap();
    let error = ResponseError::UnknownServerError.code();
    let name = TopicName(StrBytes::from_static_str("t"));
    let group = GroupId(StrBytes::from_static_str("g"));
    let mut checked = 0;

    for v in versions(ApiKey::Produce).filter(|v| *v >= 3) {
        let records = builder::batch(&[builder::Record {
            key: None,
            value: Some(b"v".to_vec()),
            timestamp_ms: 0,
        }]);
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name.clone())
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ])]);
        let response: ProduceResponse = decode_fallback(
            ApiKey::Produce,
            v,
            fallback(&broker, frame(ApiKey::Produce, v, &request)).await,
        );
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!((partition.index, partition.error_code), (0, error), "v{v}");
        checked += 1;
    }
    for v in versions(ApiKey::Fetch) {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(60_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(if v < 13 {
                    name.clone()
                } else {
                    TopicName::default()
                })
                .with_topic_id(if v >= 13 { topic.id } else { uuid::Uuid::nil() })
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let response: FetchResponse = decode_fallback(
            ApiKey::Fetch,
            v,
            fallback(&broker, frame(ApiKey::Fetch, v, &request)).await,
        );
        assert_eq!(
            response.responses[0].partitions[0].error_code, error,
            "v{v}"
        );
        if v >= 7 {
            assert_eq!(response.error_code, error, "v{v}");
        }
        checked += 1;
    }
    for v in versions(ApiKey::JoinGroup) {
        let request = JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(60_000)
            .with_member_id(StrBytes::from_static_str(""))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(b"m"))]);
        let response: JoinGroupResponse = decode_fallback(
            ApiKey::JoinGroup,
            v,
            fallback(&broker, frame(ApiKey::JoinGroup, v, &request)).await,
        );
        assert_eq!(response.error_code, error, "v{v}");
        checked += 1;
    }
    for v in versions(ApiKey::SyncGroup) {
        let request = SyncGroupRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(1)
            .with_member_id(StrBytes::from_static_str("nobody"));
        let response: SyncGroupResponse = decode_fallback(
            ApiKey::SyncGroup,
            v,
            fallback(&broker, frame(ApiKey::SyncGroup, v, &request)).await,
        );
        assert_eq!(response.error_code, error, "v{v}");
        checked += 1;
    }
    for v in versions(ApiKey::OffsetCommit) {
        let request = OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name.clone())
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1),
                    ]),
            ]);
        let response: OffsetCommitResponse = decode_fallback(
            ApiKey::OffsetCommit,
            v,
            fallback(&broker, frame(ApiKey::OffsetCommit, v, &request)).await,
        );
        assert_eq!(response.topics[0].partitions[0].error_code, error, "v{v}");
        checked += 1;
    }
    for v in versions(ApiKey::OffsetFetch) {
        let request = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group.clone()),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(group.clone())
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(name.clone())
                        .with_partition_indexes(vec![0]),
                ]))
        };
        let response: OffsetFetchResponse = decode_fallback(
            ApiKey::OffsetFetch,
            v,
            fallback(&broker, frame(ApiKey::OffsetFetch, v, &request)).await,
        );
        match v {
            8.. => assert_eq!(response.groups[0].error_code, error, "v{v}"),
            2..=7 => assert_eq!(response.error_code, error, "v{v}"),
            _ => {}
        }
        checked += 1;
    }
    assert!(checked > 40, "{checked} versions checked");
}
