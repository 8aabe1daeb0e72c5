//! Lambda entry point: build the function once from the environment, warm its endpoint,
//! apply SQS batches to the read models.
#![forbid(unsafe_code)]

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("projector");
    let sdk = eventfold_aws::sdk_config().await;
    let function = projector::build(&sdk, |k| std::env::var(k).ok())?;
    function.warm_up(&sdk).await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Infallible>(telemetry.invocation(function.handle(event.payload)).await)
    }))
    .await
}
