//! What the DLQ processor needs from AWS besides its table: sending a message back to a
//! consumer's queue ([`QueueSender`], SQS), and the commits a failed stream batch held
//! ([`StreamRange`], DynamoDB Streams).
//!
//! A stream batch that exhausted its retries is described on the on-failure queue by its
//! shard and sequence-number range (`DDBStreamBatchInfo`), not by its records. While the
//! stream still retains them (24 h), [`ShardReader`] reads that range and returns the keys of
//! the commits it held (stream id, first version, event count); the commits themselves are
//! then read from the events table, which is the truth and keeps them for ever.
//!
//! Only this function uses them, so they live with it rather than in `eventfold-aws`.

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, ShardIteratorType};
use eventfold_aws::SdkConfig;
use eventfold_aws::faults::{Fault, classify};
use serde::Deserialize;

/// The cause an adapter error carries (an SDK error, or a fake's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a message was not sent to a queue.
#[derive(Debug, thiserror::Error)]
#[error("sending to {queue_url} failed")]
pub struct SendError {
    /// The queue.
    pub queue_url: String,
    /// What failed.
    #[source]
    pub source: BoxError,
}

/// Sends a message to an SQS queue.
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// Sends `body` to `queue_url`, in FIFO message group `group` with deduplication id
    /// `dedup` when the queue is FIFO.
    async fn send(
        &self,
        queue_url: &str,
        body: &str,
        group: Option<&str>,
        dedup: &str,
    ) -> Result<(), SendError>;
}

/// SQS through the SDK.
#[derive(Debug, Clone)]
pub struct SqsSender {
    client: aws_sdk_sqs::Client,
}

impl SqsSender {
    /// A sender with a client built from `sdk`.
    pub fn from_sdk(sdk: &SdkConfig) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(sdk),
        }
    }
}

#[async_trait]
impl QueueSender for SqsSender {
    async fn send(
        &self,
        queue_url: &str,
        body: &str,
        group: Option<&str>,
        dedup: &str,
    ) -> Result<(), SendError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(body);
        if queue_url.ends_with(".fifo") {
            send = send
                .message_group_id(group.unwrap_or("dead-letters"))
                .message_deduplication_id(dedup);
        }
        send.send().await.map(|_| ()).map_err(|e| SendError {
            queue_url: queue_url.to_owned(),
            source: Box::new(e),
        })
    }
}

/// A failed stream batch as Lambda's on-failure destination describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInfo {
    /// The shard.
    pub shard_id: String,
    /// First sequence number of the batch.
    pub start_sequence_number: String,
    /// Last sequence number of the batch.
    pub end_sequence_number: String,
    /// The stream.
    pub stream_arn: String,
    /// Records in the batch.
    #[serde(default)]
    pub batch_size: u64,
}

/// Why an on-failure message is not a stream batch description.
#[derive(Debug, thiserror::Error)]
pub enum BatchInfoError {
    /// The body is not JSON.
    #[error("not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The body has no `DDBStreamBatchInfo`.
    #[error("no DDBStreamBatchInfo in the message")]
    Missing,
    /// Its `DDBStreamBatchInfo` lacks a field or has one of the wrong type.
    #[error("bad DDBStreamBatchInfo")]
    Bad(#[source] serde_json::Error),
}

impl BatchInfo {
    /// Reads the `DDBStreamBatchInfo` of an on-failure message body.
    pub fn from_message(body: &str) -> Result<Self, BatchInfoError> {
        let v: serde_json::Value = serde_json::from_str(body).map_err(BatchInfoError::NotJson)?;
        let info = v.get("DDBStreamBatchInfo").ok_or(BatchInfoError::Missing)?;
        serde_json::from_value(info.clone()).map_err(BatchInfoError::Bad)
    }
}

/// The key of one commit of the events table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitKey {
    /// Its stream.
    pub stream_id: String,
    /// Version of its first event.
    pub version: u64,
    /// Events it holds (1 when the record does not say).
    pub count: u64,
}

/// Resolves a failed stream batch to the commits it held.
#[async_trait]
pub trait StreamRange: Send + Sync {
    /// The commits inserted in `info`'s range, in stream order; `Err` when the range can no
    /// longer be read (trimmed) or the stream fails. `transient` says whether a retry may help.
    async fn commits(&self, info: &BatchInfo) -> Result<Vec<CommitKey>, RangeError>;
}

