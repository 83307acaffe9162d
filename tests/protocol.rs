//! The protocol layer without sockets. Every API the broker advertises, at every advertised version, answered by the real
//! dispatcher and decoded back with the codec: the bug this guards against is a response field
//! set that the negotiated version does not have, which would make the broker send a frame the
//! client cannot parse (or panic).
#![cfg(not(madsim))]

use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use broker::log::batch::builder;
use broker::protocol::{self, api_versions, Reply};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub async fn open_broker(dir: &std::path::Path) -> Arc<Broker> {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        // Codec tests: a new group forms at once rather than after Kafka's 3 s.
        group_initial_rebalance_delay_ms: 0,
        ..BrokerConfig::default()
    };
    Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap()
}

pub fn request_frame<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Option<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("protocol-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .ok()?;
    request.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

pub async fn call(broker: &Arc<Broker>, frame: Bytes) -> Option<Bytes> {
    match protocol::handle_request(broker, "127.0.0.1:1".parse().unwrap(), frame)
        .await
        .expect("valid request")
    {
        Reply::None => None,
        Reply::Now(frame) => Some(frame),
        Reply::Later(future) => Some(future.await),
    }
}

pub fn decode_response<R: Decodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    frame: Bytes,
) -> R {
    let mut buf = frame;
    let size = buf.get_i32() as usize;
    assert_eq!(size, buf.remaining(), "frame size prefix");
    let header = ResponseHeader::decode(&mut buf, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let response =
        R::decode(&mut buf, version).unwrap_or_else(|e| panic!("{api:?} v{version} response: {e}"));
    assert_eq!(
        buf.remaining(),
        0,
        "{api:?} v{version}: trailing bytes in response"
    );
    response
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A representative request for `api` at `version`, naming topic `t` (which exists).
fn request(api: ApiKey, version: i16, topic_id: uuid::Uuid) -> Option<Bytes> {
    request_for(api, version, "t", topic_id)
}

/// A representative request for `api` at `version`, naming topic `t`.
fn request_for(api: ApiKey, version: i16, t: &str, topic_id: uuid::Uuid) -> Option<Bytes> {
    let records = Bytes::from(builder::simple(3, 20, b'x', 1_700_000_000_000));
    let c = 7;
    match api {
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if version >= 3 {
                r = r
                    .with_client_software_name(StrBytes::from_static_str("t"))
                    .with_client_software_version(StrBytes::from_static_str("1"));
            }
            request_frame(api, version, c, &r)
        }
        ApiKey::Metadata => {
            let mut wanted =
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic(t)));
            if version >= 10 {
                wanted = wanted.with_topic_id(uuid::Uuid::nil());
            }
            let mut r = MetadataRequest::default().with_topics(Some(vec![wanted]));
            if version < 4 {
                r.allow_auto_topic_creation = true;
            }
            request_frame(api, version, c, &r)
        }
        ApiKey::Produce => {
            let r = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(topic(t))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records)),
                    ])]);
            request_frame(api, version, c, &r)
        }
        ApiKey::Fetch => {
            let mut ft = fetch_request::FetchTopic::default().with_partitions(vec![
                fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20),
            ]);
            ft = if version >= 13 {
                ft.with_topic_id(topic_id)
            } else {
                ft.with_topic(topic(t))
            };
            let r = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![ft]);
            request_frame(api, version, c, &r)
        }
        ApiKey::ListOffsets => {
            let partitions = [-1i64, -2, 0]
                .iter()
                .map(|&ts| {
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts)
                })
                .collect();
            let r = ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic(t))
                    .with_partitions(partitions),
            ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::CreateTopics => {
            let r = CreateTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(topic(&format!("created-v{version}")))
                    .with_num_partitions(2)
                    .with_replication_factor(1)
                    .with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_value(Some(StrBytes::from_static_str("60000"))),
                    ])]);
            request_frame(api, version, c, &r)
        }
        ApiKey::DeleteTopics => {
            let name = format!("created-v{}", version.min(5) + 2);
            let r = if version >= 6 {
                DeleteTopicsRequest::default()
                    .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(topic(&name)))])
            } else {
                DeleteTopicsRequest::default()
                    .with_topic_names(vec![topic(&name), topic("no-such-topic")])
            };
            request_frame(api, version, c, &r)
        }
        ApiKey::DeleteRecords => {
            let r = DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(0),
                    ]),
            ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::DescribeConfigs => {
            let r = DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t")),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str("1")),
            ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::CreatePartitions => {
            let r = CreatePartitionsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic("grow"))
                        .with_count(version as i32 + 2),
                ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::IncrementalAlterConfigs => {
            let r = IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("retention.bytes"))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_static_str("1000000"))),
                    ]),
            ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::AlterConfigs => {
            let r = AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("3600000")))]),
            ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::DescribeCluster => {
            request_frame(api, version, c, &DescribeClusterRequest::default())
        }
        ApiKey::ElectLeaders => {
            // "t"-0 has one replica, which leads: ELECTION_NOT_NEEDED, nothing changes.
            let r = ElectLeadersRequest::default()
                .with_timeout_ms(1000)
                .with_topic_partitions(Some(vec![
                    elect_leaders_request::TopicPartitions::default()
                        .with_topic(topic("t"))
                        .with_partitions(vec![0]),
                ]));
            request_frame(api, version, c, &r)
        }
        ApiKey::AlterPartitionReassignments => {
            // A cancel of "t"-0, which has no reassignment running: NO_REASSIGNMENT_IN_PROGRESS,
            // nothing changes.
            let r = AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![
                            alter_partition_reassignments_request::ReassignablePartition::default(),
                        ]),
                ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::ListPartitionReassignments => request_frame(
            api,
            version,
            c,
            &ListPartitionReassignmentsRequest::default().with_timeout_ms(1000),
        ),
        ApiKey::DescribeTopicPartitions => request_frame(
            api,
            version,
            c,
            &DescribeTopicPartitionsRequest::default()
                .with_topics(vec![
                    describe_topic_partitions_request::TopicRequest::default().with_name(topic(t)),
                ])
                .with_response_partition_limit(1),
        ),
        ApiKey::DescribeQuorum => {
            let r = DescribeQuorumRequest::default().with_topics(vec![
                describe_quorum_request::TopicData::default()
                    .with_topic_name(topic("__cluster_metadata"))
                    .with_partitions(vec![describe_quorum_request::PartitionData::default()]),
            ]);
            request_frame(api, version, c, &r)
        }
        ApiKey::InitProducerId => request_frame(
            api,
            version,
            c,
            &InitProducerIdRequest::default().with_transaction_timeout_ms(1000),
        ),
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if version >= 4 {
                r = r.with_coordinator_keys(vec![StrBytes::from_static_str("g")]);
            } else {
                r = r.with_key(StrBytes::from_static_str("g"));
            }
            request_frame(api, version, c, &r)
        }
        ApiKey::JoinGroup => {
            // A group per version: a lone member's join completes at once (v0-3), and a first
            // join without a member id gets MEMBER_ID_REQUIRED (v4+).
            let r = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(format!("join-{version}"))))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if version >= 1 { 10_000 } else { -1 })
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0"))]);
            request_frame(api, version, c, &r)
        }
        ApiKey::SyncGroup => request_frame(
            api,
            version,
            c,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("nobody")),
        ),
        ApiKey::Heartbeat => request_frame(
            api,
            version,
            c,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("nobody")),
        ),
        ApiKey::LeaveGroup => {
            let mut r =
                LeaveGroupRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g")));
            if version >= 3 {
                r = r.with_members(vec![leave_group_request::MemberIdentity::default()
                    .with_member_id(StrBytes::from_static_str("nobody"))]);
            } else {
                r = r.with_member_id(StrBytes::from_static_str("nobody"));
            }
            request_frame(api, version, c, &r)
        }
        ApiKey::OffsetCommit => {
            let mut r = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("simple")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1)
                                .with_committed_metadata(Some(StrBytes::from_static_str("m"))),
                        ]),
                ]);
            if (2..=4).contains(&version) {
                r = r.with_retention_time_ms(-1);
            }
            request_frame(api, version, c, &r)
        }
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if version >= 8 {
                r = r.with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("simple")))
                        .with_topics(None),
                ]);
            } else {
                r = r
                    .with_group_id(GroupId(StrBytes::from_static_str("simple")))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic(t))
                            .with_partition_indexes(vec![0, 1]),
                    ]));
            }
            request_frame(api, version, c, &r)
        }
        ApiKey::ListGroups => request_frame(api, version, c, &ListGroupsRequest::default()),
        ApiKey::DescribeGroups => request_frame(
            api,
            version,
            c,
            &DescribeGroupsRequest::default().with_groups(vec![
                GroupId(StrBytes::from_static_str("join-0")),
                GroupId(StrBytes::from_static_str("unknown")),
            ]),
        ),
        ApiKey::DeleteGroups => request_frame(
            api,
            version,
            c,
            &DeleteGroupsRequest::default().with_groups_names(vec![
                GroupId(StrBytes::from_static_str("simple")),
                GroupId(StrBytes::from_static_str("join-0")),
            ]),
        ),
        ApiKey::OffsetDelete => request_frame(
            api,
            version,
            c,
            &OffsetDeleteRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("simple")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]),
        ),
        ApiKey::OffsetForLeaderEpoch => request_frame(
            api,
            version,
            c,
            &OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic(t))
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(0),
                        ]),
                ]),
        ),
        // The transactional requests of an id nobody initialised: each answers an error of its
        // own (the coordinator's), in the response format of its version.
        ApiKey::AddPartitionsToTxn if version < 4 => request_frame(
            api,
            version,
            c,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(
                    "tx",
                )))
                .with_v3_and_below_producer_id(ProducerId(1))
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![0]),
                ]),
        ),
        // v4+ is the brokers' form (a partition leader's KIP-890 verification).
        ApiKey::AddPartitionsToTxn => request_frame(
            api,
            version,
            c,
            &AddPartitionsToTxnRequest::default().with_transactions(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                    .with_producer_id(ProducerId(1))
                    .with_verify_only(true)
                    .with_topics(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(topic(t))
                            .with_partitions(vec![0]),
                    ]),
            ]),
        ),
        ApiKey::AddOffsetsToTxn => request_frame(
            api,
            version,
            c,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                .with_producer_id(ProducerId(1))
                .with_group_id(GroupId(StrBytes::from_static_str("simple"))),
        ),
        ApiKey::TxnOffsetCommit => request_frame(
            api,
            version,
            c,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                .with_group_id(GroupId(StrBytes::from_static_str("simple")))
                .with_producer_id(ProducerId(1))
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::EndTxn => request_frame(
            api,
            version,
            c,
            &EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                .with_producer_id(ProducerId(1))
                .with_committed(true),
        ),
        ApiKey::DescribeTransactions => request_frame(
            api,
            version,
            c,
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(StrBytes::from_static_str("tx"))]),
        ),
        ApiKey::ListTransactions => {
            let mut r = ListTransactionsRequest::default()
                .with_state_filters(vec![StrBytes::from_static_str("Ongoing")]);
            if version >= 1 {
                r = r.with_duration_filter(1_000);
            }
            request_frame(api, version, c, &r)
        }
        ApiKey::DescribeProducers => request_frame(
            api,
            version,
            c,
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic(t))
                    .with_partition_indexes(vec![0, 1]),
            ]),
        ),
        ApiKey::WriteTxnMarkers => request_frame(
            api,
            version,
            c,
            &WriteTxnMarkersRequest::default().with_markers(vec![
                write_txn_markers_request::WritableTxnMarker::default()
                    .with_producer_id(ProducerId(1))
                    .with_transaction_result(false)
                    .with_topics(vec![
                        write_txn_markers_request::WritableTxnMarkerTopic::default()
                            .with_name(topic(t))
                            .with_partition_indexes(vec![0]),
                    ]),
            ]),
        ),
        other => panic!("no representative request for {other:?}: add one to this test"),
    }
}

