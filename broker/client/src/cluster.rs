//! [`Client`]: the cluster as a client sees it. Bootstrap servers, the brokers and partition
//! leaders learnt from Metadata, and one pooled [`Connection`] per broker, reopened when it
//! closes. Producer, consumer and admin all share one `Client`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::connection::{
    open, ConnectError, Connection, ConnectionConfig, RequestError, RequestHold,
};

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers; the first that answers is used to learn the rest.
    pub bootstrap_servers: Vec<String>,
    pub connection: ConnectionConfig,
    /// The simulated network's hold on this client's requests (see
    /// [`crate::connection::RequestHold`]); `None` everywhere but in the simulator.
    pub hold: Option<Arc<dyn RequestHold>>,
}

impl ClientConfig {
    pub fn new(bootstrap: impl Into<String>) -> ClientConfig {
        ClientConfig {
            bootstrap_servers: bootstrap
                .into()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            connection: ConnectionConfig::default(),
            hold: None,
        }
    }
}

/// One partition, as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub index: i32,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error: Option<ResponseError>,
}

/// One topic, as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionMetadata>,
}

/// Why a topic's metadata is not available.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("topic \"{0}\" does not exist")]
    UnknownTopic(String),
    #[error("topic \"{topic}\": {error}")]
    Broker { topic: String, error: ResponseError },
    #[error(transparent)]
    Request(#[from] RequestError),
}

#[derive(Default)]
struct State {
    brokers: BTreeMap<i32, String>,
    /// Shared: every send and poll looks its topic up here, and a lookup should not copy it.
    topics: BTreeMap<String, Arc<TopicMetadata>>,
    connections: BTreeMap<i32, Arc<Connection>>,
    bootstrap: Option<Arc<Connection>>,
}

/// A handle on the cluster; clone it freely.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap_servers", &self.config.bootstrap_servers)
            .finish()
    }
}

