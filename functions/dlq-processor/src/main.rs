//! Lambda entry point: read config, build clients once; SQS batches from the DLQs and the
//! stream's on-failure queue -> dead letters, HTTP API requests -> the dead-letters API
//! (told apart by their shape).
#![forbid(unsafe_code)]

use dlq_processor::Invocation;
use eventfold_aws::DynamoDbTable;
use lambda_http::RequestExt;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("dlq-processor");
    let sdk = eventfold_aws::sdk_config().await;
    let function = dlq_processor::from_lookup(&sdk, |k| std::env::var(k).ok())?;
    let events_table = std::env::var("EVENTS_TABLE").unwrap_or_default();
    eventfold_aws::warm_up(&sdk, &[&DynamoDbTable::events(&events_table)]).await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        telemetry.invocation(handle(function, event)).await
    }))
    .await
}

async fn handle(
    function: &dlq_processor::DlqProcessor,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let response = match Invocation::from_json(event.payload)? {
        Invocation::Batch(batch) => serde_json::to_value(function.handle(batch).await)?,
        Invocation::Http(request) => {
            let request = lambda_http::Request::from(*request).with_lambda_context(event.context);
            serde_json::to_value(dlq_processor::api_response(
                function.handle_http(request).await,
            ))?
        }
    };
    Ok(response)
}
