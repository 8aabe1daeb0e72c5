//! DynamoDB stream event source: reads every shard of a table's stream in order
//! (DescribeStream / GetShardIterator / GetRecords), turns the records into the Lambda
//! DynamoDB event, and invokes the function the way Lambda's event source mapping does.
//!
//! Per shard, strictly in order: records that fail the filter criteria are dropped; the rest
//! are batched up to `BatchSize`. A batch item failure checkpoints before the lowest failed
//! sequence number and retries from there (the retry count restarts when the checkpoint
//! moved); a whole-function error bisects the batch when `BisectBatchOnFunctionError` is on
//! (splitting does not count as a retry), else retries it. After `MaximumRetryAttempts`
//! retries of the same first record, or once a record is older than
//! `MaximumRecordAgeInSeconds`, the batch is described on the on-failure destination (a
//! Lambda-style `DDBStreamBatchInfo` message) and the shard moves on.

use super::{Counters, EventHandler, Outcome, Throttle, Tuning, filter, invoke, outcome};
use crate::template::StreamSourceSpec;
use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the shard list is refreshed (new shards after a split or roll-over).
const SHARD_REFRESH: Duration = Duration::from_secs(2);
/// Records asked of one GetRecords call.
const READ_LIMIT: i32 = 1000;

/// Where a stream source describes the batches it gives up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An SQS queue (by URL).
    Sqs {
        /// Queue URL.
        url: String,
    },
    /// An SNS topic (by ARN).
    Sns {
        /// Topic ARN.
        arn: String,
    },
}

/// One DynamoDB event source of a function.
pub struct StreamSource {
    /// Function logical id.
    pub function: String,
    /// Function ARN (in on-failure messages).
    pub function_arn: String,
    /// The stream.
    pub stream_arn: String,
    /// The template's settings.
    pub spec: StreamSourceSpec,
    /// `ReportBatchItemFailures` is on.
    pub report_failures: bool,
    /// On-failure destination.
    pub on_failure: Option<Destination>,
    /// The function.
    pub handler: EventHandler,
    /// The function's timeout.
    pub timeout: Duration,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Pauses.
    pub tuning: Tuning,
}

/// A DynamoDB stream attribute value as DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, ...).
pub fn attribute_json(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": STANDARD.encode(b.as_ref()) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| STANDARD.encode(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        _ => json!({ "NULL": true }),
    }
}

/// An item (attribute map) as DynamoDB JSON.
pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// A stream record as the record of the Lambda DynamoDB event
/// (`aws_lambda_events::event::dynamodb::EventRecord`).
pub fn record_json(record: &Record, stream_arn: &str, region: &str) -> Value {
    let mut change = Map::new();
    if let Some(d) = &record.dynamodb {
        if let Some(t) = d.approximate_creation_date_time {
            // Epoch seconds, as Lambda sends them.
            let secs = t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9;
            change.insert("ApproximateCreationDateTime".into(), json!(secs));
        }
        for (key, image) in [
            ("Keys", &d.keys),
            ("NewImage", &d.new_image),
            ("OldImage", &d.old_image),
        ] {
            if let Some(item) = image {
                change.insert(key.into(), item_json(item));
            }
        }
        if let Some(s) = &d.sequence_number {
            change.insert("SequenceNumber".into(), json!(s));
        }
        change.insert("SizeBytes".into(), json!(d.size_bytes.unwrap_or(0)));
        if let Some(v) = &d.stream_view_type {
            change.insert("StreamViewType".into(), json!(v.as_str()));
        }
    }
    let mut out = json!({
        "eventID": record.event_id.clone().unwrap_or_default(),
        "eventName": record.event_name.as_ref().map(|n| n.as_str()).unwrap_or_default(),
        "eventVersion": record.event_version.clone().unwrap_or_else(|| "1.1".to_owned()),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region.clone().unwrap_or_else(|| region.to_owned()),
        "dynamodb": Value::Object(change),
        "eventSourceARN": stream_arn,
    });
    if let Some(identity) = &record.user_identity {
        out["userIdentity"] = json!({
            "type": identity.r#type.clone().unwrap_or_default(),
            "principalId": identity.principal_id.clone().unwrap_or_default(),
        });
    }
    out
}

