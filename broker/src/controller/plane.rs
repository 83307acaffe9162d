//! [`MetadataPlane`]: the one face of the metadata quorum the broker sees. Handlers read the
//! image; changes are requests to the active controller, forwarded there from any node.

use std::sync::Arc;

use super::image::ClusterImage;
use super::request::{ControllerError, ControllerReply, ControllerRequest};
use super::NodeId;

/// What `faultline cluster describe` and DescribeCluster/DescribeQuorum show about the quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The node that leads the quorum (the active controller), if this node knows one.
    pub active_controller: Option<NodeId>,
    /// The raft term of that leadership (KRaft's leader epoch).
    pub term: u64,
    /// The voters (`controller.quorum.voters`).
    pub voters: Vec<NodeId>,
    /// The highest metadata offset known committed.
    pub committed_offset: i64,
    /// The offset this node's image is at.
    pub applied_offset: i64,
}

#[async_trait::async_trait]
pub trait MetadataPlane: Send + Sync + 'static {
    /// The latest image this node applied. Cheap: an `Arc` swap.
    fn image(&self) -> Arc<ClusterImage>;

    /// Resolves once this node's image is past `offset` (or at once if it already is). Callers
    /// bound it with their own timeout.
    async fn wait_past(&self, offset: i64);

    /// Sends `request` to the active controller (from any node: forwarded over the quorum
    /// network) and returns its reply once the records it decided are committed **and applied
    /// on this node**, so a Metadata request after a CreateTopics answer sees the topic on the
    /// same broker. Each attempt is bounded by a timeout; retries go to the new controller.
    async fn submit(&self, request: ControllerRequest) -> Result<ControllerReply, ControllerError>;

    fn quorum_status(&self) -> QuorumStatus;

    /// `quorum_status().active_controller`, which every Metadata answer names; a plane can
    /// tell it without listing the voters.
    fn active_controller(&self) -> Option<NodeId> {
        self.quorum_status().active_controller
    }

    /// Resolves, with the reason, once this node's replica of the metadata log has stopped for
    /// good (its disk failed): the node must halt, as a KRaft node whose metadata log dir fails
    /// does, and be restarted to recover from its log. A node that ran on would answer from an
    /// image that never moves again and hold a vote it never casts. Never resolves for a plane
    /// that cannot fail so.
    async fn halted(&self) -> String {
        std::future::pending().await
    }
}
