//! `eventfold`: the operator's tool: local stack, dev tokens, projection rebuilds, dead
//! letters, the shipped arm64 artifacts checked under qemu. (The benchmarks are
//! `eventfold-bench`, in the `bench` package.)
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use clap::{Parser, Subcommand};
use cli::args::{StackArgs, VerifyArgs};
use cli::dlq::DlqCommand;
use eventfold_local::{JwtConfig, Template};

#[derive(Parser)]
#[command(
    name = "eventfold",
    about = "Eventfold: event sourcing on AWS serverless, locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
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
        /// Print the environment FUNCTION (binary or logical id; `all`: every function's)
        /// gets from this stack as `KEY=value` lines, and exit: for `cargo lambda watch
        /// --env-file`.
        #[arg(long, value_name = "FUNCTION")]
        print_env: Option<String>,
        /// Also serve the operator console (read-only) on this address.
        #[arg(long, value_name = "ADDR")]
        console: Option<std::net::SocketAddr>,
    },
    /// The operator console: a web UI over the stack (lag, streams, trace, dead letters...).
    Console(cli::console::ConsoleArgs),
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
    /// Read-model maintenance.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCmd,
    },
    /// IAM as the local stack enforced it: the calls recorded with EVENTFOLD_IAM_RECORD=DIR.
    Iam {
        #[command(subcommand)]
        command: IamCmd,
    },
    /// Start each shipped arm64 `bootstrap` (the `sam build` output, zipped and unzipped as
    /// Lambda gets it) under qemu-aarch64-static with Lambda's environment, against the
    /// emulated runtime API and a local stack; send its sample events, check the answers,
    /// and print init and first-request times (next to native builds' with --native).
    CheckArtifacts {
        /// The `sam build` output (`<LogicalId>/bootstrap` per function).
        #[arg(long, default_value = ".aws-sam/build")]
        build_dir: std::path::PathBuf,
        /// Native builds of the functions to compare with (e.g. `$CARGO_TARGET_DIR/debug`).
        #[arg(long)]
        native: Option<std::path::PathBuf>,
        /// qemu-aarch64-static (default: from PATH).
        #[arg(long)]
        qemu: Option<std::path::PathBuf>,
        /// The arm64 C library the bootstrap links (Debian: libc6-arm64-cross).
        #[arg(long, default_value = "/usr/aarch64-linux-gnu")]
        sysroot: std::path::PathBuf,
    },
    /// Run one real order through a stack, hop by hop (command API, events table, fan-out,
    /// projector, saga to confirmed, dead letters), printing each hop's latency; exit 1
    /// naming the first hop that failed and why.
    Verify {
        #[command(flatten)]
        args: VerifyArgs,
    },
    /// Data subjects (GDPR): forget one (crypto-shredding) or export what is held of it.
    Gdpr {
        #[command(subcommand)]
        command: cli::gdpr::GdprCommand,
        /// Stack name (physical names are `{stack}-{LogicalId}`).
        #[arg(long, default_value = "eventfold-local", global = true)]
        stack: String,
        /// AWS endpoint (default: AWS_ENDPOINT_URL, else the local emulator).
        #[arg(long, global = true)]
        endpoint: Option<String>,
        /// A deployed stack: the AWS SDK's own endpoint, region and credentials; the command
        /// API's variables (EVENTS_TABLE, IDEMPOTENCY_TABLE, KEYS_TABLE, PERSONAL_DATA_KEY,
        /// ...) from the environment; the operator is the caller's ARN.
        #[arg(long, conflicts_with = "endpoint", global = true)]
        aws: bool,
    },
    /// Dead letters of every tenant: list, show, redrive, discard (operators).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// Stack name (physical names are `{stack}-{LogicalId}`).
        #[arg(long, default_value = "eventfold-local", global = true)]
        stack: String,
        /// AWS endpoint (the local emulator by default).
        #[arg(
            long,
            env = "AWS_ENDPOINT_URL",
            default_value = DEFAULT_ENDPOINT,
            global = true
        )]
        endpoint: String,
    },
}

