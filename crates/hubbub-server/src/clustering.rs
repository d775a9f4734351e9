//! Joins the cluster engine and the local hub: updates leave the cluster in the
//! delivery order and enter the hub in that order; the local subscriber count
//! goes the other way, into gossip. Only channels cross; neither side knows the
//! other's internals.

use std::time::Duration;

use hubbub_cluster::{Cluster, Delivery, Ordered};
use hubbub_core::{Hub, PublishError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Feeds ordered updates into the hub until the cluster closes the log, the
/// hub shuts down or `stop` fires. A full dispatch backlog is waited out
/// (`Hub::publish_capacity`), never dropped: the order and completeness of the
/// cluster log matter more than the latency of one update. `delivered`
/// follows the cluster's `Through` markers once everything before them is in
/// the hub.
pub async fn deliver(
    hub: Hub,
    presence: std::sync::Arc<crate::presence::Presence>,
    mut ordered: Ordered,
    delivered: watch::Sender<u64>,
    stop: CancellationToken,
) {
    while let Some(Some(item)) = stop.run_until_cancelled(ordered.recv()).await {
        let stamped = match item {
            Delivery::Update(stamped) => stamped,
            Delivery::Through(clock) => {
                delivered.send_replace(clock);
                continue;
            }
        };
        // Subscription events change the table first, and reach the hub only
        // if they changed it (the same decision on every node).
        if crate::presence::event::is_event(&stamped.update) {
            presence
                .apply(&stamped.update, &stamped.stamp.origin.to_string())
                .await;
            continue;
        }
        loop {
            match hub.publish(stamped.update.clone()) {
                Ok(_) => break,
                Err(PublishError::Overloaded) => hub.publish_capacity().await,
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

/// Keeps the gossiped subscriber count fresh until `stop` fires.
pub async fn report_subscribers(hub: Hub, cluster: Cluster, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        cluster.set_subscribers(hub.subscriber_count() as u64);
    }
}
