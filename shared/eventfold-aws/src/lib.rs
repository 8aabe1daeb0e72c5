//! AWS adapters for eventfold: everything that talks to AWS or to Lambda.
//!
//! One module per port it implements:
//!
//! | port (crate) | module | adapter |
//! |---|---|---|
//! | `EventStore` (`eventfold`) | [`event_store`] | [`DynamoEventStore`] |
//! | `ReadModelStore`, `DeadlineIndex` (`eventfold-consumers`) | [`read_models`] | [`DynamoReadModelStore`] |
//! | `DeadLetterStore` (`eventfold-consumers`) | [`dead_letters`] | [`DynamoDeadLetterStore`] |
//! | `IdempotencyStore` (`eventfold-idempotency`) | [`idempotency`] (+ its `Idempotency-Key` HTTP glue) | [`DynamoIdempotencyStore`] |
//! | `TopicCatalogue`, `GroupStore` (`eventfold-streaming`) | [`streaming`] | [`DynamoTopicCatalogue`], [`DynamoGroupStore`] |
//! | [`NotificationSink`] (here) | [`sns`] | [`SnsPublisher`] |
//! | `KeyRing` (`eventfold`) | [`keys`] | [`KmsKeyRing`] (keys table + KMS) |
//!
//! And what every adapter or function shares: DynamoDB attribute codecs, item sizes and the
//! store constructors ([`dynamodb`]), the one classification and conversion of SDK errors
//! ([`faults`]), Lambda event-source glue (DynamoDB stream records: [`streams`]; SQS FIFO
//! batches with partial failures: [`sqs`]), configuration from the environment and tracing
//! set-up ([`config`]), CloudWatch EMF metrics ([`telemetry`]), request counting for cost
//! accounting ([`RequestCounter`]), the init-time warm-up ([`warmup`]), errors as Lambda
//! reports them ([`diagnostic`]) and the single mapping of errors to HTTP problem responses
//! ([`http`]).
//!
//! Must not import: `shop` or any business rule, or `eventfold-testkit` (a dev-dependency).
//! Functions (`functions/*`) wire these adapters to domain code; this crate stays domain-free.
#![forbid(unsafe_code)]

#[macro_use]
pub mod dynamodb;

pub mod config;
pub mod dead_letters;
pub mod deadline;
pub mod diagnostic;
pub mod event_store;
pub mod faults;
pub mod http;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod read_models;
pub mod sns;
pub mod sqs;
pub mod streaming;
pub mod streams;
pub mod telemetry;
pub mod warmup;

pub use aws_config::SdkConfig;
pub use config::{StoreConfig, init_tracing, sdk_config, tokio_backoff};
pub use dead_letters::DynamoDeadLetterStore;
pub use event_store::DynamoEventStore;
pub use idempotency::{DynamoIdempotencyStore, IdempotencySettings};
pub use keys::KmsKeyRing;
pub use metrics::RequestCounter;
pub use read_models::DynamoReadModelStore;
pub use sns::{NotificationSink, SnsPublisher};
pub use streaming::{DynamoGroupStore, DynamoTopicCatalogue, StreamingConfig};
pub use telemetry::{Telemetry, init_metrics};
pub use warmup::{DynamoDbTable, SnsTopic, WarmUp, warm_up};