macro_rules! check_response {
    ($api:expr, $version:expr, $frame:expr, $($key:ident => $ty:ty),* $(,)?) => {
        match $api {
            $(ApiKey::$key => { let _: $ty = decode_response($api, $version, 7, $frame); })*
            other => panic!("no response type for {other:?}: add it to this test"),
        }
    };
}

#[tokio::test]
async fn every_advertised_api_version_answers_with_a_response_the_codec_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    let t = broker.create_topic("t", 2, 1, &[], false).await.unwrap();
    broker.create_topic("grow", 1, 1, &[], false).await.unwrap();
    let mut checked = 0;
    for &(api, min, max) in api_versions::SUPPORTED {
        for version in min.max(api.valid_versions().min)..=max {
            let frame = request(api, version, t.id)
                .unwrap_or_else(|| panic!("{api:?} v{version}: test request does not encode"));
            let Some(response) = call(&broker, frame).await else {
                continue;
            };
            check_response!(api, version, response,
                ApiVersions => ApiVersionsResponse,
                Metadata => MetadataResponse,
                Produce => ProduceResponse,
                Fetch => FetchResponse,
                ListOffsets => ListOffsetsResponse,
                CreateTopics => CreateTopicsResponse,
                DeleteTopics => DeleteTopicsResponse,
                DeleteRecords => DeleteRecordsResponse,
                DescribeConfigs => DescribeConfigsResponse,
                CreatePartitions => CreatePartitionsResponse,
                IncrementalAlterConfigs => IncrementalAlterConfigsResponse,
                AlterConfigs => AlterConfigsResponse,
                DescribeCluster => DescribeClusterResponse,
                DescribeQuorum => DescribeQuorumResponse,
                ElectLeaders => ElectLeadersResponse,
                AlterPartitionReassignments => AlterPartitionReassignmentsResponse,
                ListPartitionReassignments => ListPartitionReassignmentsResponse,
                DescribeTopicPartitions => DescribeTopicPartitionsResponse,
                InitProducerId => InitProducerIdResponse,
                FindCoordinator => FindCoordinatorResponse,
                JoinGroup => JoinGroupResponse,
                SyncGroup => SyncGroupResponse,
                Heartbeat => HeartbeatResponse,
                LeaveGroup => LeaveGroupResponse,
                OffsetCommit => OffsetCommitResponse,
                OffsetFetch => OffsetFetchResponse,
                ListGroups => ListGroupsResponse,
                DescribeGroups => DescribeGroupsResponse,
                DeleteGroups => DeleteGroupsResponse,
                OffsetDelete => OffsetDeleteResponse,
                OffsetForLeaderEpoch => OffsetForLeaderEpochResponse,
                AddPartitionsToTxn => AddPartitionsToTxnResponse,
                AddOffsetsToTxn => AddOffsetsToTxnResponse,
                TxnOffsetCommit => TxnOffsetCommitResponse,
                EndTxn => EndTxnResponse,
                WriteTxnMarkers => WriteTxnMarkersResponse,
                DescribeTransactions => DescribeTransactionsResponse,
                ListTransactions => ListTransactionsResponse,
                DescribeProducers => DescribeProducersResponse,
            );
            checked += 1;
        }
    }
    assert!(checked > 60, "checked only {checked} api versions");
    broker.shutdown().await;
}

