//! The metadata plane: the cluster image, the records that change it, the active controller's
//! decisions, and the openraft quorum that replicates the records (the role KRaft plays in Kafka).
//!
//! Bottom up:
//! - [`image`]: the cluster image (brokers, topics, partitions, producer-id blocks, configs) and
//!   [`image::MetadataRecord`], the deltas the quorum replicates. `ClusterImage::apply` is pure
//!   and total: every node applies the same committed records in the same order and gets the
//!   same image.
//! - [`placement`]: where a new partition's replicas go (round-robin over unfenced brokers,
//!   rack-aware). Pure.
//! - [`decide`]: the active controller's decisions: a [`request::ControllerRequest`] against the
//!   current image and the time gives the records to commit and the reply; broker sessions that
//!   expired give fencing records. Pure, tested step by step with no runtime.
//! - [`request`]: what brokers and admin handlers ask the active controller, and its answers.
//! - [`plane`]: [`plane::MetadataPlane`], the only face of all this the rest of the broker sees.
//! - `raft`: openraft's types, its runtime adapter, its log and snapshots on the `Disk` trait,
//!   the quorum network, and the controller loop that turns requests into committed records.

pub mod decide;
pub mod image;
pub mod placement;
pub mod plane;
pub mod raft;
pub mod request;

/// A node's id (`node.id`): brokers and controllers share one id space, as in KRaft.
pub type NodeId = i32;

/// No node: a partition without a leader, a cluster without an active controller.
pub const NO_NODE: NodeId = -1;
