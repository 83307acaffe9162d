//! Topic and consumer group administration: create, delete, list, describe, configs,
//! partitions; list, describe and delete groups, and read, change or delete their committed
//! offsets.
//!
//! Each call is one request to one broker with the connection's request timeout (group calls
//! first ask FindCoordinator which broker coordinates the group, and go there). A failed admin
//! call may still have taken effect when the error is a [`RequestError`] with `maybe_sent()`;
//! check with `describe_topic` or `describe_group` before retrying a create or delete.
//!
//! Group errors carry Kafka's error code; [`error_name`] spells it the way Kafka's tools do
//! (`NON_EMPTY_GROUP`). Changing a group's offsets from outside (`alter_group_offsets`) is an
//! OffsetCommit with generation -1 and no member id, which the coordinator accepts only while
//! the group has no members: otherwise the answer is [`GroupAdminError::NonEmptyGroup`].

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    alter_partition_reassignments_request, describe_topic_partitions_request,
    list_partition_reassignments_request, AlterPartitionReassignmentsRequest, BrokerId,
    DescribeTopicPartitionsRequest, ListPartitionReassignmentsRequest,
};
use kafka_protocol::messages::{
    elect_leaders_request, ApiKey, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    ElectLeadersRequest, FindCoordinatorRequest, GroupId, IncrementalAlterConfigsRequest,
    ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{Client, MetadataError, TopicMetadata};
use super::connection::{Connection, RequestError};

const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// DescribeConfigs source for a default value.
const SOURCE_DEFAULT: i8 = 5;

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions`.
    pub partitions: i32,
    /// -1: the broker's default.
    pub replication_factor: i16,
    /// Topic config overrides, e.g. `("retention.ms", "60000")`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
}

/// One topic config as DescribeConfigs reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// The broker's default, not an override of this topic.
    pub is_default: bool,
    pub read_only: bool,
}

/// One change for IncrementalAlterConfigs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    /// Back to the broker's default.
    Delete(String),
}

/// The broker's word on `topic`, naming the topic once: `"t": message`, or only `: message`
/// when the broker's message already names it (Kafka's and ours do: "Topic 'a_b' collides
/// with existing topic: a.b").
fn about_topic(topic: &str, error: ResponseError, message: &Option<String>) -> String {
    let text = message.clone().unwrap_or_else(|| error.to_string());
    let named = [format!("\"{topic}\""), format!("'{topic}'")]
        .iter()
        .any(|quoted| text.contains(quoted.as_str()));
    if named {
        format!(": {text}")
    } else {
        format!(" \"{topic}\": {text}")
    }
}

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    #[error("topic \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("cannot create topic{}", about_topic(topic, *error, message))]
    Rejected {
        topic: String,
        error: ResponseError,
        message: Option<String>,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Why an operation on an existing topic failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic \"{0}\" does not exist")]
    UnknownTopic(String),
    #[error("{}", match about_topic(topic, *error, message).strip_prefix(": ") {
        Some(named) => named.to_string(),
        None => format!("topic{}", about_topic(topic, *error, message)),
    })]
    Rejected {
        topic: String,
        error: ResponseError,
        message: Option<String>,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl From<MetadataError> for TopicError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::UnknownTopic(t) => TopicError::UnknownTopic(t),
            MetadataError::Broker { topic, error } => TopicError::Rejected {
                topic,
                error,
                message: None,
            },
            MetadataError::Request(e) => TopicError::Request(e),
        }
    }
}

fn code(error_code: i16) -> ResponseError {
    ResponseError::try_from_code(error_code).unwrap_or(ResponseError::Unknown(error_code))
}

fn topic_error(topic: &str, error_code: i16, message: Option<&StrBytes>) -> TopicError {
    let error = code(error_code);
    if error == ResponseError::UnknownTopicOrPartition {
        return TopicError::UnknownTopic(topic.to_string());
    }
    TopicError::Rejected {
        topic: topic.to_string(),
        error,
        message: message.map(|m| m.to_string()),
    }
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One partition's eligible leader replicas (KIP-966), as DescribeTopicPartitions answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionElr {
    pub partition: i32,
    /// `None` where the broker keeps no ELR (eligible leader replicas off).
    pub elr: Option<Vec<i32>>,
    pub last_known_elr: Option<Vec<i32>>,
}

/// Topic administration over a [`Client`].
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.client.config().connection.request_timeout.as_millis())
            .unwrap_or(i32::MAX)
    }

    pub async fn create_topic(&self, topic: NewTopic) -> Result<(), CreateTopicError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(str(&topic.name)))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(
                    topic
                        .configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(str(k))
                                .with_value(Some(str(v)))
                        })
                        .collect(),
                )]);
        let response = connection.send(&request).await?;
        self.client.invalidate(&topic.name);
        let result = response
            .topics
            .iter()
            .find(|t| t.name.as_str() == topic.name);
        match result {
            Some(r) if r.error_code == 0 => Ok(()),
            Some(r) if r.error_code == ResponseError::TopicAlreadyExists.code() => {
                Err(CreateTopicError::AlreadyExists(topic.name))
            }
            Some(r) => Err(CreateTopicError::Rejected {
                topic: topic.name,
                error: code(r.error_code),
                message: r.error_message.as_ref().map(|m| m.to_string()),
            }),
            None => Err(CreateTopicError::Rejected {
                topic: topic.name,
                error: ResponseError::UnknownServerError,
                message: Some("no result for the topic".into()),
            }),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topic_names(vec![TopicName(str(name))]);
        let response = connection.send(&request).await?;
        self.client.invalidate(name);
        match response
            .responses
            .iter()
            .find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == name))
        {
            Some(r) if r.error_code == 0 => Ok(()),
            Some(r) => Err(topic_error(name, r.error_code, r.error_message.as_ref())),
            None => Err(TopicError::Rejected {
                topic: name.to_string(),
                error: ResponseError::UnknownServerError,
                message: Some("no result for the topic".into()),
            }),
        }
    }

    /// Every topic except internal ones (`__consumer_offsets`), sorted by name, as Kafka's
    /// `Admin.listTopics()` does by default.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>, RequestError> {
        let response = self.client.fetch_metadata(None, false).await?;
        let mut topics: Vec<TopicMetadata> = Vec::new();
        for t in response
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.is_internal)
        {
            let Some(name) = t.name.as_ref() else {
                continue;
            };
            if let Ok(meta) = self.client.topic_metadata(name.as_str(), false).await {
                topics.push(meta);
            }
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic's id, partitions, leaders and replicas (fresh, not cached).
    pub async fn describe_topic(&self, name: &str) -> Result<TopicMetadata, TopicError> {
        Ok(self.client.refresh_topic(name, false).await?)
    }

    /// Each partition's eligible leader replicas and last known ELR (DescribeTopicPartitions,
    /// KIP-966), in partition order, following the answer's cursor until every partition is
    /// in.
    pub async fn describe_topic_partitions(
        &self,
        name: &str,
    ) -> Result<Vec<PartitionElr>, TopicError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let ids = |ids: &Option<Vec<BrokerId>>| {
            ids.as_ref()
                .map(|ids| ids.iter().map(|id| id.0).collect::<Vec<i32>>())
        };
        let mut partitions = Vec::new();
        let mut cursor = None;
        loop {
            let request = DescribeTopicPartitionsRequest::default()
                .with_topics(vec![
                    describe_topic_partitions_request::TopicRequest::default()
                        .with_name(TopicName(str(name))),
                ])
                .with_response_partition_limit(2000)
                .with_cursor(cursor.take());
            let response = connection.send(&request).await?;
            for topic in response
                .topics
                .iter()
                .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
            {
                if topic.error_code != 0 {
                    return Err(topic_error(name, topic.error_code, None));
                }
                partitions.extend(topic.partitions.iter().map(|p| PartitionElr {
                    partition: p.partition_index,
                    elr: ids(&p.eligible_leader_replicas),
                    last_known_elr: ids(&p.last_known_elr),
                }));
            }
            match response.next_cursor {
                Some(next) if next.topic_name.as_str() == name => {
                    cursor = Some(
                        describe_topic_partitions_request::Cursor::default()
                            .with_topic_name(next.topic_name)
                            .with_partition_index(next.partition_index),
                    );
                }
                _ => return Ok(partitions),
            }
        }
    }

    /// A topic's configs, overrides and defaults, sorted by name.
    pub async fn describe_topic_config(&self, name: &str) -> Result<Vec<ConfigEntry>, TopicError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str(name))
                .with_configuration_keys(None),
        ]);
        let response = connection.send(&request).await?;
        let Some(result) = response
            .results
            .iter()
            .find(|r| r.resource_name.as_str() == name)
        else {
            return Err(TopicError::Rejected {
                topic: name.to_string(),
                error: ResponseError::UnknownServerError,
                message: Some("no result for the topic".into()),
            });
        };
        if result.error_code != 0 {
            return Err(topic_error(
                name,
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                is_default: c.config_source == SOURCE_DEFAULT,
                read_only: c.read_only,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Applies `changes` to a topic's configs atomically (IncrementalAlterConfigs).
    pub async fn alter_topic_config(
        &self,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<(), TopicError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let configs = changes
            .iter()
            .map(|c| match c {
                ConfigChange::Set(k, v) => AlterableConfig::default()
                    .with_name(str(k))
                    .with_config_operation(OP_SET)
                    .with_value(Some(str(v))),
                ConfigChange::Delete(k) => AlterableConfig::default()
                    .with_name(str(k))
                    .with_config_operation(OP_DELETE)
                    .with_value(None),
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str(name))
                .with_configs(configs),
        ]);
        let response = connection.send(&request).await?;
        match response
            .responses
            .iter()
            .find(|r| r.resource_name.as_str() == name)
        {
            Some(r) if r.error_code == 0 => Ok(()),
            Some(r) => Err(topic_error(name, r.error_code, r.error_message.as_ref())),
            None => Err(TopicError::Rejected {
                topic: name.to_string(),
                error: ResponseError::UnknownServerError,
                message: Some("no result for the topic".into()),
            }),
        }
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, name: &str, total: i32) -> Result<(), TopicError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(str(name)))
                .with_count(total)
                .with_assignments(None)]);
        let response = connection.send(&request).await?;
        self.client.invalidate(name);
        match response.results.iter().find(|r| r.name.as_str() == name) {
            Some(r) if r.error_code == 0 => Ok(()),
            Some(r) => Err(topic_error(name, r.error_code, r.error_message.as_ref())),
            None => Err(TopicError::Rejected {
                topic: name.to_string(),
                error: ResponseError::UnknownServerError,
                message: Some("no result for the topic".into()),
            }),
        }
    }
}

/// ElectLeaders' election type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// Give each partition back to its preferred (first) replica, if it is in the ISR.
    Preferred,
    /// Elect any live replica of a partition without a leader (may lose records).
    Unclean,
}

impl ElectionType {
    fn wire(self) -> i8 {
        match self {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        }
    }
}

/// One partition's ElectLeaders outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    /// `None`: a new leader was elected; else Kafka's error (ELECTION_NOT_NEEDED when the
    /// partition already had the leader asked for) and its message.
    pub error: Option<(ResponseError, Option<String>)>,
}

impl Admin {
    /// ElectLeaders for `partitions` (topic, partition indexes), or for every partition of
    /// every topic (`None`: then the partitions that needed no election are not reported).
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<ElectionResult>, ElectLeadersError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = ElectLeadersRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_election_type(election.wire())
            .with_topic_partitions(partitions.map(|topics| {
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(TopicName(str(&topic)))
                            .with_partitions(partitions)
                    })
                    .collect()
            }));
        let response = connection.send(&request).await?;
        if response.error_code != 0 {
            return Err(ElectLeadersError::Rejected(code(response.error_code)));
        }
        let mut results = Vec::new();
        for topic in &response.replica_election_results {
            self.client.invalidate(topic.topic.as_str());
            for p in &topic.partition_result {
                results.push(ElectionResult {
                    topic: topic.topic.to_string(),
                    partition: p.partition_id,
                    error: (p.error_code != 0).then(|| {
                        (
                            code(p.error_code),
                            p.error_message.as_ref().map(|m| m.to_string()),
                        )
                    }),
                });
            }
        }
        Ok(results)
    }
}

/// Why ElectLeaders failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ElectLeadersError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the election was refused: {}", error_name(.0))]
    Rejected(ResponseError),
}

/// One partition's AlterPartitionReassignments outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassignmentResult {
    pub topic: String,
    pub partition: i32,
    /// `None`: accepted (started, completed at once, or cancelled); else Kafka's error and
    /// its message.
    pub error: Option<(ResponseError, Option<String>)>,
}

/// A reassignment running, as ListPartitionReassignments answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    /// The target first, then the replicas being removed.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// Why a reassignment call failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReassignmentError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the request was refused: {}{}", error_name(.0), .1.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected(ResponseError, Option<String>),
}

impl Admin {
    /// AlterPartitionReassignments (KIP-455): per (topic, partition), the replicas to move to,
    /// or `None` to cancel the running reassignment. With `allow_replication_factor_change`
    /// false (KIP-860, needs v1) a target of another size is refused.
    pub async fn alter_partition_reassignments(
        &self,
        targets: Vec<(String, i32, Option<Vec<i32>>)>,
        allow_replication_factor_change: bool,
    ) -> Result<Vec<ReassignmentResult>, ReassignmentError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let mut topics: Vec<alter_partition_reassignments_request::ReassignableTopic> = Vec::new();
        for (topic, partition, replicas) in targets {
            let p = alter_partition_reassignments_request::ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()));
            match topics.iter_mut().find(|t| t.name.as_str() == topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(TopicName(str(&topic)))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_allow_replication_factor_change(allow_replication_factor_change)
            .with_topics(topics);
        let response = connection.send(&request).await?;
        if response.error_code != 0 {
            return Err(ReassignmentError::Rejected(
                code(response.error_code),
                response.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        let mut results = Vec::new();
        for topic in &response.responses {
            self.client.invalidate(topic.name.as_str());
            for p in &topic.partitions {
                results.push(ReassignmentResult {
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    error: (p.error_code != 0).then(|| {
                        (
                            code(p.error_code),
                            p.error_message.as_ref().map(|m| m.to_string()),
                        )
                    }),
                });
            }
        }
        Ok(results)
    }

    /// ListPartitionReassignments: the reassignments running among `partitions` (topic,
    /// partition indexes), or among all partitions (`None`).
    pub async fn list_partition_reassignments(
        &self,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<OngoingReassignment>, ReassignmentError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(partitions.map(|topics| {
                topics
                    .into_iter()
                    .map(|(topic, indexes)| {
                        list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                            .with_name(TopicName(str(&topic)))
                            .with_partition_indexes(indexes)
                    })
                    .collect()
            }));
        let response = connection.send(&request).await?;
        if response.error_code != 0 {
            return Err(ReassignmentError::Rejected(
                code(response.error_code),
                response.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        let ids = |ids: &[BrokerId]| ids.iter().map(|id| id.0).collect::<Vec<i32>>();
        Ok(response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OngoingReassignment {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    replicas: ids(&p.replicas),
                    adding: ids(&p.adding_replicas),
                    removing: ids(&p.removing_replicas),
                })
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer groups.

/// FindCoordinator key type of a group.
const KEY_TYPE_GROUP: i8 = 0;

/// Kafka's name for an error code, as its tools print it: `NON_EMPTY_GROUP`.
pub fn error_name(error: &ResponseError) -> String {
    if let ResponseError::Unknown(code) = error {
        return format!("UNKNOWN_ERROR_CODE_{code}");
    }
    let camel = format!("{error:?}");
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The broker that coordinates a group, as FindCoordinator names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinator {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// One group, as ListGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// `consumer` for Kafka consumers; empty for a group that only ever committed offsets.
    pub protocol_type: String,
    /// Kafka's state name (`Empty`, `Stable`, ...); `None` from brokers before ListGroups v4.
    pub state: Option<String>,
}

/// One member of a group, as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's partitions, decoded from its ConsumerProtocolAssignment, sorted; `None`
    /// when the group's protocol type is not `consumer` or the bytes do not decode.
    pub assignment: Option<Vec<(String, i32)>>,
}

/// A group's state and members, as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Kafka's state name. `Dead` for a group that does not exist (DescribeGroups before v6
    /// has no GROUP_ID_NOT_FOUND).
    pub state: String,
    pub protocol_type: String,
    /// The protocol the members agreed on; for consumers, the assignor (`range`, ...).
    pub assignment_strategy: String,
    pub members: Vec<GroupMember>,
    pub coordinator: Coordinator,
}

impl GroupDescription {
    /// Dead is how a broker describes a group it does not know.
    pub fn is_dead(&self) -> bool {
        self.state == "Dead"
    }
}

/// A committed offset, as OffsetFetch reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: Option<String>,
}

impl OffsetAndMetadata {
    /// One partition of an OffsetFetch response; `None` when nothing is committed (-1).
    pub(crate) fn fetched(
        offset: i64,
        leader_epoch: i32,
        metadata: Option<&kafka_protocol::protocol::StrBytes>,
    ) -> Option<OffsetAndMetadata> {
        (offset >= 0).then(|| OffsetAndMetadata {
            offset,
            leader_epoch: (leader_epoch >= 0).then_some(leader_epoch),
            metadata: metadata.filter(|m| !m.is_empty()).map(|m| m.to_string()),
        })
    }
}

/// Why listing groups failed.
#[derive(Debug, thiserror::Error)]
pub enum ListGroupsError {
    #[error("broker {node} cannot list groups: {error} ({})", error_name(error))]
    Broker { node: i32, error: ResponseError },
    #[error(
        "this broker does not report group states (ListGroups v4), so it cannot filter by state"
    )]
    StateFilterUnsupported,
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Why an operation on one group failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupAdminError {
    #[error("consumer group \"{0}\" does not exist")]
    GroupIdNotFound(String),
    /// DeleteGroups of a group with members (NON_EMPTY_GROUP), or an offset change refused
    /// because the group has members (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION or
    /// REBALANCE_IN_PROGRESS to a commit without a member id).
    #[error(
        "consumer group \"{group}\" has active members ({})",
        error_name(error)
    )]
    NonEmptyGroup { group: String, error: ResponseError },
    #[error("consumer group \"{group}\": {} ({})", message.as_deref().unwrap_or(&error.to_string()), error_name(error))]
    Rejected {
        group: String,
        error: ResponseError,
        message: Option<String>,
    },
    #[error(
        "consumer group \"{group}\", partition {topic}-{partition}: {error} ({})",
        error_name(error)
    )]
    Partition {
        group: String,
        topic: String,
        partition: i32,
        error: ResponseError,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl GroupAdminError {
    /// Kafka's error code behind this error, if the broker sent one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            GroupAdminError::GroupIdNotFound(_) => Some(ResponseError::GroupIdNotFound),
            GroupAdminError::NonEmptyGroup { error, .. }
            | GroupAdminError::Rejected { error, .. }
            | GroupAdminError::Partition { error, .. } => Some(*error),
            GroupAdminError::Request(_) => None,
        }
    }
}

fn group_error(group: &str, error_code: i16, message: Option<&StrBytes>) -> GroupAdminError {
    let error = code(error_code);
    match error {
        ResponseError::GroupIdNotFound => GroupAdminError::GroupIdNotFound(group.to_string()),
        ResponseError::NonEmptyGroup => GroupAdminError::NonEmptyGroup {
            group: group.to_string(),
            error,
        },
        _ => GroupAdminError::Rejected {
            group: group.to_string(),
            error,
            message: message.map(|m| m.to_string()),
        },
    }
}

fn no_result(group: &str) -> GroupAdminError {
    GroupAdminError::Rejected {
        group: group.to_string(),
        error: ResponseError::UnknownServerError,
        message: Some("no result for the group".into()),
    }
}

/// Groups `partitions` by topic, keeping the topics' first-seen order.
fn by_topic<'a>(
    partitions: impl IntoIterator<Item = &'a (String, i32)>,
) -> Vec<(String, Vec<i32>)> {
    let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|(t, _)| t == topic) {
            Some((_, ps)) => ps.push(*partition),
            None => topics.push((topic.clone(), vec![*partition])),
        }
    }
    topics
}

impl Admin {
    /// Asks FindCoordinator which broker coordinates `group`, and connects to it.
    pub async fn find_coordinator(
        &self,
        group: &str,
    ) -> Result<(Coordinator, Arc<Connection>), GroupAdminError> {
        let connection = self
            .client
            .any_connection()
            .await
            .map_err(RequestError::from)?;
        let request = FindCoordinatorRequest::default()
            .with_key(str(group))
            .with_key_type(KEY_TYPE_GROUP);
        let response = connection.send(&request).await?;
        if response.error_code != 0 {
            return Err(group_error(
                group,
                response.error_code,
                response.error_message.as_ref(),
            ));
        }
        let coordinator = Coordinator {
            node_id: response.node_id.0,
            host: response.host.to_string(),
            port: response.port,
        };
        // Learn the brokers' addresses, so the pool connects to the coordinator itself.
        self.client.fetch_metadata(Some(&[]), false).await?;
        let connection = self
            .client
            .connection(coordinator.node_id)
            .await
            .map_err(RequestError::from)?;
        Ok((coordinator, connection))
    }

    /// Every group of every broker, sorted by id; only those in `states` (Kafka's state
    /// names, any case) when it is not empty.
    pub async fn list_groups(&self, states: &[&str]) -> Result<Vec<GroupListing>, ListGroupsError> {
        let metadata = self.client.fetch_metadata(Some(&[]), false).await?;
        let mut nodes: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        for node in nodes {
            let connection = self
                .client
                .connection(node)
                .await
                .map_err(RequestError::from)?;
            let version = connection.version_for(ApiKey::ListGroups)?;
            if version < 4 && !states.is_empty() {
                return Err(ListGroupsError::StateFilterUnsupported);
            }
            let mut request = ListGroupsRequest::default();
            if version >= 4 {
                request = request.with_states_filter(states.iter().map(|s| str(s)).collect());
            }
            let response = connection.send(&request).await?;
            if response.error_code != 0 {
                return Err(ListGroupsError::Broker {
                    node,
                    error: code(response.error_code),
                });
            }
            for g in response.groups {
                let state = (version >= 4).then(|| g.group_state.to_string());
                // The broker filters; checked again so an older broker's answer cannot widen it.
                if !states.is_empty()
                    && !state
                        .as_deref()
                        .is_some_and(|s| states.iter().any(|w| w.eq_ignore_ascii_case(s)))
                {
                    continue;
                }
                let listing = GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state,
                };
                groups.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// A group's state, protocol and members (with their decoded assignments). A group the
    /// coordinator does not know comes back `Dead` with no members, as Kafka describes it.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, GroupAdminError> {
        let (coordinator, connection) = self.find_coordinator(group).await?;
        let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(str(group))]);
        let response = connection.send(&request).await?;
        let Some(described) = response
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
        else {
            return Err(no_result(group));
        };
        if described.error_code != 0 {
            return Err(group_error(
                group,
                described.error_code,
                described.error_message.as_ref(),
            ));
        }
        let protocol_type = described.protocol_type.to_string();
        let members = described
            .members
            .iter()
            .map(|m| GroupMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: if protocol_type == "consumer" {
                    broker::group::consumer_protocol::decode_assignment(&m.member_assignment)
                } else {
                    None
                },
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: described.group_state.to_string(),
            protocol_type,
            assignment_strategy: described.protocol_data.to_string(),
            members,
            coordinator,
        })
    }

    /// [`Admin::describe_group`] for each of `groups`, in order.
    pub async fn describe_groups(
        &self,
        groups: &[&str],
    ) -> Vec<Result<GroupDescription, GroupAdminError>> {
        let mut results = Vec::with_capacity(groups.len());
        for group in groups {
            results.push(self.describe_group(group).await);
        }
        results
    }

    /// Deletes each of `groups` (and its committed offsets); one result per group, in order.
    /// A group with members fails with [`GroupAdminError::NonEmptyGroup`], an unknown one with
    /// [`GroupAdminError::GroupIdNotFound`].
    pub async fn delete_groups(&self, groups: &[&str]) -> Vec<Result<(), GroupAdminError>> {
        let mut results = Vec::with_capacity(groups.len());
        for group in groups {
            results.push(self.delete_group(group).await);
        }
        results
    }

    async fn delete_group(&self, group: &str) -> Result<(), GroupAdminError> {
        let (_, connection) = self.find_coordinator(group).await?;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str(group))]);
        let response = connection.send(&request).await?;
        match response
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
        {
            Some(r) if r.error_code == 0 => Ok(()),
            Some(r) => Err(group_error(group, r.error_code, None)),
            None => Err(no_result(group)),
        }
    }

    /// A group's committed offsets: of `partitions`, or of every partition it committed when
    /// `None`. Partitions without a committed offset are left out.
    pub async fn list_group_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<BTreeMap<(String, i32), OffsetAndMetadata>, GroupAdminError> {
        let (_, connection) = self.find_coordinator(group).await?;
        let topics = partitions.map(|ps| {
            by_topic(ps)
                .into_iter()
                .map(|(topic, indexes)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(str(&topic)))
                        .with_partition_indexes(indexes)
                })
                .collect()
        });
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(str(group)))
            .with_topics(topics);
        let response = connection.send(&request).await?;
        if response.error_code != 0 {
            return Err(group_error(group, response.error_code, None));
        }
        let mut offsets = BTreeMap::new();
        for t in &response.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(GroupAdminError::Partition {
                        group: group.to_string(),
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        error: code(p.error_code),
                    });
                }
                if let Some(committed) = OffsetAndMetadata::fetched(
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.metadata.as_ref(),
                ) {
                    offsets.insert((t.name.to_string(), p.partition_index), committed);
                }
            }
        }
        Ok(offsets)
    }

    /// Sets a group's committed offsets (OffsetCommit with generation -1 and no member id).
    /// The coordinator accepts it only while the group has no members; a group that does not
    /// exist yet is created (Empty), as in Kafka.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<(), GroupAdminError> {
        let (_, connection) = self.find_coordinator(group).await?;
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for ((topic, partition), offset) in offsets {
            let p = OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_metadata(Some(StrBytes::default()));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(str(topic)))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(str(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(topics);
        let response = connection.send(&request).await?;
        for t in &response.topics {
            for p in &t.partitions {
                let error = code(p.error_code);
                match p.error_code {
                    0 => {}
                    _ if matches!(
                        error,
                        ResponseError::UnknownMemberId
                            | ResponseError::IllegalGeneration
                            | ResponseError::RebalanceInProgress
                    ) =>
                    {
                        return Err(GroupAdminError::NonEmptyGroup {
                            group: group.to_string(),
                            error,
                        })
                    }
                    _ => {
                        return Err(GroupAdminError::Partition {
                            group: group.to_string(),
                            topic: t.name.to_string(),
                            partition: p.partition_index,
                            error,
                        })
                    }
                }
            }
        }
        let answered: usize = response.topics.iter().map(|t| t.partitions.len()).sum();
        if answered != offsets.len() {
            return Err(no_result(group));
        }
        Ok(())
    }

    /// Deletes a group's committed offsets of `partitions` (OffsetDelete, KIP-496). Refused
    /// per partition with GROUP_SUBSCRIBED_TO_TOPIC while members subscribe to the topic.
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), GroupAdminError> {
        let (_, connection) = self.find_coordinator(group).await?;
        let topics = by_topic(partitions)
            .into_iter()
            .map(|(topic, indexes)| {
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(str(&topic)))
                    .with_partitions(
                        indexes
                            .into_iter()
                            .map(|i| {
                                OffsetDeleteRequestPartition::default().with_partition_index(i)
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(str(group)))
            .with_topics(topics);
        let response = connection.send(&request).await?;
        if response.error_code != 0 {
            return Err(group_error(group, response.error_code, None));
        }
        for t in &response.topics {
            if let Some(p) = t.partitions.iter().find(|p| p.error_code != 0) {
                return Err(GroupAdminError::Partition {
                    group: group.to_string(),
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    error: code(p.error_code),
                });
            }
        }
        Ok(())
    }
}
