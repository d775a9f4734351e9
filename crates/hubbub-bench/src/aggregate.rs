//! The parent's view of its workers, folded from their event streams.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::hist::LatencyHist;
use crate::wire::{Event, StreamCounts, Tick, WorkerCounts, WorkerFinal};
use crate::workers::WorkerMsg;

#[derive(Debug, Default)]
pub struct Agg {
    last: Vec<Tick>,
    finals: Vec<Option<WorkerFinal>>,
    gone: Vec<bool>,
    /// Deliveries and latency since the progress line last took them.
    recent_deliveries: u64,
    recent: LatencyHist,
    /// Every delivery's latency since the start (progress "so far").
    so_far: LatencyHist,
}

/// Shared handle; the collector task writes, the coordinator and progress line read.
pub type SharedAgg = Arc<Mutex<Agg>>;

pub fn lock(agg: &SharedAgg) -> std::sync::MutexGuard<'_, Agg> {
    agg.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spawns the task folding worker messages into a new `Agg` for `workers` workers.
pub fn collect(workers: usize, mut msg_rx: mpsc::UnboundedReceiver<(u32, WorkerMsg)>) -> SharedAgg {
    let agg = Arc::new(Mutex::new(Agg {
        last: vec![Tick::default(); workers],
        finals: vec![None; workers],
        gone: vec![false; workers],
        ..Agg::default()
    }));
    let shared = agg.clone();
    tokio::spawn(async move {
        while let Some((i, msg)) = msg_rx.recv().await {
            lock(&shared).apply(i as usize, msg);
        }
    });
    agg
}

impl Agg {
    fn apply(&mut self, i: usize, msg: WorkerMsg) {
        if i >= self.last.len() {
            return;
        }
        match msg {
            WorkerMsg::Event(Event::Tick(t)) => {
                self.recent_deliveries += t.deliveries;
                self.recent.merge_dump(&t.hist);
                self.so_far.merge_dump(&t.hist);
                self.last[i] = t;
            }
            WorkerMsg::Event(Event::Final(f)) => self.finals[i] = Some(*f),
            WorkerMsg::Gone => self.gone[i] = true,
        }
    }

    pub fn connected(&self) -> u64 {
        self.last.iter().map(|t| t.connected).sum()
    }

    pub fn initial_done(&self) -> u64 {
        self.last.iter().map(|t| t.initial_done).sum()
    }

    pub fn connect_errors(&self) -> u64 {
        self.last.iter().map(|t| t.connect_errors).sum()
    }

    pub fn all_gone(&self) -> bool {
        self.gone.iter().all(|g| *g)
    }

    /// Every worker either reported its final counts or is gone.
    pub fn all_final(&self) -> bool {
        self.finals
            .iter()
            .zip(&self.gone)
            .all(|(f, g)| f.is_some() || *g)
    }

    /// Workers that are gone without a final report.
    pub fn missing_finals(&self) -> Vec<usize> {
        self.finals
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_none())
            .map(|(i, _)| i)
            .collect()
    }

    pub fn finals(&self) -> impl Iterator<Item = &WorkerFinal> {
        self.finals.iter().flatten()
    }

    /// Takes deliveries and latency accumulated since the previous call.
    pub fn take_recent(&mut self) -> (u64, LatencyHist) {
        let d = std::mem::take(&mut self.recent_deliveries);
        let h = self.recent.clone();
        self.recent.reset();
        (d, h)
    }

    pub fn so_far_p99(&self) -> u64 {
        self.so_far.quantile(0.99)
    }
}

/// Sums the workers' final reports.
#[derive(Debug, Default)]
pub struct Totals {
    pub counts: WorkerCounts,
    /// Latency of deliveries in the measured window.
    pub hist: LatencyHist,
    /// The same, split by hub.
    pub per_hub: Vec<HubTotals>,
}

/// `Totals` of the subscribers of one hub.
#[derive(Debug, Default)]
pub struct HubTotals {
    pub streams: StreamCounts,
    pub hist: LatencyHist,
}

impl Totals {
    pub fn add(&mut self, f: &WorkerFinal) {
        self.counts.add(&f.counts);
        self.hist.merge_dump(&f.hist_measured);
        if self.per_hub.len() < f.per_hub.len() {
            self.per_hub
                .resize_with(f.per_hub.len(), HubTotals::default);
        }
        for (into, from) in self.per_hub.iter_mut().zip(&f.per_hub) {
            into.streams.add(&from.streams);
            into.hist.merge_dump(&from.hist_measured);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HubFinal;

    #[test]
    fn folds_ticks_and_finals() {
        let mut agg = Agg {
            last: vec![Tick::default(); 2],
            finals: vec![None; 2],
            gone: vec![false; 2],
            ..Agg::default()
        };
        let tick = |c, d| Tick {
            connected: c,
            initial_done: c,
            deliveries: d,
            hist: vec![(100, d)],
            ..Tick::default()
        };
        agg.apply(0, WorkerMsg::Event(Event::Tick(tick(3, 5))));
        agg.apply(1, WorkerMsg::Event(Event::Tick(tick(4, 6))));
        agg.apply(1, WorkerMsg::Event(Event::Tick(tick(4, 1))));
        agg.apply(7, WorkerMsg::Gone);
        assert_eq!((agg.connected(), agg.initial_done()), (7, 7));
        let (d, h) = agg.take_recent();
        assert_eq!((d, h.len()), (12, 12));
        assert_eq!(agg.take_recent().0, 0);
        assert!(!agg.all_final());
        agg.apply(
            0,
            WorkerMsg::Event(Event::Final(Box::new(WorkerFinal {
                counts: WorkerCounts {
                    streams: StreamCounts {
                        lost: 2,
                        ..StreamCounts::default()
                    },
                    ..WorkerCounts::default()
                },
                ..WorkerFinal::default()
            }))),
        );
        agg.apply(1, WorkerMsg::Gone);
        assert!(agg.all_final());
        assert_eq!(agg.missing_finals(), vec![1]);
        let mut t = Totals::default();
        agg.finals().for_each(|f| t.add(f));
        assert_eq!(t.counts.streams.lost, 2);
        // Per-hub counts add up hub by hub, whatever the workers' order.
        let hub = |lost, n| HubFinal {
            streams: StreamCounts {
                lost,
                deliveries_measured: n,
                ..StreamCounts::default()
            },
            hist_measured: vec![(100, n)],
        };
        let mut t = Totals::default();
        t.add(&WorkerFinal {
            per_hub: vec![hub(1, 3), hub(0, 4)],
            ..WorkerFinal::default()
        });
        t.add(&WorkerFinal {
            per_hub: vec![hub(2, 5), hub(0, 6)],
            ..WorkerFinal::default()
        });
        assert_eq!(t.per_hub.len(), 2);
        assert_eq!(
            (
                t.per_hub[0].streams.lost,
                t.per_hub[0].streams.deliveries_measured
            ),
            (3, 8)
        );
        assert_eq!(
            (t.per_hub[1].hist.len(), t.per_hub[1].streams.lost),
            (10, 0)
        );
    }
}
