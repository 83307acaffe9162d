//! Topic administration: create, delete, list, describe, configs, partitions.
//!
//! Each call is one request to one broker with the connection's request timeout. A failed
//! admin call may still have taken effect when the error is a [`RequestError`] with
//! `maybe_sent()`; check with `describe_topic` before retrying a create or delete.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{Client, MetadataError, TopicMetadata};
use super::connection::RequestError;

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

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTopicError {
    #[error("topic \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("cannot create topic \"{topic}\": {}", message.as_deref().unwrap_or(&error.to_string()))]
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
    #[error("topic \"{topic}\": {}", message.as_deref().unwrap_or(&error.to_string()))]
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
