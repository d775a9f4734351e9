//! Background observers in the parent: the server RSS/CPU sampler and the once-a-second
//! progress line on stderr.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::aggregate::{self, SharedAgg};
use crate::hist::fmt_us;
use crate::procfs;
use crate::publisher::PubStats;
use crate::report::{PidSample, ServerSample};
use crate::wire::Phase;

pub type Samples = Arc<Mutex<Vec<ServerSample>>>;

/// Samples the RSS/CPU of `pids` (summed, and each one when there are several) every
/// `every` into the returned list; a tick where any of them is gone adds nothing.
pub fn spawn_sampler(pids: Vec<u32>, every: Duration, t0: Instant) -> (Samples, JoinHandle<()>) {
    let samples: Samples = Arc::default();
    let out = samples.clone();
    let task = tokio::spawn(async move {
        if pids.is_empty() {
            return;
        }
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let each: Option<Vec<_>> = pids.iter().map(|p| procfs::sample(Some(*p))).collect();
            if let Some(each) = each {
                let sample = ServerSample {
                    t_s: t0.elapsed().as_secs_f64(),
                    rss_bytes: each.iter().map(|s| s.rss_bytes).sum(),
                    cpu_s: each.iter().map(|s| s.cpu_seconds).sum(),
                    per_pid: if each.len() > 1 {
                        each.iter()
                            .map(|s| PidSample {
                                rss_bytes: s.rss_bytes,
                                cpu_s: s.cpu_seconds,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                };
                out.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
            }
        }
    });
    (samples, task)
}

/// What the progress line reads.
#[derive(Debug, Clone)]
pub struct ProgressSources {
    pub agg: SharedAgg,
    pub publishers: Arc<PubStats>,
    pub phase: Arc<AtomicU8>,
    pub requested: u64,
    pub server_pids: Vec<u32>,
    pub t0: Instant,
}

pub fn spawn_progress(src: ProgressSources) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_ok = 0;
        let mut last_err = 0;
        let mut last_cpu = procfs::sample_sum(&src.server_pids).map(|s| s.cpu_seconds);
        let mut last_at = Instant::now();
        loop {
            ticker.tick().await;
            let dt = last_at.elapsed().as_secs_f64().max(1e-3);
            last_at = Instant::now();
            let (connected, done, errors, (deliveries, recent), so_far) = {
                let mut a = aggregate::lock(&src.agg);
                (
                    a.connected(),
                    a.initial_done(),
                    a.connect_errors(),
                    a.take_recent(),
                    a.so_far_p99(),
                )
            };
            let ok = src.publishers.ok.load(Relaxed);
            let err: u64 = src.publishers.errors().values().sum();
            let mut line = format!(
                "[{:>6.1}s] {:<10} subs {connected}/{} (first tries done {done}, connect errors {errors}) | pub {:.0}/s err {} | deliv {:.0}/s p99 {} (so far {})",
                src.t0.elapsed().as_secs_f64(),
                format!("{:?}", Phase::from_u8(src.phase.load(Relaxed))).to_lowercase(),
                src.requested,
                (ok - last_ok) as f64 / dt,
                err - last_err,
                deliveries as f64 / dt,
                fmt_us(recent.quantile(0.99)),
                fmt_us(so_far),
            );
            (last_ok, last_err) = (ok, err);
            if let Some(s) = procfs::sample_sum(&src.server_pids) {
                let cpu = last_cpu.map_or(0.0, |c| (s.cpu_seconds - c) / dt * 100.0);
                last_cpu = Some(s.cpu_seconds);
                line.push_str(&format!(
                    " | server {:.1} MiB cpu {cpu:.0}%",
                    s.rss_bytes as f64 / (1024.0 * 1024.0)
                ));
            }
            eprintln!("{line}");
        }
    })
}
