//! AWS adapters for eventfold.
//!
//! Owns everything that talks to AWS or to Lambda: the DynamoDB event store
//! ([`DynamoEventStore`]), read-model store ([`DynamoReadModelStore`]) and idempotency store
//! with its `Idempotency-Key` HTTP glue ([`idempotency`]), the streaming topics and
//! consumer-group tables ([`streaming`]), dead-letter store ([`deadletters`]), stream-record
//! decoding ([`streams`]), SNS publishing ([`sns`]), SQS FIFO batches with partial failures
//! ([`sqs`]), attribute-value codecs, request counting for cost accounting
//! ([`RequestCounter`]), CloudWatch EMF metrics ([`telemetry`]), configuration from the
//! environment ([`config`]), the init-time warm-up of endpoints ([`warmup`]), function errors as Lambda reports them
//! ([`diagnostic`]), tracing set-up, the one classification of AWS errors as
//! transient or permanent ([`faults`]), and the
//! single mapping of errors to HTTP problem responses ([`http`]; idempotency outcomes in
//! [`idempotency::http`]).
//!
//! Must not import: `shop` or any business rule. Functions (`functions/*`) wire these adapters
//! to domain code; this crate stays domain-free.
#![forbid(unsafe_code)]

pub mod config;
pub mod deadletters;
pub mod diagnostic;
pub mod dynamo;
pub mod faults;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod readmodels;
pub mod sns;
pub mod sqs;
pub mod streaming;
pub mod streams;
pub mod telemetry;
pub mod warmup;

pub use aws_config::SdkConfig;
pub use config::{StoreConfig, init_tracing, sdk_config, tokio_backoff};
pub use deadletters::DynamoDeadLetterStore;
pub use dynamo::DynamoEventStore;
pub use idempotency::{DynamoIdempotencyStore, IdempotencySettings};
pub use metrics::RequestCounter;
pub use readmodels::DynamoReadModelStore;
pub use sns::{NotificationSink, SnsPublisher};
pub use streaming::{DynamoGroupStore, DynamoTopicCatalogue, StreamingConfig};
pub use telemetry::{Telemetry, init_metrics};
pub use warmup::{DynamoDbTable, SnsTopic, WarmUp, warm_up};
