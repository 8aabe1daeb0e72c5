//! The DLQ processor: what the consumers gave up on becomes a dead letter an operator can see,
//! redrive or discard, and failed stream batches are republished without one.
//!
//! Owns the Lambda-facing shape of the recovery path, in three jobs:
//!
//! - [`intake`]: its SQS event sources are the projector's and the saga's DLQs and the events
//!   stream's on-failure queue, told apart by the record's queue ARN ([`Sources`]); a DLQ
//!   message becomes a [`DeadLetter`] joined with the consumer's failure note (its last
//!   error), "blocked behind" the stream's earlier open letter when there is one;
//! - [`republish`]: a stream batch description is resolved to the commits it held, which are
//!   read from the events table and republished through the stream publisher's SNS packing
//!   ([`eventfold_aws::sns::publish_packed`]) with bounded backoff; only the commits that
//!   still fail become dead letters (keyed by stream id and version), and the message is
//!   retried by its queue until they go out or [`DlqConfig::stream_retry_receives`]
//!   deliveries passed;
//! - [`api`]: the dead-letters operations (list, show, redrive, discard) and their HTTP API
//!   (`events:admin`, tenant-scoped): the one function that holds the dead-letter table and
//!   the clients a redrive needs (the consumers' queues, the topic, the events table), so the
//!   query and command APIs keep their narrower permissions.
//!
//! [`build`] makes the processor from its settings and the SDK configuration, once;
//! [`DlqProcessor::handle`] is its one Lambda handler, which tells an SQS batch from an HTTP
//! API request by the payload's shape. The AWS adapters only this function uses (sending to
//! a queue, reading a stream range) live in [`redrive`]. `main.rs` only wires config and
//! clients. Must not import: business rules (`shop`).
#![forbid(unsafe_code)]

pub mod api;
mod config;
pub mod intake;
pub mod redrive;
pub mod republish;

pub use api::{DlqError, Redriven, api_response, routes};
pub use config::{DlqConfig, STREAM_SOURCE, Sources, build};
pub use intake::{Processed, RecordError};
pub use republish::{Backoff, CommitFailure, RecoveryStats, stream_letter_id};

use aws_lambda_events::event::sqs::SqsEvent;
use eventfold::EventStore;
use eventfold_aws::sns::NotificationSink;
use eventfold_consumers::deadletter::{DeadLetter, DeadLetterStore};
use lambda_http::RequestExt;
use redrive::{QueueSender, StreamRange};
use serde_json::Value;
use std::error::Error;
use std::sync::Arc;

/// Called with every letter a batch recorded (new or seen again), after the batch.
type LetterHook = Arc<dyn Fn(&DeadLetter) + Send + Sync>;

/// The DLQ processor over its ports.
pub struct DlqProcessor {
    letters: Arc<dyn DeadLetterStore>,
    events: Arc<dyn EventStore>,
    sink: Arc<dyn NotificationSink>,
    queues: Arc<dyn QueueSender>,
    range: Arc<dyn StreamRange>,
    sources: Sources,
    backoff: Backoff,
    stream_retry_receives: u32,
    stats: RecoveryStats,
    on_letter: Option<LetterHook>,
    /// The events table its first requests go to ([`build`] sets it).
    warm_up_table: Option<String>,
    /// The byte budget of a page of letters (`eventfold_aws::http::PAGE_BYTES` unless set).
    page_bytes: usize,
}

impl std::fmt::Debug for DlqProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqProcessor")
            .field("sources", &self.sources)
            .field("backoff", &self.backoff)
            .field("stream_retry_receives", &self.stream_retry_receives)
            .field("warm_up_table", &self.warm_up_table)
            .finish()
    }
}

impl DlqProcessor {
    /// A processor over its ports.
    pub fn new(
        letters: Arc<dyn DeadLetterStore>,
        events: Arc<dyn EventStore>,
        sink: Arc<dyn NotificationSink>,
        queues: Arc<dyn QueueSender>,
        range: Arc<dyn StreamRange>,
        sources: Sources,
    ) -> Self {
        Self {
            letters,
            events,
            sink,
            queues,
            range,
            sources,
            backoff: Backoff::default(),
            stream_retry_receives: 10,
            stats: RecoveryStats::default(),
            on_letter: None,
            warm_up_table: None,
            page_bytes: eventfold_aws::http::PAGE_BYTES,
        }
    }

    /// Sets the byte budget of a page of letters (in [`eventfold::wire_len`] bytes), for
    /// tests that page through small letters; a budget over
    /// `eventfold_aws::http::PAGE_BYTES` risks answers past Lambda's response limit.
    pub fn with_page_bytes(mut self, page_bytes: usize) -> Self {
        self.page_bytes = page_bytes;
        self
    }

    /// Republishes with `backoff` (tests use short pauses).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Leaves a stream batch's unpublished commits to an operator after `receives` deliveries.
    pub fn with_stream_retry_receives(mut self, receives: u32) -> Self {
        self.stream_retry_receives = receives.max(1);
        self
    }

    /// Calls `hook` with every letter a batch recorded, once the batch is done (`eventfold
    /// local` prints them as they arrive).
    pub fn on_letter(mut self, hook: impl Fn(&DeadLetter) + Send + Sync + 'static) -> Self {
        self.on_letter = Some(Arc::new(hook));
        self
    }

