//! The DLQ processor: what the consumers gave up on becomes a dead letter an operator can see,
//! redrive or discard, and failed stream batches are republished without one.
//!
//! Owns the Lambda-facing shape of the recovery path:
//!
//! - its SQS event sources are the projector's and the saga's DLQs and the events stream's
//!   on-failure queue, told apart by the record's queue ARN ([`Sources`]);
//! - a DLQ message becomes a [`DeadLetter`] joined with the consumer's failure note (its last
//!   error), "blocked behind" the stream's earlier open letter when there is one;
//! - a stream batch description is resolved to the commits it held, which are read from the
//!   events table and republished through the stream publisher's SNS packing with bounded
//!   backoff; only the commits that still fail become dead letters (keyed by stream id and
//!   version), and the message is retried by its queue until they go out or
//!   [`DlqConfig::stream_retry_receives`] deliveries passed;
//! - it also serves the dead-letters HTTP API (`events:admin`, tenant-scoped): the one
//!   function that holds the dead-letter table and the clients a redrive needs (the
//!   consumers' queues, the topic, the events table), so the query and command APIs keep
//!   their narrower permissions.
//!
//! `main.rs` only wires config and clients. Must not import: business rules (`shop`).
#![forbid(unsafe_code)]

mod api;
mod processor;
pub mod redrive;

pub use api::{api_response, routes};
pub use processor::{
    Backoff, DlqError, DlqProcessor, Processed, RecoveryStats, Redriven, STREAM_SOURCE,
};

use aws_lambda_events::event::sqs::SqsEvent;
use eventfold::deadletter::DeadLetter;
use eventfold_aws::config::ConfigError;
use eventfold_aws::{DynamoDeadLetterStore, DynamoEventStore, SdkConfig, SnsPublisher};
use redrive::{ShardReader, SqsSender};
use serde_json::Value;
use std::sync::Arc;

/// Where each kind of message comes from and where a redrive sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sources {
    /// ARN of the projector's DLQ (`PROJECTOR_DLQ_ARN`).
    pub projector_dlq_arn: String,
    /// ARN of the saga's DLQ (`SAGA_DLQ_ARN`).
    pub saga_dlq_arn: String,
    /// ARN of the stream's on-failure queue (`STREAM_FAILURE_QUEUE_ARN`).
    pub stream_failure_arn: String,
    /// The projector's queue (`PROJECTOR_QUEUE_URL`): where its letters are redriven.
    pub projector_queue_url: String,
    /// The saga's queue (`SAGA_QUEUE_URL`).
    pub saga_queue_url: String,
}

impl Sources {
    /// The consumer and queue name of a record from `arn`; `None` for a queue this function
    /// does not know.
    pub fn of(&self, arn: &str) -> Option<(&'static str, String)> {
        let name = arn.rsplit(':').next().unwrap_or(arn).to_owned();
        if arn == self.projector_dlq_arn {
            Some(("projector", name))
        } else if arn == self.saga_dlq_arn {
            Some(("saga", name))
        } else if arn == self.stream_failure_arn {
            Some((STREAM_SOURCE, name))
        } else {
            None
        }
    }

    /// The queue a consumer's letters are redriven to.
    pub fn queue_of(&self, consumer: &str) -> Option<&str> {
        match consumer {
            "projector" => Some(&self.projector_queue_url),
            "saga" => Some(&self.saga_queue_url),
            _ => None,
        }
    }
}

/// Settings of the DLQ processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqConfig {
    /// The dead-letters table (`DEAD_LETTERS_TABLE`).
    pub dead_letters_table: String,
    /// The events table (`EVENTS_TABLE`): commits are republished from it.
    pub events_table: String,
    /// The events topic (`EVENTS_TOPIC_ARN`).
    pub events_topic_arn: String,
    /// Queues.
    pub sources: Sources,
    /// Deliveries of a stream batch description before its unpublished commits are left to
    /// an operator (`STREAM_RETRY_RECEIVES`, default 10).
    pub stream_retry_receives: u32,
}

impl DlqConfig {
    /// Reads the settings through `lookup` (the process environment in Lambda).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let stream_retry_receives =
            match lookup("STREAM_RETRY_RECEIVES") {
                None => 10,
                Some(v) => v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ConfigError::Invalid {
                        name: "STREAM_RETRY_RECEIVES",
                        value: v.clone(),
                        reason: "must be a whole number of at least 1".into(),
                    }
                })?,
            };
        Ok(Self {
            dead_letters_table: required("DEAD_LETTERS_TABLE")?,
            events_table: required("EVENTS_TABLE")?,
            events_topic_arn: required("EVENTS_TOPIC_ARN")?,
            sources: Sources {
                projector_dlq_arn: required("PROJECTOR_DLQ_ARN")?,
                saga_dlq_arn: required("SAGA_DLQ_ARN")?,
                stream_failure_arn: required("STREAM_FAILURE_QUEUE_ARN")?,
                projector_queue_url: required("PROJECTOR_QUEUE_URL")?,
                saga_queue_url: required("SAGA_QUEUE_URL")?,
            },
            stream_retry_receives,
        })
    }
}

