//! Lambda entry point: read config, build clients once, serve HTTP requests.
#![forbid(unsafe_code)]

use eventfold_aws::DynamoDbTable;
use lambda_http::{Error, Request, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    eventfold_aws::init_tracing();
    let telemetry = eventfold_aws::init_metrics("command-api");
    let config = eventfold_aws::StoreConfig::from_env()?;
    let sdk = eventfold_aws::sdk_config().await;
    let api = command_api::dynamo_api(&sdk, &config);
    eventfold_aws::warm_up(&sdk, &[&DynamoDbTable::events(&config.events_table)]).await;
    let api = &api;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(telemetry.invocation(api.handle(req)).await)
    }))
    .await
}
