//! Queue intake: every record of an SQS batch from the processor's queues, routed by its
//! source. A message a consumer's DLQ holds becomes a dead letter joined with the consumer's
//! failure note; a stream batch description goes to [`crate::republish`]. `Arrival` is the
//! one place a [`DeadLetter`] is built.

use crate::redrive::RangeError;
use crate::{DlqProcessor, STREAM_SOURCE, chain};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use eventfold::StreamId;
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::{
    DeadLetter, DeadLetterError, Status, UNKNOWN_TENANT, letter_id, record_blocking,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// What one batch did: the response for Lambda and the letters it recorded.
#[derive(Debug, Default)]
pub struct Processed {
    /// Records to redeliver.
    pub response: SqsBatchResponse,
    /// Letters recorded (new or seen again).
    pub recorded: Vec<DeadLetter>,
}

/// Why a record was not handled; its queue delivers it again.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record comes from a queue the processor does not know.
    #[error("a record from an unknown queue {0}")]
    UnknownQueue(String),
    /// The dead-letter store failed.
    #[error(transparent)]
    Store(#[from] DeadLetterError),
    /// The stream range of a batch description cannot be read yet (a retry may help).
    #[error("the stream range is not readable yet")]
    RangeNotReadable(#[source] RangeError),
}

/// One SQS record as a dead letter sees it: where it came from, its message, its deliveries.
pub(crate) struct Arrival<'a> {
    record: &'a SqsMessage,
    /// The queue's name.
    pub(crate) queue: &'a str,
    /// The record's message id.
    pub(crate) message_id: String,
    /// The record's body.
    pub(crate) body: String,
    /// When it is handled.
    pub(crate) now: DateTime<Utc>,
}

impl<'a> Arrival<'a> {
    /// `record`, from the queue named `queue`.
    pub(crate) fn of(record: &'a SqsMessage, queue: &'a str) -> Self {
        Self {
            record,
            queue,
            message_id: record.message_id.clone().unwrap_or_default(),
            body: record.body.clone().unwrap_or_default(),
            now: Utc::now(),
        }
    }

    /// How often its queue delivered it (1 when the record does not say).
    pub(crate) fn receive_count(&self) -> u32 {
        self.record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    /// The open letter `id` of `consumer` for this record, saying `last_error`: from its
    /// queue, with its message id, body and deliveries, first failed when the queue first
    /// handed it out and last failed now; of no tenant ([`UNKNOWN_TENANT`]), no stream, no
    /// attributes, blocked behind nothing and changed by nobody. Callers set what they know
    /// beyond that (struct update syntax).
    pub(crate) fn letter(
        &self,
        id: String,
        consumer: &str,
        last_error: Option<String>,
    ) -> DeadLetter {
        DeadLetter {
            id,
            tenant: UNKNOWN_TENANT.to_owned(),
            status: Status::Open,
            source_queue: self.queue.to_owned(),
            consumer: consumer.to_owned(),
            stream_id: None,
            first_version: None,
            last_version: None,
            event_type: None,
            message_id: Some(self.message_id.clone()),
            body: self.body.clone(),
            attributes: BTreeMap::new(),
            receive_count: self.receive_count(),
            first_failure_at: epoch_ms(&self.record.attributes, "ApproximateFirstReceiveTimestamp")
                .unwrap_or(self.now),
            last_failure_at: self.now,
            last_error,
            blocked_behind: None,
            changed_by: None,
            changed_at: None,
            reason: None,
        }
    }
}

/// The tenant a message carries besides its body: its `tenant` message attribute, or the
/// tenant part of its FIFO `MessageGroupId` (`{tenant}/{stream}`, as the fan-out groups
/// messages), each checked as a token's tenant claim is ([`StreamId::check_tenant`]: no
/// reserved `_` names). `None` when neither is usable, or when both are and disagree (the
/// letter would show one tenant's message to another: it stays with the operators).
pub(crate) fn carried_tenant(record: &SqsMessage) -> Option<String> {
    let usable = |t: &str| StreamId::check_tenant(t).is_ok().then(|| t.to_owned());
    let attribute = record
        .message_attributes
        .get("tenant")
        .and_then(|v| v.string_value.as_deref())
        .and_then(usable);
    let group = record
        .attributes
        .get("MessageGroupId")
        .and_then(|g| g.split_once('/'))
        .and_then(|(t, _)| usable(t));
    match (attribute, group) {
        (Some(a), Some(g)) if a != g => None,
        (a, g) => a.or(g),
    }
}

fn failure(id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id.to_owned();
    f
}

fn epoch_ms(attrs: &HashMap<String, String>, name: &str) -> Option<DateTime<Utc>> {
    attrs
        .get(name)
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}

impl DlqProcessor {
    /// Handles every record: a DLQ message becomes a letter; a stream batch description is
    /// republished (its failures become letters, and the record is retried while deliveries
    /// remain). A record that could not be handled (the store failed) is redelivered.
    pub async fn process(&self, event: SqsEvent) -> Processed {
        self.process_by(event, None).await
    }

    /// [`DlqProcessor::process`], done by `deadline` (the invocation's, less a margin:
    /// [`crate::answer_by`]): republishing stops backing off in time, and what was not
    /// republished, or not reached, is a batch item failure (its queue delivers it again)
    /// instead of a timeout that would redeliver the whole batch.
    pub async fn process_by(&self, event: SqsEvent, deadline: Option<Instant>) -> Processed {
        let mut out = Processed::default();
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(message_id = %id, "out of time before this record; redelivered");
                out.response.batch_item_failures.push(failure(&id));
                continue;
            }
            let arn = record.event_source_arn.clone().unwrap_or_default();
            let outcome = match self.sources.of(&arn) {
                Some((STREAM_SOURCE, queue)) => self.stream_failure(record, &queue, deadline).await,
                Some((consumer, queue)) => self
                    .dead_message(record, consumer, &queue)
                    .await
                    .map(|l| (vec![l], false))
                    .map_err(RecordError::from),
                None => Err(RecordError::UnknownQueue(arn)),
            };
            match outcome {
                Ok((letters, retry)) => {
                    if retry {
                        out.response.batch_item_failures.push(failure(&id));
                    }
                    out.recorded.extend(letters);
                }
                Err(e) => {
                    let error = chain(&e);
                    tracing::error!(message_id = %id, %error, "dead-letter record not handled; redelivered");
                    out.response.batch_item_failures.push(failure(&id));
                }
            }
        }
        for l in &out.recorded {
            metrics::counter!("dead_letters", "consumer" => l.consumer.clone()).increment(1);
            tracing::warn!(id = %l.id, consumer = %l.consumer, tenant = %l.tenant, stream_id = l.stream_id.as_deref().unwrap_or(""), blocked_behind = l.blocked_behind.as_deref().unwrap_or(""), error = l.last_error.as_deref().unwrap_or(""), "dead letter recorded");
        }
        if let Some(hook) = &self.on_letter {
            out.recorded.iter().for_each(|l| hook(l));
        }
        out
    }

    /// A message a consumer's queue gave up on -> its letter, with the consumer's last error;
    /// of the stream's tenant when it is a notification, else of the tenant it carries
    /// ([`carried_tenant`]), else [`UNKNOWN_TENANT`].
    async fn dead_message(
        &self,
        record: &SqsMessage,
        consumer: &str,
        queue: &str,
    ) -> Result<DeadLetter, DeadLetterError> {
        let arrival = Arrival::of(record, queue);
        let announced = serde_json::from_str::<Notification>(&arrival.body)
            .ok()
            .and_then(|n| StreamId::parse(&n.stream_id).ok().map(|s| (n, s)));
        let note = self.letters.note_of(consumer, &arrival.message_id).await?;
        let mut attributes: BTreeMap<String, String> = record
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in &record.message_attributes {
            if let Some(s) = &v.string_value {
                attributes.insert(k.clone(), s.clone());
            }
        }
        let last_error = match (&note, &announced) {
            (Some(n), _) => Some(n.error.clone()),
            (None, None) => Some("body is not a notification".to_owned()),
            (None, Some(_)) => None,
        };
        let mut letter = DeadLetter {
            attributes,
            last_failure_at: note.as_ref().map_or(arrival.now, |n| n.at),
            ..arrival.letter(
                letter_id(&[queue, &arrival.message_id]),
                consumer,
                last_error,
            )
        };
        if announced.is_none()
            && let Some(tenant) = carried_tenant(record)
        {
            // Not a notification, but the message says whose it is: the tenant's admins see
            // it (`GET /dead-letters`), as they see the letters of their streams.
            letter.tenant = tenant;
        }
        if let Some((n, stream)) = announced {
            letter = DeadLetter {
                tenant: stream.tenant().to_owned(),
                stream_id: Some(n.stream_id),
                first_version: Some(n.version),
                last_version: Some(n.version),
                event_type: Some(n.event_type),
                ..letter
            };
        }
        record_blocking(&*self.letters, letter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessageAttribute;

    fn message(group: Option<&str>, tenant: Option<&str>) -> SqsMessage {
        let mut m = SqsMessage::default();
        if let Some(g) = group {
            m.attributes.insert("MessageGroupId".into(), g.into());
        }
        if let Some(t) = tenant {
            let mut a = SqsMessageAttribute::default();
            a.string_value = Some(t.into());
            a.data_type = Some("String".into());
            m.message_attributes.insert("tenant".into(), a);
        }
        m
    }

    #[test]
    fn a_message_is_attributed_by_what_it_carries_checked_as_a_token_claim() {
        let of = |g, t| carried_tenant(&message(g, t));
        assert_eq!(
            of(Some("acme/Order-o-1"), Some("acme")).as_deref(),
            Some("acme")
        );
        assert_eq!(of(Some("acme/Order-o-1"), None).as_deref(), Some("acme"));
        assert_eq!(of(None, Some("acme")).as_deref(), Some("acme"));
        // A reserved or malformed claim is not usable; the other one still is.
        assert_eq!(
            of(Some("acme/Order-o-1"), Some("_system")).as_deref(),
            Some("acme")
        );
        assert_eq!(of(Some("_cp/x"), Some("acme")).as_deref(), Some("acme"));
        // Nothing usable, or two tenants that disagree: no tenant (the operators' `_unknown`).
        for (g, t) in [
            (None, None),
            (Some("no-tenant-here"), None),
            (Some("a b/Order-1"), Some("")),
            (Some("globex/Order-1"), Some("acme")),
            (None, Some(&*"x".repeat(65))),
        ] {
            assert_eq!(of(g, t), None, "{g:?} {t:?}");
        }
    }
}