/// Sends one DescribeTopicPartitions v0 and decodes the answer.
async fn describe_topic_partitions(
    broker: &Arc<Broker>,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let api = ApiKey::DescribeTopicPartitions;
    let frame = call(broker, request_frame(api, 0, 7, &request).expect("encodes"))
        .await
        .expect("answered");
    decode_response(api, 0, 7, frame)
}

/// KIP-966's DescribeTopicPartitions as Kafka answers it: topics in name order, partitions
/// paged by `response_partition_limit` with a cursor that resumes exactly where the last
/// answer stopped (no partition twice, none skipped), unknown and invalid names with their
/// own errors, a cursor outside the named topics refused whole; the ELR fields null on a
/// broker without eligible leader replicas.
#[tokio::test]
async fn describe_topic_partitions_pages_with_its_cursor_and_reports_unknown_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    broker.create_topic("b", 3, 1, &[], false).await.unwrap();
    broker.create_topic("a", 2, 1, &[], false).await.unwrap();
    let named = |names: &[&str]| {
        names
            .iter()
            .map(|n| describe_topic_partitions_request::TopicRequest::default().with_name(topic(n)))
            .collect::<Vec<_>>()
    };
    // Every topic (internal ones aside), three partitions at a time: each once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let response = describe_topic_partitions(
            &broker,
            DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(3)
                .with_cursor(cursor.take()),
        )
        .await;
        let answered: usize = response.topics.iter().map(|t| t.partitions.len()).sum();
        assert!(answered <= 3, "{answered} partitions over the limit");
        if response.next_cursor.is_some() {
            assert_eq!(answered, 3, "a page stops only when full");
        }
        for t in response.topics.iter().filter(|t| !t.is_internal) {
            assert_eq!(t.error_code, 0);
            for p in &t.partitions {
                assert_eq!(p.leader_id.0, 1);
                assert_eq!(p.isr_nodes, vec![BrokerId(1)]);
                assert_eq!(p.eligible_leader_replicas, None, "ELR off: not kept");
                assert_eq!(p.last_known_elr, None);
                seen.push(format!(
                    "{}-{}",
                    t.name.as_ref().unwrap().as_str(),
                    p.partition_index
                ));
            }
        }
        match response.next_cursor {
            Some(next) => {
                cursor = Some(
                    describe_topic_partitions_request::Cursor::default()
                        .with_topic_name(next.topic_name)
                        .with_partition_index(next.partition_index),
                )
            }
            None => break,
        }
    }
    assert_eq!(seen, ["a-0", "a-1", "b-0", "b-1", "b-2"]);
    // Named topics: unknown and invalid names answered with their errors, in name order.
    let response = describe_topic_partitions(
        &broker,
        DescribeTopicPartitionsRequest::default()
            .with_topics(named(&["b", "no-such", "bad name"]))
            .with_response_partition_limit(2000),
    )
    .await;
    let outcome: Vec<(String, i16, usize)> = response
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().unwrap().to_string(),
                t.error_code,
                t.partitions.len(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("b".to_string(), 0, 3),
            ("bad name".to_string(), 17, 0), // INVALID_TOPIC_EXCEPTION
            ("no-such".to_string(), 3, 0),   // UNKNOWN_TOPIC_OR_PARTITION
        ]
    );
    // A cursor on a topic not named is an INVALID_REQUEST for every topic named.
    let response = describe_topic_partitions(
        &broker,
        DescribeTopicPartitionsRequest::default()
            .with_topics(named(&["b"]))
            .with_response_partition_limit(10)
            .with_cursor(Some(
                describe_topic_partitions_request::Cursor::default()
                    .with_topic_name(topic("a"))
                    .with_partition_index(0),
            )),
    )
    .await;
    assert_eq!(response.topics.len(), 1);
    assert_eq!(response.topics[0].error_code, 42); // INVALID_REQUEST
    broker.shutdown().await;
}

