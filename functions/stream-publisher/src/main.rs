//! Lambda entry point: read config, build the SNS client once, publish stream batches.
#![forbid(unsafe_code)]

use aws_lambda_events::event::dynamodb::Event;
use eventfold_aws::SnsTopic;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("stream-publisher");
    let sdk = eventfold_aws::sdk_config().await;
    let publisher = stream_publisher::from_lookup(&sdk, |k| std::env::var(k).ok()).await?;
    let topic_arn = std::env::var("EVENTS_TOPIC_ARN").unwrap_or_default();
    eventfold_aws::warm_up(&sdk, &[&SnsTopic { arn: &topic_arn }]).await;
    let publisher = &publisher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(telemetry.invocation(publisher.handle(event.payload)).await)
    }))
    .await
}
