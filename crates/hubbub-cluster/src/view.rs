//! The cluster as one node sees it, for `GET /cluster`, readiness and metrics.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ClusterStats {
    /// Updates handed to the local hub in the total order.
    pub released: u64,
    /// Updates handed over after later ones (faults bent the order).
    pub late: u64,
    /// Updates no peer retained any more when this node missed them.
    pub lost: u64,
    pub duplicates: u64,
    /// Accepted, waiting for peers' watermarks.
    pub waiting: u64,
    /// Updates that arrived through anti-entropy rather than from their origin.
    pub repaired: u64,
    pub pulls_sent: u64,
    pub relay_bytes_out: u64,
    pub relay_bytes_in: u64,
    pub relay_updates_out: u64,
    pub relay_updates_in: u64,
    pub auth_failures: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    pub node: String,
    pub generation: u64,
    pub gossip_addr: String,
    pub relay_addr: Option<String>,
    pub http_addr: Option<String>,
    pub ready: bool,
    /// It announced a graceful leave (it no longer holds delivery back).
    pub leaving: bool,
    pub subscribers: u64,
    /// Its application keys (`Cluster::set_app_key`), without the prefix.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub app: BTreeMap<String, String>,
    pub vector: BTreeMap<String, u64>,
    /// Our outbound relay link to it.
    pub link: &'static str,
    pub reconnects: u64,
    /// Our updates not yet written to its link (the per-peer relay queue).
    pub backlog: u64,
    /// How far its last watermark trails our clock, in ms (None: never heard).
    pub lag_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: String,
    pub node: String,
    pub generation: u64,
    pub ready: bool,
    pub relay_addr: String,
    pub subscribers: u64,
    /// Origin (`node/generation`) -> highest contiguous seq held here.
    pub vector: BTreeMap<String, u64>,
    pub members: Vec<MemberView>,
    pub stats: ClusterStats,
}
