//! Prometheus metrics. The core reports through [`hubbub_core::HubMetrics`]; the
//! HTTP layer counts requests and rejections; gauges are read at scrape time.

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
    RateLimited,
    TooManySubscribers,
    TooManyConnections,
    Overloaded,
    ShuttingDown,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::BodyTooLarge => "body_too_large",
            Self::RateLimited => "rate_limited",
            Self::TooManySubscribers => "too_many_subscribers",
            Self::TooManyConnections => "too_many_connections",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
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
    pub rejected: IntCounterVec,
    pub reloads: IntCounterVec,
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
            Box::new(self.rejected.clone()),
            Box::new(self.reloads.clone()),
        ];
        for c in collectors {
            r.register(c).expect("each metric is registered once");
        }
        // Process RSS, CPU and open fds (Linux): hubbub_process_resident_memory_bytes etc.
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("registered once");
        for reason in CloseReason::ALL {
            self.closed.with_label_values(&[reason.as_str()]);
        }
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
