//! `IteratorAge`, as Lambda reports it for a stream event source: the age of the last record
//! of each batch when it is sent to the function, to CloudWatch (`AWS/Lambda`, dimension
//! `FunctionName`). The console reads it back the same way in AWS and here: the stream
//! publisher's position in the stream is not readable otherwise.
//!
//! Lambda aggregates per minute; this sends at most one datapoint a second per function
//! (the largest age since the last one), so a busy stream does not double the emulator's
//! requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The namespace and metric Lambda reports a stream mapping's lag under.
pub const NAMESPACE: &str = "AWS/Lambda";
/// See [`NAMESPACE`].
pub const METRIC: &str = "IteratorAge";

const EVERY: Duration = Duration::from_secs(1);

/// Reports the iterator age of one function's stream mapping.
#[derive(Debug)]
pub(super) struct IteratorAge {
    client: aws_sdk_cloudwatch::Client,
    /// The function's physical name (the metric's `FunctionName`).
    function: String,
    /// Largest age (ms) not yet sent, and when the last datapoint went.
    pending: Mutex<(Option<f64>, Option<Instant>)>,
}

impl IteratorAge {
    pub(super) fn new(client: aws_sdk_cloudwatch::Client, function_arn: &str) -> Self {
        let function = function_arn
            .rsplit(':')
            .next()
            .unwrap_or(function_arn)
            .to_owned();
        Self {
            client,
            function,
            pending: Mutex::new((None, None)),
        }
    }

    /// Notes that a batch whose last record is `age_ms` old is being sent to the function.
    pub(super) async fn observe(&self, age_ms: f64) {
        let due = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let max = p.0.map_or(age_ms, |m: f64| m.max(age_ms));
            if p.1.is_some_and(|last| last.elapsed() < EVERY) {
                p.0 = Some(max);
                None
            } else {
                *p = (None, Some(Instant::now()));
                Some(max)
            }
        };
        let Some(age) = due else { return };
        let datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name(METRIC)
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("FunctionName")
                    .value(&self.function)
                    .build(),
            )
            .unit(aws_sdk_cloudwatch::types::StandardUnit::Milliseconds)
            .value(age.max(0.0))
            .build();
        let sent = self
            .client
            .put_metric_data()
            .namespace(NAMESPACE)
            .metric_data(datum)
            .send()
            .await;
        if let Err(e) = sent {
            // A lost datapoint costs the console one reading, never the delivery.
            tracing::debug!(function = %self.function, error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e), "IteratorAge not recorded");
        }
    }
}