#[tokio::test]
async fn an_api_versions_request_of_an_unknown_version_gets_the_kip_511_answer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    // Version 99, with a body the broker must not try to decode.
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&18i16.to_be_bytes());
    frame.extend_from_slice(&99i16.to_be_bytes());
    frame.extend_from_slice(&5i32.to_be_bytes());
    frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let response = call(&broker, frame.freeze()).await.unwrap();
    // Header v0, body v0.
    let r: ApiVersionsResponse = decode_response(ApiKey::ApiVersions, 0, 5, response);
    assert_eq!(r.error_code, 35);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4));
}

#[tokio::test]
async fn produce_is_advertised_from_v0_but_old_versions_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    let r: ApiVersionsResponse = decode_response(
        ApiKey::ApiVersions,
        3,
        7,
        call(
            &broker,
            request(ApiKey::ApiVersions, 3, uuid::Uuid::nil()).unwrap(),
        )
        .await
        .unwrap(),
    );
    let produce = r.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!(produce.min_version, 0);
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&2i16.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    assert!(
        protocol::handle_request(&broker, "127.0.0.1:1".parse().unwrap(), frame.freeze())
            .await
            .is_err()
    );
}

/// Fuzzing the decoder and handlers with random and mutated frames (a proptest, so it runs in
/// the normal suite). The bugs it guards against: a panic on malformed input, an allocation
/// sized by a length the peer chose, a hang, or a bad request that damages the broker for
/// everyone else.
mod fuzz {
    use super::*;
    use broker::protocol::RequestError;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    /// A broker on the in-memory faulty disk without faults: the fuzzer's acks=all produces
    /// should not wait on real fsyncs.
    async fn memory_broker() -> Arc<Broker> {
        let disk = chaos::FaultyDisk::new(1, chaos::FaultyDiskConfig::default());
        let config = BrokerConfig {
            data_dir: "/fuzz".into(),
            listen: "127.0.0.1:0".into(),
            ..BrokerConfig::default()
        };
        Broker::open(config, Arc::new(disk), Arc::new(SystemClock))
            .await
            .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs one frame through the dispatcher. A long poll the fuzzer asked for is cut short:
    /// dropping it mid-wait is what a closing connection does too.
    async fn feed(broker: &Arc<Broker>, frame: Bytes) -> Result<(), RequestError> {
        match protocol::handle_request(broker, "127.0.0.1:2".parse().unwrap(), frame).await? {
            Reply::Later(future) => {
                let _ = tokio::time::timeout(std::time::Duration::from_millis(2), future).await;
            }
            Reply::Now(_) | Reply::None => {}
        }
        Ok(())
    }

    /// A topic made after the fuzzing (which may legitimately have deleted or trimmed the old
    /// ones) takes a produce and serves it back.
    async fn broker_still_serves(broker: &Arc<Broker>) {
        let topic_id = broker
            .create_topic("after", 1, 1, &[], false)
            .await
            .unwrap()
            .id;
        let produced: ProduceResponse = decode_response(
            ApiKey::Produce,
            9,
            7,
            call(
                broker,
                request_for(ApiKey::Produce, 9, "after", topic_id).unwrap(),
            )
            .await
            .unwrap(),
        );
        assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
        let fetched: FetchResponse = decode_response(
            ApiKey::Fetch,
            12,
            7,
            call(
                broker,
                request_for(ApiKey::Fetch, 12, "after", topic_id).unwrap(),
            )
            .await
            .unwrap(),
        );
        assert_eq!(fetched.responses[0].partitions[0].error_code, 0);
        assert!(fetched.responses[0].partitions[0]
            .records
            .as_ref()
            .is_some_and(|r| !r.is_empty()));
    }

    fn valid_frames(topic_id: uuid::Uuid) -> Vec<Bytes> {
        let mut frames = Vec::new();
        for &(api, min, max) in api_versions::SUPPORTED {
            for version in min.max(api.valid_versions().min)..=max {
                frames.extend(request(api, version, topic_id));
            }
        }
        frames
    }

    #[test]
    fn random_frames_never_panic_the_broker_or_harm_later_requests() {
        let rt = runtime();
        let broker = rt.block_on(async {
            let broker = memory_broker().await;
            broker.create_topic("t", 2, 1, &[], false).await.unwrap();
            broker
        });
        let mut runner = TestRunner::new(Config {
            cases: 1500,
            failure_persistence: None,
            ..Config::default()
        });
        // A valid API key and version in front of random bytes reaches the body decoders.
        let strategy = (
            0usize..api_versions::SUPPORTED.len(),
            any::<i16>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        );
        runner
            .run(
                &strategy,
                |(api_index, version_noise, body, keep_version)| {
                    let (api, min, max) = api_versions::SUPPORTED[api_index];
                    let version = if keep_version {
                        min + (version_noise.rem_euclid(max - min + 1))
                    } else {
                        version_noise
                    };
                    let mut frame = BytesMut::new();
                    frame.extend_from_slice(&(api as i16).to_be_bytes());
                    frame.extend_from_slice(&version.to_be_bytes());
                    frame.extend_from_slice(&1i32.to_be_bytes());
                    frame.extend_from_slice(&body);
                    let _ = rt.block_on(feed(&broker, frame.freeze()));
                    Ok(())
                },
            )
            .unwrap();
        rt.block_on(broker_still_serves(&broker));
    }

    #[test]
    fn mutated_valid_frames_never_panic_the_broker_or_harm_later_requests() {
        let rt = runtime();
        let (broker, topic_id) = rt.block_on(async {
            let broker = memory_broker().await;
            let t = broker.create_topic("t", 2, 1, &[], false).await.unwrap();
            broker.create_topic("grow", 1, 1, &[], false).await.unwrap();
            (broker, t.id)
        });
        let frames = valid_frames(topic_id);
        let mut runner = TestRunner::new(Config {
            cases: 1500,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (
            0..frames.len(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            proptest::option::of(any::<usize>()),
            // Length-like fields set to huge or negative values: the allocation bound's test.
            proptest::option::of((
                any::<usize>(),
                prop_oneof![
                    Just(0x7fff_ffffu32),
                    Just(0xffff_ffffu32),
                    Just(0x0100_0000u32)
                ],
            )),
        );
        runner
            .run(&strategy, |(which, flips, cut, big)| {
                let mut frame = frames[which].to_vec();
                for (at, value) in flips {
                    // Keep the header's API key and version so the body decoder is reached.
                    if frame.len() > 4 {
                        let at = 4 + at % (frame.len() - 4);
                        frame[at] = value;
                    }
                }
                if let Some((at, value)) = big {
                    if frame.len() > 12 {
                        let at = 8 + at % (frame.len() - 12);
                        frame[at..at + 4].copy_from_slice(&value.to_be_bytes());
                    }
                }
                if let Some(cut) = cut {
                    frame.truncate(cut % (frame.len() + 1));
                }
                let _ = rt.block_on(feed(&broker, Bytes::from(frame)));
                Ok(())
            })
            .unwrap();
        rt.block_on(broker_still_serves(&broker));
    }
}

/// Kafka's own error codes for bad group input, and OffsetDelete undoing a commit. The bug this
/// guards against: a commit for a partition that does not exist (or with oversized metadata)
/// being stored, or a stranger's heartbeat being accepted.
#[tokio::test]
async fn bad_group_input_gets_kafkas_error_codes_and_offset_delete_removes_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    broker.create_topic("t", 2, 1, &[], false).await.unwrap();
    let group = || GroupId(StrBytes::from_static_str("bad-input"));
    let partition = |index: i32, metadata: String| {
        offset_commit_request::OffsetCommitRequestPartition::default()
            .with_partition_index(index)
            .with_committed_offset(5)
            .with_committed_metadata(Some(StrBytes::from_string(metadata)))
    };
    let commit = OffsetCommitRequest::default()
        .with_group_id(group())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![
                    partition(0, "ok".into()),
                    partition(1, "x".repeat(4097)),
                    partition(9, String::new()),
                ]),
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic("missing"))
                .with_partitions(vec![partition(0, String::new())]),
        ]);
    let frame = request_frame(ApiKey::OffsetCommit, 8, 7, &commit).unwrap();
    let r: OffsetCommitResponse = decode_response(
        ApiKey::OffsetCommit,
        8,
        7,
        call(&broker, frame).await.unwrap(),
    );
    let codes: Vec<Vec<i16>> = r
        .topics
        .iter()
        .map(|t| t.partitions.iter().map(|p| p.error_code).collect())
        .collect();
    assert_eq!(codes, vec![vec![0, 12, 3], vec![3]]);

    let fetch = |version: i16| {
        let r = OffsetFetchRequest::default()
            .with_group_id(group())
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![0, 1]),
            ]));
        request_frame(ApiKey::OffsetFetch, version, 7, &r).unwrap()
    };
    let r: OffsetFetchResponse = decode_response(
        ApiKey::OffsetFetch,
        7,
        7,
        call(&broker, fetch(7)).await.unwrap(),
    );
    let offsets: Vec<i64> = r.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(
        offsets,
        vec![5, -1],
        "only the valid partition was committed"
    );

    let heartbeat = HeartbeatRequest::default()
        .with_group_id(group())
        .with_generation_id(1)
        .with_member_id(StrBytes::from_static_str("stranger"));
    let frame = request_frame(ApiKey::Heartbeat, 3, 7, &heartbeat).unwrap();
    let r: HeartbeatResponse =
        decode_response(ApiKey::Heartbeat, 3, 7, call(&broker, frame).await.unwrap());
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID");

    let delete = OffsetDeleteRequest::default()
        .with_group_id(group())
        .with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]),
        ]);
    let frame = request_frame(ApiKey::OffsetDelete, 0, 7, &delete).unwrap();
    let r: OffsetDeleteResponse = decode_response(
        ApiKey::OffsetDelete,
        0,
        7,
        call(&broker, frame).await.unwrap(),
    );
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r: OffsetFetchResponse = decode_response(
        ApiKey::OffsetFetch,
        7,
        7,
        call(&broker, fetch(7)).await.unwrap(),
    );
    assert_eq!(r.topics[0].partitions[0].committed_offset, -1);
    broker.shutdown().await;
}

