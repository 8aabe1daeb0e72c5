//! Publishing notifications: the [`NotificationSink`] port and its SNS FIFO adapter.
//!
//! One message per event: `MessageGroupId` = stream id (per-stream order),
//! `MessageDeduplicationId` = event id (a republished event is dropped by the topic), String
//! attributes `event_type`, `category` and `tenant` for subscription filter policies, `trace`
//! (the commit's X-Ray trace header, [`TRACE_ATTRIBUTE`]) when it has one, and the
//! [`Notification`] JSON as the body. An event too large for SNS travels thin (no payload);
//! consumers read it from the events table.
//!
//! [`publish_packed`] is the one way events go out: packed into `PublishBatch` calls
//! ([`pack`]) with a result per entry. The stream publisher and the DLQ processor's republish
//! both publish through it.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use eventfold::EventEnvelope;
use eventfold_consumers::Notification;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// SNS's message size limit, body plus attributes (256 KiB); also the limit of one
/// `PublishBatch` request's messages together.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Entries per `PublishBatch` call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Longest `MessageGroupId` SNS accepts.
pub const MAX_GROUP_ID: usize = 128;

/// Why a notification was not published. Cheap to clone: one failed `PublishBatch` call is
/// the reason of each of its entries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The stored event's stream id does not parse.
    #[error("{0}")]
    Stream(#[source] eventfold::StreamIdError),
    /// The notification does not serialize.
    #[error("notification does not serialize: {0}")]
    Serialize(#[source] Arc<serde_json::Error>),
    /// Even without its event, the message passes [`MAX_MESSAGE_BYTES`].
    #[error("even the thin notification passes {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// The SDK refused to build the entry.
    #[error("invalid PublishBatch entry: {0}")]
    Entry(#[source] Arc<aws_sdk_sns::error::BuildError>),
    /// The whole `PublishBatch` call failed.
    #[error("PublishBatch failed: {0}")]
    Call(#[source] Arc<crate::faults::SdkFailure>),
    /// SNS failed this entry.
    #[error("{code}: {message}")]
    Failed {
        /// SNS's error code.
        code: String,
        /// SNS's message.
        message: String,
    },
    /// The sink answered no result for this entry.
    #[error("PublishBatch returned no result for the entry")]
    NoResult,
}

/// Where notifications go.
#[async_trait]
pub trait NotificationSink: Send + Sync {
    /// Publishes `batch` in order: one result per entry, in the same order (`Err` holds why
    /// that entry was not published). Callers pass what one `PublishBatch` call holds (see
    /// [`pack`]), so that they can stop between calls; a sink may still split a larger batch.
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>>;
}

/// A notification ready to send: the body it travels with (full, or thin when the full one is
/// too large for SNS) and the size SNS counts for it. Built once per event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// What the message says.
    pub notification: Notification,
    /// The message body (the notification's JSON, full or thin).
    pub body: String,
    /// Body plus attributes, as SNS counts them against [`MAX_MESSAGE_BYTES`].
    pub size: usize,
}

impl Outgoing {
    /// The message of `n`, or why it cannot travel (even thin, it is too large).
    pub fn new(n: Notification) -> Result<Self, PublishError> {
        let body = body(&n)?;
        let size = message_size(&body, &attributes(&n));
        Ok(Self {
            notification: n,
            body,
            size,
        })
    }

    /// The message of a stored event, or why it cannot travel (its stream id does not parse,
    /// or even thin it is too large).
    pub fn of(event: &EventEnvelope) -> Result<Self, PublishError> {
        Notification::of(event)
            .map_err(PublishError::Stream)
            .and_then(Self::new)
    }
}

/// Splits `messages` into consecutive `PublishBatch` calls, in order: each call holds at most
/// [`MAX_BATCH_ENTRIES`] messages of at most [`MAX_MESSAGE_BYTES`] together. Calls mix message
/// groups freely; SNS FIFO keeps the entries' order within each group.
pub fn pack(messages: &[Outgoing]) -> Vec<std::ops::Range<usize>> {
    let mut calls = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        if i > start && (i - start == MAX_BATCH_ENTRIES || bytes + m.size > MAX_MESSAGE_BYTES) {
            calls.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += m.size;
    }
    if start < messages.len() {
        calls.push(start..messages.len());
    }
    calls
}

/// What [`publish_packed`] does after a call that failed an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Makes no further call (a stream batch is retried from its first failed record, so
    /// later messages would only be published twice).
    Stop,
    /// Goes on with the next calls (every message stands on its own).
    Continue,
}

/// What [`publish_packed`] did.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// One per message, in order: `Some(Ok(()))` published; `Some(Err(why))` not published
    /// (its entry failed, its call failed, or the sink answered no result for it); `None`
    /// not sent, as an earlier call failed and [`AfterFailure::Stop`] was asked.
    pub results: Vec<Option<Result<(), PublishError>>>,
    /// `PublishBatch` calls made.
    pub calls: usize,
}

