//! Lambda entry point: build the function once from the environment, warm its endpoint,
//! serve HTTP requests.
#![forbid(unsafe_code)]

use lambda_http::{Error, Request, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("streams-api");
    let sdk = eventfold_aws::sdk_config().await;
    let function = streams_api::build(&sdk, |k| std::env::var(k).ok())?;
    function.warm_up(&sdk).await;
    let function = &function;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(telemetry.invocation(function.handle(req)).await)
    }))
    .await
}