/// Why a range could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("reading the stream failed")]
pub struct RangeError {
    /// Whether retrying later may succeed (false: trimmed, or a bad description).
    pub transient: bool,
    /// What failed.
    #[source]
    pub source: BoxError,
}

/// Reads a shard of the events table's stream.
#[derive(Debug, Clone)]
pub struct ShardReader {
    client: aws_sdk_dynamodbstreams::Client,
}

impl ShardReader {
    /// A reader with a client built from `sdk`.
    pub fn from_sdk(sdk: &SdkConfig) -> Self {
        Self {
            client: aws_sdk_dynamodbstreams::Client::new(sdk),
        }
    }
}

/// Orders decimal sequence numbers (they outgrow `u128`'s digits only in theory, but are
/// compared as text of equal length to be safe).
fn seq_le(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

fn sdk_range_error<E, R>(e: SdkError<E, R>) -> RangeError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let trimmed = e
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|c| c == "TrimmedDataAccessException");
    RangeError {
        transient: !trimmed && classify(&e) == Fault::Transient,
        source: Box::new(e),
    }
}

/// Reads at most this many `GetRecords` pages for one range.
const MAX_PAGES: usize = 50;

#[async_trait]
impl StreamRange for ShardReader {
    async fn commits(&self, info: &BatchInfo) -> Result<Vec<CommitKey>, RangeError> {
        let mut iterator = self
            .client
            .get_shard_iterator()
            .stream_arn(&info.stream_arn)
            .shard_id(&info.shard_id)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(&info.start_sequence_number)
            .send()
            .await
            .map_err(sdk_range_error)?
            .shard_iterator;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let Some(it) = iterator.take() else { break };
            let page = self
                .client
                .get_records()
                .shard_iterator(it)
                .limit(1000)
                .send()
                .await
                .map_err(sdk_range_error)?;
            let records = page.records.unwrap_or_default();
            let empty = records.is_empty();
            for r in records {
                let Some(change) = r.dynamodb else { continue };
                let seq = change.sequence_number.clone().unwrap_or_default();
                if !seq_le(&seq, &info.end_sequence_number) {
                    return Ok(out);
                }
                if r.event_name.as_ref().map(|n| n.as_str()) != Some("INSERT") {
                    continue;
                }
                let keys = change.keys.unwrap_or_default();
                let image = change.new_image.unwrap_or_default();
                let text = |name: &str| match keys.get(name).or_else(|| image.get(name)) {
                    Some(StreamValue::S(s) | StreamValue::N(s)) => Some(s.clone()),
                    _ => None,
                };
                let (Some(stream_id), Some(version)) = (
                    text("stream_id"),
                    text("version").and_then(|v| v.parse::<u64>().ok()),
                ) else {
                    continue;
                };
                let count = match image.get("count") {
                    Some(StreamValue::N(n)) => n.parse().unwrap_or(1),
                    _ => 1,
                };
                out.push(CommitKey {
                    stream_id,
                    version,
                    count,
                });
            }
            iterator = page.next_shard_iterator;
            if empty && iterator.is_some() && out.is_empty() {
                // An open shard answers empty pages before reaching the range's records.
                continue;
            }
            if empty {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_as_numbers() {
        assert!(seq_le("9", "10"));
        assert!(seq_le("100", "100"));
        assert!(!seq_le("101", "100"));
        assert!(!seq_le("1000", "999"));
    }

    #[test]
    fn the_on_failure_message_is_read() {
        let body = r#"{"requestContext":{"condition":"RetryAttemptsExhausted"},
            "DDBStreamBatchInfo":{"shardId":"s-1","startSequenceNumber":"10",
            "endSequenceNumber":"20","streamArn":"arn:aws:dynamodb:x","batchSize":3,
            "approximateArrivalOfFirstRecord":"2026-01-01T00:00:00Z"}}"#;
        let info = BatchInfo::from_message(body).expect("reads");
        assert_eq!(info.shard_id, "s-1");
        assert_eq!(info.start_sequence_number, "10");
        assert_eq!(info.end_sequence_number, "20");
        assert_eq!(info.batch_size, 3);
        assert!(BatchInfo::from_message("{}").is_err());
        assert!(BatchInfo::from_message("nope").is_err());
    }
}
