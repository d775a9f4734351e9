//! The parent's timeline: start workers, wait for subscribers, settle, publish through
//! warmup and the measured window, drain, collect the workers' counts, report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{self, Agg, SharedAgg, Totals};
use crate::args::BenchArgs;
use crate::error::BenchError;
use crate::monitor::{self, ProgressSources, Samples};
use crate::payload;
use crate::plan::Plan;
use crate::plot;
use crate::procfs::{self, ProcSample};
use crate::publisher::{self, PubStats};
use crate::report::{
    ClientStats, ConnectStats, Deliveries, DeliveryStats, HubStats, PidStats, PublishStats, Report,
    Role, ServerStats,
};
use crate::wire::{Command, Phase, StreamCounts, WorkerFinal};
use crate::workers::Workers;

/// Slack on top of the time the connect rate needs, for slow accepts and retransmitted SYNs.
const CONNECT_SLACK: Duration = Duration::from_secs(30);
const FINAL_TIMEOUT: Duration = Duration::from_secs(45);

/// A snapshot taken at each edge of the measured window.
struct Edge {
    at: Instant,
    ok: u64,
    per_topic: Vec<u64>,
    server: Option<ProcSample>,
    /// Each of `pids`, in order.
    per_pid: Vec<Option<ProcSample>>,
}

impl Edge {
    fn take(pubs: &PubStats, pids: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            ok: pubs.ok.load(Relaxed),
            per_topic: pubs.per_topic(),
            server: procfs::sample_sum(pids),
            per_pid: per_pid(pids),
        }
    }
}

/// A sample of each of `pids`, in order (`None` for one that could not be read).
fn per_pid(pids: &[u32]) -> Vec<Option<ProcSample>> {
    pids.iter().map(|p| procfs::sample(Some(*p))).collect()
}

/// Resident bytes of a sample, 0 where the process could not be read.
fn rss(s: &Option<ProcSample>) -> u64 {
    s.map_or(0, |s| s.rss_bytes)
}

/// CPU seconds between two samples of the same process(es), 0 unless both were read.
fn cpu_between(a: Option<ProcSample>, b: Option<ProcSample>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
        _ => 0.0,
    }
}

/// This process's CPU seconds so far (0 off Linux).
fn self_cpu() -> f64 {
    procfs::sample(None).map_or(0.0, |s| s.cpu_seconds)
}

/// The measured window between its two edges. Every rate in the report is a count
/// over this window's actual length, not the `--duration` asked for.
struct Window {
    start: Edge,
    end: Edge,
}

impl Window {
    fn seconds(&self) -> f64 {
        self.end.at.duration_since(self.start.at).as_secs_f64()
    }

    /// `n` per second of the window (0 for an empty window rather than infinity).
    fn per_s(&self, n: f64) -> f64 {
        let s = self.seconds();
        if s > 0.0 { n / s } else { 0.0 }
    }

    /// Accepted publishes in the window x subscribers on their topic.
    fn expected(&self, subs_per_topic: &[u64]) -> u64 {
        subs_per_topic
            .iter()
            .zip(self.end.per_topic.iter().zip(&self.start.per_topic))
            .map(|(subs, (e, s))| subs * (e - s))
            .sum()
    }

    /// What `streams` received, with rates over the window, against what the
    /// subscribers (`subs_per_topic`) should have received in it. One way for all
    /// subscribers and for each hub's, so the per-hub lines add up to the total.
    fn deliveries(&self, streams: &StreamCounts, subs_per_topic: &[u64]) -> Deliveries {
        Deliveries {
            per_second: self.per_s(streams.deliveries_measured as f64),
            expected_per_second: self.per_s(self.expected(subs_per_topic) as f64),
            ..counted(streams)
        }
    }
}

/// The report's delivery counts of `streams`, without rates (a worker's share has
/// no window to rate them over).
fn counted(streams: &StreamCounts) -> Deliveries {
    Deliveries {
        in_window: streams.deliveries_measured,
        total: streams.deliveries_total,
        lost: streams.lost,
        duplicated: streams.duplicated,
        reordered: streams.reordered,
        ..Deliveries::default()
    }
}

