//! [`SoloPlane`]: the metadata plane of a node that is its own whole quorum, with no network.
//!
//! Every request is decided by [`decide`] against the image and applied at once, in process, in
//! the order the requests come (one at a time). With a data directory, the image is stored after
//! every change with [`disk::write_file_atomic`] before the reply goes out, so a crash loses
//! nothing a reply acknowledged and a restart continues from the last stored image (the
//! metadata offset keeps rising across restarts). Without one it lives in memory (tests).
//!
//! The openraft quorum of one does the same job with a log and snapshots; this plane is the
//! single-node path until that one is wired into `Broker::open`, and the tests' plane.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::clock::Clock;
use crate::controller::decide::{self, ControllerSettings, Entropy, Sessions};
use crate::controller::image::{ClusterImage, MetadataRecord};
use crate::controller::plane::{MetadataPlane, QuorumStatus};
use crate::controller::request::{ControllerError, ControllerReply, ControllerRequest};
use crate::controller::NodeId;
use crate::disk::{self, Disk};

/// The stored image's file under the data directory.
pub const IMAGE_FILE: &str = "cluster-metadata.json";

/// Draws from the runtime's seeded randomness.
struct RuntimeEntropy;

impl Entropy for RuntimeEntropy {
    fn next_u128(&mut self) -> u128 {
        crate::random::random_u128()
    }
}

struct Controller {
    sessions: Sessions,
    /// When the next leader-imbalance check is due (ms, the clock's).
    next_rebalance_ms: Option<i64>,
}

pub struct SoloPlane {
    node_id: NodeId,
    settings: ControllerSettings,
    clock: Arc<dyn Clock>,
    /// Where the image is stored, if anywhere.
    store: Option<(Arc<dyn Disk>, PathBuf)>,
    controller: tokio::sync::Mutex<Controller>,
    image: RwLock<Arc<ClusterImage>>,
    /// Woken whenever the image moves (a Notify, not a watch channel: see broker::Latch).
    moved: tokio::sync::Notify,
}

impl std::fmt::Debug for SoloPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoloPlane")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl SoloPlane {
    /// Opens the plane: loads the stored image from `data_dir` (if given), or starts the log
    /// with `cluster_id_if_new` (a random id if `None`).
    pub async fn open(
        node_id: NodeId,
        settings: ControllerSettings,
        clock: Arc<dyn Clock>,
        store: Option<(Arc<dyn Disk>, PathBuf)>,
        cluster_id_if_new: Option<String>,
    ) -> io::Result<Arc<SoloPlane>> {
        let stored = match &store {
            Some((disk, dir)) => {
                let path = dir.join(IMAGE_FILE);
                match disk::read_file(disk.as_ref(), &path).await {
                    Ok(bytes) => {
                        Some(serde_json::from_slice::<ClusterImage>(&bytes).map_err(|e| {
                            io::Error::other(format!("{}: damaged: {e}", path.display()))
                        })?)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let plane = SoloPlane {
            node_id,
            settings,
            clock,
            store,
            controller: tokio::sync::Mutex::new(Controller {
                // The broker of this node registers again at once after a restart: its earlier
                // life ended with this controller's.
                sessions: Sessions::for_node(node_id),
                next_rebalance_ms: None,
            }),
            image: RwLock::new(Arc::new(stored.unwrap_or_else(ClusterImage::empty))),
            moved: tokio::sync::Notify::new(),
        };
        if plane.image().metadata_offset < 0 {
            let cluster_id = cluster_id_if_new.unwrap_or_else(|| {
                uuid::Uuid::from_u128(crate::random::random_u128())
                    .simple()
                    .to_string()
            });
            plane
                .commit(&[MetadataRecord::SetClusterId { cluster_id }])
                .await?;
        }
        Ok(Arc::new(plane))
    }

    /// Applies `records` as the next batch, stores the image, then publishes it.
    async fn commit(&self, records: &[MetadataRecord]) -> io::Result<()> {
        let mut next = ClusterImage::clone(&self.image());
        let offset = next.metadata_offset + 1;
        next.apply(offset, records);
        assert_eq!(next.metadata_offset, offset, "apply moves the offset");
        if let Some((disk, dir)) = &self.store {
            let bytes = serde_json::to_vec(&next).map_err(io::Error::other)?;
            disk::write_file_atomic(disk.as_ref(), &dir.join(IMAGE_FILE), &bytes).await?;
        }
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.moved.notify_waiters();
        Ok(())
    }
}

#[async_trait::async_trait]
impl MetadataPlane for SoloPlane {
    fn image(&self) -> Arc<ClusterImage> {
        Arc::clone(&self.image.read().unwrap_or_else(|e| e.into_inner()))
    }

    async fn wait_past(&self, offset: i64) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so a commit in between is not missed.
            moved.as_mut().enable();
            if self.image().metadata_offset > offset {
                return;
            }
            moved.await;
        }
    }

    async fn submit(&self, request: ControllerRequest) -> Result<ControllerReply, ControllerError> {
        let mut controller = self.controller.lock().await;
        let now_ms = self.clock.now_ms();
        let image = self.image();
        // The controller and its only broker are one process: while this runs, the broker is
        // alive, whatever its heartbeat timer (or a test's manual clock) says.
        if image.brokers.contains_key(&self.node_id) {
            controller.sessions.touch(self.node_id, now_ms);
        }
        let expired = controller.sessions.expire(&image, &self.settings, now_ms);
        if !expired.is_empty() {
            self.commit(&expired)
                .await
                .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        }
        // What the raft controller's tick does, here at every request (there is no tick).
        let unclean = decide::unclean_elections(&self.image(), &self.settings);
        if !unclean.is_empty() {
            self.commit(&unclean)
                .await
                .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        }
        let interval = self.settings.leader_imbalance_check_interval_ms;
        let due = *controller
            .next_rebalance_ms
            .get_or_insert(now_ms.saturating_add(interval));
        if self.settings.auto_leader_rebalance_enable && now_ms >= due {
            controller.next_rebalance_ms = Some(now_ms.saturating_add(interval));
            let moved = decide::preferred_leader_elections(&self.image());
            if !moved.is_empty() {
                self.commit(&moved)
                    .await
                    .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
            }
        }
        let image = self.image();
        let decision = decide::decide(
            &image,
            &request,
            &mut controller.sessions,
            &self.settings,
            now_ms,
            &mut RuntimeEntropy,
        )?;
        if !decision.records.is_empty() {
            // Not stored: nothing of the request happened, and a retry decides it afresh.
            self.commit(&decision.records)
                .await
                .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
        }
        Ok(decision.reply)
    }

    fn quorum_status(&self) -> QuorumStatus {
        let offset = self.image().metadata_offset;
        QuorumStatus {
            active_controller: Some(self.node_id),
            term: 1,
            voters: vec![self.node_id],
            committed_offset: offset,
            applied_offset: offset,
        }
    }
}
