//! `hubbub bench`: SSE load, latency and soak benchmark for Mercure hubs (and nchan).
//!
//! Code map: `args` (CLI) -> `plan` (resolved addresses and request bytes) ->
//! `coordinator` (the parent's timeline) which starts `publisher`s and `workers`
//! (processes running the `engine`, one `subscriber` task per stream), folds their
//! `wire` events in `aggregate` and prints a `report`. The byte-level pieces
//! (`http`, `body`, `payload`, `track`; SSE parsing is `hubbub_proto::decode`) do no I/O and are unit-tested.

mod aggregate;
mod args;
mod body;
mod coordinator;
mod engine;
mod error;
mod hist;
mod http;
mod monitor;
mod payload;
mod plan;
mod plot;
mod procfs;
mod publisher;
mod report;
mod subscriber;
mod token;
mod track;
mod wire;
mod workers;

pub use args::{BenchArgs, DEV_JWT_KEY, Secret, SelectorKind, Target};
pub use error::BenchError;
pub use hist::{LatencyBucket, LatencySummary};
pub use report::{
    ClientStats, ConnectStats, Deliveries, DeliveryStats, HubStats, PidSample, PidStats,
    PlanSummary, PublishStats, Report, Role, ServerSample, ServerStats,
};

/// Runs the benchmark described by `args`.
///
/// In the parent: prints progress lines (stderr) and the summary (stdout), writes
/// `--json-out` and the `--plot-dir` plots, and returns the aggregated report (an error
/// with the report attached if `--fail-on-loss` finds a problem). With `--plot-from` it
/// runs no load: it draws that saved report's plots into `--plot-dir` and returns it. In a worker process (hidden `--worker-index`,
/// set by the parent when it re-runs this binary with its own argv) it speaks the
/// worker protocol on stdin/stdout and returns that worker's share; the caller should
/// then print nothing on stdout.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    if let Some(report) = &args.plot_from {
        let dir = args.plot_dir.as_deref().ok_or_else(|| {
            BenchError::Config("--plot-from needs --plot-dir to draw into".into())
        })?;
        return plot::from_file(report, dir);
    }
    match args.worker_index {
        Some(index) => {
            let (plan, fin) = workers::run_child(args, index).await?;
            Ok(coordinator::worker_report(&plan, fin))
        }
        None => coordinator::run(&args).await,
    }
}
