//! Lambda entry point: read config, build clients once, apply SQS batches to the read models.
#![forbid(unsafe_code)]

use aws_lambda_events::event::sqs::SqsEvent;
use eventfold_aws::DynamoDbTable;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("projector");
    let sdk = eventfold_aws::sdk_config().await;
    let function = projector::from_lookup(&sdk, |k| std::env::var(k).ok())?;
    let events_table = std::env::var("EVENTS_TABLE").unwrap_or_default();
    eventfold_aws::warm_up(&sdk, &[&DynamoDbTable::events(&events_table)]).await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(telemetry.invocation(function.handle(event.payload)).await)
    }))
    .await
}
