//! Joins the cluster engine and the local hub: updates leave the cluster in the
//! delivery order and enter the hub in that order; the local subscriber count
//! goes the other way, into gossip. Only channels cross; neither side knows the
//! other's internals.

use std::time::Duration;

use hubbub_cluster::{Cluster, Delivery, Ordered};
use hubbub_core::{Hub, PublishError};
use tokio::sync::watch;

/// Feeds ordered updates into the hub. A full dispatch backlog is waited out,
/// never dropped: the order and completeness of the cluster log matter more
/// than the latency of one update. `delivered` follows the cluster's
/// `Through` markers once everything before them is in the hub.
pub async fn deliver(hub: Hub, mut ordered: Ordered, delivered: watch::Sender<u64>) {
    while let Some(item) = ordered.recv().await {
        let stamped = match item {
            Delivery::Update(stamped) => stamped,
            Delivery::Through(clock) => {
                delivered.send_replace(clock);
                continue;
            }
        };
        loop {
            match hub.publish(stamped.update.clone()) {
                Ok(_) => break,
                Err(PublishError::Overloaded) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(PublishError::ShuttingDown) => return,
            }
        }
    }
}

/// Waits (bounded) until this node has delivered everything stamped up to
/// `clock`. Returns false on timeout.
pub async fn wait_delivered(
    mut delivered: watch::Receiver<u64>,
    clock: u64,
    limit: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(limit, delivered.wait_for(|d| *d >= clock)).await,
        Ok(Ok(_))
    )
}

/// Keeps the gossiped subscriber count fresh.
pub async fn report_subscribers(hub: Hub, cluster: Cluster) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while !hub.is_shutting_down() {
        tick.tick().await;
        cluster.set_subscribers(hub.subscriber_count() as u64);
    }
}
