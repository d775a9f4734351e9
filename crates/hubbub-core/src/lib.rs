//! The fan-out engine. A publish is stamped with a hub-wide sequence number,
//! encoded once, appended to a bounded history and handed to dispatcher shards
//! that push the shared frame into the bounded queue of every matching subscriber.
//!
//! This crate knows nothing of sockets, HTTP or gossip: callers feed it updates
//! and drain [`Subscription`]s however they like.

mod dispatch;
mod history;
mod hub;
mod index;
mod limits;
mod matcher;
mod metrics;
mod published;
mod subscriber;
mod sweeper;

pub use history::{HistoryLimits, Resume};
pub use hub::{DRAIN_RATE, Hub, HubConfig, PublishError, SubscribeError, SubscribeRequest};
pub use limits::Limits;
pub use metrics::{HubMetrics, NoMetrics};
pub use published::Published;
pub use subscriber::{CloseReason, Next, Subscription};
