//! Lambda entry point: build the function once from the environment, warm its topic,
//! publish stream batches.
#![forbid(unsafe_code)]

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("stream-publisher");
    let sdk = eventfold_aws::sdk_config().await;
    let function = stream_publisher::build(&sdk, |k| std::env::var(k).ok())?;
    function.warm_up(&sdk).await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Infallible>(telemetry.invocation(function.handle(event.payload)).await)
    }))
    .await
}
