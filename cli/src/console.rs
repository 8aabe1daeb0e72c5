//! `eventfold console` and `eventfold local --console`: the operator console ([`console`])
//! on a stack whose names this module resolves: from the template (the local stack's
//! physical names), each overridable by the process environment (`EVENTS_TABLE`, ... as the
//! functions read them: set them from a deployed stack's outputs with `--aws`).

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use console::source::Tables;
use eventfold_local::{LocalStack, Template};
use std::net::SocketAddr;
use std::time::Duration;

/// The emulator when neither --endpoint nor AWS_ENDPOINT_URL names one.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4566";

/// The flags of `eventfold console`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// Address to serve on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:3100")]
    pub listen: SocketAddr,
    /// Allow redrive and discard (recorded with the operator's identity).
    #[arg(long)]
    pub allow_writes: bool,
    /// Flag a consumer with work waiting and no progress for this many minutes.
    #[arg(long, default_value_t = 5.0)]
    pub stall_minutes: f64,
    /// Stack name (local physical names are `{stack}-{LogicalId}`).
    #[arg(long, default_value = "eventfold-local")]
    pub stack: String,
    /// AWS endpoint (default: AWS_ENDPOINT_URL, else the local emulator).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// A deployed stack: the AWS SDK's own endpoint, region and credentials; table names
    /// from EVENTS_TABLE, READ_MODELS_TABLE, DEAD_LETTERS_TABLE, TOPICS_TABLE,
    /// CONSUMER_GROUPS_TABLE (and the DLQ processor's queue variables) in the environment,
    /// and the stream publisher's function name in STREAM_PUBLISHER_FUNCTION.
    #[arg(long, conflicts_with = "endpoint")]
    pub aws: bool,
}

/// What a function of `template` reads as `key`, the process environment first;
/// `STREAM_PUBLISHER_FUNCTION` (no function reads it) is the publisher's name in `template`.
fn lookup(template: &Template) -> impl Fn(&str) -> Option<String> + '_ {
    let functions = template.functions();
    move |key| {
        std::env::var(key)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| functions.iter().find_map(|f| f.env(key)))
            .or_else(|| {
                (key == "STREAM_PUBLISHER_FUNCTION")
                    .then(|| template.arn("StreamPublisherFunction"))
                    .flatten()
                    .and_then(|arn| arn.rsplit(':').next().map(str::to_owned))
            })
    }
}

/// The console over the stack `template` names, through `sdk`.
pub fn build(
    sdk: &SdkConfig,
    template: &Template,
    options: console::Options,
) -> Result<std::sync::Arc<console::Console>> {
    let env = lookup(template);
    let tables = Tables::from_lookup(&env)?;
    let dlq = dlq_processor::build(sdk, &env)?;
    // Rebuilds open personal fields with the command API's keys.
    let options = console::Options {
        keys: Some(eventfold_aws::keys::key_ring_from_lookup(sdk, &env)?),
        ..options
    };
    Ok(console::Console::new(sdk, tables, dlq, options))
}

/// Serves the console of the running local stack on `listen` (read-only).
pub async fn start_local(local: &LocalStack, listen: SocketAddr) -> Result<console::Running> {
    let console = build(&local.sdk, &local.template, console::Options::new())?;
    Ok(console::start(console, listen).await?)
}

/// `eventfold console`: serves until Ctrl-C.
pub async fn run(args: ConsoleArgs) -> Result<()> {
    let sdk = if args.aws {
        eventfold_aws::sdk_config().await
    } else {
        let endpoint = args
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        eventfold_local::emulator::local_sdk_config(&endpoint).await
    };
    let root = eventfold_local::emulator::find_root(&std::env::current_dir()?)?;
    let region = sdk
        .region()
        .map_or("us-east-1".to_owned(), ToString::to_string);
    let template = Template::load(
        &root.join(eventfold_local::stack::TEMPLATE_PATH),
        &args.stack,
        &region,
    )?;
    let operator = if args.aws {
        console::aws_operator(&sdk)
            .await
            .context("who is the operator")?
    } else {
        console::local_operator()
    };
    anyhow::ensure!(
        args.stall_minutes > 0.0 && args.stall_minutes.is_finite(),
        "--stall-minutes must be a positive number"
    );
    let options = console::Options {
        allow_writes: args.allow_writes,
        stall: Duration::from_secs_f64(args.stall_minutes * 60.0),
        operator,
        ..console::Options::new()
    };
    let running = console::start(build(&sdk, &template, options)?, args.listen).await?;
    println!(
        "Console: {} ({})",
        running.url(),
        if args.allow_writes {
            "writes allowed"
        } else {
            "read-only"
        }
    );
    tokio::signal::ctrl_c().await?;
    running.stop();
    Ok(())
}
