//! The active controller's decisions, pure: a request against the image and the time gives the
//! records to commit and the reply; expired broker sessions give fencing records that move
//! leaderships away. The raft layer commits the records and sends the reply.

use std::collections::BTreeMap;

use super::image::{ClusterImage, MetadataRecord};
use super::request::{ControllerError, ControllerReply, ControllerRequest};
use super::NodeId;

/// The controller's settings, Kafka's names.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// `broker.session.timeout.ms` (Kafka: 9000).
    pub broker_session_timeout_ms: i64,
    /// `num.partitions` (Kafka: 1).
    pub default_num_partitions: i32,
    /// `default.replication.factor` (Kafka: 1).
    pub default_replication_factor: i16,
    /// Producer ids per AllocateProducerIds block (Kafka: 1000).
    pub producer_id_block_size: i64,
}

impl Default for ControllerSettings {
    fn default() -> ControllerSettings {
        ControllerSettings {
            broker_session_timeout_ms: 9_000,
            default_num_partitions: 1,
            default_replication_factor: 1,
            producer_id_block_size: 1_000,
        }
    }
}

/// What the controller decided for one request: records to commit as one batch (possibly none,
/// e.g. a heartbeat that changes nothing or `validate_only`), and the reply to send once they
/// are committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub records: Vec<MetadataRecord>,
    pub reply: ControllerReply,
}

/// Randomness the decisions need (topic ids, placement's start), drawn by the caller from the
/// runtime's seeded source so decisions stay pure and replayable.
pub trait Entropy {
    fn next_u128(&mut self) -> u128;
}

/// Decides `request` against `image` at time `now_ms`. The caller commits `records` and applies
/// them to its image before deciding the next request (or decides against a working copy with
/// the pending records applied), so every decision sees the ones before it.
pub fn decide(
    image: &ClusterImage,
    request: &ControllerRequest,
    sessions: &mut Sessions,
    settings: &ControllerSettings,
    now_ms: i64,
    entropy: &mut dyn Entropy,
) -> Result<Decision, ControllerError> {
    let _ = (image, request, sessions, settings, now_ms, entropy);
    todo!("controller-image helper")
}

/// Broker sessions, kept by the active controller in memory only (as Kafka's
/// `BrokerHeartbeatManager`): a new active controller starts every session afresh.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    /// Broker id -> time of its last heartbeat (ms).
    pub last_heartbeat_ms: BTreeMap<NodeId, i64>,
}

impl Sessions {
    /// Records that expire sessions older than `broker.session.timeout.ms` at `now_ms`: each
    /// such unfenced broker is fenced and its leaderships move to another ISR member (or to no
    /// leader when none is left).
    pub fn expire(
        &mut self,
        image: &ClusterImage,
        settings: &ControllerSettings,
        now_ms: i64,
    ) -> Vec<MetadataRecord> {
        let _ = (image, settings, now_ms);
        todo!("controller-image helper")
    }
}
