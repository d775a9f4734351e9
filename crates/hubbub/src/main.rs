//! The `hubbub` binary: argument parsing, logging, signals; the only place that
//! uses `anyhow`. Everything else lives in the library crates.

mod advertise;
mod cli;
mod client;
mod logging;
mod memory;
mod probe;
mod serve;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    memory::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(*args).await,
            Command::Publish(args) => client::publish(args).await,
            Command::Subscribe(args) => client::subscribe(args).await,
            Command::Probe(args) => probe::probe(args).await,
            Command::Bench(args) => {
                hubbub_bench::run(*args).await?;
                Ok(())
            }
        }
    })
}