/// What the connect phase found, kept for the report.
struct Connected {
    requested: u64,
    /// Open streams once the server settled.
    connected: u64,
    /// Time until every first attempt had finished (or the budget ran out).
    seconds: f64,
    /// The servers once settled: the "connected" RSS, summed and per pid.
    server: Option<ProcSample>,
    per_pid: Vec<Option<ProcSample>>,
}

impl Connected {
    /// What each open stream costs the server: the RSS it grew by from `before`,
    /// per connected subscriber (`None` without both samples or any subscriber).
    fn rss_per_subscriber(&self, before: Option<ProcSample>) -> Option<f64> {
        let (Some(before), Some(now)) = (before, self.server) else {
            return None;
        };
        (self.connected > 0)
            .then(|| (now.rss_bytes as f64 - before.rss_bytes as f64) / self.connected as f64)
    }
}

/// The state the phases of one parent run share. `run` walks it through the phases
/// in order, so the timeline reads top to bottom there; each phase is a method of
/// its own so it can be read (and changed) without the others.
struct Run<'a> {
    args: &'a BenchArgs,
    plan: Arc<Plan>,
    t0: Instant,
    started_unix_ms: u64,
    /// This process's CPU before the run: the parent's share is the difference.
    self_cpu0: f64,
    pids: Vec<u32>,
    /// The servers before any subscriber connected: the RSS baseline.
    server_before: Option<ProcSample>,
    samples: Samples,
    sampler: JoinHandle<()>,
    progress: Option<JoinHandle<()>>,
    /// Read by the progress line; workers learn it through `Command::Phase`.
    phase: Arc<AtomicU8>,
    pub_stats: Arc<PubStats>,
    workers: Workers,
    agg: SharedAgg,
    /// Anything that makes the numbers suspect, for the report.
    problems: Vec<String>,
}

/// Runs the bench as the parent: connect, publish, collect, report.
pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let run_id = ((payload::now_nanos() as u32) ^ std::process::id().rotate_left(16)).max(1);
    let plan = Arc::new(Plan::resolve(args, run_id).await?);
    let mut run = Run::start(args, plan)?;
    let connected = run.connect().await;
    let window = run.publish().await;
    let totals = run.collect_finals().await?;
    let report = run.report(&connected, &window, &totals);
    finish(args, report)
}

impl<'a> Run<'a> {
    /// Takes the baseline samples, then starts the sampler, the workers (whose
    /// subscribers start connecting at once) and the progress line.
    fn start(args: &'a BenchArgs, plan: Arc<Plan>) -> Result<Self, BenchError> {
        let t0 = Instant::now();
        let started_unix_ms = payload::now_nanos() / 1_000_000;
        let self_cpu0 = self_cpu();
        let pids = args.server_pids.clone();
        let server_before = procfs::sample_sum(&pids);
        let (samples, sampler) = monitor::spawn_sampler(pids.clone(), plan.sample_interval, t0);
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let workers = Workers::start(&plan, msg_tx)?;
        let mut run = Self {
            args,
            t0,
            started_unix_ms,
            self_cpu0,
            server_before,
            samples,
            sampler,
            progress: None,
            phase: Arc::new(AtomicU8::new(Phase::Connecting as u8)),
            pub_stats: Arc::new(PubStats::new(plan.publishers, plan.topics)),
            agg: aggregate::collect(workers.len(), msg_rx),
            workers,
            pids,
            plan,
            problems: Vec::new(),
        };
        run.progress = (!args.quiet).then(|| run.spawn_progress());
        Ok(run)
    }

    fn spawn_progress(&self) -> JoinHandle<()> {
        monitor::spawn_progress(ProgressSources {
            agg: self.agg.clone(),
            publishers: self.pub_stats.clone(),
            phase: self.phase.clone(),
            requested: u64::from(self.plan.subscribers),
            server_pids: self.pids.clone(),
            t0: self.t0,
        })
    }

