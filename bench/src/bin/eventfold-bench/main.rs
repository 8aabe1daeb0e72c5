//! `eventfold-bench`: figures measured on the local stack (the emulator and the shop's
//! functions, or `AWS_ENDPOINT_URL`), printed, never asserted. One subcommand per benchmark;
//! the in-process comparisons are `cargo bench -p bench`.
#![forbid(unsafe_code)]

mod cold_start;
mod commands;
mod projector;
mod streaming;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::args::StackArgs;

#[derive(Parser)]
#[command(
    name = "eventfold-bench",
    about = "Eventfold's benchmarks on the local stack: figures printed, never asserted"
)]
struct Bench {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// The command path: commands/s in process, DynamoDB requests per command, events folded
    /// per load, SNS requests per event, the local command-to-view and order-to-confirmed
    /// latencies.
    Commands {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        options: commands::Options,
    },
    /// The streaming API: publish throughput, requests per record, consume cost, long-poll
    /// wake-up.
    Streaming {
        #[command(flatten)]
        stack: StackArgs,
        /// Records per streaming publish run.
        #[arg(long, default_value_t = 400)]
        records: u64,
        /// Long-poll wake-up samples.
        #[arg(long, default_value_t = 20)]
        wakeups: usize,
    },
    /// The projector: DynamoDB requests per notification per view, SQS batches of 10.
    Projector {
        #[command(flatten)]
        stack: StackArgs,
        /// SQS batches per workload and view selection.
        #[arg(long, default_value_t = 20)]
        batches: u64,
    },
    /// Cold start: a fresh function's init and first request, with and without warm-up
    /// (the functions' binaries built next to this one, or in EVENTFOLD_BIN_DIR).
    ColdStart {
        /// Starts of each function per mode.
        #[arg(long, default_value_t = 7)]
        starts: usize,
    },
}

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
        Mode::ColdStart { starts } => {
            let root = eventfold_local::emulator::find_root(&std::env::current_dir()?)?;
            cold_start::run(root, starts).await
        }
    }
}
