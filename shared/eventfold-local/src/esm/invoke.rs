//! Invoking a function as Lambda does, and reading its response against the batch.

use super::{Counters, Tuning};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Why a handler failed: any error, as the Lambda runtime takes one.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A function as an event source mapping invokes it: the Lambda event JSON in, the
/// function's JSON response out; `Err` means the function failed as a whole.
pub type EventHandler = Arc<
    dyn Fn(Value) -> Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>
        + Send
        + Sync,
>;

/// Wraps an async closure as an [`EventHandler`]; its error is any error type (or a message).
pub fn event_handler<F, Fut, E>(f: F) -> EventHandler
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, E>> + Send + 'static,
    E: Into<HandlerError>,
{
    Arc::new(move |event| {
        let answer = f(event);
        Box::pin(async move { answer.await.map_err(Into::into) })
    })
}

/// Why a batch failed as a whole: a function error, as Lambda counts one.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The handler returned an error.
    #[error(transparent)]
    Handler(HandlerError),
    /// The handler panicked.
    #[error("the function crashed: {0}")]
    Crashed(#[source] tokio::task::JoinError),
    /// The handler ran past the function's timeout.
    #[error("Task timed out after {:.2} seconds", .0.as_secs_f64())]
    TimedOut(Duration),
    /// The response has a `batchItemFailures` that is not a list.
    #[error("batchItemFailures is not a list: {0}")]
    FailuresNotAList(Value),
    /// An entry of `batchItemFailures` names no item of the batch.
    #[error("batchItemFailures names an unknown item: {0}")]
    UnknownItem(Value),
}

/// The function an event source invokes, and the source's counters and pauses.
#[derive(Clone)]
pub struct Target {
    /// Function logical id.
    pub function: String,
    /// The function.
    pub handler: EventHandler,
    /// The function's timeout.
    pub timeout: Duration,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Pauses (and the SQS visibility-timeout override).
    pub tuning: Tuning,
}

impl Target {
    /// Invokes the function once on `event` (counted as an invocation), as Lambda would: in
    /// its own task (a panic is a function error) and within the function's timeout.
    pub(crate) async fn invoke(&self, event: Value) -> Result<Value, FunctionError> {
        Counters::add(&self.counters.invocations, 1);
        let records = event
            .get("Records")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let started = std::time::Instant::now();
        let result = invoke(&self.handler, event, self.timeout).await;
        // Each invocation at debug level (`RUST_LOG=eventfold_local::esm=debug`): where a
        // burst's time goes, hop by hop.
        tracing::debug!(
            function = %self.function,
            records,
            ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "invoked"
        );
        result
    }
}

/// How an invocation ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Every record succeeded.
    Success,
    /// `batchItemFailures` named these records (indexes into the batch, ascending).
    Partial(Vec<usize>),
    /// The function failed as a whole (or answered with an unusable failure list).
    Error(FunctionError),
}

/// Runs `handler` once on `event` within `timeout`, in its own task.
async fn invoke(
    handler: &EventHandler,
    event: Value,
    timeout: Duration,
) -> Result<Value, FunctionError> {
    let mut task = tokio::spawn(handler(event));
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(result)) => result.map_err(FunctionError::Handler),
        Ok(Err(e)) => Err(FunctionError::Crashed(e)),
        Err(_) => {
            task.abort();
            Err(FunctionError::TimedOut(timeout))
        }
    }
}

/// Reads a function response against the batch's item identifiers, as Lambda does: no
/// `batchItemFailures` (or an empty list) is success; an entry without a known, non-empty
/// `itemIdentifier` makes the whole batch a failure. Without `ReportBatchItemFailures` the
/// response is ignored.
pub(crate) fn outcome(
    result: Result<Value, FunctionError>,
    ids: &[&str],
    report_failures: bool,
) -> Outcome {
    let response = match result {
        Err(e) => return Outcome::Error(e),
        Ok(r) => r,
    };
    if !report_failures {
        return Outcome::Success;
    }
    let failures = match response.get("batchItemFailures") {
        None | Some(Value::Null) => return Outcome::Success,
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Outcome::Error(FunctionError::FailuresNotAList(other.clone()));
        }
    };
    let mut failed = Vec::with_capacity(failures.len());
    for f in failures {
        let id = f
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .unwrap_or("");
        match ids.iter().position(|i| !id.is_empty() && *i == id) {
            Some(index) => failed.push(index),
            None => {
                return Outcome::Error(FunctionError::UnknownItem(f.clone()));
            }
        }
    }
    if failed.is_empty() {
        return Outcome::Success;
    }
    failed.sort_unstable();
    failed.dedup();
    Outcome::Partial(failed)
}

#[cfg(test)]
impl PartialEq for Outcome {
    /// Errors compare by what they say.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Success, Self::Success) => true,
            (Self::Partial(a), Self::Partial(b)) => a == b,
            (Self::Error(a), Self::Error(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_responses_like_lambda() {
        let ids = ["1", "2", "3"];
        assert_eq!(outcome(Ok(json!({})), &ids, true), Outcome::Success);
        assert_eq!(outcome(Ok(Value::Null), &ids, true), Outcome::Success);
        assert_eq!(
            outcome(Ok(json!({"batchItemFailures": []})), &ids, true),
            Outcome::Success
        );
        assert_eq!(
            outcome(
                Ok(
                    json!({"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]})
                ),
                &ids,
                true
            ),
            Outcome::Partial(vec![1, 2])
        );
        // Ignored without ReportBatchItemFailures.
        assert_eq!(
            outcome(
                Ok(json!({"batchItemFailures": [{"itemIdentifier": "3"}]})),
                &ids,
                false
            ),
            Outcome::Success
        );
        for bad in [
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"id": "1"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "9"}]}),
            json!({"batchItemFailures": "1"}),
        ] {
            assert!(
                matches!(outcome(Ok(bad.clone()), &ids, true), Outcome::Error(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            outcome(Err(FunctionError::Handler("boom".into())), &ids, true),
            Outcome::Error(e) if e.to_string() == "boom"
        ));
    }

    #[tokio::test]
    async fn invoke_turns_panics_and_timeouts_into_function_errors() {
        let ok = event_handler(|e| async move { Ok::<_, HandlerError>(json!({"echo": e})) });
        assert_eq!(
            invoke(&ok, json!(1), Duration::from_secs(1))
                .await
                .expect("answers"),
            json!({"echo": 1})
        );
        let panics = event_handler(|_| async move {
            if true {
                panic!("boom");
            }
            Ok::<_, HandlerError>(Value::Null)
        });
        assert!(
            invoke(&panics, json!(1), Duration::from_secs(1))
                .await
                .is_err()
        );
        let slow = event_handler(|_| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, HandlerError>(Value::Null)
        });
        let err = invoke(&slow, json!(1), Duration::from_millis(20))
            .await
            .expect_err("times out");
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
