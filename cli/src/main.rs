//! `eventfold`: local stack, dev tokens, bench.
#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::local::{LocalOptions, LocalStack};
use std::net::SocketAddr;

#[derive(Parser)]
#[command(
    name = "eventfold",
    about = "Eventfold: event sourcing on AWS serverless, locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct StackArgs {
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    api: SocketAddr,
    /// Port of the emulator we start (unless AWS_ENDPOINT_URL is set).
    #[arg(long, default_value_t = 4566)]
    emulator_port: u16,
    /// Prefix of physical resource names.
    #[arg(long, default_value = "eventfold-local")]
    stack: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the local stack: emulator, resources from infra/template.yaml, HTTP API.
    Local {
        #[command(flatten)]
        stack: StackArgs,
        /// After start-up, place a real order through the HTTP API and print each step.
        #[arg(long)]
        demo: bool,
        /// Exit after start-up (and the demo) instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Print a development JWT for the local gateway.
    Token {
        /// Tenant claim.
        #[arg(long, default_value = "acme")]
        tenant: String,
        /// Subject (actor) claim.
        #[arg(long, default_value = "dev")]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "events:read events:write")]
        scope: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Print figures: commands/s in process, DynamoDB requests per command, events folded per load.
    Bench {
        #[command(flatten)]
        stack: StackArgs,
        /// In-process commands.
        #[arg(long, default_value_t = 20_000)]
        memory_commands: u64,
        /// Commands per DynamoDB phase.
        #[arg(long, default_value_t = 200)]
        dynamo_commands: u64,
        /// Events in the long stream.
        #[arg(long, default_value_t = 1000)]
        long_stream: u64,
    },
}

fn options(stack: StackArgs) -> Result<LocalOptions> {
    Ok(LocalOptions {
        root: cli::emulator::find_root(&std::env::current_dir()?)?,
        api_addr: stack.api,
        emulator_port: stack.emulator_port,
        endpoint: std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty()),
        stack: stack.stack,
        jwt_secret: cli::jwt::secret(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    match Cli::parse().command {
        Cmd::Token {
            tenant,
            sub,
            scope,
            ttl,
        } => {
            println!(
                "{}",
                cli::jwt::issue(&cli::jwt::secret(), &tenant, &sub, &scope, ttl)
            );
        }
        Cmd::Local { stack, demo, once } => {
            let local = LocalStack::start(options(stack)?).await?;
            cli::demo::banner(&local);
            if demo {
                cli::demo::run(&local).await?;
            }
            if !once {
                println!("\nServing; Ctrl-C stops everything.");
                tokio::signal::ctrl_c().await?;
            }
            local.stop().await;
        }
        Cmd::Bench {
            stack,
            memory_commands,
            dynamo_commands,
            long_stream,
        } => {
            cli::bench::run(
                options(stack)?,
                cli::bench::BenchOptions {
                    memory_commands,
                    dynamo_commands,
                    long_stream,
                },
            )
            .await?;
        }
    }
    Ok(())
}
