//! A worker's subscriber engine: opens its share of slots at the connect rate, ticks
//! stats once a second, drives churn, and on `Finish` collects the final counts.
//! The same code runs in a worker process and, with `--processes 0`, in the parent.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::TaskTracker;

use crate::plan::Plan;
use crate::procfs;
use crate::subscriber::{self, Published, SlotHandle, SubStats};
use crate::wire::{Command, Event, HubFinal, Phase, Tick, WorkerCounts, WorkerFinal};

/// How long finishing slots get to count their losses and close.
const FINISH_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs worker `index` of `of` until `Finish` (or until `cmd_rx` closes, i.e. the
/// parent is gone). `own_process` says whether this worker's CPU is its process's.
pub async fn run(
    plan: Arc<Plan>,
    index: u32,
    of: u32,
    mut cmd_rx: mpsc::UnboundedReceiver<Command>,
    ev_tx: mpsc::UnboundedSender<Event>,
    own_process: bool,
) {
    let of = of.max(1);
    let slots: Vec<u32> = (index..plan.subscribers).step_by(of as usize).collect();
    let stats = Arc::new(SubStats::new(plan.hubs()));
    let handles: Arc<[Arc<SlotHandle>]> = slots.iter().map(|_| Arc::default()).collect();
    let (finish_tx, finish_rx) = watch::channel::<Option<Published>>(None);
    let tasks = TaskTracker::new();

    let connector = tokio::spawn({
        let (plan, stats, handles, tasks, finish_rx) = (
            plan.clone(),
            stats.clone(),
            handles.clone(),
            tasks.clone(),
            finish_rx.clone(),
        );
        async move {
            let per_second = plan.connect_rate / f64::from(of);
            let start = Instant::now();
            for (k, slot) in slots.into_iter().enumerate() {
                tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / per_second))
                    .await;
                let fut = subscriber::run_slot(
                    plan.clone(),
                    stats.clone(),
                    slot,
                    handles[k].clone(),
                    finish_rx.clone(),
                );
                tasks.spawn(fut);
            }
        }
    });

    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The parent waits for every first connect to finish: tell it as soon as that
    // happens rather than at the next once-a-second tick.
    let mut connect_watch = tokio::time::interval(Duration::from_millis(50));
    let mut connects_reported = handles.is_empty();
    let mut last_deliveries = 0;
    let mut churn: Option<tokio::task::JoinHandle<()>> = None;
    let published = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let _ = ev_tx.send(Event::Tick(tick(&stats, &mut last_deliveries)));
            }
            _ = connect_watch.tick(), if !connects_reported => {
                if stats.initial_done.load(Relaxed) >= handles.len() as u64 {
                    connects_reported = true;
                    let _ = ev_tx.send(Event::Tick(tick(&stats, &mut last_deliveries)));
                }
            }
            cmd = cmd_rx.recv() => match cmd {
                Some(Command::Phase { phase }) => {
                    stats.set_phase(phase);
                    if phase == Phase::Warmup && plan.churn > 0.0 && churn.is_none() {
                        churn = Some(tokio::spawn(drive_churn(handles.clone(), plan.churn / f64::from(of))));
                    }
                    if phase == Phase::Drain && let Some(c) = churn.take() {
                        c.abort();
                    }
                }
                Some(Command::Finish { published }) => break Some(Arc::new(published)),
                None => break None,
            }
        }
    };
    connector.abort();
    if let Some(c) = churn.take() {
        c.abort();
    }
    let connected_at_end = stats.streams.connected.load(Relaxed);
    let connected_at_end_per_hub: Vec<u64> = stats
        .per_hub
        .iter()
        .map(|c| c.connected.load(Relaxed))
        .collect();
    // A slot told "finished" without a table (parent gone) only counts holes.
    let _ = finish_tx.send(Some(published.unwrap_or_default()));
    tasks.close();
    let _ = tokio::time::timeout(FINISH_TIMEOUT, tasks.wait()).await;

    let (hist_measured, hists_per_hub) = {
        let h = stats.hists();
        let per_hub: Vec<_> = h.measured_per_hub.iter().map(|h| h.dump()).collect();
        (h.measured.dump(), per_hub)
    };
    let per_hub = stats
        .per_hub
        .iter()
        .zip(hists_per_hub.into_iter().zip(connected_at_end_per_hub))
        .map(|(c, (hist_measured, connected_at_end))| HubFinal {
            streams: c.snapshot(connected_at_end),
            hist_measured,
        })
        .collect();
    let locked = |m: &std::sync::Mutex<std::collections::BTreeMap<String, u64>>| {
        m.lock().unwrap_or_else(|e| e.into_inner()).clone()
    };
    let counts = WorkerCounts {
        slots: handles.len() as u64,
        streams: stats.streams.snapshot(connected_at_end),
        never_connected: stats.never_connected.load(Relaxed)
            + (handles.len() as u64).saturating_sub(stats.initial_done.load(Relaxed)),
        connect_errors: locked(&stats.connect_errors),
        foreign: stats.foreign.load(Relaxed),
        disconnects: locked(&stats.disconnects),
        churned: stats.churned.load(Relaxed),
        cpu_seconds: if own_process {
            procfs::sample(None).map_or(0.0, |s| s.cpu_seconds)
        } else {
            0.0
        },
    };
    let fin = WorkerFinal {
        counts,
        hist_measured,
        per_hub,
    };
    let _ = ev_tx.send(Event::Tick(tick(&stats, &mut last_deliveries)));
    let _ = ev_tx.send(Event::Final(Box::new(fin)));
}

fn tick(stats: &SubStats, last_deliveries: &mut u64) -> Tick {
    let total = stats.streams.deliveries.load(Relaxed);
    let deliveries = total - *last_deliveries;
    *last_deliveries = total;
    let hist = {
        let mut h = stats.hists();
        let dump = h.tick.dump();
        h.tick.reset();
        dump
    };
    Tick {
        connected: stats.streams.connected.load(Relaxed),
        initial_done: stats.initial_done.load(Relaxed),
        connect_errors: stats.connect_errors_total.load(Relaxed),
        deliveries,
        hist,
    }
}

/// Closes `per_second` open streams a second, round-robin; each reconnects at once.
async fn drive_churn(handles: Arc<[Arc<SlotHandle>]>, per_second: f64) {
    if handles.is_empty() || per_second <= 0.0 {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut next = 0;
    loop {
        ticker.tick().await;
        // Skip slots that are between connections (a stored wakeup would close their
        // next stream the moment it opens) or have nothing to resume from yet.
        for _ in 0..handles.len() {
            let h = &handles[next];
            next = (next + 1) % handles.len();
            if h.churnable.load(Relaxed) {
                h.churn.notify_one();
                break;
            }
        }
    }
}