    /// The dead-letter store.
    pub fn letters(&self) -> &dyn DeadLetterStore {
        &*self.letters
    }

    /// Requests spent on recovery so far.
    pub fn stats(&self) -> &RecoveryStats {
        &self.stats
    }

    /// Warms the endpoint of its first requests during init (the events table, when [`build`]
    /// made it; see [`eventfold_aws::warm_up`]).
    pub async fn warm_up(&self, sdk: &eventfold_aws::SdkConfig) {
        if let Some(table) = &self.warm_up_table {
            eventfold_aws::warm_up(sdk, &[&eventfold_aws::DynamoDbTable::events(table)]).await;
        }
    }

    /// The function's one handler: the raw Lambda payload in (an SQS batch from its queues,
    /// or an API Gateway HTTP API request, payload 2.0), its response out (the batch's item
    /// failures, or the payload 2.0 HTTP response). A payload of neither shape is an error.
    pub async fn handle(
        &self,
        payload: Value,
        context: lambda_runtime::Context,
    ) -> Result<Value, InvocationError> {
        match Invocation::from_json(payload)? {
            Invocation::Batch(batch) => {
                let by = answer_by(&context);
                serde_json::to_value(self.process_by(batch, by).await.response)
                    .map_err(InvocationError::Response)
            }
            Invocation::Http(request) => {
                let request = lambda_http::Request::from(*request).with_lambda_context(context);
                serde_json::to_value(api_response(self.handle_http(request).await))
                    .map_err(InvocationError::Response)
            }
        }
    }
}

/// Time kept back from the invocation's deadline: enough to record the letters of what was
/// not republished and answer the batch's failures before Lambda stops the function.
pub use eventfold_aws::deadline::DEADLINE_MARGIN;

/// When a batch must be done: the Lambda context's deadline (epoch ms; 0 outside Lambda:
/// none) less [`DEADLINE_MARGIN`], on this process's monotonic clock.
pub fn answer_by(context: &lambda_runtime::Context) -> Option<std::time::Instant> {
    eventfold_aws::deadline::answer_by(context.deadline)
}

/// What the function was invoked with, told apart by the payload's shape.
#[derive(Debug)]
pub enum Invocation {
    /// An SQS batch (`{"Records": [...]}`).
    Batch(SqsEvent),
    /// An HTTP API request (payload 2.0).
    Http(Box<lambda_http::request::LambdaRequest>),
}

/// Why an invocation failed as a whole (Lambda reports it; an event source retries it).
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The payload has `Records` but is not an SQS event.
    #[error("not an SQS event")]
    NotSqs(#[source] serde_json::Error),
    /// The payload has a `routeKey` but is not an API Gateway request.
    #[error("not an API Gateway request")]
    NotHttp(#[source] serde_json::Error),
    /// The payload is of neither shape.
    #[error("neither an SQS batch nor an HTTP API request")]
    UnknownPayload,
    /// The response could not be serialized.
    #[error("the response does not serialize")]
    Response(#[source] serde_json::Error),
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(e: InvocationError) -> Self {
        let error_type = match e {
            InvocationError::NotSqs(_)
            | InvocationError::NotHttp(_)
            | InvocationError::UnknownPayload => "InvalidPayload",
            InvocationError::Response(_) => "InvalidResponse",
        };
        Self {
            error_type: error_type.to_owned(),
            error_message: chain(&e),
        }
    }
}

impl Invocation {
    /// Reads a Lambda payload; anything but an SQS batch or an API Gateway request is refused.
    pub fn from_json(payload: Value) -> Result<Self, InvocationError> {
        if payload.get("Records").is_some() {
            return serde_json::from_value(payload)
                .map(Self::Batch)
                .map_err(InvocationError::NotSqs);
        }
        if payload.get("routeKey").is_some() {
            return serde_json::from_value(payload)
                .map(|r| Self::Http(Box::new(r)))
                .map_err(InvocationError::NotHttp);
        }
        Err(InvocationError::UnknownPayload)
    }
}

/// `e` and its causes, `: `-separated (what a letter or a log line says of an error).
pub(crate) fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
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
    fn payloads_are_told_apart_by_shape() {
        let sqs = include_str!("../events/sqs.json");
        let v: Value = serde_json::from_str(sqs).expect("json");
        assert!(matches!(Invocation::from_json(v), Ok(Invocation::Batch(_))));
        let http = include_str!("../events/http.json");
        let v: Value = serde_json::from_str(http).expect("json");
        assert!(matches!(Invocation::from_json(v), Ok(Invocation::Http(_))));
        assert!(Invocation::from_json(serde_json::json!({"x": 1})).is_err());
    }

    #[test]
    fn lambda_is_told_what_was_wrong_with_the_payload() {
        let not_sqs = Invocation::from_json(serde_json::json!({"Records": 1})).expect_err("bad");
        let d = lambda_runtime::Diagnostic::from(not_sqs);
        assert_eq!(d.error_type, "InvalidPayload");
        assert!(
            d.error_message
                .starts_with("not an SQS event: invalid type"),
            "{}",
            d.error_message
        );
        let unknown = Invocation::from_json(serde_json::json!({"x": 1})).expect_err("unknown");
        assert_eq!(
            lambda_runtime::Diagnostic::from(unknown).error_message,
            "neither an SQS batch nor an HTTP API request"
        );
    }
}