/// Publishes `messages` through `sink`, in order, in the calls [`pack`] makes of them, and
/// reads each entry's result (a sink answering fewer results than entries failed the rest).
pub async fn publish_packed<S: NotificationSink + ?Sized>(
    sink: &S,
    messages: &[Outgoing],
    after_failure: AfterFailure,
) -> Sent {
    let mut sent = Sent {
        results: vec![None; messages.len()],
        calls: 0,
    };
    for call in pack(messages) {
        sent.calls += 1;
        let mut results = sink.publish(&messages[call.clone()]).await.into_iter();
        let mut failed = false;
        for position in call {
            let result = results.next().unwrap_or(Err(PublishError::NoResult));
            failed |= result.is_err();
            sent.results[position] = Some(result);
        }
        if failed && after_failure == AfterFailure::Stop {
            break;
        }
    }
    sent
}

/// The FIFO message group of a stream: the stream id itself, or when longer than SNS allows,
/// a prefix of it and its SHA-256 (still one group per stream).
pub fn group_id(stream_id: &str) -> String {
    if stream_id.len() <= MAX_GROUP_ID {
        return stream_id.to_owned();
    }
    let digest = Sha256::digest(stream_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = MAX_GROUP_ID - hex.len() - 1;
    while !stream_id.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hex}", &stream_id[..cut])
}

/// The message attribute carrying the commit's X-Ray trace header. SNS's `PublishBatch` has
/// no `AWSTraceHeader` system attribute to set (only active tracing sets it, and only for the
/// publisher's own segment), so the header travels as a message attribute, which raw delivery
/// hands to the SQS record's `messageAttributes`.
pub const TRACE_ATTRIBUTE: &str = "trace";

/// The String message attributes of `n`: `(name, value)`; `trace` only when the event's
/// commit carries one.
pub fn attributes(n: &Notification) -> Vec<(&'static str, &str)> {
    let mut attrs = vec![
        ("event_type", n.event_type.as_str()),
        ("category", n.category.as_str()),
        ("tenant", n.tenant.as_str()),
    ];
    if let Some(trace) = n.event.as_ref().and_then(|e| e.metadata.trace.as_deref()) {
        attrs.push((TRACE_ATTRIBUTE, trace));
    }
    attrs
}

/// The size SNS counts for a message: body plus each attribute's name, type and value.
pub fn message_size(body: &str, attributes: &[(&str, &str)]) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(name, value)| name.len() + "String".len() + value.len())
            .sum::<usize>()
}

/// The body `n` travels with: the full notification, or the thin one when the full one would
/// pass [`MAX_MESSAGE_BYTES`].
pub fn body(n: &Notification) -> Result<String, PublishError> {
    let attrs = attributes(n);
    let unserializable = |e| PublishError::Serialize(Arc::new(e));
    let full = serde_json::to_string(n).map_err(unserializable)?;
    if message_size(&full, &attrs) <= MAX_MESSAGE_BYTES {
        return Ok(full);
    }
    tracing::info!(
        stream_id = %n.stream_id,
        version = n.version,
        size = full.len(),
        "event too large for SNS: published thin"
    );
    let thin = serde_json::to_string(&n.clone().thin()).map_err(unserializable)?;
    if message_size(&thin, &attrs) > MAX_MESSAGE_BYTES {
        return Err(PublishError::TooLarge);
    }
    Ok(thin)
}

/// Publishes to an SNS topic with `PublishBatch` (FIFO attributes when the topic is FIFO).
#[derive(Debug, Clone)]
pub struct SnsPublisher {
    client: Client,
    topic_arn: String,
    fifo: bool,
}