/// The region of an ARN (`arn:aws:dynamodb:REGION:...`).
fn arn_region(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or("us-east-1")
}

/// A buffered record.
#[derive(Debug, Clone)]
struct Rec {
    json: Value,
    seq: String,
    /// ApproximateCreationDateTime, epoch seconds.
    created: Option<f64>,
}

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

struct Ctx {
    source: StreamSource,
    client: Client,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
}

/// Polls the stream until the task is aborted.
pub async fn run(sdk: SdkConfig, source: StreamSource) {
    let ctx = Arc::new(Ctx {
        client: Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        source,
    });
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut warn = Throttle::new();
    // Abort the shard readers when this task is aborted.
    struct Guard<'a>(&'a mut HashMap<String, JoinHandle<()>>);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            for h in self.0.values() {
                h.abort();
            }
        }
    }
    let guard = Guard(&mut running);
    loop {
        match shards(&ctx.client, &ctx.source.stream_arn).await {
            Ok(shards) => {
                guard.0.retain(|id, h| {
                    if h.is_finished() {
                        done.insert(id.clone());
                        false
                    } else {
                        true
                    }
                });
                let listed: HashSet<&str> = shards.iter().map(|(id, _)| id.as_str()).collect();
                for (id, parent) in &shards {
                    if done.contains(id) || guard.0.contains_key(id) {
                        continue;
                    }
                    // A child waits for its parent (when the parent is still readable).
                    if let Some(p) = parent
                        && listed.contains(p.as_str())
                        && !done.contains(p)
                    {
                        continue;
                    }
                    let start = if first {
                        ShardIteratorType::from(ctx.source.spec.starting_position.as_str())
                    } else {
                        ShardIteratorType::TrimHorizon
                    };
                    let handle = tokio::spawn(read_shard(ctx.clone(), id.clone(), start));
                    guard.0.insert(id.clone(), handle);
                }
                first = false;
            }
            Err(e) => {
                if warn.ready() {
                    tracing::warn!(function = %ctx.source.function, stream = %ctx.source.stream_arn, error = %e, "describing the stream failed; retrying");
                }
            }
        }
        tokio::time::sleep(SHARD_REFRESH).await;
    }
}

/// (shard id, parent shard id) of every shard of the stream.
async fn shards(client: &Client, arn: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let d = client
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.clone())
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string())?;
        let Some(desc) = d.stream_description else {
            return Ok(out);
        };
        for s in desc.shards.unwrap_or_default() {
            if let Some(id) = s.shard_id {
                out.push((id, s.parent_shard_id));
            }
        }
        match desc.last_evaluated_shard_id {
            Some(last) if Some(&last) != start.as_ref() => start = Some(last),
            _ => return Ok(out),
        }
    }
}

async fn iterator(
    ctx: &Ctx,
    shard: &str,
    kind: ShardIteratorType,
    seq: Option<&str>,
) -> Result<Option<String>, String> {
    ctx.client
        .get_shard_iterator()
        .stream_arn(&ctx.source.stream_arn)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_sequence_number(seq.map(str::to_owned))
        .send()
        .await
        .map(|o| o.shard_iterator)
        .map_err(|e| aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string())
}