impl Client {
    /// Connects to the first bootstrap server that answers and learns the cluster's brokers.
    pub async fn connect(config: ClientConfig) -> Result<Client, ConnectError> {
        let client = Client {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
        };
        client.bootstrap_connection().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn bootstrap_connection(&self) -> Result<Arc<Connection>, ConnectError> {
        if let Some(c) = self.state().bootstrap.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let mut last = ConnectError::NoBootstrapServers;
        for addr in &self.config.bootstrap_servers {
            match open(addr, &self.config).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    self.state().bootstrap = Some(Arc::clone(&c));
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A live connection to any broker: a pooled one, else the bootstrap servers, else any
    /// broker learnt from metadata.
    pub async fn any_connection(&self) -> Result<Arc<Connection>, ConnectError> {
        let live = {
            let state = self.state();
            state.connections.values().find(|c| !c.is_closed()).cloned()
        };
        if let Some(c) = live {
            return Ok(c);
        }
        match self.bootstrap_connection().await {
            Ok(c) => Ok(c),
            Err(e) => {
                let nodes: Vec<i32> = self.state().brokers.keys().copied().collect();
                for node in nodes {
                    if let Ok(c) = self.connection(node).await {
                        return Ok(c);
                    }
                }
                Err(e)
            }
        }
    }

    /// The pooled connection to broker `node`, opened if needed.
    pub async fn connection(&self, node: i32) -> Result<Arc<Connection>, ConnectError> {
        let addr = {
            let state = self.state();
            if let Some(c) = state.connections.get(&node).filter(|c| !c.is_closed()) {
                return Ok(Arc::clone(c));
            }
            state.brokers.get(&node).cloned()
        };
        let Some(addr) = addr else {
            // Not in the metadata (yet): the bootstrap connection is the best guess.
            return self.bootstrap_connection().await;
        };
        let c = Arc::new(open(&addr, &self.config).await?);
        self.state().connections.insert(node, Arc::clone(&c));
        Ok(c)
    }

    /// Asks for metadata of `topics` (all topics when `None`), updating the cache.
    pub async fn fetch_metadata(
        &self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<MetadataResponse, RequestError> {
        let connection = self.any_connection().await?;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(
                allow_auto_create
                    && connection.version_for(kafka_protocol::messages::ApiKey::Metadata)? >= 4,
            );
        let response = connection.send(&request).await?;
        let mut state = self.state();
        for b in &response.brokers {
            state
                .brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in &response.topics {
            let Some(name) = t.name.as_ref().map(|n| n.to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                state.topics.remove(&name);
                continue;
            }
            let meta = Arc::new(topic_metadata(&name, t));
            state.topics.insert(name, meta);
        }
        Ok(response)
    }

    /// A topic's metadata: cached, or fetched (creating the topic when `allow_auto_create` and
    /// the broker allows it).
    pub async fn topic_metadata(
        &self,
        topic: &str,
        allow_auto_create: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        self.shared_topic_metadata(topic, allow_auto_create)
            .await
            .map(Arc::unwrap_or_clone)
    }

    /// [`Client::topic_metadata`] without copying the cached entry.
    pub async fn shared_topic_metadata(
        &self,
        topic: &str,
        allow_auto_create: bool,
    ) -> Result<Arc<TopicMetadata>, MetadataError> {
        if let Some(t) = self.state().topics.get(topic) {
            return Ok(Arc::clone(t));
        }
        self.refresh_topic(topic, allow_auto_create)
            .await
            .map(Arc::new)
    }

    /// Fetches a topic's metadata, bypassing the cache.
    pub async fn refresh_topic(
        &self,
        topic: &str,
        allow_auto_create: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        let response = self
            .fetch_metadata(Some(&[topic.to_string()]), allow_auto_create)
            .await?;
        let entry = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic));
        match entry {
            None => Err(MetadataError::UnknownTopic(topic.to_string())),
            Some(t) if t.error_code == ResponseError::UnknownTopicOrPartition.code() => {
                Err(MetadataError::UnknownTopic(topic.to_string()))
            }
            Some(t) if t.error_code != 0 => Err(MetadataError::Broker {
                topic: topic.to_string(),
                error: ResponseError::try_from_code(t.error_code)
                    .unwrap_or(ResponseError::Unknown(t.error_code)),
            }),
            Some(t) => Ok(topic_metadata(topic, t)),
        }
    }

    /// Forgets a topic's cached metadata (after NOT_LEADER and the like).
    pub fn invalidate(&self, topic: &str) {
        self.state().topics.remove(topic);
    }

    /// The connection to the leader of `topic`/`partition`.
    pub async fn leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Connection>, MetadataError> {
        let meta = self.shared_topic_metadata(topic, false).await?;
        let p = meta
            .partitions
            .iter()
            .find(|p| p.index == partition)
            .ok_or_else(|| MetadataError::Broker {
                topic: topic.to_string(),
                error: ResponseError::UnknownTopicOrPartition,
            })?;
        if p.leader < 0 {
            self.invalidate(topic);
            return Err(MetadataError::Broker {
                topic: topic.to_string(),
                error: ResponseError::LeaderNotAvailable,
            });
        }
        match self.connection(p.leader).await {
            Ok(c) => Ok(c),
            Err(e) => {
                // The leader may be dead and its partitions led elsewhere by now: the next call
                // asks for metadata again rather than dialling it forever, as Kafka's clients
                // request a metadata update when a connection to a broker fails.
                self.invalidate(topic);
                Err(RequestError::from(e).into())
            }
        }
    }
}

fn topic_metadata(
    name: &str,
    t: &kafka_protocol::messages::metadata_response::MetadataResponseTopic,
) -> TopicMetadata {
    let mut partitions: Vec<PartitionMetadata> = t
        .partitions
        .iter()
        .map(|p| PartitionMetadata {
            index: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            error: ResponseError::try_from_code(p.error_code),
        })
        .collect();
    partitions.sort_by_key(|p| p.index);
    TopicMetadata {
        name: name.to_string(),
        id: t.topic_id,
        partitions,
    }
}