    /// Moves the run (progress line, workers) to phase `p`.
    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Relaxed);
        if !self.args.quiet {
            // At once, not with the next progress line: scripts key on it (a fault
            // injected when publishing starts or stops, say).
            eprintln!(
                "[{:>6.1}s] phase {}",
                self.t0.elapsed().as_secs_f64(),
                format!("{p:?}").to_lowercase()
            );
        }
        self.workers.broadcast(&Command::Phase { phase: p });
    }

    /// Waits until every subscriber's first attempt has finished (within what the
    /// connect rate needs, plus slack), then lets the server settle before the
    /// "connected" RSS sample, so that sample is not taken mid-accept.
    async fn connect(&mut self) -> Connected {
        let requested = u64::from(self.plan.subscribers);
        let budget = Duration::from_secs_f64(requested as f64 / self.plan.connect_rate)
            + CONNECT_SLACK
            + Duration::from_secs(2) * self.plan.processes;
        let done = |a: &Agg| a.initial_done() >= requested || a.all_gone();
        if !wait_for(&self.agg, budget, done).await {
            self.problems
                .push(format!("connect phase timed out after {budget:?}"));
        }
        let seconds = self.t0.elapsed().as_secs_f64();
        tokio::time::sleep(self.plan.settle).await;
        Connected {
            requested,
            connected: aggregate::lock(&self.agg).connected(),
            seconds,
            server: procfs::sample_sum(&self.pids),
            per_pid: per_pid(&self.pids),
        }
    }

    /// Publishes through warmup and the measured window, then drains; returns the
    /// window's edges. Workers count only inside it, so warmup effects (cold caches,
    /// first allocations) and stragglers after it stay out of the numbers.
    async fn publish(&self) -> Window {
        self.set_phase(Phase::Warmup);
        let stop = CancellationToken::new();
        let publishing = self.plan.rate > 0.0;
        let pubs = if publishing {
            publisher::spawn(&self.plan, &self.pub_stats, &stop)
        } else {
            Vec::new()
        };
        if publishing {
            tokio::time::sleep(self.plan.warmup).await;
        }
        self.set_phase(Phase::Measure);
        let start = Edge::take(&self.pub_stats, &self.pids);
        tokio::time::sleep(self.plan.duration).await;
        self.set_phase(Phase::Drain);
        let end = Edge::take(&self.pub_stats, &self.pids);
        stop.cancel();
        for p in pubs {
            let _ = tokio::time::timeout(Duration::from_secs(15), p).await;
        }
        tokio::time::sleep(self.plan.drain).await;
        Window { start, end }
    }

    /// Ends the workers (`end_workers`), then the observers, and sums the workers'
    /// final counts.
    async fn collect_finals(&mut self) -> Result<Totals, BenchError> {
        self.end_workers().await?;
        if let Some(p) = self.progress.take() {
            p.abort();
        }
        self.sampler.abort();
        let mut totals = Totals::default();
        aggregate::lock(&self.agg)
            .finals()
            .for_each(|f| totals.add(f));
        Ok(totals)
    }

    /// Tells the workers what was published (so they can count losses), waits for
    /// their final counts and shuts them down. A worker without a final report is a
    /// problem of the run; none at all is an error, as there is nothing to report.
    async fn end_workers(&mut self) -> Result<(), BenchError> {
        self.workers.broadcast(&Command::Finish {
            published: self.pub_stats.published(),
        });
        if !wait_for(&self.agg, FINAL_TIMEOUT, Agg::all_final).await {
            self.problems
                .push("workers did not all report within the finish timeout".into());
        }
        let missing = aggregate::lock(&self.agg).missing_finals();
        if !missing.is_empty() {
            self.problems.push(format!(
                "worker(s) {missing:?} ended without a final report"
            ));
        }
        let workers = std::mem::take(&mut self.workers);
        let none_reported = !missing.is_empty() && missing.len() == workers.len();
        workers.shutdown().await;
        if none_reported {
            return Err(BenchError::Worker {
                index: missing[0] as u32,
                reason: "no worker reported".into(),
            });
        }
        Ok(())
    }

    /// The parent's report: the phases' findings with rates over the window.
    fn report(&self, connected: &Connected, window: &Window, totals: &Totals) -> Report {
        let per_hub = self.hub_stats(window, totals);
        let server = self.server_stats(connected, window);
        Report {
            role: Role::Parent,
            plan: self.plan.summary(),
            started_unix_ms: self.started_unix_ms,
            window_s: window.seconds(),
            connect: ConnectStats {
                requested: connected.requested,
                connected: connected.connected,
                connected_at_end: totals.counts.streams.connected_at_end,
                never_connected: totals.counts.never_connected,
                errors: totals.counts.connect_errors.clone(),
                seconds: connected.seconds,
            },
            publish: self.publish_stats(window),
            delivery: self.delivery_stats(window, totals),
            latency: totals.hist.summary(),
            latency_histogram: Some(totals.hist.buckets()),
            per_hub,
            server,
            client: ClientStats {
                processes: self.plan.processes,
                cpu_parent_s: self_cpu() - self.self_cpu0,
                cpu_workers_s: totals.counts.cpu_seconds,
            },
            problems: self.problems.clone(),
        }
    }

    fn publish_stats(&self, window: &Window) -> PublishStats {
        let s = &self.pub_stats;
        let ok_in_window = window.end.ok - window.start.ok;
        PublishStats {
            offered_rate: self.plan.rate,
            ok_in_window,
            achieved_rate: window.per_s(ok_in_window as f64),
            attempted_total: s.attempts.load(Relaxed),
            ok_total: s.ok.load(Relaxed),
            errors: s.errors(),
            missed_schedule: s.missed.load(Relaxed),
            rtt: s.rtt.lock().unwrap_or_else(|e| e.into_inner()).summary(),
        }
    }

    fn delivery_stats(&self, window: &Window, totals: &Totals) -> DeliveryStats {
        let c = &totals.counts;
        DeliveryStats {
            counts: window.deliveries(&c.streams, &self.plan.subscribers_per_topic()),
            foreign: c.foreign,
            disconnects: c.disconnects.clone(),
            churned: c.churned,
        }
    }

    /// The delivery counts again, split by the hub the subscribers were on, so a
    /// cluster's relayed deliveries can be told from local ones.
    fn hub_stats(&self, window: &Window, totals: &Totals) -> Vec<HubStats> {
        let plan = &self.plan;
        let hub = |(i, subs): (usize, &Vec<u64>)| {
            let t = totals.per_hub.get(i);
            // A hub no worker had subscribers on counts zeros.
            let streams = t.map(|t| t.streams).unwrap_or_default();
            let url = plan.sub_urls.get(i).cloned().unwrap_or_default();
            HubStats {
                publish: plan.pub_urls.contains(&url),
                url,
                subscribers: subs.iter().sum(),
                connected_at_end: streams.connected_at_end,
                counts: window.deliveries(&streams, subs),
                latency: t.map(|t| t.hist.summary()).unwrap_or_default(),
            }
        };
        let per_hub_topic = plan.subscribers_per_hub_topic();
        per_hub_topic.iter().enumerate().map(hub).collect()
    }

    /// RSS and CPU of the `--server-pid`s (`None` without any): at the baseline,
    /// once connected, at the end and at peak; CPU over the window.
    fn server_stats(&self, connected: &Connected, window: &Window) -> Option<ServerStats> {
        if self.pids.is_empty() {
            return None;
        }
        let end = procfs::sample_sum(&self.pids);
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // The sampler may have missed the highest point: the edges count too.
        let peak = samples
            .iter()
            .map(|s| s.rss_bytes)
            .chain([rss(&end), rss(&connected.server)])
            .max();
        let cpu_window_s = cpu_between(window.start.server, window.end.server);
        Some(ServerStats {
            pids: self.pids.clone(),
            rss_before_bytes: rss(&self.server_before),
            rss_connected_bytes: rss(&connected.server),
            rss_end_bytes: rss(&end),
            rss_peak_bytes: peak.unwrap_or(0),
            rss_per_subscriber_bytes: connected.rss_per_subscriber(self.server_before),
            cpu_window_s,
            cpu_window_percent: window.per_s(cpu_window_s) * 100.0,
            cpu_total_s: end.map_or(0.0, |s| s.cpu_seconds),
            samples,
            per_pid: self.pid_stats(connected, window),
        })
    }

    /// `server_stats`' RSS and CPU for each `--server-pid` on its own.
    fn pid_stats(&self, connected: &Connected, window: &Window) -> Vec<PidStats> {
        let pid_stat = |(i, &pid): (usize, &u32)| {
            let at = |v: &[Option<ProcSample>]| v.get(i).copied().flatten();
            let cpu_window_s = cpu_between(at(&window.start.per_pid), at(&window.end.per_pid));
            PidStats {
                pid,
                rss_connected_bytes: rss(&at(&connected.per_pid)),
                rss_end_bytes: rss(&procfs::sample(Some(pid))),
                cpu_window_s,
                cpu_window_percent: window.per_s(cpu_window_s) * 100.0,
            }
        };
        self.pids.iter().enumerate().map(pid_stat).collect()
    }
}

