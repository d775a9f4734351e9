//! Prometheus metrics. The core reports through [`hubbub_core::HubMetrics`]; the
//! HTTP layer counts requests and rejections; gauges are read at scrape time.

use std::sync::{Arc, Mutex, PoisonError};

use hubbub_cluster::{ClusterStats, ClusterView};
use hubbub_core::{CloseReason, HubMetrics};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Why a request was refused; one label value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    BadRequest,
    Unauthorized,
    Forbidden,
    BodyTooLarge,
    RequestTimeout,
    RateLimited,
    TooManySubscribers,
    TooManyConnections,
    Overloaded,
    ShuttingDown,
    /// `publish_ack = replicated` and no peer confirmed within the timeout.
    NotReplicated,
    /// A subscription to a node still catching up with the cluster, past the wait.
    NotReady,
    /// A `QUERY` subscription whose body is not a form (415).
    UnsupportedMediaType,
    /// A hub request on an origin not in `public_urls` (421).
    Misdirected,
    /// A publish over `max_topics` or with a topic over `max_topic_bytes`
    /// (413, draft-08: a publish limit exceeded is "Content Too Large").
    OverLimit,
    /// The subscriptions API: the feature is off, or no such subscription (404).
    NotFound,
}

impl Rejection {
    pub const ALL: [Rejection; 16] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::BodyTooLarge,
        Self::RequestTimeout,
        Self::RateLimited,
        Self::TooManySubscribers,
        Self::TooManyConnections,
        Self::Overloaded,
        Self::ShuttingDown,
        Self::NotReplicated,
        Self::NotReady,
        Self::UnsupportedMediaType,
        Self::Misdirected,
        Self::OverLimit,
        Self::NotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::BodyTooLarge => "body_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimited => "rate_limited",
            Self::TooManySubscribers => "too_many_subscribers",
            Self::TooManyConnections => "too_many_connections",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::NotReplicated => "not_replicated",
            Self::NotReady => "not_ready",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Misdirected => "misdirected",
            Self::OverLimit => "over_limit",
            Self::NotFound => "not_found",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub subscribers: IntGauge,
    pub connections: IntGauge,
    pub published: IntCounter,
    pub delivered: IntCounter,
    pub closed: IntCounterVec,
    pub slow_consumers: IntCounter,
    pub queue_depth: Histogram,
    pub history_entries: IntGauge,
    pub history_bytes: IntGauge,
    /// The hub's fan-out backlog as the last publish saw it.
    pub fanout_backlog: IntGauge,
    pub rejected: IntCounterVec,
    pub reloads: IntCounterVec,
    /// JWK Set fetches of trusted issuers, by issuer and result (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    pub presence: PresenceMetrics,
    cluster: ClusterMetrics,
}

/// Active subscriptions (the `subscriptions` option).
#[derive(Debug, Clone)]
pub struct PresenceMetrics {
    /// Subscriptions in this node's table: the whole cluster's.
    pub tracked: IntGauge,
    /// Tracked subscriptions whose connection is on this node.
    pub local: IntGauge,
    /// Subscription events delivered here, by `active` (`true`, `false`).
    pub events: IntCounterVec,
    /// Subscription events this node stamped (its own and its repairs), by `active`.
    pub emitted: IntCounterVec,
    /// Events that changed nothing (`unchanged`) or found the table full (`full`).
    pub dropped: IntCounterVec,
    /// Corrections this node emitted, by kind: `reannounce` (an own
    /// subscription missing from the table), `end_own` (an own entry whose
    /// connection is gone), `end_departed` (a departed node's), `resync` (a
    /// full re-announcement a peer asked for, or for a new member).
    pub repairs: IntCounterVec,
    /// Times a member's gossiped summary and our table disagreed for a while.
    pub diverged: IntCounter,
}

impl PresenceMetrics {
    fn new() -> Self {
        let vec =
            |n: &str, h: &str, l: &str| IntCounterVec::new(Opts::new(n, h), &[l]).expect("valid");
        Self {
            tracked: IntGauge::new(
                "presence_tracked_subscriptions",
                "Active subscriptions this node's table holds (cluster-wide).",
            )
            .expect("valid"),
            local: IntGauge::new(
                "presence_local_subscriptions",
                "Tracked subscriptions whose connection is on this node.",
            )
            .expect("valid"),
            events: vec(
                "presence_events_total",
                "Subscription events delivered here, by active.",
                "active",
            ),
            emitted: vec(
                "presence_events_emitted_total",
                "Subscription events this node emitted (its connections' and its repairs), by active.",
                "active",
            ),
            dropped: vec(
                "presence_events_dropped_total",
                "Subscription events that changed nothing (unchanged) or met a full table (full).",
                "reason",
            ),
            repairs: vec(
                "presence_repairs_total",
                "Corrections emitted by this node, by kind.",
                "kind",
            ),
            diverged: IntCounter::new(
                "presence_diverged_total",
                "Times a member's gossiped subscription summary disagreed with this node's table.",
            )
            .expect("valid"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.tracked.clone()),
            Box::new(self.local.clone()),
            Box::new(self.events.clone()),
            Box::new(self.emitted.clone()),
            Box::new(self.dropped.clone()),
            Box::new(self.repairs.clone()),
            Box::new(self.diverged.clone()),
        ]
    }
}

