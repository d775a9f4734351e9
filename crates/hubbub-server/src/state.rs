//! Shared server state behind one `Arc`: the hub, the hot-swappable settings,
//! metrics, rate limiters and the compiled-selector cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hubbub_cluster::{Cluster, SubmitError};
use hubbub_core::{Hub, PublishError};
use hubbub_proto::Update;
use hubbub_proto::{Selector, SelectorError};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::error::ApiError;
use crate::metrics::{Metrics, Rejection};
use crate::ratelimit::RateLimiter;

/// Compiled templates are reused across requests; the cache is cleared when full.
const SELECTOR_CACHE_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct AppState {
    pub hub: Hub,
    pub settings: ArcSwap<Settings>,
    pub metrics: Metrics,
    pub client_limiter: RateLimiter,
    pub global_limiter: RateLimiter,
    /// Set when this node is part of a cluster: publishes go through it.
    pub cluster: Option<Cluster>,
    /// In a cluster: the clock value up to which the ordered log is in the hub.
    pub delivered: Option<tokio::sync::watch::Receiver<u64>>,
    /// Cancelled when shutdown begins: readiness fails at once so load
    /// balancers send new clients elsewhere while streams drain.
    pub draining: CancellationToken,
    /// Active subscriptions (the table and its events; inert unless enabled).
    pub presence: Arc<crate::presence::Presence>,
    selectors: Mutex<HashMap<String, Selector>>,
    /// Compiled URL Patterns by (base, pattern), apart from `selectors`: a
    /// template's text must never find a URL Pattern. Subscribers sharing a
    /// pattern also share its regexps (and their match caches).
    url_patterns: Mutex<HashMap<(String, String), Selector>>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(hub: Hub, settings: Settings, metrics: Metrics, cluster: Option<Cluster>) -> Self {
        let timing = settings
            .cluster
            .as_ref()
            .map_or_else(crate::presence::Timing::default, |c| {
                crate::presence::Timing::for_cluster(c.order_wait, c.gossip_interval)
            });
        let presence = Arc::new(crate::presence::Presence::new(
            settings.presence.enabled,
            settings.presence.max_tracked,
            hub.clone(),
            cluster.clone(),
            settings.auth.compat_0x(),
            metrics.presence.clone(),
            timing,
        ));
        Self {
            presence,
            hub,
            settings: ArcSwap::from_pointee(settings),
            metrics,
            client_limiter: RateLimiter::default(),
            global_limiter: RateLimiter::default(),
            cluster,
            delivered: None,
            draining: CancellationToken::new(),
            selectors: Mutex::default(),
            url_patterns: Mutex::default(),
        }
    }

    /// Accepts a validated update: into the cluster log when clustered (every
    /// node then delivers it in the same order), else straight into the hub.
    /// With `publish_ack = replicated`, answers only once a peer confirmed it
    /// holds the update. Returns its id.
    pub async fn publish(&self, update: Update) -> Result<String, ApiError> {
        let busy =
            |msg: String, reason| ApiError::new(reason, msg).retry_after(Duration::from_secs(1));
        let wait = self.settings.load().limits.fanout_wait;
        let room = self.hub.fanout_room(wait).await;
        let backlog = room.unwrap_or_else(|backlog| backlog);
        self.metrics
            .fanout_backlog
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        if room.is_err() {
            return Err(busy(
                format!(
                    "subscribers are not being written to fast enough (still behind after \
                     {wait:?}, fanout_wait); retry later"
                ),
                Rejection::Overloaded,
            ));
        }
        let Some(cluster) = &self.cluster else {
            return self
                .hub
                .publish(update)
                .map(|p| p.id.to_string())
                .map_err(|e| match e {
                    PublishError::Overloaded => busy(e.to_string(), Rejection::Overloaded),
                    PublishError::ShuttingDown => busy(e.to_string(), Rejection::ShuttingDown),
                });
        };
        let stamped = cluster.submit(update).map_err(|e| match e {
            SubmitError::Overloaded => busy(e.to_string(), Rejection::Overloaded),
            SubmitError::ShuttingDown => busy(e.to_string(), Rejection::ShuttingDown),
        })?;
        let ack_timeout = self.settings.load().publish_ack;
        if let Some(limit) = ack_timeout
            && !cluster.replicated(stamped.stamp.seq, limit).await
        {
            return Err(busy(
                format!(
                    "no peer confirmed holding the update within {limit:?} (publish_ack = \
                     replicated); it is logged on this node and will still be delivered unless \
                     this node fails first"
                ),
                Rejection::NotReplicated,
            ));
        }
        Ok(stamped.update.id.clone())
    }

    /// Ready to serve: not draining or shutting down and, in a cluster, caught up.
    pub fn is_ready(&self) -> bool {
        !self.draining.is_cancelled()
            && !self.hub.is_shutting_down()
            && self.cluster.as_ref().is_none_or(Cluster::is_ready)
    }

    /// Counts the rejection, then hands the error back for the response.
    pub fn reject(&self, err: ApiError) -> ApiError {
        self.metrics.reject(err.reason);
        err
    }

    /// Parses a selector, reusing the compiled form of templates seen before.
    pub fn selector(&self, s: &str) -> Result<Selector, SelectorError> {
        if !s.contains('{') {
            return Selector::parse(s);
        }
        let mut cache = self
            .selectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sel) = cache.get(s) {
            return Ok(sel.clone());
        }
        let sel = Selector::parse(s)?;
        if cache.len() >= SELECTOR_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(s.to_owned(), sel.clone());
        Ok(sel)
    }

    /// A 1.0 `match_urlpattern` selector, reusing the compiled form of one seen
    /// before under the same base. Compiling (milliseconds) happens outside
    /// the lock.
    pub fn url_pattern(&self, s: &str, base: &str) -> Result<Selector, SelectorError> {
        let key = (base.to_owned(), s.to_owned());
        let cached = self
            .url_patterns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(sel) = cached {
            return Ok(sel);
        }
        let sel = Selector::url_pattern(s, base)?;
        let mut cache = self
            .url_patterns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= SELECTOR_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, sel.clone());
        Ok(sel)
    }
}