#[derive(Subcommand)]
enum IamCmd {
    /// Per function: the actions exercised on each resource, the granted actions nothing
    /// exercised (candidate over-grants), and each statement's mutation check (how many
    /// recorded calls its removal would deny).
    Report {
        /// The directory the stacks wrote their calls to (EVENTFOLD_IAM_RECORD of the run).
        #[arg(long, env = "EVENTFOLD_IAM_RECORD")]
        calls: std::path::PathBuf,
        /// Exit 1 on a denied call, or a statement or granted action no recorded call
        /// exercises that neither an AWS-only reason nor `infra/iam-unexercised.txt`
        /// explains, or a stale entry of that file.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum ProjectionsCmd {
    /// Replay the events table into `<view>@rebuild` from empty checkpoints (resumable), or
    /// with --promote into a new version that replaces the live one without downtime.
    Rebuild {
        #[arg(help = format!("View: {}.", shop::registry::view_names()))]
        view: String,
        /// Compare the rebuilt view with the live one; exit 1 when they differ.
        #[arg(long)]
        verify: bool,
        /// Zero downtime: build a new version while the live one serves, verify it, switch
        /// queries to it in one write, retire the old one after --grace (exit 1, new version
        /// abandoned, when it differs).
        #[arg(long)]
        promote: bool,
        /// Seconds the old version stays readable and current after --promote.
        #[arg(long, default_value_t = cli::rebuild::DEFAULT_GRACE.as_secs(), requires = "promote")]
        grace: u64,
        /// Stack whose template names the tables (local physical names).
        #[arg(long, default_value = "eventfold-local")]
        stack: String,
        /// Events table (default: from the template and --stack).
        #[arg(long, env = "EVENTS_TABLE")]
        events_table: Option<String>,
        /// Read-models table (default: from the template and --stack).
        #[arg(long, env = "READ_MODELS_TABLE")]
        read_models_table: Option<String>,
        /// AWS endpoint (default: AWS_ENDPOINT_URL, else the local emulator).
        // Not `env = "AWS_ENDPOINT_URL"`: clap would count the variable as this flag given,
        // and refuse `--aws` whenever it is set, though the SDK honours it there too.
        #[arg(long)]
        endpoint: Option<String>,
        /// A deployed stack: the AWS SDK's own endpoint, region and credentials (profile,
        /// SSO, environment, AWS_ENDPOINT_URL included) instead of the emulator; give both
        /// tables (the stack outputs EventsTableName and ReadModelsTableName).
        #[arg(long, conflicts_with = "endpoint", requires_all = ["events_table", "read_models_table"])]
        aws: bool,
    },
}

/// Where `projections rebuild` and `dlq` find the emulator when neither `--endpoint` nor
/// AWS_ENDPOINT_URL names one: `eventfold local`'s default port.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4566";

/// The project's template with the physical names of `stack` in the region of `sdk`.
fn template(stack: &str, sdk: &SdkConfig) -> Result<Template> {
    let root = eventfold_local::emulator::find_root(&std::env::current_dir()?)?;
    let region = sdk
        .region()
        .map_or("us-east-1".to_owned(), ToString::to_string);
    Template::load(
        &root.join(eventfold_local::stack::TEMPLATE_PATH),
        stack,
        &region,
    )
}

/// The physical name of the template's table `logical_id`.
fn table(template: &Template, logical_id: &str) -> Result<String> {
    template
        .tables()
        .into_iter()
        .find(|t| t.logical_id == logical_id)
        .map(|t| t.name)
        .with_context(|| format!("template has no {logical_id}"))
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
                JwtConfig::from_env()?.issue(&tenant, &sub, &scope, ttl)
            );
        }
        Cmd::Local {
            stack,
            print_env: Some(function),
            ..
        } => {
            print!("{}", cli::local::print_env(&stack.options()?, &function)?);
        }
        Cmd::Console(args) => cli::console::run(args).await?,
        Cmd::Local {
            stack,
            demo,
            once,
            console,
            ..
        } => {
            if stack.no_iam {
                eprintln!(
                    "WARNING: --no-iam: IAM is NOT enforced; functions call AWS unchecked, so a call their role does not allow fails only after a deploy"
                );
            }
            let local = cli::local::start(stack.options()?).await?;
            cli::demo::banner(&local);
            let console = match console {
                Some(addr) => Some(cli::console::start_local(&local, addr).await?),
                None => None,
            };
            if let Some(c) = &console {
                println!("  console      : {} (read-only)", c.url());
            }
            if demo {
                cli::demo::run(&local).await?;
            }
            if !once {
                println!("\nServing; Ctrl-C stops everything.");
                tokio::signal::ctrl_c().await?;
            }
            if let Some(c) = console {
                c.stop();
            }
            local.stop().await;
        }
        Cmd::Projections {
            command:
                ProjectionsCmd::Rebuild {
                    view,
                    verify,
                    promote,
                    grace,
                    stack,
                    events_table,
                    read_models_table,
                    endpoint,
                    aws,
                },
        } => {
            let sdk = if aws {
                eventfold_aws::sdk_config().await
            } else {
                let endpoint = endpoint
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
                eventfold_local::emulator::local_sdk_config(&endpoint).await
            };
            let template = template(&stack, &sdk)?;
            let target = cli::rebuild::RebuildTarget {
                events_table: events_table.map_or_else(|| table(&template, "EventsTable"), Ok)?,
                read_models_table: read_models_table
                    .map_or_else(|| table(&template, "ReadModelsTable"), Ok)?,
                keys: Some(cli::gdpr::key_ring(&sdk, &template)?),
                sdk,
            };
            let ok = if promote {
                let by = if aws {
                    console::aws_operator(&target.sdk).await?
                } else {
                    console::local_operator().replacen("console:", "cli:", 1)
                };
                let grace = std::time::Duration::from_secs(grace);
                cli::rebuild::run_promote(&target, &view, grace, &by).await?
            } else {
                cli::rebuild::run(&target, &view, verify).await?
            };
            if !ok {
                std::process::exit(1);
            }
        }
        Cmd::Iam {
            command: IamCmd::Report { calls, check },
        } => {
            let root = eventfold_local::emulator::find_root(&std::env::current_dir()?)?;
            let report = cli::iam::report(&root, &calls)?;
            print!("{report}");
            let known = cli::iam::read_known(&root)?;
            let problems = cli::iam::problems(&report, &known);
            if check && !problems.is_empty() {
                eprintln!("iam report --check:");
                for p in &problems {
                    eprintln!("  {p}");
                }
                std::process::exit(1);
            }
        }
        Cmd::CheckArtifacts {
            build_dir,
            native,
            qemu,
            sysroot,
        } => {
            let cwd = std::env::current_dir()?;
            let options = cli::artifacts::Options {
                root: eventfold_local::emulator::find_root(&cwd)?,
                build_dir: cwd.join(build_dir),
                qemu,
                sysroot,
                native: native.map(|n| cwd.join(n)),
                init_timeout: std::time::Duration::from_secs(60),
            };
            cli::artifacts::check(&options).await?;
        }
        Cmd::Verify { args } => {
            let (sdk, options) = args.resolve().await?;
            println!(
                "eventfold verify: stack {} (timeout {:?})",
                options.stack, options.timeout
            );
            let report = cli::verify::run(&sdk, &options, |hop| println!("  {hop}")).await;
            if let Err(e) = cli::verify::outcome(&report) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            println!("{}", cli::verify::LEFT_BEHIND);
        }
        Cmd::Gdpr {
            command,
            stack,
            endpoint,
            aws,
        } => {
            let (sdk, actor) = if aws {
                let sdk = eventfold_aws::sdk_config().await;
                let arn = console::aws_operator(&sdk).await?;
                (sdk, arn)
            } else {
                let endpoint = endpoint
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
                let sdk = eventfold_local::emulator::local_sdk_config(&endpoint).await;
                (
                    sdk,
                    console::local_operator().replacen("console:", "cli:", 1),
                )
            };
            cli::gdpr::run(&sdk, &template(&stack, &sdk)?, command, &actor).await?;
        }
        Cmd::Dlq {
            command,
            stack,
            endpoint,
        } => {
            let sdk = eventfold_local::emulator::local_sdk_config(&endpoint).await;
            let processor = cli::dlq::processor(&sdk, &template(&stack, &sdk)?)?;
            cli::dlq::run(&processor, command).await?;
        }
    }
    Ok(())
}
