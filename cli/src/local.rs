//! `eventfold local`: the generic local runtime ([`eventfold_local`]) running the shop's
//! functions. This is the one place that says which binary of the template is which
//! function of this repository. Each function runs as its `main.rs` runs it: built by its
//! library's one constructor (`build`) from the SDK configuration and the environment the
//! template gives it; nothing here reads a setting or builds a client.

use anyhow::Result;
use eventfold_aws::SdkConfig;
use eventfold_aws::config::ConfigError;
use eventfold_local::{
    EsmOptions, EventHandler, FunctionSpec, Functions, HandlerError, HttpHandler, LocalOptions,
    LocalStack, event_handler, http_handler, try_typed_handler,
};
use lambda_http::{Body, Request, Response};
use std::future::{Future, Ready};
use std::sync::Arc;

/// The shop's functions, by the binary the template names: the HTTP APIs and the
/// event-source consumers, each built by its library's constructor.
pub fn shop_functions() -> Functions {
    Functions::new()
        .http("command-api", api(command_api::build))
        .http("query-api", api(query_api::build))
        .http("streams-api", api(streams_api::build))
        .events("stream-publisher", consumer(stream_publisher::build))
        .events("projector", consumer(projector::build))
        // SQS batches and scheduled events arrive at the same function and handler, with
        // the invocation's deadline as Lambda's context gives it.
        .payload("saga", |sdk, function| async move {
            let saga = Arc::new(saga::build(&sdk, |k| function.env(k))?);
            let timeout = function.timeout;
            Ok(event_handler(move |payload| {
                let saga = saga.clone();
                async move {
                    let deadline =
                        eventfold_aws::deadline::answer_by(deadline_context(timeout).deadline);
                    // As Lambda reports it: the error with its whole cause chain.
                    saga.handle(payload, deadline)
                        .await
                        .map_err(|e| eventfold_aws::diagnostic::cause_chain(&e))
                }
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
            let timeout = function.timeout;
            Ok(event_handler(move |payload| {
                let processor = processor.clone();
                async move {
                    processor
                        .handle(payload, deadline_context(timeout))
                        .await
                        .map_err(|e| lambda_runtime::Diagnostic::from(e).error_message)
                }
            }))
        })
}

/// The Lambda context of an invocation starting now, with the deadline of a function of
/// `timeout_s` seconds (the local runtime stops it then, as Lambda does).
pub fn deadline_context(timeout_s: u64) -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(timeout_s.max(1) as i64);
    context.deadline = u64::try_from(deadline.timestamp_millis()).unwrap_or(0);
    context
}

/// A function's environment as the local runtime resolved it from the template: what the
/// process environment is in Lambda.
type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

fn env(function: &FunctionSpec) -> Env {
    let function = function.clone();
    Box::new(move |key| function.env(key))
}

/// An HTTP function: its handler, as its `main.rs` serves it.
trait Api: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Response<Body>> + Send;
}

/// An event-source function: its handler, as its `main.rs` hands it to the Lambda runtime
/// (`Err`: the invocation failed as a whole, with this error).
trait Consumer: Send + Sync + 'static {
    type Event: serde::de::DeserializeOwned + Send + 'static;
    type Response: serde::Serialize + Send + 'static;
    fn handle(
        &self,
        event: Self::Event,
    ) -> impl Future<Output = Result<Self::Response, HandlerError>> + Send;
}

/// The factory of an HTTP function from its constructor.
fn api<F: Api>(
    build: fn(&SdkConfig, Env) -> Result<F, ConfigError>,
) -> impl Fn(&SdkConfig, &FunctionSpec) -> Result<HttpHandler> + Send + Sync + 'static {
    move |sdk, function| {
        let function = Arc::new(build(sdk, env(function))?);
        Ok(http_handler(move |req| {
            let function = function.clone();
            async move { function.handle(req).await }
        }))
    }
}

/// The factory of an event-source function from its constructor.
fn consumer<F: Consumer>(
    build: fn(&SdkConfig, Env) -> Result<F, ConfigError>,
) -> impl Fn(SdkConfig, FunctionSpec) -> Ready<Result<EventHandler>> + Send + Sync + 'static {
    move |sdk, function| {
        std::future::ready(
            build(&sdk, env(&function))
                .map_err(Into::into)
                .map(|function| {
                    let function = Arc::new(function);
                    try_typed_handler(move |event: F::Event| {
                        let function = function.clone();
                        async move { function.handle(event).await }
                    })
                }),
        )
    }
}

impl Api for command_api::Function {
    fn handle(&self, req: Request) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req)
    }
}

impl Api for query_api::Function {
    fn handle(&self, req: Request) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req)
    }
}

impl Api for streams_api::Function {
    fn handle(&self, req: Request) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req)
    }
}

impl Consumer for stream_publisher::Function {
    type Event = aws_lambda_events::event::dynamodb::Event;
    type Response = aws_lambda_events::event::streams::DynamoDbEventResponse;
    async fn handle(&self, event: Self::Event) -> Result<Self::Response, HandlerError> {
        Ok(self.handle(event).await)
    }
}

impl Consumer for projector::Function {
    type Event = aws_lambda_events::event::sqs::SqsEvent;
    type Response = aws_lambda_events::event::sqs::SqsBatchResponse;
    async fn handle(&self, event: Self::Event) -> Result<Self::Response, HandlerError> {
        Ok(self.handle(event).await)
    }
}

/// What `--print-env all` names: every function's environment in one file, for one
/// `cargo lambda watch` serving every binary.
pub const ALL_FUNCTIONS: &str = "all";

/// The `KEY=value` environment of `function` (binary or logical id, or [`ALL_FUNCTIONS`])
/// against the stack `options` describe: what `eventfold local` with the same options hands
/// it, plus the endpoint, region and credentials it calls AWS with. With IAM on, one function
/// calls through the stack's IAM proxy (`options.iam_port`) signing as itself, so its role is
/// enforced as in the stack; [`ALL_FUNCTIONS`] cannot carry seven identities in one
/// environment, so it calls the emulator directly, unchecked, and says so on stderr.
pub fn print_env(options: &LocalOptions, function: &str) -> Result<String> {
    let region = eventfold_local::emulator::local_region();
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
        if options.iam {
            eprintln!(
                "WARNING: --print-env all: one environment cannot sign as seven functions, so these call the emulator directly and IAM does NOT check them; --print-env FUNCTION gives one function its own identity through the IAM proxy"
            );
        }
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
    } else if options.iam {
        let logical_id = template
            .function(function)
            .map(|f| f.logical_id)
            .ok_or_else(|| anyhow::anyhow!("the template has no function '{function}'"))?;
        let proxy = format!("http://127.0.0.1:{}", options.iam_port);
        let mut env =
            eventfold_local::runtime_api::standalone_env(&template, function, &proxy, &region)?;
        env.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
        env.push((
            "AWS_ACCESS_KEY_ID".into(),
            eventfold_local::iam::access_key(&logical_id),
        ));
        env.push((
            "AWS_SECRET_ACCESS_KEY".into(),
            eventfold_local::iam::SECRET.to_owned(),
        ));
        env.sort();
        env
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
