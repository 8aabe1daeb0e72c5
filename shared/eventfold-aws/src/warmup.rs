//! One cheap call per AWS endpoint during a function's init, so its first invocation does
//! not pay for the connection: DNS, TCP, the TLS handshake, the certificates' load, the
//! credentials' resolution and the SDK's lazily built request pipeline.
//!
//! Lambda gives init up to 10 s of unbilled-at-cold-start CPU burst before the first
//! invocation (the init phase), and the first request of an API function is the one a
//! caller waits on. The clients must come from one [`crate::sdk_config`], which shares one
//! HTTPS client (and pool) among them, so warming an endpoint through any client warms it
//! for all.
//!
//! A warm-up never fails the init: a refused or failed call is logged as a warning (it
//! names a missing permission or table at once, instead of at the first request) and the
//! function starts anyway. `EVENTFOLD_WARM_UP=off` turns it off (to measure without it).

use crate::faults::SdkFailure;
use aws_config::SdkConfig;
use std::time::{Duration, Instant};

/// How long one warm-up call may take before init goes on without it.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A key no table of the stack holds (stream ids and read-model keys never start with `_`
/// followed by this word), so a warm-up reads nothing and costs the minimum read unit.
const NO_SUCH_KEY: &str = "_warm-up";

/// An endpoint to warm, through a call the function's role already allows (or one added
/// for it, named in the template). A trait rather than an enum of services, so a function
/// links only the SDK clients of the endpoints it names (an enum's match would link every
/// service's client into every function).
#[async_trait::async_trait]
pub trait WarmUp: Send + Sync {
    /// The endpoint and resource, for the log (`dynamodb:<table>`, `sns:<arn>`).
    fn describe(&self) -> String;

    /// The one cheap call.
    async fn call(&self, sdk: &SdkConfig) -> Result<(), SdkFailure>;
}

/// DynamoDB: a `Query` (limit 1) on `table` for a partition key value no item has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamoDbTable<'a> {
    /// The table.
    pub table: &'a str,
    /// Its partition key attribute.
    pub hash_key: &'a str,
}

impl<'a> DynamoDbTable<'a> {
    /// The events table (partition key `stream_id`).
    pub fn events(table: &'a str) -> Self {
        Self {
            table,
            hash_key: "stream_id",
        }
    }

    /// A table keyed by `pk` (read models, dead letters, topics).
    pub fn keyed(table: &'a str) -> Self {
        Self {
            table,
            hash_key: "pk",
        }
    }
}

#[async_trait::async_trait]
impl WarmUp for DynamoDbTable<'_> {
    fn describe(&self) -> String {
        format!("dynamodb:{}", self.table)
    }

    async fn call(&self, sdk: &SdkConfig) -> Result<(), SdkFailure> {
        aws_sdk_dynamodb::Client::new(sdk)
            .query()
            .table_name(self.table)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", self.hash_key)
            .expression_attribute_values(
                ":v",
                aws_sdk_dynamodb::types::AttributeValue::S(NO_SUCH_KEY.to_owned()),
            )
            .limit(1)
            .send()
            .await
            .map(drop)
            .map_err(SdkFailure::new)
    }
}

/// SNS: `GetTopicAttributes` of the topic the function publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnsTopic<'a> {
    /// The topic's ARN.
    pub arn: &'a str,
}

#[async_trait::async_trait]
impl WarmUp for SnsTopic<'_> {
    fn describe(&self) -> String {
        format!("sns:{}", self.arn)
    }

    async fn call(&self, sdk: &SdkConfig) -> Result<(), SdkFailure> {
        aws_sdk_sns::Client::new(sdk)
            .get_topic_attributes()
            .topic_arn(self.arn)
            .send()
            .await
            .map(drop)
            .map_err(SdkFailure::new)
    }
}

/// What one warm-up call did.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmed {
    /// The endpoint and resource (`dynamodb:<table>`, `sns:<arn>`).
    pub target: String,
    /// How long the call took.
    pub elapsed: Duration,
    /// Why it failed, if it did (the connection may still be warm: the request went out).
    pub error: Option<String>,
}

/// Whether warm-up is on, from `EVENTFOLD_WARM_UP` read through `lookup` (default on;
/// `off`, `0` or `false` turn it off).
pub fn enabled(lookup: impl Fn(&str) -> Option<String>) -> bool {
    !matches!(
        lookup("EVENTFOLD_WARM_UP")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref(),
        Some("off" | "0" | "false")
    )
}

/// Warms every target in turn (unless [`enabled`] says off, reading the process
/// environment), logging each: what each call did, or nothing when off.
pub async fn warm_up(sdk: &SdkConfig, targets: &[&dyn WarmUp]) -> Vec<Warmed> {
    if !enabled(|k| std::env::var(k).ok()) {
        tracing::info!("warm-up off (EVENTFOLD_WARM_UP)");
        return Vec::new();
    }
    let mut done = Vec::with_capacity(targets.len());
    for target in targets {
        let started = Instant::now();
        let result = tokio::time::timeout(CALL_TIMEOUT, target.call(sdk)).await;
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {CALL_TIMEOUT:?}")),
        };
        let warmed = Warmed {
            target: target.describe(),
            elapsed: started.elapsed(),
            error,
        };
        let elapsed_ms = warmed.elapsed.as_secs_f64() * 1000.0;
        match &warmed.error {
            None => tracing::info!(endpoint = %warmed.target, elapsed_ms, "warmed up"),
            Some(error) => {
                tracing::warn!(endpoint = %warmed.target, elapsed_ms, %error, "warm-up call failed")
            }
        }
        done.push(warmed);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_unless_said_off() {
        assert!(enabled(|_| None));
        assert!(enabled(|_| Some("on".into())));
        for off in ["off", "OFF", "0", "false", " off "] {
            assert!(!enabled(|_| Some(off.into())), "{off}");
        }
    }

    #[test]
    fn targets_name_their_endpoint() {
        assert_eq!(DynamoDbTable::events("t").describe(), "dynamodb:t");
        assert_eq!(DynamoDbTable::events("t").hash_key, "stream_id");
        assert_eq!(
            DynamoDbTable::keyed("r"),
            DynamoDbTable {
                table: "r",
                hash_key: "pk"
            }
        );
        assert_eq!(SnsTopic { arn: "arn:x" }.describe(), "sns:arn:x");
    }
}
