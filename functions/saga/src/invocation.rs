//! What the function is invoked with (an SQS batch or a scheduled tick, told apart by shape),
//! how an invocation fails as Lambda reports it, and what a tick answers.

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use eventfold_consumers::saga::Ticked;
use lambda_runtime::Diagnostic;
use serde::Serialize;
use serde_json::Value;

use crate::SCHEDULED_EVENT;

/// What the function was invoked with, told apart by the payload's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// An SQS batch of notifications (`{"Records": [...]}`).
    Batch(SqsEvent),
    /// A scheduled event (`"detail-type": "Scheduled Event"`).
    Tick(CloudWatchEvent),
}

impl Invocation {
    /// Reads a Lambda payload; anything but an SQS batch or a scheduled event is refused.
    pub fn from_json(payload: Value) -> Result<Self, InvocationError> {
        if payload.get("Records").is_some() {
            return serde_json::from_value(payload)
                .map(Self::Batch)
                .map_err(InvocationError::NotSqs);
        }
        if payload.get("detail-type").and_then(Value::as_str) == Some(SCHEDULED_EVENT) {
            return serde_json::from_value(payload)
                .map(Self::Tick)
                .map_err(InvocationError::NotScheduled);
        }
        Err(InvocationError::Unrecognised)
    }
}

/// Why an invocation failed as a whole (a batch's records fail one by one instead, in its
/// response). Lambda reports it with its cause chain ([`Diagnostic`]).
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The payload has `Records` but is no SQS event.
    #[error("not an SQS event")]
    NotSqs(#[source] serde_json::Error),
    /// The payload says `Scheduled Event` but is no scheduled event.
    #[error("not a scheduled event")]
    NotScheduled(#[source] serde_json::Error),
    /// The payload is of neither shape.
    #[error("neither an SQS batch nor a scheduled event")]
    Unrecognised,
    /// The tick could not read the deadline index.
    #[error("the deadline tick failed")]
    Tick(#[source] eventfold_consumers::saga::SagaError),
    /// Some due instances failed (the others were handled); the next tick tries them again.
    #[error("{failed} of {due} due instances failed; first {stream}: {error}")]
    DueInstances {
        /// Instances that failed.
        failed: usize,
        /// Instances due.
        due: usize,
        /// The first that failed.
        stream: String,
        /// Its error.
        error: String,
    },
    /// The response could not be serialized.
    #[error("the response does not serialize")]
    Response(#[source] serde_json::Error),
}

impl InvocationError {
    /// A stable name of the failure, Lambda's `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotSqs(_) => "saga.NotSqsEvent",
            Self::NotScheduled(_) => "saga.NotScheduledEvent",
            Self::Unrecognised => "saga.UnrecognisedPayload",
            Self::Tick(_) => "saga.TickFailed",
            Self::DueInstances { .. } => "saga.DueInstancesFailed",
            Self::Response(_) => "saga.ResponseNotSerializable",
        }
    }
}

impl From<InvocationError> for Diagnostic {
    fn from(error: InvocationError) -> Self {
        eventfold_aws::diagnostic::report(error.kind(), &error)
    }
}

/// What a tick reports (the function's response to a scheduled event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TickResponse {
    /// Deadline index entries found due.
    pub due: usize,
    /// Instances fed their timeout.
    pub timed_out: usize,
    /// Entries corrected instead (the instance no longer waited, or waited longer).
    pub stale: usize,
    /// Commands the timeouts sent.
    pub commands_sent: usize,
}

impl From<&Ticked> for TickResponse {
    fn from(t: &Ticked) -> Self {
        Self {
            due: t.due,
            timed_out: t.timed_out,
            stale: t.stale,
            commands_sent: t.handled.commands_sent,
        }
    }
}
