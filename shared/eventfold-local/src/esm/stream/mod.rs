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

mod age;
mod batch;
mod record;

pub use record::{attribute_json, item_json, record_json};

use super::{Counters, Target, Throttle, filter};
use crate::template::StreamSourceSpec;
use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodbstreams::operation::describe_stream::DescribeStreamError;
use aws_sdk_dynamodbstreams::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// The function, its counters and pauses.
    pub target: Target,
}

/// A buffered record.
#[derive(Debug, Clone)]
struct Rec {
    json: Value,
    seq: String,
    /// ApproximateCreationDateTime, epoch seconds.
    created: Option<f64>,
}

struct Ctx {
    source: StreamSource,
    client: Client,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    age: age::IteratorAge,
}

/// Polls the stream until the task is aborted.
/// `service` is what Lambda's service calls as itself (the `IteratorAge` metric).
pub async fn run(sdk: SdkConfig, service: SdkConfig, source: StreamSource) {
    let ctx = Arc::new(Ctx {
        client: Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        sns: aws_sdk_sns::Client::new(&sdk),
        age: age::IteratorAge::new(
            aws_sdk_cloudwatch::Client::new(&service),
            &source.function_arn,
        ),
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
                    tracing::warn!(function = %ctx.source.target.function, stream = %ctx.source.stream_arn, error = %DisplayErrorContext(&e), "describing the stream failed; retrying");
                }
            }
        }
        tokio::time::sleep(SHARD_REFRESH).await;
    }
}

/// (shard id, parent shard id) of every shard of the stream.
async fn shards(
    client: &Client,
    arn: &str,
) -> Result<Vec<(String, Option<String>)>, SdkError<DescribeStreamError>> {
    let mut out = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let d = client
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.clone())
            .send()
            .await?;
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
) -> Result<Option<String>, SdkError<GetShardIteratorError>> {
    ctx.client
        .get_shard_iterator()
        .stream_arn(&ctx.source.stream_arn)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_sequence_number(seq.map(str::to_owned))
        .send()
        .await
        .map(|o| o.shard_iterator)
}

/// Reads one shard to its end (a closed shard) or forever (the open one).
async fn read_shard(ctx: Arc<Ctx>, shard: String, start: ShardIteratorType) {
    let src = &ctx.source;
    let batch_size = src.spec.batch_size.max(1) as usize;
    let region = record::arn_region(&src.stream_arn).to_owned();
    let mut position: Option<String> = None;
    let mut buffer: VecDeque<Rec> = VecDeque::new();
    let mut last_read: Option<String> = None;
    let mut closed = false;
    let mut warn = Throttle::new();
    let mut next_read = tokio::time::Instant::now();
    loop {
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
                            tracing::warn!(function = %src.target.function, %shard, error = %DisplayErrorContext(&e), "GetShardIterator failed; retrying");
                        }
                        tokio::time::sleep(src.target.tuning.idle_poll * 5).await;
                        continue;
                    }
                }
            }
            if let Some(it) = position.take() {
                // Lambda's pace: what the shard gains between two reads is one batch.
                tokio::time::sleep_until(next_read).await;
                next_read = tokio::time::Instant::now() + src.target.tuning.shard_poll;
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
                        for r in &records {
                            let rec = record_json(r, &src.stream_arn, &region);
                            let seq = rec["dynamodb"]["SequenceNumber"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned();
                            last_read = Some(seq.clone());
                            if !filter::passes(&src.spec.filters, &rec) {
                                Counters::add(&src.target.counters.filtered, 1);
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
                            tracing::warn!(function = %src.target.function, %shard, error = %DisplayErrorContext(&e), "GetRecords failed; retrying");
                        }
                        if e.as_service_error()
                            .is_some_and(|s| s.is_trimmed_data_access_exception())
                        {
                            last_read = None;
                        }
                        // Acquire a fresh iterator after what was read.
                        tokio::time::sleep(src.target.tuning.idle_poll).await;
                        continue;
                    }
                }
            }
        }
        if buffer.is_empty() {
            if closed {
                return;
            }
            // The next read waits for its turn (`next_read`).
            continue;
        }
        let n = batch_size.min(buffer.len());
        let batch: Vec<Rec> = buffer.drain(..n).collect();
        batch::process(&ctx, &shard, batch).await;
    }
}
