//! Settings, read once: the tables, the topic and the queues the processor works with, and
//! [`build`], which makes the processor from them and the SDK configuration.

use crate::DlqProcessor;
use crate::redrive::{ShardReader, SqsSender};
use eventfold_aws::config::ConfigError;
use eventfold_aws::{DynamoDeadLetterStore, DynamoEventStore, SdkConfig, SnsPublisher};
use std::sync::Arc;

/// The source name of the stream's on-failure queue (its letters' consumer is
/// [`eventfold_consumers::deadletter::STREAM_CONSUMER`]).
pub const STREAM_SOURCE: &str = "stream-failures";

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

/// The processor on the AWS resources the settings read through `env` name (the process
/// environment in Lambda, the template's in the local stack and the CLI), with clients built
/// from `sdk`: every setting is read here, once. What init needs besides the handler (the
/// table to warm) stays on the processor ([`DlqProcessor::warm_up`]).
pub fn build(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DlqProcessor, ConfigError> {
    let config = DlqConfig::from_lookup(env)?;
    let mut processor = DlqProcessor::new(
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
    .with_stream_retry_receives(config.stream_retry_receives);
    processor.warm_up_table = Some(config.events_table);
    Ok(processor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
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
    }

    #[test]
    fn configuration_names_every_resource() {
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
    fn the_processor_is_built_from_the_settings_once_and_keeps_the_table_to_warm() {
        let sdk = SdkConfig::builder().build();
        let processor = build(&sdk, |k| match k {
            "STREAM_RETRY_RECEIVES" => Some("3".into()),
            _ => env(k),
        })
        .expect("built");
        assert_eq!(processor.warm_up_table.as_deref(), Some("ev"));
        assert_eq!(processor.stream_retry_receives, 3);
        assert!(matches!(
            build(&sdk, |_| None),
            Err(ConfigError::Missing("DEAD_LETTERS_TABLE"))
        ));
    }
}
