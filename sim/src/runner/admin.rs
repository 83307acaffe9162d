//! The admin workload: clients that create topics through the cluster while faults strike
//! (CreateTopics to any broker, forwarded to the active controller), and the check after the
//! metadata has converged: every acknowledged topic exists with all its partitions, and every
//! topic an admin asked for, acknowledged or not, is whole or absent (the quorum commits a
//! CreateTopics as one entry: never half made).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::controller::image::ClusterImage;
use client::{Admin, CreateTopicError, NewTopic};

use super::workload::{connect, Ctx};
use crate::scenario::AdminSpec;
use crate::trace::now_ms;

/// One CreateTopics an admin sent.
#[derive(Clone, Debug)]
pub(crate) struct TopicCreation {
    pub(crate) name: String,
    pub(crate) partitions: i32,
    pub(crate) invoked_ms: u64,
    /// `Some(true)`: acknowledged; `None`: unknown (a timeout or an error after which the
    /// controller may still have committed it). A definite refusal is `Some(false)`.
    pub(crate) acknowledged: Option<bool>,
    /// When the answer came (a timeout is an answer too); `None` while it is awaited.
    pub(crate) answered_ms: Option<u64>,
}

/// Every CreateTopics of the run, in the order they were sent.
pub(crate) type Creations = Arc<Mutex<Vec<TopicCreation>>>;

/// Admin `n` of the run: creates `admin-<n>-<i>` at `spec.rate` until the workload stops.
pub(super) async fn admin(ctx: Ctx, creations: Creations, n: u32, spec: AdminSpec) {
    let who = format!("admin-{n}");
    let timeout = Duration::from_millis(spec.request_timeout_ms);
    let stop = ctx.stop.clone();
    let Some(client) = connect(&ctx, &who, timeout, || stop.load(Ordering::SeqCst)).await else {
        return;
    };
    let admin = Admin::new(client);
    let pause = Duration::from_secs_f64(1.0 / spec.rate);
    let mut i = 0u32;
    while !ctx.stop.load(Ordering::SeqCst) {
        tokio::time::sleep(pause).await;
        let name = format!("admin-{n}-{i}");
        i += 1;
        let index = {
            let mut c = creations.lock().unwrap_or_else(|e| e.into_inner());
            c.push(TopicCreation {
                name: name.clone(),
                partitions: spec.partitions,
                invoked_ms: now_ms(),
                acknowledged: None,
                answered_ms: None,
            });
            c.len() - 1
        };
        ctx.inflight.fetch_add(1, Ordering::SeqCst);
        ctx.trace.event(&who, format!("create topic {name}"));
        let outcome = admin
            .create_topic(NewTopic {
                replication_factor: 1,
                ..NewTopic::new(name.clone(), spec.partitions)
            })
            .await;
        ctx.inflight.fetch_sub(1, Ordering::SeqCst);
        let acknowledged = match &outcome {
            Ok(()) => Some(true),
            // Each name is asked for once: only an earlier attempt of ours could have made it.
            Err(CreateTopicError::AlreadyExists(_)) => Some(true),
            // A non-retriable refusal is definite; a timeout or NOT_CONTROLLER is not.
            Err(CreateTopicError::Rejected { error, .. }) if !error.is_retriable() => Some(false),
            Err(_) => None,
        };
        ctx.trace.event(
            &who,
            match &outcome {
                Ok(()) => format!("created {name}"),
                Err(e) => format!("create {name}: {e}"),
            },
        );
        let mut c = creations.lock().unwrap_or_else(|e| e.into_inner());
        c[index].acknowledged = acknowledged;
        c[index].answered_ms = Some(now_ms());
    }
}

/// The findings of the topic checks against the converged image.
pub(crate) fn check_topics(creations: &[TopicCreation], image: &ClusterImage) -> Vec<String> {
    let mut found = Vec::new();
    for c in creations {
        match image.topic(&c.name) {
            Some(topic) if topic.partitions.len() != c.partitions as usize => found.push(format!(
                "topic {} has {} of its {} partitions (half made)",
                c.name,
                topic.partitions.len(),
                c.partitions
            )),
            Some(_) if c.acknowledged == Some(false) => found.push(format!(
                "topic {} exists although its creation was refused",
                c.name
            )),
            None if c.acknowledged == Some(true) => found.push(format!(
                "topic {} was acknowledged (asked at {}ms) and does not exist",
                c.name, c.invoked_ms
            )),
            _ => {}
        }
    }
    found
}
