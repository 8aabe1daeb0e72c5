//! `eventfold local`: the generic local runtime ([`eventfold_local`]) running the shop's
//! functions. This is the one place that says which binary of the template is which
//! function of this repository.

use anyhow::Result;
use eventfold_aws::StoreConfig;
use eventfold_local::{
    EsmOptions, Functions, LocalOptions, LocalStack, event_handler, http_handler, typed_handler,
};
use std::sync::Arc;

/// The saga the `saga` function runs locally (as `functions/saga/src/main.rs` deploys it).
pub type Saga = shop::fulfilment::OrderFulfilment;

/// The shop's functions, by the binary the template names: the HTTP APIs and the
/// event-source consumers, each configured from its resolved template environment.
pub fn shop_functions() -> Functions {
    Functions::new()
        .http("command-api", |sdk, function| {
            let config = StoreConfig::from_lookup(|k| function.env(k))?;
            let api = Arc::new(command_api::dynamo_api(sdk, &config));
            Ok(http_handler(move |req| {
                let api = api.clone();
                async move { api.handle(req).await }
            }))
        })
        .http("query-api", |sdk, function| {
            let config = query_api::QueryConfig::from_lookup(|k| function.env(k))?;
            let api = Arc::new(query_api::dynamo_api(sdk, &config));
            Ok(http_handler(move |req| {
                let api = api.clone();
                async move { api.handle(req).await }
            }))
        })
        .http("streams-api", |sdk, function| {
            let config = eventfold_aws::StreamingConfig::from_lookup(|k| function.env(k))?;
            let api = Arc::new(streams_api::dynamo_api(sdk, &config));
            Ok(http_handler(move |req| {
                let api = api.clone();
                async move { api.handle(req).await }
            }))
        })
        .events("stream-publisher", |sdk, function| async move {
            let publisher =
                Arc::new(stream_publisher::from_lookup(&sdk, |k| function.env(k)).await?);
            Ok(typed_handler(move |event| {
                let publisher = publisher.clone();
                async move { publisher.handle(event).await }
            }))
        })
        .events("projector", |sdk, function| async move {
            let projector = Arc::new(projector::from_lookup(&sdk, |k| function.env(k))?);
            Ok(typed_handler(move |event| {
                let projector = projector.clone();
                async move { projector.handle(event).await }
            }))
        })
        .events("saga", |sdk, function| async move {
            let saga = Arc::new(saga::from_lookup::<Saga>(
                &sdk,
                |k| function.env(k),
                shop::registry::upcasters(),
            )?);
            // SQS batches and scheduled events arrive at the same function: told by shape.
            Ok(event_handler(move |payload| {
                let saga = saga.clone();
                async move { saga.handle(saga::Invocation::from_json(payload)?).await }
            }))
        })
        // One function, one handler: the DLQs and the stream's on-failure queue, and the
        // dead-letters API, told apart by the payload's shape (as in Lambda).
        .payload("dlq-processor", |sdk, function| async move {
            // `eventfold local` shows dead letters as they arrive.
            let processor = Arc::new(
                dlq_processor::build(&sdk, |k| function.env(k))?
                    .on_letter(|letter| println!("{}", dlq_processor::describe(letter))),
            );
            Ok(event_handler(move |payload| {
                let processor = processor.clone();
                async move {
                    processor
                        .handle(payload, lambda_runtime::Context::default())
                        .await
                        .map_err(|e| lambda_runtime::Diagnostic::from(e).error_message)
                }
            }))
        })
}

/// What `--print-env all` names: every function's environment in one file, for one
/// `cargo lambda watch` serving every binary.
pub const ALL_FUNCTIONS: &str = "all";

/// The `KEY=value` environment of `function` (binary or logical id, or [`ALL_FUNCTIONS`])
/// against the stack `options` describe: what `eventfold local` with the same options hands
/// it, plus the emulator's endpoint, region and dummy credentials.
pub fn print_env(options: &LocalOptions, function: &str) -> Result<String> {
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_owned());
    let mut template = eventfold_local::Template::load(
        &options.root.join(eventfold_local::stack::TEMPLATE_PATH),
        &options.stack,
        &region,
    )?;
    template.override_parameters(&options.parameter_overrides)?;
    let endpoint = options
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", options.emulator_port));
    let env = if function == ALL_FUNCTIONS {
        // One template resolves every reference the same way, so the functions' variables
        // agree wherever they share a name; a disagreement would make the union a lie.
        let mut union = std::collections::BTreeMap::new();
        for f in template.functions() {
            for (k, v) in eventfold_local::runtime_api::standalone_env(
                &template,
                &f.logical_id,
                &endpoint,
                &region,
            )? {
                if let Some(old) = union.insert(k.clone(), v.clone())
                    && old != v
                {
                    anyhow::bail!("{k} differs between functions ({old} and {v}): print one");
                }
            }
        }
        union.into_iter().collect()
    } else {
        eventfold_local::runtime_api::standalone_env(&template, function, &endpoint, &region)?
    };
    Ok(eventfold_local::runtime_api::env_file(&env))
}

/// Starts the local stack with the shop's functions and default event-source options.
pub async fn start(options: LocalOptions) -> Result<LocalStack> {
    start_with(options, EsmOptions::default()).await
}

/// [`start`] with event-source options: handler overrides, which functions' sources to
/// poll, a short SQS visibility timeout for tests, reporting.
pub async fn start_with(options: LocalOptions, esm: EsmOptions) -> Result<LocalStack> {
    LocalStack::start(options, &shop_functions(), esm).await
}