/// Appends `count` batches of `records` records of `value_len` bytes to partition `index` of
/// `topic`, and waits until they are durable (so the high watermark covers them).
async fn append_batches(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    count: usize,
    records: usize,
    value_len: usize,
) -> usize {
    let partition = broker.partition(topic, index).unwrap();
    let mut size = 0;
    for i in 0..count {
        let mut bytes =
            builder::simple(records, value_len, b'a' + (i % 26) as u8, 1_700_000_000_000);
        size = bytes.len();
        let info = partition.append(&mut bytes).await.unwrap();
        partition.wait_durable(&info).await.unwrap();
    }
    size
}

/// A Fetch v12 for partitions `(topic, index, partition_max_bytes)` from offset 0, answered at
/// once (no long poll).
async fn fetch_sizes(
    broker: &Arc<Broker>,
    max_bytes: i32,
    wanted: &[(&str, i32, i32)],
) -> Vec<usize> {
    let topics = wanted
        .iter()
        .map(|&(t, index, partition_max_bytes)| {
            fetch_request::FetchTopic::default()
                .with_topic(topic(t))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(index)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(partition_max_bytes)])
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(topics);
    let frame = request_frame(ApiKey::Fetch, 12, 7, &request).unwrap();
    let r: FetchResponse =
        decode_response(ApiKey::Fetch, 12, 7, call(broker, frame).await.unwrap());
    r.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            assert_eq!(p.error_code, 0);
            p.records.as_ref().map_or(0, |r| r.len())
        })
        .collect()
}

