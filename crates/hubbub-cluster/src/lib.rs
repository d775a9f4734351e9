//! Clustering for hubbub: membership and metadata over chitchat gossip, updates
//! over direct authenticated TCP relay links, anti-entropy driven by gossiped
//! version vectors, and one delivery order on every node.
//!
//! Depends on `hubbub-proto` only. The server submits accepted updates with
//! [`Cluster::submit`] and hands what comes out of the [`Ordered`] receiver, in
//! order, to its local hub. Nothing here knows HTTP.

mod cluster;
mod engine;
mod local;
mod membership;
mod node;
mod relay;
mod secure;
mod sequencer;
#[cfg(test)]
mod sim;
mod sockets;
mod stamp;
mod view;
/// The relay messages. Public only so that the fuzz target (`fuzz/`) and the
/// tests that speak to a relay port by hand can encode and decode frames.
pub mod wire;

pub use cluster::{Cluster, ClusterConfig, ClusterError, Ordered, SubmitError, fresh_generation};
pub use membership::{MAX_APP_KEYS, MAX_APP_VALUE};
pub use node::Delivery;
pub use relay::MAX_UNAUTHENTICATED;
pub use secure::Preamble;
pub use sequencer::SequencerLimits;
pub use sockets::{BindError, GossipSocket, Sockets};
pub use stamp::{OrderKey, Origin, Stamp, Stamped};
pub use view::{ClusterStats, ClusterView, MemberView};
