//! Joins the cluster engine and the local hub: updates leave the cluster in the
//! delivery order and enter the hub in that order; the local subscriber count
//! goes the other way, into gossip. Only channels cross; neither side knows the
//! other's internals.

use std::time::Duration;

use hubbub_cluster::{Cluster, Ordered};
use hubbub_core::{Hub, PublishError};

/// Feeds ordered updates into the hub. A full dispatch backlog is waited out,
/// never dropped: the order and completeness of the cluster log matter more
/// than the latency of one update.
pub async fn deliver(hub: Hub, mut ordered: Ordered) {
    while let Some(stamped) = ordered.recv().await {
        loop {
            match hub.publish(stamped.update.clone()) {
                Ok(_) => break,
                Err(PublishError::Overloaded) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(PublishError::ShuttingDown) => return,
            }
        }
    }
}

/// Keeps the gossiped subscriber count fresh.
pub async fn report_subscribers(hub: Hub, cluster: Cluster) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !hub.is_shutting_down() {
        tick.tick().await;
        cluster.set_subscribers(hub.subscriber_count() as u64);
    }
}
