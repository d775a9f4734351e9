//! Test helpers for hubbub: a real hub on an ephemeral port ([`TestHub`]), an SSE
//! client that parses with hubbub's own decoder ([`SseClient`]), raw TCP
//! connections for byte-level and misbehaving-peer checks ([`RawConn`]), the
//! real binary as child processes ([`HubProcess`]), plain HTTP helpers and JWT
//! minting. Dev only: clear panics matter more than speed.
//!
//! Every wait is bounded; [`WAIT`] is the default bound, generous because tests
//! run in parallel on small, busy machines.

pub mod cluster;
mod http;
mod hub;
pub mod presence;
pub mod process;
mod raw;
mod sse;
mod token;

use std::time::Duration;

pub use cluster::{
    CLUSTER_WAIT, Collector, FaultProxy, MemberAddrs, MemberSockets, NewMember, ProxyMode,
    TestCluster, View, member_config, new_members, order_difference,
};
pub use http::{HttpResponse, client, encode_form, get, publish, send, subscribe_url};
pub use hub::{TestHub, metric_value};
pub use hubbub_proto::decode::{Event, Item};
pub use hubbub_server::Config;
pub use presence::PresenceFollower;
pub use process::HubProcess;
pub use raw::{RawConn, RawHead};
pub use reqwest;
pub use reqwest::StatusCode;
pub use reqwest::header::HeaderMap;
pub use sse::{Ended, SseClient, StreamEnd};
pub use token::{
    publisher, subscriber, token, token_expiring_in, token_with, token_with_claims, unix_now,
};

/// The HS256 key of [`config`] (both roles).
pub const KEY: &str = "hubbub-test-key-0123456789abcdef";

/// How long helpers wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config for tests: Mercure 0.x clients served (`compat_0x`) with [`KEY`]
/// for both roles (HS256), anonymous subscribers allowed, every other setting
/// at its default. `listen` is ignored by
/// [`TestHub::start`], which always binds `127.0.0.1:0`.
pub fn config() -> Config {
    Config {
        compat_0x: true,
        jwt_key: Some(KEY.into()),
        anonymous: true,
        ..Config::default()
    }
}

/// Locks `m`, ignoring poisoning: a panicked test thread already failed the test.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
/// For state that changes asynchronously (a reload, a counter, a freed slot)
/// and has no event to await.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
