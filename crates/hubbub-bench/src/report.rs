//! The bench report: serde for `--json-out`, `Display` for the human summary.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::args::Target;
use crate::hist::{LatencyBucket, LatencySummary, fmt_us};

/// The settings a report was made with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSummary {
    pub target: Target,
    /// The first of `hubs` and of `publish_hubs`.
    pub sub_url: String,
    pub pub_url: String,
    /// Every subscribe URL, in hub order (subscriber `i` on hub `i % n`).
    #[serde(default)]
    pub hubs: Vec<String>,
    /// Every publish URL (publisher `p` on `p % n`).
    #[serde(default)]
    pub publish_hubs: Vec<String>,
    pub subscribers: u32,
    pub topics: u32,
    pub publishers: u32,
    pub rate: f64,
    pub payload_bytes: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_s: f64,
    pub connect_rate: f64,
    pub churn: f64,
    pub processes: u32,
    pub source_ips: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The full, aggregated report.
    Parent,
    /// One worker process's share (what `run` returns in a worker).
    Worker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub role: Role,
    pub plan: PlanSummary,
    pub started_unix_ms: u64,
    /// Length of the measured window actually run, seconds.
    pub window_s: f64,
    pub connect: ConnectStats,
    pub publish: PublishStats,
    pub delivery: DeliveryStats,
    /// Publish-to-receive latency of deliveries received in the window.
    pub latency: LatencySummary,
    /// The same latencies as non-empty log-scaled buckets (20 a decade), for plotting a
    /// saved report (`--plot-from`). Absent in worker shares and in reports written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_histogram: Option<Vec<LatencyBucket>>,
    /// Deliveries and latency split by the hub the subscribers were on (one entry
    /// per `--hub`, in order; a single entry without `--hub` repeated).
    #[serde(default)]
    pub per_hub: Vec<HubStats>,
    pub server: Option<ServerStats>,
    pub client: ClientStats,
    /// Anything that makes the numbers suspect (a worker died, a phase timed out).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectStats {
    pub requested: u64,
    /// Open streams once connecting was over (sampled before publishing).
    pub connected: u64,
    pub connected_at_end: u64,
    pub never_connected: u64,
    /// Every failed attempt (first connects and reconnects) by cause.
    pub errors: BTreeMap<String, u64>,
    /// Time until every first attempt had finished.
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishStats {
    pub offered_rate: f64,
    /// Accepted (2xx) publishes in the window, and per second.
    pub ok_in_window: u64,
    pub achieved_rate: f64,
    pub attempted_total: u64,
    pub ok_total: u64,
    /// Failed publishes by cause (`http_429`, `refused`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    pub missed_schedule: u64,
    /// Request round trip of accepted publishes.
    pub rtt: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryStats {
    #[serde(flatten)]
    pub counts: Deliveries,
    pub foreign: u64,
    /// Streams the server ended or broke, by cause.
    pub disconnects: BTreeMap<String, u64>,
    pub churned: u64,
}

/// What a set of subscribers received: all of them (`DeliveryStats`) or those of one
/// hub (`HubStats`), counted and rated the same way. Flattened into both, so the
/// JSON keeps its keys where they were.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Deliveries {
    /// Deliveries received in the measured window.
    pub in_window: u64,
    pub per_second: f64,
    /// Accepted publishes in the window x subscribers on their topic, per second.
    pub expected_per_second: f64,
    pub total: u64,
    /// Counted after the drain: expected per subscriber stream minus received.
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// What the subscribers of one hub saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HubStats {
    pub url: String,
    /// Some publisher sends to this hub (its subscribers are "local" to them).
    pub publish: bool,
    pub subscribers: u64,
    pub connected_at_end: u64,
    #[serde(flatten)]
    pub counts: Deliveries,
    pub latency: LatencySummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerStats {
    pub pids: Vec<u32>,
    pub rss_before_bytes: u64,
    /// After all subscribers connected and settled, before publishing.
    pub rss_connected_bytes: u64,
    pub rss_end_bytes: u64,
    pub rss_peak_bytes: u64,
    /// (connected - before) / connected subscribers.
    pub rss_per_subscriber_bytes: Option<f64>,
    pub cpu_window_s: f64,
    /// Of one core, over the window.
    pub cpu_window_percent: f64,
    pub cpu_total_s: f64,
    pub samples: Vec<ServerSample>,
    /// The same per `--server-pid`, in the order given.
    #[serde(default)]
    pub per_pid: Vec<PidStats>,
}

/// One server process's share of `ServerStats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PidStats {
    pub pid: u32,
    pub rss_connected_bytes: u64,
    pub rss_end_bytes: u64,
    pub cpu_window_s: f64,
    pub cpu_window_percent: f64,
}