/// Cluster figures, copied from the cluster's own counters at scrape time.
#[derive(Debug, Clone)]
struct ClusterMetrics {
    members: IntGauge,
    ready: IntGauge,
    waiting: IntGauge,
    behind: IntGauge,
    max_lag_ms: IntGauge,
    backlog: IntGauge,
    updates: IntCounterVec,
    relay_bytes: IntCounterVec,
    relay_updates: IntCounterVec,
    pulls: IntCounter,
    auth_failures: IntCounter,
    last: Arc<Mutex<ClusterStats>>,
}

impl ClusterMetrics {
    fn new() -> Self {
        let gauge = |n: &str, h: &str| IntGauge::new(n, h).expect("valid");
        let vec =
            |n: &str, h: &str, l: &str| IntCounterVec::new(Opts::new(n, h), &[l]).expect("valid");
        Self {
            members: gauge("cluster_members", "Live members besides this node."),
            ready: gauge("cluster_ready", "1 once this node joined and caught up."),
            waiting: gauge(
                "cluster_waiting_updates",
                "Updates held for peers' watermarks.",
            ),
            behind: gauge(
                "cluster_vector_behind",
                "Sum over origins of how far this node trails the best member (0 = converged).",
            ),
            max_lag_ms: gauge(
                "cluster_max_peer_lag_ms",
                "Largest watermark lag among peers.",
            ),
            backlog: gauge(
                "relay_backlog_updates",
                "Largest number of our updates not yet written to a peer's relay link.",
            ),
            updates: vec(
                "cluster_updates_total",
                "Cluster updates by outcome: released in order, late, lost, duplicate, repaired.",
                "outcome",
            ),
            relay_bytes: vec(
                "relay_bytes_total",
                "Relay link bytes by direction.",
                "direction",
            ),
            relay_updates: vec(
                "relay_updates_total",
                "Updates over relay links by direction.",
                "direction",
            ),
            pulls: IntCounter::new("cluster_pulls_total", "Anti-entropy pulls sent.")
                .expect("valid"),
            auth_failures: IntCounter::new(
                "relay_auth_failures_total",
                "Relay links refused for a bad secret.",
            )
            .expect("valid"),
            last: Arc::default(),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.members.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.waiting.clone()),
            Box::new(self.behind.clone()),
            Box::new(self.max_lag_ms.clone()),
            Box::new(self.backlog.clone()),
            Box::new(self.updates.clone()),
            Box::new(self.relay_bytes.clone()),
            Box::new(self.relay_updates.clone()),
            Box::new(self.pulls.clone()),
            Box::new(self.auth_failures.clone()),
        ]
    }

    fn observe(&self, view: &ClusterView) {
        self.members.set(view.members.len() as i64);
        self.ready.set(i64::from(view.ready));
        self.waiting.set(view.stats.waiting as i64);
        self.behind.set(behind(view) as i64);
        self.max_lag_ms.set(
            view.members
                .iter()
                .filter_map(|m| m.lag_ms)
                .max()
                .unwrap_or(0) as i64,
        );
        self.backlog
            .set(view.members.iter().map(|m| m.backlog).max().unwrap_or(0) as i64);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let (now, was) = (&view.stats, &*last);
        let add = |c: &IntCounter, new: u64, old: u64| c.inc_by(new.saturating_sub(old));
        let u = |label| self.updates.with_label_values(&[label]);
        add(&u("released"), now.released, was.released);
        add(&u("late"), now.late, was.late);
        add(&u("lost"), now.lost, was.lost);
        add(&u("duplicate"), now.duplicates, was.duplicates);
        add(&u("repaired"), now.repaired, was.repaired);
        add(
            &self.relay_bytes.with_label_values(&["out"]),
            now.relay_bytes_out,
            was.relay_bytes_out,
        );
        add(
            &self.relay_bytes.with_label_values(&["in"]),
            now.relay_bytes_in,
            was.relay_bytes_in,
        );
        add(
            &self.relay_updates.with_label_values(&["out"]),
            now.relay_updates_out,
            was.relay_updates_out,
        );
        add(
            &self.relay_updates.with_label_values(&["in"]),
            now.relay_updates_in,
            was.relay_updates_in,
        );
        add(&self.pulls, now.pulls_sent, was.pulls_sent);
        add(&self.auth_failures, now.auth_failures, was.auth_failures);
        *last = now.clone();
    }
}