/// librdkafka's test 0082 asks for `fetch.max.bytes=1000000` with
/// `max.partition.fetch.bytes=20000000`; the broker bounded the first partition by the
/// partition limit alone and answered 19.4 MB, which the client refused as an invalid size.
#[tokio::test]
async fn fetch_bounds_the_first_partition_by_the_response_limit_too() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    broker.create_topic("many", 2, 1, &[], false).await.unwrap();
    // 40 batches of about 100 kB: 4 MB in partition 0, and a little in partition 1.
    let batch = append_batches(&broker, "many", 0, 40, 10, 10_000).await;
    append_batches(&broker, "many", 1, 2, 10, 10_000).await;
    let sizes = fetch_sizes(
        &broker,
        1_000_000,
        &[("many", 0, 20_000_000), ("many", 1, 20_000_000)],
    )
    .await;
    assert!(sizes[0] > 0, "the first partition returns data");
    assert!(
        sizes.iter().sum::<usize>() <= 1_000_000,
        "response records {sizes:?} exceed fetch.max.bytes"
    );
    assert_eq!(sizes[0] % batch, 0, "whole batches only");

    // A first batch larger than the response limit still comes back, alone and whole (KIP-74);
    // nothing else does.
    let sizes = fetch_sizes(
        &broker,
        50_000,
        &[("many", 0, 20_000_000), ("many", 1, 20_000_000)],
    )
    .await;
    assert_eq!(sizes, vec![batch, 0]);
    // The same when the partition limit is the smaller one.
    let sizes = fetch_sizes(
        &broker,
        1_000_000,
        &[("many", 0, 50_000), ("many", 1, 20_000_000)],
    )
    .await;
    assert_eq!(sizes[0], batch);
    assert!(sizes[0] + sizes[1] <= 1_000_000);
    // After the first partition, a batch larger than its partition's limit is not returned.
    let sizes = fetch_sizes(
        &broker,
        1_000_000,
        &[("many", 1, 20_000_000), ("many", 0, 50_000)],
    )
    .await;
    assert_eq!(sizes, vec![2 * batch, 0]);
    broker.shutdown().await;
}