/// One periodic sample of the `--server-pid`s (every `--sample-interval`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerSample {
    /// Seconds since the bench started.
    pub t_s: f64,
    /// Summed over the `--server-pid`s.
    pub rss_bytes: u64,
    pub cpu_s: f64,
    /// Each `--server-pid` in the order given, only when there are several (one line
    /// each in the RSS plot). Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_pid: Vec<PidSample>,
}

/// One server process's part of a `ServerSample`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PidSample {
    pub rss_bytes: u64,
    pub cpu_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientStats {
    pub processes: u32,
    pub cpu_parent_s: f64,
    pub cpu_workers_s: f64,
}

impl Report {
    /// Why `--fail-on-loss` rejects this run (empty: it passes).
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        let d = &self.delivery;
        if d.counts.lost > 0 {
            why.push(format!("{} deliveries lost", d.counts.lost));
        }
        if self.plan.rate > 0.0 && self.plan.subscribers > 0 && d.counts.total == 0 {
            why.push("no delivery at all".into());
        }
        if self.connect.never_connected > 0 {
            why.push(format!(
                "{} subscribers never connected",
                self.connect.never_connected
            ));
        }
        let drops: u64 = d.disconnects.values().sum();
        if drops > 0 {
            why.push(format!("{drops} streams dropped by the server"));
        }
        why.extend(self.problems.iter().cloned());
        why
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.plan;
        let target = format!("{:?}", p.target).to_lowercase();
        let hubs = if p.hubs.is_empty() {
            std::slice::from_ref(&p.sub_url)
        } else {
            &p.hubs[..]
        };
        write!(
            f,
            "hubbub bench: target {target}, subscribe {}",
            hubs.join(" ")
        )?;
        let publish = if p.publish_hubs.is_empty() {
            std::slice::from_ref(&p.pub_url)
        } else {
            &p.publish_hubs[..]
        };
        if publish != hubs && p.rate > 0.0 {
            write!(f, ", publish {}", publish.join(" "))?;
        }
        writeln!(f)?;
        let c = &self.connect;
        writeln!(
            f,
            "  subscribers  {} requested over {} topic(s), {} connected in {:.1} s, {} at end, never connected {}; connect errors: {}",
            c.requested,
            p.topics,
            c.connected,
            c.seconds,
            c.connected_at_end,
            c.never_connected,
            map(&c.errors)
        )?;
        let pb = &self.publish;
        if p.rate > 0.0 {
            writeln!(
                f,
                "  publish      offered {:.0}/s by {} publisher(s), achieved {:.1}/s ({} ok in {:.1} s window); errors: {}; missed schedule {}",
                pb.offered_rate,
                p.publishers,
                pb.achieved_rate,
                pb.ok_in_window,
                self.window_s,
                map(&pb.errors),
                pb.missed_schedule
            )?;
            writeln!(
                f,
                "  publish RTT  p50 {}  p99 {}  max {}",
                fmt_us(pb.rtt.p50_us),
                fmt_us(pb.rtt.p99_us),
                fmt_us(pb.rtt.max_us)
            )?;
        } else {
            writeln!(
                f,
                "  publish      none (idle run, {:.1} s held)",
                self.window_s
            )?;
        }
        let d = &self.delivery;
        let c = &d.counts;
        writeln!(
            f,
            "  deliveries   {} in window = {:.0}/s (expected {:.0}/s); {} in total",
            c.in_window, c.per_second, c.expected_per_second, c.total
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            fmt_us(l.p50_us),
            fmt_us(l.p90_us),
            fmt_us(l.p99_us),
            fmt_us(l.p999_us),
            fmt_us(l.max_us),
            l.count
        )?;
        writeln!(
            f,
            "  integrity    lost {}, duplicated {}, reordered {}, foreign {}, churned {}, dropped by server: {}",
            c.lost,
            c.duplicated,
            c.reordered,
            d.foreign,
            d.churned,
            map(&d.disconnects)
        )?;
        if self.per_hub.len() > 1 {
            for (i, h) in self.per_hub.iter().enumerate() {
                let (l, c) = (&h.latency, &h.counts);
                writeln!(
                    f,
                    "  hub {i}        {}{}: {} subscribers ({} at end); deliveries {} in window = {:.0}/s (expected {:.0}/s); latency p50 {}  p90 {}  p99 {}  p99.9 {}  max {}; lost {}, duplicated {}, reordered {}",
                    h.url,
                    if h.publish { " (publish)" } else { "" },
                    h.subscribers,
                    h.connected_at_end,
                    c.in_window,
                    c.per_second,
                    c.expected_per_second,
                    fmt_us(l.p50_us),
                    fmt_us(l.p90_us),
                    fmt_us(l.p99_us),
                    fmt_us(l.p999_us),
                    fmt_us(l.max_us),
                    c.lost,
                    c.duplicated,
                    c.reordered
                )?;
            }
        }
        if let Some(s) = &self.server {
            let per_sub = s.rss_per_subscriber_bytes.map_or_else(
                || "n/a".to_owned(),
                |b| format!("{:.2} KiB/subscriber", b / 1024.0),
            );
            writeln!(
                f,
                "  server       RSS {} before, {} connected ({per_sub}), {} at end, peak {}; CPU {:.2} s in window ({:.0}% of a core)",
                mib(s.rss_before_bytes),
                mib(s.rss_connected_bytes),
                mib(s.rss_end_bytes),
                mib(s.rss_peak_bytes),
                s.cpu_window_s,
                s.cpu_window_percent
            )?;
            if s.per_pid.len() > 1 {
                for p in &s.per_pid {
                    writeln!(
                        f,
                        "  server pid {}: RSS {} connected, {} at end; CPU {:.2} s in window ({:.0}% of a core)",
                        p.pid,
                        mib(p.rss_connected_bytes),
                        mib(p.rss_end_bytes),
                        p.cpu_window_s,
                        p.cpu_window_percent
                    )?;
                }
            }
        }
        writeln!(
            f,
            "  client       {} worker process(es), CPU {:.2} s (parent {:.2} s, workers {:.2} s)",
            self.client.processes,
            self.client.cpu_parent_s + self.client.cpu_workers_s,
            self.client.cpu_parent_s,
            self.client.cpu_workers_s
        )?;
        for problem in &self.problems {
            writeln!(f, "  PROBLEM      {problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys scripts and plots read stay where they were: flat, in this order.
    #[test]
    fn delivery_json_keeps_its_flat_keys() {
        let counts = Deliveries {
            lost: 3,
            ..Deliveries::default()
        };
        let d = DeliveryStats {
            counts: counts.clone(),
            churned: 2,
            ..DeliveryStats::default()
        };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"in_window":0,"per_second":0.0,"expected_per_second":0.0,"total":0,"lost":3,"duplicated":0,"reordered":0,"foreign":0,"disconnects":{},"churned":2}"#
        );
        let back: DeliveryStats = serde_json::from_str(&json).unwrap();
        assert_eq!((back.counts.lost, back.churned), (3, 2));
        let h = HubStats {
            url: "u".into(),
            counts,
            ..HubStats::default()
        };
        let json = serde_json::to_string(&h).unwrap();
        let keys = r#"{"url":"u","publish":false,"subscribers":0,"connected_at_end":0,"in_window":0,"per_second":0.0,"expected_per_second":0.0,"total":0,"lost":3,"duplicated":0,"reordered":0,"latency":{"#;
        assert!(json.starts_with(keys), "{json}");
        let back: HubStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back.counts.lost, 3);
    }
}
