//! Lambda entry point: read config, build clients once, and run the function's one handler
//! (SQS batches from the DLQs and the stream's on-failure queue, HTTP API requests for the
//! dead-letters API, told apart by their shape in the library).
#![forbid(unsafe_code)]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("dlq-processor");
    let sdk = eventfold_aws::sdk_config().await;
    let function = dlq_processor::build(&sdk, |k| std::env::var(k).ok())?;
    function.warm_up(&sdk).await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        telemetry
            .invocation(function.handle(event.payload, event.context))
            .await
    }))
    .await
}
