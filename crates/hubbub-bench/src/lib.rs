//! `hubbub bench`: SSE load, latency and soak benchmark for Mercure hubs (and nchan).
//!
//! Code map: `args` (CLI) -> `plan` (resolved addresses and request bytes) ->
//! `coordinator` (the parent's timeline) which starts `publisher`s and `workers`
//! (processes running the `engine`, one `subscriber` task per stream), folds their
//! `wire` events in `aggregate` and prints a `report`. The byte-level pieces
//! (`http`, `body`, `sse`, `payload`, `track`) do no I/O and are unit-tested.

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
mod procfs;
mod publisher;
mod report;
mod sse;
mod subscriber;
mod track;
mod wire;
mod workers;

pub use args::{BenchArgs, DEV_JWT_KEY, Secret, Target};
pub use error::BenchError;
pub use hist::LatencySummary;
pub use plan::PlanSummary;
pub use report::{
    ClientStats, ConnectStats, DeliveryStats, HubStats, PidStats, PublishStats, Report, Role,
    ServerSample, ServerStats,
};

/// Runs the benchmark described by `args`.
///
/// In the parent: prints progress lines (stderr) and the summary (stdout), writes
/// `--json-out`, and returns the aggregated report (an error with the report attached
/// if `--fail-on-loss` finds a problem). In a worker process (hidden `--worker-index`,
/// set by the parent when it re-runs this binary with its own argv) it speaks the
/// worker protocol on stdin/stdout and returns that worker's share; the caller should
/// then print nothing on stdout.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    match args.worker_index {
        Some(index) => {
            let (plan, fin) = workers::run_child(args, index).await?;
            Ok(coordinator::worker_report(&plan, fin))
        }
        None => coordinator::run(&args).await,
    }
}
