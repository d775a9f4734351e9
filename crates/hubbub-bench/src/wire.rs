//! Parent <-> worker protocol: JSON lines, commands on the worker's stdin, events on
//! its stdout. Event lines carry a prefix so anything else the binary happens to print
//! on stdout (a log line, say) is skipped instead of breaking the stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hist::HistDump;

pub const EVENT_PREFIX: &str = "@hubbub-bench ";

/// Where the run is; workers count and record latency only in `Measure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Subscribers connecting, nothing published yet.
    Connecting = 0,
    Warmup = 1,
    Measure = 2,
    /// Publishing stopped, waiting for stragglers.
    Drain = 3,
}

impl Phase {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Warmup,
            2 => Self::Measure,
            _ => Self::Drain,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Phase {
        phase: Phase,
    },
    /// Publishing is over: `published[p][t]` is the last sequence number publisher `p`
    /// got accepted on topic `t`. Workers count losses, report `Final` and exit.
    Finish {
        published: Vec<Vec<u64>>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    Tick(Tick),
    Final(Box<WorkerFinal>),
}

/// Once a second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Subscriber streams open right now.
    pub connected: u64,
    /// Slots whose first connection attempt has finished, either way.
    pub initial_done: u64,
    pub connect_errors: u64,
    /// Deliveries since the previous tick.
    pub deliveries: u64,
    /// Latency of those deliveries.
    pub hist: HistDump,
}

/// Once, after `Finish`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerFinal {
    #[serde(flatten)]
    pub counts: WorkerCounts,
    /// Latency of deliveries received during `Measure`.
    pub hist_measured: HistDump,
    /// Counts of this worker's subscribers of each hub, in hub order.
    #[serde(default)]
    pub per_hub: Vec<HubFinal>,
}

/// A worker's final counts, without the latencies. The parent's sum over its workers
/// is one of these too (`aggregate::Totals`): the same counts, added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerCounts {
    pub slots: u64,
    #[serde(flatten)]
    pub streams: StreamCounts,
    /// Slots whose first connection was never established.
    pub never_connected: u64,
    pub connect_errors: BTreeMap<String, u64>,
    /// Events whose data was not a payload of this run.
    pub foreign: u64,
    /// Streams the server ended (or broke) on its own.
    pub disconnects: BTreeMap<String, u64>,
    /// Streams closed and reopened on purpose (`--churn`).
    pub churned: u64,
    /// CPU this worker used (0 for in-process workers: the parent counts itself).
    pub cpu_seconds: f64,
}

/// What a set of subscriber streams counted: all of a worker's, or those on one hub
/// (so the per-hub split is counted, and summed, exactly like the whole).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCounts {
    pub connected_at_end: u64,
    pub deliveries_total: u64,
    pub deliveries_measured: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// A worker's final counts for the subscribers of one hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HubFinal {
    #[serde(flatten)]
    pub streams: StreamCounts,
    pub hist_measured: HistDump,
}

impl StreamCounts {
    pub fn add(&mut self, other: &Self) {
        self.connected_at_end += other.connected_at_end;
        self.deliveries_total += other.deliveries_total;
        self.deliveries_measured += other.deliveries_measured;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
    }
}

impl WorkerCounts {
    pub fn add(&mut self, other: &Self) {
        let merge = |into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>| {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        };
        self.slots += other.slots;
        self.streams.add(&other.streams);
        self.never_connected += other.never_connected;
        merge(&mut self.connect_errors, &other.connect_errors);
        self.foreign += other.foreign;
        merge(&mut self.disconnects, &other.disconnects);
        self.churned += other.churned;
        self.cpu_seconds += other.cpu_seconds;
    }
}

pub fn encode_event(ev: &Event) -> String {
    let mut s = String::from(EVENT_PREFIX);
    // Serializing these plain structs cannot fail.
    s.push_str(&serde_json::to_string(ev).unwrap_or_default());
    s.push('\n');
    s
}

/// `None` for lines that are not events (foreign output).
pub fn decode_event(line: &str) -> Option<Result<Event, serde_json::Error>> {
    line.strip_prefix(EVENT_PREFIX).map(serde_json::from_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_foreign_lines_are_skipped() {
        let ev = Event::Tick(Tick {
            connected: 3,
            deliveries: 9,
            hist: vec![(10, 2)],
            ..Tick::default()
        });
        let line = encode_event(&ev);
        assert!(line.ends_with('\n'));
        assert_eq!(decode_event(line.trim_end()).unwrap().unwrap(), ev);
        assert!(decode_event("2025-01-01T00:00:00Z INFO hello").is_none());
        let cmd = Command::Finish {
            published: vec![vec![1, 2]],
        };
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
        assert_eq!(Phase::from_u8(Phase::Measure as u8), Phase::Measure);
    }

    #[test]
    fn final_counts_travel_flat_and_add_up() {
        let streams = StreamCounts {
            connected_at_end: 1,
            deliveries_total: 2,
            deliveries_measured: 3,
            lost: 4,
            duplicated: 5,
            reordered: 6,
        };
        let fin = WorkerFinal {
            counts: WorkerCounts {
                slots: 7,
                streams,
                disconnects: BTreeMap::from([("eof".to_owned(), 1)]),
                ..WorkerCounts::default()
            },
            hist_measured: vec![(10, 2)],
            per_hub: vec![HubFinal {
                streams,
                hist_measured: vec![(10, 2)],
            }],
        };
        // One flat object, as before the counts had types of their own.
        let json = serde_json::to_value(&fin).unwrap();
        assert_eq!(
            (json["slots"].as_u64(), json["lost"].as_u64()),
            (Some(7), Some(4))
        );
        assert_eq!(json["per_hub"][0]["reordered"].as_u64(), Some(6));
        let line = encode_event(&Event::Final(Box::new(fin.clone())));
        let Some(Ok(Event::Final(back))) = decode_event(line.trim_end()) else {
            panic!("{line}")
        };
        assert_eq!(*back, fin);
        let mut sum = fin.counts.clone();
        sum.add(&fin.counts);
        assert_eq!(
            (sum.slots, sum.streams.lost, sum.disconnects["eof"]),
            (14, 8, 2)
        );
        assert_eq!(sum.streams.reordered, 2 * streams.reordered);
    }
}
