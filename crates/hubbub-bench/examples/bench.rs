//! Stand-alone `bench` for trying the crate before the `hubbub` binary exposes it:
//! `cargo run --release -p hubbub-bench --example bench -- --subscribers 2000`.

use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: hubbub_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match hubbub_bench::run(Cli::parse().args).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubbub bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
