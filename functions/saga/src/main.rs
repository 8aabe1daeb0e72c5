//! Lambda entry point: build the function once from the environment, warm its endpoint; SQS
//! batches -> saga steps, scheduled events -> deadline ticks (the library's one handler tells
//! them apart).
#![forbid(unsafe_code)]

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("saga");
    let sdk = eventfold_aws::sdk_config().await;
    let function = saga::build(&sdk, |k| std::env::var(k).ok())?;
    function.warm_up(&sdk).await;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = eventfold_aws::deadline::answer_by(event.context.deadline);
        telemetry
            .invocation(function.handle(event.payload, deadline))
            .await
    }))
    .await
}