/// Reads one shard to its end (a closed shard) or forever (the open one).
async fn read_shard(ctx: Arc<Ctx>, shard: String, start: ShardIteratorType) {
    let src = &ctx.source;
    let batch_size = src.spec.batch_size.max(1) as usize;
    let region = arn_region(&src.stream_arn).to_owned();
    let mut position: Option<String> = None;
    let mut buffer: VecDeque<Rec> = VecDeque::new();
    let mut last_read: Option<String> = None;
    let mut closed = false;
    let mut warn = Throttle::new();
    loop {
        let mut fetched = false;
        if !closed && buffer.len() < batch_size {
            if position.is_none() {
                let acquired = match &last_read {
                    Some(seq) => {
                        iterator(
                            &ctx,
                            &shard,
                            ShardIteratorType::AfterSequenceNumber,
                            Some(seq),
                        )
                        .await
                    }
                    None => iterator(&ctx, &shard, start.clone(), None).await,
                };
                match acquired {
                    Ok(Some(it)) => position = Some(it),
                    Ok(None) => closed = true,
                    Err(e) => {
                        if warn.ready() {
                            tracing::warn!(function = %src.function, %shard, error = %e, "GetShardIterator failed; retrying");
                        }
                        tokio::time::sleep(src.tuning.idle_poll * 5).await;
                        continue;
                    }
                }
            }
            if let Some(it) = position.take() {
                match ctx
                    .client
                    .get_records()
                    .shard_iterator(it)
                    .limit(READ_LIMIT)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let records = out.records.unwrap_or_default();
                        fetched = !records.is_empty();
                        for r in &records {
                            let rec = record_json(r, &src.stream_arn, &region);
                            let seq = rec["dynamodb"]["SequenceNumber"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned();
                            last_read = Some(seq.clone());
                            if !filter::passes(&src.spec.filters, &rec) {
                                Counters::add(&src.counters.filtered, 1);
                                continue;
                            }
                            let created = rec["dynamodb"]["ApproximateCreationDateTime"].as_f64();
                            buffer.push_back(Rec {
                                json: rec,
                                seq,
                                created,
                            });
                        }
                        match out.next_shard_iterator {
                            Some(next) => position = Some(next),
                            None => closed = true,
                        }
                    }
                    Err(e) => {
                        let expired = e.as_service_error().is_some_and(|s| {
                            s.is_expired_iterator_exception()
                                || s.is_trimmed_data_access_exception()
                        });
                        if !expired && warn.ready() {
                            tracing::warn!(function = %src.function, %shard, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "GetRecords failed; retrying");
                        }
                        if e.as_service_error()
                            .is_some_and(|s| s.is_trimmed_data_access_exception())
                        {
                            last_read = None;
                        }
                        // Acquire a fresh iterator after what was read.
                        tokio::time::sleep(src.tuning.idle_poll).await;
                        continue;
                    }
                }
            }
        }
        if buffer.is_empty() {
            if closed {
                return;
            }
            if !fetched {
                tokio::time::sleep(src.tuning.idle_poll).await;
            }
            continue;
        }
        let n = batch_size.min(buffer.len());
        let batch: Vec<Rec> = buffer.drain(..n).collect();
        process(&ctx, &shard, batch).await;
    }
}