impl SnsPublisher {
    /// A publisher to `topic_arn` through `client` (build the client once per cold start).
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        let topic_arn = topic_arn.into();
        Self {
            fifo: topic_arn.ends_with(".fifo"),
            client,
            topic_arn,
        }
    }

    /// A publisher to `topic_arn` with a client built from `sdk`.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, topic_arn: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), topic_arn)
    }

    /// The topic.
    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    fn entry(
        &self,
        id: usize,
        n: &Notification,
        body: String,
    ) -> Result<PublishBatchRequestEntry, PublishError> {
        let mut entry = PublishBatchRequestEntry::builder()
            .id(id.to_string())
            .message(body);
        if self.fifo {
            entry = entry
                .message_group_id(group_id(&n.stream_id))
                .message_deduplication_id(n.event_id.to_string());
        }
        for (name, value) in attributes(n) {
            // SNS refuses empty attribute values; filter policies then see the attribute absent.
            if value.is_empty() {
                continue;
            }
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| PublishError::Entry(Arc::new(e)))?;
            entry = entry.message_attributes(name, attr);
        }
        entry.build().map_err(|e| PublishError::Entry(Arc::new(e)))
    }

    /// One `PublishBatch` call with `entries` (position in the caller's batch, entry).
    async fn call(
        &self,
        entries: Vec<(usize, PublishBatchRequestEntry)>,
        results: &mut [Result<(), PublishError>],
    ) {
        let positions: Vec<usize> = entries.iter().map(|(p, _)| *p).collect();
        let out = self
            .client
            .publish_batch()
            .topic_arn(&self.topic_arn)
            .set_publish_batch_request_entries(Some(entries.into_iter().map(|(_, e)| e).collect()))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let why = PublishError::Call(Arc::new(crate::faults::SdkFailure::new(e)));
                for p in positions {
                    results[p] = Err(why.clone());
                }
                return;
            }
        };
        let mut answered: HashMap<usize, Result<(), PublishError>> = HashMap::new();
        for ok in out.successful() {
            if let Some(p) = ok.id().and_then(|id| id.parse().ok()) {
                answered.insert(p, Ok(()));
            }
        }
        for failed in out.failed() {
            if let Ok(p) = failed.id().parse() {
                answered.insert(
                    p,
                    Err(PublishError::Failed {
                        code: failed.code().to_owned(),
                        message: failed.message().unwrap_or("no message").to_owned(),
                    }),
                );
            }
        }
        for p in positions {
            results[p] = answered.remove(&p).unwrap_or(Err(PublishError::NoResult));
        }
    }
}

