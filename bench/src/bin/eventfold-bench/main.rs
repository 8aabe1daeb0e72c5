//! `eventfold-bench`: figures measured on the local stack (the emulator and the shop's
//! functions, or `AWS_ENDPOINT_URL`), printed, never asserted. One subcommand per benchmark;
//! the in-process comparisons are `cargo bench -p bench`.
#![forbid(unsafe_code)]

mod cold_start;
mod commands;
mod projector;
mod streaming;

use anyhow::Result;
use bench::args::{Bench, Mode};
use clap::Parser;

#[tokio::main]
async fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    match Bench::parse().mode {
        Mode::Commands { stack, options } => commands::run(stack.options()?, options).await,
        Mode::Streaming {
            stack,
            records,
            wakeups,
        } => streaming::run(stack.options()?, records, wakeups).await,
        Mode::Projector { stack, batches } => projector::run(stack.options()?, batches).await,
        Mode::E2e {
            stack,
            orders,
            concurrency,
        } => {
            let options = bench::e2e::E2eOptions {
                orders,
                concurrency,
            };
            bench::e2e::run(stack.options()?, options).await
        }
        Mode::ColdStart { starts } => {
            let root = eventfold_local::emulator::find_root(&std::env::current_dir()?)?;
            cold_start::run(root, starts).await
        }
    }
}