/// Delivers one batch to the end: every record succeeds or is given up on.
async fn process(ctx: &Ctx, shard: &str, records: Vec<Rec>) {
    let src = &ctx.source;
    Counters::add(&src.counters.records_in, records.len());
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
            tokio::time::sleep(src.tuning.retry_pause(attempts)).await;
            Counters::add(&src.counters.retried, slice.len());
        }
        Counters::add(&src.counters.invocations, 1);
        let event = json!({ "Records": slice.iter().map(|r| r.json.clone()).collect::<Vec<_>>() });
        let result = invoke(&src.handler, event, src.timeout).await;
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
            Outcome::Success => Counters::add(&src.counters.ok, slice.len()),
            Outcome::Partial(failed) => {
                // Checkpoint before the lowest failed record; retry from it.
                let lowest = failed[0];
                Counters::add(&src.counters.ok, lowest);
                let rest = range.start + lowest..range.end;
                tracing::debug!(function = %src.function, %shard, from = %slice[lowest].seq, "batch item failure; retrying from the lowest failed record");
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
                Counters::add(&src.counters.function_errors, 1);
                tracing::warn!(function = %src.function, %shard, records = slice.len(), error = %e, "function error on a stream batch");
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
    Counters::add(&src.counters.failed, slice.len());
    let (Some(first), Some(last)) = (slice.first(), slice.last()) else {
        return;
    };
    tracing::warn!(function = %src.function, %shard, records = slice.len(), start = %first.seq, end = %last.seq, %condition, "giving up on a stream batch");
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
                Counters::add(&src.counters.sent_to_on_failure, slice.len());
                return;
            }
            Err(e) if attempt == 2 => {
                tracing::error!(function = %src.function, %shard, error = %e, "could not reach the on-failure destination; batch dropped");
            }
            Err(_) => tokio::time::sleep(src.tuning.retry_pause(attempt + 1)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};

    fn sample() -> Record {
        let keys = HashMap::from([
            (
                "stream_id".to_owned(),
                AttributeValue::S("t/Order-1".into()),
            ),
            ("version".to_owned(), AttributeValue::N("3".into())),
        ]);
        let mut image = keys.clone();
        image.insert(
            "events".into(),
            AttributeValue::L(vec![AttributeValue::M(HashMap::from([
                ("type".to_owned(), AttributeValue::S("OrderPlaced".into())),
                ("ok".to_owned(), AttributeValue::Bool(true)),
                ("none".to_owned(), AttributeValue::Null(true)),
                (
                    "tags".to_owned(),
                    AttributeValue::Ss(vec!["a".into(), "b".into()]),
                ),
                ("nums".to_owned(), AttributeValue::Ns(vec!["1".into()])),
            ]))]),
        );
        Record::builder()
            .event_id("e1")
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1_700_000_000))
                    .set_keys(Some(keys))
                    .set_new_image(Some(image))
                    .sequence_number("1100000000017454423009")
                    .size_bytes(120)
                    .stream_view_type(StreamViewType::NewImage)
                    .build(),
            )
            .build()
    }

    #[test]
    fn records_deserialize_into_the_lambda_dynamodb_event() {
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024";
        let rec = record_json(&sample(), arn, "us-east-1");
        assert_eq!(rec["eventSource"], "aws:dynamodb");
        assert_eq!(rec["eventSourceARN"], arn);
        assert_eq!(rec["dynamodb"]["Keys"]["version"], json!({"N": "3"}));
        let event: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(json!({ "Records": [rec] })).expect("a Lambda DynamoDB event");
        let r = &event.records[0];
        assert_eq!(r.event_name, "INSERT");
        assert_eq!(r.event_id, "e1");
        assert_eq!(r.aws_region, "us-east-1");
        assert_eq!(r.event_source_arn.as_deref(), Some(arn));
        assert_eq!(
            r.change.sequence_number.as_deref(),
            Some("1100000000017454423009")
        );
        assert_eq!(r.change.size_bytes, 120);
        assert_eq!(
            r.change.approximate_creation_date_time.timestamp(),
            1_700_000_000
        );
        assert_eq!(r.change.keys.len(), 2);
        // The image reads back through serde_dynamo.
        #[derive(serde::Deserialize)]
        struct Commit {
            stream_id: String,
            version: u64,
            events: Vec<Value>,
        }
        let commit: Commit =
            serde_dynamo::from_item(r.change.new_image.clone()).expect("the image decodes");
        assert_eq!(commit.stream_id, "t/Order-1");
        assert_eq!(commit.version, 3);
        assert_eq!(commit.events[0]["type"], "OrderPlaced");
        assert_eq!(commit.events[0]["tags"], json!(["a", "b"]));
        assert_eq!(commit.events[0]["ok"], json!(true));
    }

    #[test]
    fn attribute_values_render_as_dynamodb_json() {
        assert_eq!(
            attribute_json(&AttributeValue::B(Blob::new(b"hi".to_vec()))),
            json!({"B": "aGk="})
        );
        assert_eq!(
            attribute_json(&AttributeValue::L(vec![AttributeValue::Null(true)])),
            json!({"L": [{"NULL": true}]})
        );
        assert_eq!(
            attribute_json(&AttributeValue::Bs(vec![Blob::new(b"hi".to_vec())])),
            json!({"BS": ["aGk="]})
        );
    }
}