#[async_trait]
impl NotificationSink for SnsPublisher {
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Result<(), PublishError>> = vec![Ok(()); batch.len()];
        for call in pack(batch) {
            let mut entries = Vec::with_capacity(call.len());
            for p in call {
                let m = &batch[p];
                match self.entry(p, &m.notification, m.body.clone()) {
                    Ok(entry) => entries.push((p, entry)),
                    Err(why) => results[p] = Err(why),
                }
            }
            if !entries.is_empty() {
                self.call(entries, &mut results).await;
            }
        }
        for (m, r) in batch.iter().zip(&results) {
            if let Err(why) = r {
                let n = &m.notification;
                tracing::warn!(stream_id = %n.stream_id, version = n.version, event_id = %n.event_id, error = %why, "notification not published");
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold::StreamId;
    use eventfold_testkit::event_store::sample_events;
    use serde_json::json;

    fn notification(data_bytes: usize) -> Notification {
        let stream = StreamId::new("acme", "Order", "o-1").expect("valid");
        let mut event = sample_events(&stream, 0, 1).remove(0);
        event.data = json!({"blob": "x".repeat(data_bytes)});
        Notification::of(&event).expect("valid stream")
    }

    #[test]
    fn large_events_travel_thin() {
        let small = notification(10);
        let back: Notification = serde_json::from_str(&body(&small).expect("body")).expect("json");
        assert_eq!(back, small);
        let large = notification(MAX_MESSAGE_BYTES);
        let back: Notification = serde_json::from_str(&body(&large).expect("body")).expect("json");
        assert_eq!(back, large.clone().thin());
        assert!(back.event.is_none());
    }

    fn outgoing(data_bytes: usize) -> Outgoing {
        Outgoing::new(notification(data_bytes)).expect("fits")
    }

    #[test]
    fn calls_hold_ten_entries_and_256_kib_at_most() {
        let small: Vec<Outgoing> = (0..35).map(|_| outgoing(10)).collect();
        assert_eq!(pack(&small), [0..10, 10..20, 20..30, 30..35]);
        assert!(pack(&[]).is_empty());
        // 100 KiB each: two fit in a call, a third would pass 256 KiB.
        let large: Vec<Outgoing> = (0..5).map(|_| outgoing(100 * 1024)).collect();
        assert_eq!(pack(&large), [0..2, 2..4, 4..5]);
        // A message of the maximum size travels alone.
        let mut mixed = vec![outgoing(10), outgoing(MAX_MESSAGE_BYTES), outgoing(10)];
        mixed[1].size = MAX_MESSAGE_BYTES;
        assert_eq!(pack(&mixed), [0..1, 1..2, 2..3]);
        for calls in [pack(&small), pack(&large), pack(&mixed)] {
            let flat: Vec<usize> = calls.into_iter().flatten().collect();
            assert_eq!(
                flat,
                (0..flat.len()).collect::<Vec<_>>(),
                "every message once, in order"
            );
        }
    }

    /// Fails the entries of the versions in `fail`; answers no result for the last entry of
    /// every call when `short`.
    struct Sink {
        fail: Vec<u64>,
        short: bool,
    }

    #[async_trait]
    impl NotificationSink for Sink {
        async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
            let mut results: Vec<Result<(), PublishError>> = batch
                .iter()
                .map(|m| match self.fail.contains(&m.notification.version) {
                    true => Err(PublishError::Failed {
                        code: "refused".to_owned(),
                        message: "by the test".to_owned(),
                    }),
                    false => Ok(()),
                })
                .collect();
            if self.short {
                results.pop();
            }
            results
        }
    }

    #[tokio::test]
    async fn packed_publishing_reads_every_entry_and_stops_only_when_asked() {
        let stream = StreamId::new("acme", "Order", "o-1").expect("valid");
        let messages: Vec<Outgoing> = sample_events(&stream, 0, 25)
            .iter()
            .map(|e| Outgoing::of(e).expect("fits"))
            .collect();
        let failing = Sink {
            fail: vec![12],
            short: false,
        };
        let sent = publish_packed(&failing, &messages, AfterFailure::Continue).await;
        assert_eq!(sent.calls, 3);
        let refused: Vec<usize> = (0..25)
            .filter(|&i| !matches!(sent.results[i], Some(Ok(()))))
            .collect();
        assert_eq!(refused, [11], "version 12 only");
        assert!(
            matches!(&sent.results[11], Some(Err(PublishError::Failed { code, .. })) if code == "refused"),
            "{:?}",
            sent.results[11]
        );

        let sent = publish_packed(&failing, &messages, AfterFailure::Stop).await;
        assert_eq!(sent.calls, 2, "no call after the one that failed");
        assert!(sent.results[..20].iter().all(Option::is_some));
        assert!(sent.results[20..].iter().all(Option::is_none), "never sent");

        let short = Sink {
            fail: Vec::new(),
            short: true,
        };
        let sent = publish_packed(&short, &messages, AfterFailure::Continue).await;
        let missing: Vec<usize> = (0..25)
            .filter(|&i| !matches!(sent.results[i], Some(Ok(()))))
            .collect();
        assert_eq!(missing, [9, 19, 24], "the last entry of each call");
        assert!(matches!(sent.results[9], Some(Err(PublishError::NoResult))));
    }

    #[test]
    fn group_ids_fit_and_stay_distinct() {
        assert_eq!(group_id("acme/Order-o-1"), "acme/Order-o-1");
        let long_a = format!("t/Order-{}a", "x".repeat(200));
        let long_b = format!("t/Order-{}b", "x".repeat(200));
        assert_eq!(group_id(&long_a).len(), MAX_GROUP_ID);
        assert_ne!(group_id(&long_a), group_id(&long_b));
        assert_eq!(group_id(&long_a), group_id(&long_a));
    }
}
