//! The command line of `eventfold-bench`, in the library so that a test can parse the
//! commands `docs/benchmarks.md` shows without building or running the binary
//! (`tests/it/docs`).

use cli::args::StackArgs;

/// `eventfold-bench`'s arguments.
#[derive(Debug, clap::Parser)]
#[command(
    name = "eventfold-bench",
    about = "Eventfold's benchmarks on the local stack: figures printed, never asserted"
)]
pub struct Bench {
    /// The benchmark to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// One subcommand per benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    /// The command path: commands/s in process, DynamoDB requests per command, events folded
    /// per load, SNS requests per event, the local command-to-view and order-to-confirmed
    /// latencies.
    Commands {
        /// Where the local stack runs.
        #[command(flatten)]
        stack: StackArgs,
        /// What to measure.
        #[command(flatten)]
        options: CommandsOptions,
    },
    /// The streaming API: publish throughput, requests per record, consume cost, long-poll
    /// wake-up.
    Streaming {
        /// Where the local stack runs.
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
        /// Where the local stack runs.
        #[command(flatten)]
        stack: StackArgs,
        /// SQS batches per workload and view selection.
        #[arg(long, default_value_t = 20)]
        batches: u64,
    },
    /// N orders through the whole local stack (IAM on): requests per order and per API
    /// command for every hop x resource x operation (counted by the IAM proxy, idle polling
    /// apart), events per order, `PlaceOrder` -> confirmed p50/p95 (`docs/capacity.md`).
    E2e {
        /// Where the local stack runs.
        #[command(flatten)]
        stack: StackArgs,
        /// Orders to run.
        #[arg(long, default_value_t = 50)]
        orders: u64,
        /// Orders in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Cold start: a fresh function's init and first request, with and without warm-up
    /// (the functions' binaries built next to this one, or in EVENTFOLD_BIN_DIR).
    ColdStart {
        /// Starts of each function per mode.
        #[arg(long, default_value_t = 7)]
        starts: usize,
    },
}

/// What `eventfold-bench commands` measures.
#[derive(Debug, Clone, clap::Args)]
pub struct CommandsOptions {
    /// In-process commands.
    #[arg(long, default_value_t = 20_000)]
    pub memory_commands: u64,
    /// Commands per DynamoDB phase.
    #[arg(long, default_value_t = 200)]
    pub dynamo_commands: u64,
    /// Events in the long stream.
    #[arg(long, default_value_t = 1000)]
    pub long_stream: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Bench::command().debug_assert();
    }

    #[test]
    fn e2e_takes_orders_and_concurrency() {
        use clap::Parser;
        let parsed =
            Bench::try_parse_from(["eventfold-bench", "e2e", "--orders", "2"]).expect("parses");
        assert!(
            matches!(
                parsed.mode,
                Mode::E2e {
                    orders: 2,
                    concurrency: 4,
                    ..
                }
            ),
            "{parsed:?}"
        );
        let parsed = Bench::try_parse_from([
            "eventfold-bench",
            "e2e",
            "--concurrency",
            "1",
            "--emulator-port",
            "0",
        ])
        .expect("parses");
        assert!(
            matches!(parsed.mode, Mode::E2e { orders: 50, concurrency: 1, ref stack } if stack.emulator_port == 0),
            "{parsed:?}"
        );
        assert!(Bench::try_parse_from(["eventfold-bench", "e2e", "--orders", "many"]).is_err());
    }
}
