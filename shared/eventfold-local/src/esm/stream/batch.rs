//! One batch of a shard to its end: invocations, checkpoint-and-retry on batch item
//! failures, bisection on function errors, record age, and the on-failure destination.

use super::{Ctx, Destination, Rec};
use crate::esm::{Counters, Outcome, outcome};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::ops::Range;

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn iso(secs: Option<f64>) -> Value {
    secs.and_then(|s| chrono::DateTime::from_timestamp_millis((s * 1000.0) as i64))
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// Delivers one batch to the end: every record succeeds or is given up on.
pub(super) async fn process(ctx: &Ctx, shard: &str, records: Vec<Rec>) {
    let src = &ctx.source;
    Counters::add(&src.target.counters.records_in, records.len());
    let mut work: VecDeque<(Range<usize>, u32)> = VecDeque::from([(0..records.len(), 0)]);
    while let Some((range, attempts)) = work.pop_front() {
        let slice = &records[range.clone()];
        if let Some(max_age) = src.spec.maximum_record_age_seconds {
            let now = now_secs();
            if slice
                .iter()
                .any(|r| r.created.is_some_and(|c| now - c > max_age as f64))
            {
                give_up(ctx, shard, slice, "RecordAgeExceeded", attempts, None).await;
                continue;
            }
        }
        if attempts > 0 {
            tokio::time::sleep(src.target.tuning.retry_pause(attempts)).await;
            Counters::add(&src.target.counters.retried, slice.len());
        }
        let event = json!({ "Records": slice.iter().map(|r| r.json.clone()).collect::<Vec<_>>() });
        if let Some(created) = slice.last().and_then(|r| r.created) {
            ctx.age.observe((now_secs() - created) * 1000.0).await;
        }
        let result = src.target.invoke(event).await;
        let ids: Vec<&str> = slice.iter().map(|r| r.seq.as_str()).collect();
        // `next`: the retry number the range's first record would be at.
        let retry = |work: &mut VecDeque<(Range<usize>, u32)>, range: Range<usize>, next: u32| {
            if src
                .spec
                .maximum_retry_attempts
                .is_some_and(|max| next > max)
            {
                false
            } else {
                work.push_front((range, next));
                true
            }
        };
        match outcome(result, &ids, src.report_failures) {
            Outcome::Success => Counters::add(&src.target.counters.ok, slice.len()),
            Outcome::Partial(failed) => {
                // Checkpoint before the lowest failed record; retry from it.
                let lowest = failed[0];
                Counters::add(&src.target.counters.ok, lowest);
                let rest = range.start + lowest..range.end;
                tracing::debug!(function = %src.target.function, %shard, from = %slice[lowest].seq, "batch item failure; retrying from the lowest failed record");
                // Progress restarts the count: the retry is the new first record's first.
                let next = if lowest > 0 { 1 } else { attempts + 1 };
                if !retry(&mut work, rest.clone(), next) {
                    give_up(
                        ctx,
                        shard,
                        &records[rest],
                        "RetryAttemptsExhausted",
                        attempts + 1,
                        Some(None),
                    )
                    .await;
                }
            }
            Outcome::Error(e) => {
                Counters::add(&src.target.counters.function_errors, 1);
                tracing::warn!(function = %src.target.function, %shard, records = slice.len(), error = %e, "function error on a stream batch");
                if src.spec.bisect_on_error && slice.len() > 1 {
                    let mid = range.start + slice.len() / 2;
                    work.push_front((mid..range.end, attempts));
                    work.push_front((range.start..mid, attempts));
                } else if !retry(&mut work, range.clone(), attempts + 1) {
                    give_up(
                        ctx,
                        shard,
                        slice,
                        "RetryAttemptsExhausted",
                        attempts + 1,
                        Some(Some("Unhandled")),
                    )
                    .await;
                }
            }
        }
    }
}

/// Describes a batch given up on at the on-failure destination and moves on.
/// `response`: `None` when the function was not invoked, `Some(function_error)` otherwise.
async fn give_up(
    ctx: &Ctx,
    shard: &str,
    slice: &[Rec],
    condition: &str,
    invokes: u32,
    response: Option<Option<&str>>,
) {
    let src = &ctx.source;
    Counters::add(&src.target.counters.failed, slice.len());
    let (Some(first), Some(last)) = (slice.first(), slice.last()) else {
        return;
    };
    tracing::warn!(function = %src.target.function, %shard, records = slice.len(), start = %first.seq, end = %last.seq, %condition, "giving up on a stream batch");
    let Some(destination) = &src.on_failure else {
        return;
    };
    let mut message = json!({
        "requestContext": {
            "requestId": uuid::Uuid::now_v7().to_string(),
            "functionArn": src.function_arn,
            "condition": condition,
            "approximateInvokeCount": invokes,
        },
        "version": "1.0",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": first.seq,
            "endSequenceNumber": last.seq,
            "approximateArrivalOfFirstRecord": iso(first.created),
            "approximateArrivalOfLastRecord": iso(last.created),
            "batchSize": slice.len(),
            "streamArn": src.stream_arn,
        },
    });
    if let Some(function_error) = response {
        let mut ctx_json = json!({"statusCode": 200, "executedVersion": "$LATEST"});
        if let Some(fe) = function_error {
            ctx_json["functionError"] = json!(fe);
        }
        message["responseContext"] = ctx_json;
    }
    let body = message.to_string();
    for attempt in 0..3u32 {
        let sent = match destination {
            Destination::Sqs { url } => ctx
                .sqs
                .send_message()
                .queue_url(url)
                .message_body(&body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            Destination::Sns { arn } => ctx
                .sns
                .publish()
                .topic_arn(arn)
                .message(&body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_sns::error::DisplayErrorContext(e).to_string()),
        };
        match sent {
            Ok(()) => {
                Counters::add(&src.target.counters.sent_to_on_failure, slice.len());
                return;
            }
            Err(e) if attempt == 2 => {
                tracing::error!(function = %src.target.function, %shard, error = %e, "could not reach the on-failure destination; batch dropped");
            }
            Err(_) => tokio::time::sleep(src.target.tuning.retry_pause(attempt + 1)).await,
        }
    }
}