/// The processor on the AWS resources named through `lookup`.
pub fn from_lookup(
    sdk: &SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<DlqProcessor, ConfigError> {
    let config = DlqConfig::from_lookup(lookup)?;
    Ok(DlqProcessor::new(
        Arc::new(DynamoDeadLetterStore::from_sdk(
            sdk,
            &config.dead_letters_table,
        )),
        Arc::new(DynamoEventStore::from_sdk(sdk, &config.events_table)),
        Arc::new(SnsPublisher::from_sdk(sdk, &config.events_topic_arn)),
        Arc::new(SqsSender::from_sdk(sdk)),
        Arc::new(ShardReader::from_sdk(sdk)),
        config.sources,
    )
    .with_stream_retry_receives(config.stream_retry_receives))
}

/// What the function was invoked with, told apart by the payload's shape.
#[derive(Debug)]
pub enum Invocation {
    /// An SQS batch (`{"Records": [...]}`).
    Batch(SqsEvent),
    /// An HTTP API request (payload 2.0).
    Http(Box<lambda_http::request::LambdaRequest>),
}

impl Invocation {
    /// Reads a Lambda payload; anything but an SQS batch or an API Gateway request is refused.
    pub fn from_json(payload: Value) -> Result<Self, String> {
        if payload.get("Records").is_some() {
            return serde_json::from_value(payload)
                .map(Self::Batch)
                .map_err(|e| format!("not an SQS event: {e}"));
        }
        if payload.get("routeKey").is_some() {
            return serde_json::from_value(payload)
                .map(|r| Self::Http(Box::new(r)))
                .map_err(|e| format!("not an API Gateway request: {e}"));
        }
        Err("neither an SQS batch nor an HTTP API request".to_owned())
    }
}

/// One line per new dead letter, as the local stack prints them.
pub fn describe(letter: &DeadLetter) -> String {
    let at = match (&letter.stream_id, letter.first_version, letter.last_version) {
        (Some(s), Some(a), Some(b)) if a != b => format!("{s}@{a}..{b}"),
        (Some(s), Some(a), _) => format!("{s}@{a}"),
        _ => "(no stream)".to_owned(),
    };
    let blocked = letter
        .blocked_behind
        .as_ref()
        .map(|b| format!(" blocked behind {b}"))
        .unwrap_or_default();
    format!(
        "dead letter {} [{}] {} {at}{blocked}: {}",
        letter.id,
        letter.status,
        letter.consumer,
        letter.last_error.as_deref().unwrap_or("no error recorded")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_names_every_resource() {
        let env = |k: &str| {
            Some(match k {
                "DEAD_LETTERS_TABLE" => "dl".to_owned(),
                "EVENTS_TABLE" => "ev".to_owned(),
                "EVENTS_TOPIC_ARN" => "arn:aws:sns:r:1:events.fifo".to_owned(),
                "PROJECTOR_DLQ_ARN" => "arn:aws:sqs:r:1:projector-dlq.fifo".to_owned(),
                "SAGA_DLQ_ARN" => "arn:aws:sqs:r:1:saga-dlq.fifo".to_owned(),
                "STREAM_FAILURE_QUEUE_ARN" => "arn:aws:sqs:r:1:failures".to_owned(),
                "PROJECTOR_QUEUE_URL" => "http://q/projector.fifo".to_owned(),
                "SAGA_QUEUE_URL" => "http://q/saga.fifo".to_owned(),
                _ => return None,
            })
        };
        let config = DlqConfig::from_lookup(env).expect("configured");
        assert_eq!(config.stream_retry_receives, 10);
        let s = &config.sources;
        assert_eq!(
            s.of("arn:aws:sqs:r:1:projector-dlq.fifo"),
            Some(("projector", "projector-dlq.fifo".to_owned()))
        );
        assert_eq!(
            s.of("arn:aws:sqs:r:1:saga-dlq.fifo").map(|x| x.0),
            Some("saga")
        );
        assert_eq!(
            s.of("arn:aws:sqs:r:1:failures").map(|x| x.0),
            Some(STREAM_SOURCE)
        );
        assert_eq!(s.of("arn:aws:sqs:r:1:other"), None);
        assert_eq!(s.queue_of("saga"), Some("http://q/saga.fifo"));
        assert_eq!(s.queue_of(STREAM_SOURCE), None);
        let missing = DlqConfig::from_lookup(|k| if k == "SAGA_QUEUE_URL" { None } else { env(k) });
        assert!(matches!(
            missing,
            Err(ConfigError::Missing("SAGA_QUEUE_URL"))
        ));
        let bad = DlqConfig::from_lookup(|k| {
            if k == "STREAM_RETRY_RECEIVES" {
                Some("0".into())
            } else {
                env(k)
            }
        });
        assert!(matches!(bad, Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn payloads_are_told_apart_by_shape() {
        let sqs = include_str!("../events/sqs.json");
        let v: Value = serde_json::from_str(sqs).expect("json");
        assert!(matches!(Invocation::from_json(v), Ok(Invocation::Batch(_))));
        let http = include_str!("../events/http.json");
        let v: Value = serde_json::from_str(http).expect("json");
        assert!(matches!(Invocation::from_json(v), Ok(Invocation::Http(_))));
        assert!(Invocation::from_json(serde_json::json!({"x": 1})).is_err());
    }
}
