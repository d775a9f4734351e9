//! The parent's timeline: start workers, wait for subscribers, settle, publish through
//! warmup and the measured window, drain, collect the workers' counts, report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{self, Agg, SharedAgg, Totals};
use crate::args::BenchArgs;
use crate::error::BenchError;
use crate::monitor::{self, ProgressSources};
use crate::payload;
use crate::plan::Plan;
use crate::plot;
use crate::procfs::{self, ProcSample};
use crate::publisher::{self, PubStats};
use crate::report::{
    ClientStats, ConnectStats, DeliveryStats, HubStats, PidStats, PublishStats, Report, Role,
    ServerStats,
};
use crate::wire::{Command, Phase, WorkerFinal};
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

fn per_pid(pids: &[u32]) -> Vec<Option<ProcSample>> {
    pids.iter().map(|p| procfs::sample(Some(*p))).collect()
}

pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let run_id = ((payload::now_nanos() as u32) ^ std::process::id().rotate_left(16)).max(1);
    let plan = Arc::new(Plan::resolve(args, run_id).await?);
    let t0 = Instant::now();
    let started_unix_ms = payload::now_nanos() / 1_000_000;
    let self_cpu0 = procfs::sample(None).map_or(0.0, |s| s.cpu_seconds);
    let pids = args.server_pids.clone();
    let server_before = procfs::sample_sum(&pids);
    let (samples, sampler) = monitor::spawn_sampler(pids.clone(), plan.sample_interval, t0);

    let phase = Arc::new(AtomicU8::new(Phase::Connecting as u8));
    let pub_stats = Arc::new(PubStats::new(plan.publishers, plan.topics));
    let (msg_tx, msg_rx) = mpsc::unbounded_channel();
    let workers = Workers::start(&plan, msg_tx)?;
    let agg = aggregate::collect(workers.len(), msg_rx);
    let progress = (!args.quiet).then(|| {
        monitor::spawn_progress(ProgressSources {
            agg: agg.clone(),
            publishers: pub_stats.clone(),
            phase: phase.clone(),
            requested: u64::from(plan.subscribers),
            server_pids: pids.clone(),
            t0,
        })
    });
    let set_phase = |p: Phase| {
        phase.store(p as u8, Relaxed);
        if !args.quiet {
            // At once, not with the next progress line: scripts key on it (a fault
            // injected when publishing starts or stops, say).
            eprintln!(
                "[{:>6.1}s] phase {}",
                t0.elapsed().as_secs_f64(),
                format!("{p:?}").to_lowercase()
            );
        }
        workers.broadcast(&Command::Phase { phase: p });
    };
    let mut problems = Vec::new();

    // Connect everyone, then let the server settle before the "connected" RSS sample.
    let requested = u64::from(plan.subscribers);
    let budget = Duration::from_secs_f64(requested as f64 / plan.connect_rate)
        + CONNECT_SLACK
        + Duration::from_secs(2) * plan.processes;
    if !wait_for(&agg, budget, |a| {
        a.initial_done() >= requested || a.all_gone()
    })
    .await
    {
        problems.push(format!("connect phase timed out after {budget:?}"));
    }
    let connect_seconds = t0.elapsed().as_secs_f64();
    tokio::time::sleep(plan.settle).await;
    let connected = aggregate::lock(&agg).connected();
    let server_connected = procfs::sample_sum(&pids);
    let server_connected_per_pid = per_pid(&pids);

    // Publish: warmup, the measured window, then drain.
    set_phase(Phase::Warmup);
    let stop = CancellationToken::new();
    let pubs = if plan.rate > 0.0 {
        publisher::spawn(&plan, &pub_stats, &stop)
    } else {
        Vec::new()
    };
    if plan.rate > 0.0 {
        tokio::time::sleep(plan.warmup).await;
    }
    set_phase(Phase::Measure);
    let start = Edge::take(&pub_stats, &pids);
    tokio::time::sleep(plan.duration).await;
    set_phase(Phase::Drain);
    let end = Edge::take(&pub_stats, &pids);
    stop.cancel();
    for p in pubs {
        let _ = tokio::time::timeout(Duration::from_secs(15), p).await;
    }
    tokio::time::sleep(plan.drain).await;

    workers.broadcast(&Command::Finish {
        published: pub_stats.published(),
    });
    if !wait_for(&agg, FINAL_TIMEOUT, Agg::all_final).await {
        problems.push("workers did not all report within the finish timeout".into());
    }
    let missing = aggregate::lock(&agg).missing_finals();
    if !missing.is_empty() {
        problems.push(format!(
            "worker(s) {missing:?} ended without a final report"
        ));
        if missing.len() == workers.len() {
            workers.shutdown().await;
            return Err(BenchError::Worker {
                index: missing[0] as u32,
                reason: "no worker reported".into(),
            });
        }
    }
    workers.shutdown().await;
    if let Some(p) = progress {
        p.abort();
    }
    sampler.abort();

    let mut totals = Totals::default();
    aggregate::lock(&agg).finals().for_each(|f| totals.add(f));
    let window_s = end.at.duration_since(start.at).as_secs_f64();
    let per_s = |n: f64| if window_s > 0.0 { n / window_s } else { 0.0 };
    // Accepted publishes in the window x subscribers on their topic.
    let expected_of = |subs_per_topic: &[u64]| -> u64 {
        subs_per_topic
            .iter()
            .zip(end.per_topic.iter().zip(&start.per_topic))
            .map(|(subs, (e, s))| subs * (e - s))
            .sum()
    };
    let expected = expected_of(&plan.subscribers_per_topic());
    let per_hub = plan
        .subscribers_per_hub_topic()
        .iter()
        .enumerate()
        .map(|(i, subs)| {
            let t = totals.per_hub.get(i);
            let count = |f: fn(&aggregate::HubTotals) -> u64| t.map_or(0, f);
            let url = plan.sub_urls.get(i).cloned().unwrap_or_default();
            HubStats {
                publish: plan.pub_urls.contains(&url),
                url,
                subscribers: subs.iter().sum(),
                connected_at_end: count(|t| t.connected_at_end),
                in_window: count(|t| t.deliveries_measured),
                per_second: per_s(count(|t| t.deliveries_measured) as f64),
                expected_per_second: per_s(expected_of(subs) as f64),
                total: count(|t| t.deliveries_total),
                lost: count(|t| t.lost),
                duplicated: count(|t| t.duplicated),
                reordered: count(|t| t.reordered),
                latency: t.map(|t| t.hist.summary()).unwrap_or_default(),
            }
        })
        .collect();
    let ok_in_window = end.ok - start.ok;

    let server = (!pids.is_empty()).then(|| {
        let server_end = procfs::sample_sum(&pids);
        let rss = |s: &Option<ProcSample>| s.map_or(0, |s| s.rss_bytes);
        let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let cpu_window_s = match (start.server, end.server) {
            (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
            _ => 0.0,
        };
        let peak = samples
            .iter()
            .map(|s| s.rss_bytes)
            .chain([rss(&server_end), rss(&server_connected)])
            .max();
        ServerStats {
            pids: pids.clone(),
            rss_before_bytes: rss(&server_before),
            rss_connected_bytes: rss(&server_connected),
            rss_end_bytes: rss(&server_end),
            rss_peak_bytes: peak.unwrap_or(0),
            rss_per_subscriber_bytes: (connected > 0
                && server_before.is_some()
                && server_connected.is_some())
            .then(|| {
                (rss(&server_connected) as f64 - rss(&server_before) as f64) / connected as f64
            }),
            cpu_window_s,
            cpu_window_percent: per_s(cpu_window_s) * 100.0,
            cpu_total_s: server_end.map_or(0.0, |s| s.cpu_seconds),
            samples,
            per_pid: pids
                .iter()
                .enumerate()
                .map(|(i, &pid)| {
                    let at = |v: &[Option<ProcSample>]| v.get(i).copied().flatten();
                    let cpu_window_s = match (at(&start.per_pid), at(&end.per_pid)) {
                        (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
                        _ => 0.0,
                    };
                    PidStats {
                        pid,
                        rss_connected_bytes: rss(&at(&server_connected_per_pid)),
                        rss_end_bytes: rss(&procfs::sample(Some(pid))),
                        cpu_window_s,
                        cpu_window_percent: per_s(cpu_window_s) * 100.0,
                    }
                })
                .collect(),
        }
    });

    let report = Report {
        role: Role::Parent,
        plan: plan.summary(),
        started_unix_ms,
        window_s,
        connect: ConnectStats {
            requested,
            connected,
            connected_at_end: totals.connected_at_end,
            never_connected: totals.never_connected,
            errors: totals.connect_errors.clone(),
            seconds: connect_seconds,
        },
        publish: PublishStats {
            offered_rate: plan.rate,
            ok_in_window,
            achieved_rate: per_s(ok_in_window as f64),
            attempted_total: pub_stats.attempts.load(Relaxed),
            ok_total: pub_stats.ok.load(Relaxed),
            errors: pub_stats.errors(),
            missed_schedule: pub_stats.missed.load(Relaxed),
            rtt: pub_stats
                .rtt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .summary(),
        },
        delivery: DeliveryStats {
            in_window: totals.deliveries_measured,
            per_second: per_s(totals.deliveries_measured as f64),
            expected_per_second: per_s(expected as f64),
            total: totals.deliveries_total,
            lost: totals.lost,
            duplicated: totals.duplicated,
            reordered: totals.reordered,
            foreign: totals.foreign,
            disconnects: totals.disconnects.clone(),
            churned: totals.churned,
        },
        latency: totals.hist.summary(),
        latency_histogram: Some(totals.hist.buckets()),
        per_hub,
        server,
        client: ClientStats {
            processes: plan.processes,
            cpu_parent_s: procfs::sample(None).map_or(0.0, |s| s.cpu_seconds) - self_cpu0,
            cpu_workers_s: totals.cpu_seconds,
        },
        problems,
    };
    finish(args, report)
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
    Report {
        role: Role::Worker,
        plan: plan.summary(),
        started_unix_ms: 0,
        window_s: 0.0,
        connect: ConnectStats {
            requested: totals.slots,
            connected_at_end: totals.connected_at_end,
            never_connected: totals.never_connected,
            errors: totals.connect_errors,
            ..ConnectStats::default()
        },
        publish: PublishStats::default(),
        delivery: DeliveryStats {
            in_window: totals.deliveries_measured,
            total: totals.deliveries_total,
            lost: totals.lost,
            duplicated: totals.duplicated,
            reordered: totals.reordered,
            foreign: totals.foreign,
            disconnects: totals.disconnects,
            churned: totals.churned,
            ..DeliveryStats::default()
        },
        latency: totals.hist.summary(),
        latency_histogram: None,
        per_hub: Vec::new(),
        server: None,
        client: ClientStats {
            processes: 1,
            cpu_parent_s: 0.0,
            cpu_workers_s: totals.cpu_seconds,
        },
        problems: if missing {
            vec!["worker ended without final counts".into()]
        } else {
            Vec::new()
        },
    }
}