/// kafka-python's admin client asks for authorized operations and got Kafka's "not requested"
/// value (INT32_MIN), which it decodes as a set holding operation 31 and refuses. Asked, the
/// broker answers every operation that applies to the resource (no authorizer, as Kafka's
/// `AclEntry.supportedOperations`); not asked, INT32_MIN.
#[tokio::test]
async fn authorized_operations_are_the_supported_sets_when_asked_and_int32_min_when_not() {
    const TOPIC_OPERATIONS: i32 = 3576; // READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
    const CLUSTER_OPERATIONS: i32 = 8096; // CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE_CONFIGS ALTER_CONFIGS IDEMPOTENT_WRITE
    const GROUP_OPERATIONS: i32 = 3400; // READ DELETE DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    broker.create_topic("t", 1, 1, &[], false).await.unwrap();
    for asked in [true, false] {
        let expect = |set: i32| if asked { set } else { i32::MIN };
        for version in [8, 10, 12] {
            let request = MetadataRequest::default()
                .with_topics(None)
                .with_include_cluster_authorized_operations(asked && version <= 10)
                .with_include_topic_authorized_operations(asked);
            let frame = request_frame(ApiKey::Metadata, version, 7, &request).unwrap();
            let r: MetadataResponse = decode_response(
                ApiKey::Metadata,
                version,
                7,
                call(&broker, frame).await.unwrap(),
            );
            let t = r
                .topics
                .iter()
                .find(|t| t.name.as_ref().unwrap().as_str() == "t")
                .unwrap();
            assert_eq!(
                t.topic_authorized_operations,
                expect(TOPIC_OPERATIONS),
                "Metadata v{version}"
            );
            if version <= 10 {
                assert_eq!(
                    r.cluster_authorized_operations,
                    expect(CLUSTER_OPERATIONS),
                    "Metadata v{version}"
                );
            }
        }
        let request =
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(asked);
        let frame = request_frame(ApiKey::DescribeCluster, 0, 7, &request).unwrap();
        let r: DescribeClusterResponse = decode_response(
            ApiKey::DescribeCluster,
            0,
            7,
            call(&broker, frame).await.unwrap(),
        );
        assert_eq!(r.cluster_authorized_operations, expect(CLUSTER_OPERATIONS));
        for version in [3, 5] {
            let request = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_static_str("no-such-group"))])
                .with_include_authorized_operations(asked);
            let frame = request_frame(ApiKey::DescribeGroups, version, 7, &request).unwrap();
            let r: DescribeGroupsResponse = decode_response(
                ApiKey::DescribeGroups,
                version,
                7,
                call(&broker, frame).await.unwrap(),
            );
            assert_eq!(
                r.groups[0].authorized_operations,
                expect(GROUP_OPERATIONS),
                "DescribeGroups v{version}"
            );
        }
    }
    broker.shutdown().await;
}