/// Prints the summary, writes the JSON and the plots, applies `--fail-on-loss`.
fn finish(args: &BenchArgs, report: Report) -> Result<Report, BenchError> {
    print!("{report}");
    if let Some(path) = &args.json_out {
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        std::fs::write(path, json).map_err(|source| BenchError::Output {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(dir) = &args.plot_dir {
        plot::write_and_tell(&report, dir)?;
    }
    let reasons = report.failures();
    if args.fail_on_loss && !reasons.is_empty() {
        return Err(BenchError::Failed {
            reasons,
            report: Box::new(report),
        });
    }
    Ok(report)
}

/// Polls `done` until it holds or `budget` runs out; true if it held.
async fn wait_for(agg: &SharedAgg, budget: Duration, done: impl Fn(&Agg) -> bool) -> bool {
    let deadline = Instant::now() + budget;
    loop {
        if done(&aggregate::lock(agg)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `run` returns inside a worker process: that worker's share only.
pub fn worker_report(plan: &Plan, fin: Option<WorkerFinal>) -> Report {
    let mut totals = Totals::default();
    let missing = fin.is_none();
    if let Some(f) = &fin {
        totals.add(f);
    }
    let c = totals.counts;
    Report {
        role: Role::Worker,
        plan: plan.summary(),
        started_unix_ms: 0,
        window_s: 0.0,
        connect: ConnectStats {
            requested: c.slots,
            connected_at_end: c.streams.connected_at_end,
            never_connected: c.never_connected,
            errors: c.connect_errors,
            ..ConnectStats::default()
        },
        publish: PublishStats::default(),
        delivery: DeliveryStats {
            counts: counted(&c.streams),
            foreign: c.foreign,
            disconnects: c.disconnects,
            churned: c.churned,
        },
        latency: totals.hist.summary(),
        latency_histogram: None,
        per_hub: Vec::new(),
        server: None,
        client: ClientStats {
            processes: 1,
            cpu_parent_s: 0.0,
            cpu_workers_s: c.cpu_seconds,
        },
        problems: if missing {
            vec!["worker ended without final counts".into()]
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(at: Instant, per_topic: Vec<u64>) -> Edge {
        Edge {
            at,
            ok: per_topic.iter().sum(),
            per_topic,
            server: None,
            per_pid: Vec::new(),
        }
    }

    #[test]
    fn window_rates_and_expected_deliveries() {
        let t = Instant::now();
        let w = Window {
            start: edge(t, vec![10, 20]),
            end: edge(t + Duration::from_secs(2), vec![14, 30]),
        };
        // 4 publishes on topic 0 x 3 subscribers + 10 on topic 1 x 1.
        assert_eq!(w.expected(&[3, 1]), 22);
        let streams = StreamCounts {
            deliveries_measured: 20,
            deliveries_total: 25,
            lost: 2,
            ..StreamCounts::default()
        };
        let d = w.deliveries(&streams, &[3, 1]);
        assert_eq!((d.in_window, d.total, d.lost), (20, 25, 2));
        assert_eq!((d.per_second, d.expected_per_second), (10.0, 11.0));
        let empty = Window {
            start: edge(t, vec![0]),
            end: edge(t, vec![5]),
        };
        assert_eq!(empty.per_s(5.0), 0.0);
    }

    #[test]
    fn rss_per_subscriber_needs_both_samples_and_a_subscriber() {
        let sample = |mib: u64| {
            Some(ProcSample {
                rss_bytes: mib << 20,
                cpu_seconds: 0.0,
            })
        };
        let mut c = Connected {
            requested: 4,
            connected: 4,
            seconds: 1.0,
            server: sample(12),
            per_pid: Vec::new(),
        };
        assert_eq!(c.rss_per_subscriber(sample(10)), Some(f64::from(1 << 19)));
        assert_eq!(c.rss_per_subscriber(None), None);
        c.connected = 0;
        assert_eq!(c.rss_per_subscriber(sample(10)), None);
    }
}
