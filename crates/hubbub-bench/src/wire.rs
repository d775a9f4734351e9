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
    pub slots: u64,
    pub connected_at_end: u64,
    /// Slots whose first connection was never established.
    pub never_connected: u64,
    pub connect_errors: BTreeMap<String, u64>,
    pub deliveries_total: u64,
    pub deliveries_measured: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Events whose data was not a payload of this run.
    pub foreign: u64,
    /// Streams the server ended (or broke) on its own.
    pub disconnects: BTreeMap<String, u64>,
    /// Streams closed and reopened on purpose (`--churn`).
    pub churned: u64,
    /// Latency of deliveries received during `Measure`.
    pub hist_measured: HistDump,
    /// CPU this worker used (0 for in-process workers: the parent counts itself).
    pub cpu_seconds: f64,
    /// Counts of this worker's subscribers of each hub, in hub order.
    #[serde(default)]
    pub per_hub: Vec<HubFinal>,
}

/// A worker's final counts for the subscribers of one hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HubFinal {
    pub connected_at_end: u64,
    pub deliveries_total: u64,
    pub deliveries_measured: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub hist_measured: HistDump,
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
}