/// How many updates this node lacks compared with the best-informed member.
pub fn behind(view: &ClusterView) -> u64 {
    let mut best: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for m in &view.members {
        for (origin, hwm) in &m.vector {
            let e = best.entry(origin.as_str()).or_default();
            *e = (*e).max(*hwm);
        }
    }
    best.iter()
        .map(|(o, h)| h.saturating_sub(view.vector.get(*o).copied().unwrap_or(0)))
        .sum()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("hubbub".into()), None).expect("static prefix is valid");
        let m = Self {
            subscribers: IntGauge::new("subscribers", "Connected subscribers.").expect("valid"),
            connections: IntGauge::new("connections", "Open HTTP connections.").expect("valid"),
            published: IntCounter::new("updates_published_total", "Updates accepted.")
                .expect("valid"),
            delivered: IntCounter::new(
                "updates_delivered_total",
                "Update frames queued to subscribers.",
            )
            .expect("valid"),
            closed: IntCounterVec::new(
                Opts::new(
                    "subscriptions_closed_total",
                    "Subscriptions ended, by reason.",
                ),
                &["reason"],
            )
            .expect("valid"),
            slow_consumers: IntCounter::new(
                "slow_consumer_disconnects_total",
                "Subscribers disconnected because their queue was full.",
            )
            .expect("valid"),
            queue_depth: Histogram::with_opts(
                HistogramOpts::new(
                    "queue_depth",
                    "Frames waiting per subscriber, sampled each sweep.",
                )
                .buckets(vec![
                    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ]),
            )
            .expect("valid"),
            history_entries: IntGauge::new("history_entries", "Updates retained for resume.")
                .expect("valid"),
            history_bytes: IntGauge::new("history_bytes", "Bytes of encoded updates retained.")
                .expect("valid"),
            fanout_backlog: IntGauge::new(
                "fanout_backlog",
                "Median frames waiting in a sample of the latest updates' subscriber queues, as the last publish saw it.",
            )
            .expect("valid"),
            rejected: IntCounterVec::new(
                Opts::new("requests_rejected_total", "Requests refused, by reason."),
                &["reason"],
            )
            .expect("valid"),
            reloads: IntCounterVec::new(
                Opts::new("config_reloads_total", "Config reloads, by result."),
                &["result"],
            )
            .expect("valid"),
            jwks_fetches: IntCounterVec::new(
                Opts::new(
                    "jwks_fetches_total",
                    "JWK Set fetches of trusted issuers, by issuer and result (ok, error).",
                ),
                &["issuer", "result"],
            )
            .expect("valid"),
            presence: PresenceMetrics::new(),
            cluster: ClusterMetrics::new(),
            registry,
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let r = &self.registry;
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.subscribers.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.published.clone()),
            Box::new(self.delivered.clone()),
            Box::new(self.closed.clone()),
            Box::new(self.slow_consumers.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.history_entries.clone()),
            Box::new(self.history_bytes.clone()),
            Box::new(self.fanout_backlog.clone()),
            Box::new(self.rejected.clone()),
            Box::new(self.reloads.clone()),
            Box::new(self.jwks_fetches.clone()),
        ];
        for c in collectors
            .into_iter()
            .chain(self.cluster.collectors())
            .chain(self.presence.collectors())
        {
            r.register(c).expect("each metric is registered once");
        }
        // Process RSS, CPU and open fds (Linux): hubbub_process_resident_memory_bytes etc.
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("registered once");
        for why in Rejection::ALL {
            self.rejected.with_label_values(&[why.as_str()]);
        }
        for reason in CloseReason::ALL {
            self.closed.with_label_values(&[reason.as_str()]);
        }
    }

    /// Copies the cluster's figures in (called at scrape time).
    pub fn observe_cluster(&self, view: &ClusterView) {
        self.cluster.observe(view);
    }

    pub fn reject(&self, why: Rejection) {
        self.rejected.with_label_values(&[why.as_str()]).inc();
    }

    /// The Prometheus text exposition of this hub's and the process's metrics.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl HubMetrics for Metrics {
    fn published(&self) {
        self.published.inc();
    }

    fn delivered(&self, frames: u64) {
        self.delivered.inc_by(frames);
    }

    fn closed(&self, reason: CloseReason) {
        self.closed.with_label_values(&[reason.as_str()]).inc();
        if reason == CloseReason::SlowConsumer {
            self.slow_consumers.inc();
        }
    }

    fn queue_depth(&self, depth: usize) {
        self.queue_depth.observe(depth as f64);
    }

    fn history(&self, entries: usize, bytes: usize) {
        self.history_entries.set(entries as i64);
        self.history_bytes.set(bytes as i64);
    }
}
