//! Lambda entry point: read config, build clients once; SQS batches -> saga steps, scheduled
//! events -> deadline ticks (told apart by their shape).
#![forbid(unsafe_code)]

use eventfold_aws::DynamoDbTable;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use saga::Invocation;
use serde_json::Value;

/// The saga this function runs.
type Deployed = shop::fulfilment::OrderFulfilment;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("saga");
    let sdk = eventfold_aws::sdk_config().await;
    let function = saga::from_lookup::<Deployed>(
        &sdk,
        |k| std::env::var(k).ok(),
        shop::registry::upcasters(),
    )?;
    let events_table = std::env::var("EVENTS_TABLE").unwrap_or_default();
    eventfold_aws::warm_up(&sdk, &[&DynamoDbTable::events(&events_table)]).await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let invocation = Invocation::from_json(event.payload)?;
        Ok::<_, Error>(telemetry.invocation(function.handle(invocation)).await?)
    }))
    .await
}