/// A topic with its own `compression.type` re-encodes produced batches, and an idempotent
/// producer's retry of such a batch is still answered with the original offsets: the producer
/// id, epoch and sequence survive the recompression. A batch damaged in transit is refused as
/// CORRUPT_MESSAGE, never given a fresh CRC.
#[tokio::test]
async fn a_recompressing_topic_keeps_idempotent_retries_and_refuses_damaged_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    let configs = [("compression.type".to_string(), "zstd".to_string())];
    broker
        .create_topic("z", 1, 1, &configs, false)
        .await
        .unwrap();
    let produce = |records: Vec<u8>| {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic("z"))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ])]);
        request_frame(ApiKey::Produce, 9, 7, &request).unwrap()
    };
    let answer = |frame: Bytes| {
        let r: ProduceResponse = decode_response(ApiKey::Produce, 9, 7, frame);
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    let batch = |seq: i32| {
        builder::with_producer(builder::simple(5, 30, b'q', 1_700_000_000_000), 9, 0, seq)
    };
    assert_eq!(
        answer(call(&broker, produce(batch(0))).await.unwrap()),
        (0, 0)
    );
    assert_eq!(
        answer(call(&broker, produce(batch(5))).await.unwrap()),
        (0, 5)
    );
    // The retry of the second batch: the original's offset, nothing appended.
    assert_eq!(
        answer(call(&broker, produce(batch(5))).await.unwrap()),
        (0, 5)
    );
    let partition = broker.partition("z", 0).unwrap();
    assert_eq!(partition.log.log_end_offset(), 10);
    let read = partition.log.read(0, 1 << 20, None).await.unwrap();
    let stored = broker::log::batch::validate(&read.records).unwrap();
    assert_eq!(stored.compression(), broker::log::batch::Compression::Zstd);
    assert_eq!((stored.producer_id, stored.base_sequence), (9, 0));

    let mut damaged = batch(10);
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let corrupt_message = 2;
    assert_eq!(
        answer(call(&broker, produce(damaged)).await.unwrap()).0,
        corrupt_message
    );
    assert_eq!(partition.log.log_end_offset(), 10);
    broker.shutdown().await;
}

/// A Fetch v12 of `txn-0` from offset 0 at `isolation_level`: (records bytes, high watermark,
/// last stable offset, aborted transactions as (producer id, first offset)).
async fn fetch_isolated(
    broker: &Arc<Broker>,
    isolation_level: i8,
) -> (usize, i64, i64, Option<Vec<(i64, i64)>>) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic("txn"))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let frame = request_frame(ApiKey::Fetch, 12, 8, &request).unwrap();
    let r: FetchResponse =
        decode_response(ApiKey::Fetch, 12, 8, call(broker, frame).await.unwrap());
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (
        p.records.as_ref().map_or(0, |r| r.len()),
        p.high_watermark,
        p.last_stable_offset,
        p.aborted_transactions.as_ref().map(|a| {
            a.iter()
                .map(|t| (t.producer_id.0, t.first_offset))
                .collect()
        }),
    )
}

/// ListOffsets v5 LATEST of `txn-0` at `isolation_level`.
async fn latest_offset(broker: &Arc<Broker>, isolation_level: i8) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic("txn"))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1),
            ])]);
    let frame = request_frame(ApiKey::ListOffsets, 5, 9, &request).unwrap();
    let r: ListOffsetsResponse = decode_response(
        ApiKey::ListOffsets,
        5,
        9,
        call(broker, frame).await.unwrap(),
    );
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

#[tokio::test]
async fn read_committed_fetches_stop_at_the_lso_and_list_the_aborted_transactions() {
    use broker::txn::marker::{ControlType, Marker};
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;
    broker.create_topic("txn", 1, 1, &[], false).await.unwrap();
    let partition = broker.partition("txn", 0).unwrap();
    let transactional = |pid: i64| {
        let built = builder::simple(2, 10, b't', 1_700_000_000_000);
        let built = builder::with_attributes(built, broker::log::batch::TRANSACTIONAL_BIT);
        builder::with_producer(built, pid, 0, 0)
    };
    for mut bytes in [transactional(7), transactional(8)] {
        let info = partition.append(&mut bytes).await.unwrap();
        partition.wait_durable(&info).await.unwrap();
    }
    append_batches(&broker, "txn", 0, 1, 1, 10).await; // offset 4, no transaction

    // Both transactions open: read_committed sees nothing, read_uncommitted everything.
    let (bytes, hw, lso, aborted) = fetch_isolated(&broker, 1).await;
    assert_eq!((bytes, hw, lso, aborted), (0, 5, 0, Some(vec![])));
    let (bytes, _, lso, aborted) = fetch_isolated(&broker, 0).await;
    assert!(bytes > 0);
    assert_eq!((lso, aborted), (0, None));
    assert_eq!(latest_offset(&broker, 1).await, 0);
    assert_eq!(latest_offset(&broker, 0).await, 5);

    // Producer 7 aborts (marker 5), producer 8 commits (marker 6).
    for (pid, control) in [(7, ControlType::Abort), (8, ControlType::Commit)] {
        let marker = Marker {
            control,
            coordinator_epoch: 0,
        };
        let (info, _) = partition
            .write_marker(pid, 0, marker, 1_700_000_000_000)
            .await
            .unwrap();
        partition.wait_durable(&info).await.unwrap();
    }
    let (bytes, hw, lso, aborted) = fetch_isolated(&broker, 1).await;
    assert!(bytes > 0);
    assert_eq!((hw, lso, aborted), (7, 7, Some(vec![(7, 0)])));
    assert_eq!(latest_offset(&broker, 1).await, 7);
    broker.shutdown().await;
}
