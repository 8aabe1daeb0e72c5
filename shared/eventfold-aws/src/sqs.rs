//! SQS FIFO batches of notifications with partial failures (`ReportBatchItemFailures`).
//!
//! Records are handled in order. Within a message group, the first failure stops the group:
//! that record and every later record of the group are reported failed (later ones without
//! being handled), so the queue redelivers them in order; other groups go on. A body that is
//! not a [`Notification`] is a poison message: a failure of its record (it reaches the DLQ after
//! `maxReceiveCount`) and of the rest of its group.
//!
//! [`process_fifo_groups_noting`] keeps those semantics for a consumer that takes the whole
//! batch at once, grouped (the projector: one batched read per batch, one write per view and
//! stream); [`process_fifo_batch_noting`] hands records over one at a time (the saga).
//!
//! Each record is handled inside a `message` span naming its stream, version, correlation and
//! causation ids and the X-Ray trace header it carries ([`record_trace`]), so a consumer's log
//! lines join the trace of the command that caused them.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::{DeadLetterStore, FailureNote};
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use tracing::Instrument;

/// The record attribute naming a FIFO message group.
pub const GROUP_ATTRIBUTE: &str = "MessageGroupId";

/// The FIFO message group of `record` (`None` on a standard queue).
pub fn message_group(record: &SqsMessage) -> Option<&str> {
    record.attributes.get(GROUP_ATTRIBUTE).map(String::as_str)
}

/// The system attribute SQS sets for X-Ray when the sender traced the message.
pub const AWS_TRACE_HEADER: &str = "AWSTraceHeader";

/// The X-Ray trace header a record carries: the `trace` message attribute the stream
/// publisher sets ([`crate::sns::TRACE_ATTRIBUTE`]), else the `AWSTraceHeader` system
/// attribute SQS sets under active tracing.
pub fn record_trace(record: &SqsMessage) -> Option<&str> {
    record
        .message_attributes
        .get(crate::sns::TRACE_ATTRIBUTE)
        .and_then(|a| a.string_value.as_deref())
        .or_else(|| record.attributes.get(AWS_TRACE_HEADER).map(String::as_str))
        .filter(|t| crate::http::is_trace_header(t))
}

fn message_span(id: &str, record: &SqsMessage, n: &Notification) -> tracing::Span {
    let metadata = n.event.as_ref().map(|e| &e.metadata);
    let trace = record_trace(record)
        .or_else(|| metadata.and_then(|m| m.trace.as_deref()))
        .unwrap_or("-");
    tracing::info_span!(
        "message",
        message_id = %id,
        stream_id = %n.stream_id,
        version = n.version,
        event_type = %n.event_type,
        correlation_id = metadata.map_or("-", |m| m.correlation_id.as_str()),
        causation_id = metadata.map_or("-", |m| m.causation_id.as_str()),
        trace = trace,
    )
}

fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}

/// Handles every record's notification with `handle`, in order, stopping each message group
/// at its first failure; returns the records to redeliver.
pub async fn process_fifo_batch<F, Fut, E>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: FnMut(Notification) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    process_fifo_batch_noting(event, None, handle).await
}

/// Where a consumer leaves its failure notes: its name and the store.
#[derive(Clone, Copy)]
pub struct Notes<'a> {
    /// The consumer (`projector`, `saga`).
    pub consumer: &'a str,
    /// The dead-letter store the DLQ processor joins the notes from.
    pub store: &'a dyn DeadLetterStore,
}

/// [`process_fifo_batch`], leaving a bounded [`FailureNote`] in `notes` for each record it
/// fails itself (one write per failure; none for a success, nor for the later records of a
/// group it only holds back). A note that cannot be written is logged: the message is
/// redelivered anyway, and its dead letter then says only what the queue knows.
pub async fn process_fifo_batch_noting<F, Fut, E>(
    event: SqsEvent,
    notes: Option<Notes<'_>>,
    mut handle: F,
) -> SqsBatchResponse
where
    F: FnMut(Notification) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut failed_groups: HashSet<String> = HashSet::new();
    let mut failures = Vec::new();
    let total = event.records.len();
    for record in &event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let group = message_group(record);
        if let Some(g) = group
            && failed_groups.contains(g)
        {
            tracing::warn!(message_id = %id, group = g, "not handled: an earlier message of its group failed");
            failures.push(failure(id));
            continue;
        }
        let mut announced: Option<(String, u64)> = None;
        let outcome =
            match serde_json::from_str::<Notification>(record.body.as_deref().unwrap_or("")) {
                Err(e) => Err(format!("poison message: body is not a notification: {e}")),
                Ok(n) => {
                    announced = Some((n.stream_id.clone(), n.version));
                    let span = message_span(&id, record, &n);
                    handle(n).instrument(span).await.map_err(|e| e.to_string())
                }
            };
        if let Err(error) = outcome {
            tracing::error!(message_id = %id, group = group.unwrap_or(""), %error, "message failed");
            let stream = announced.as_ref().map(|(s, v)| (s.as_str(), *v));
            note_failure(notes, &id, stream, &error).await;
            if let Some(g) = group {
                failed_groups.insert(g.to_owned());
            }
            failures.push(failure(id));
        }
    }
    batch_response(failures, total, failed_groups.len())
}

/// The partial-batch answer for `failures` among `total` records, logged when some failed.
fn batch_response(
    failures: Vec<BatchItemFailure>,
    total: usize,
    groups: usize,
) -> SqsBatchResponse {
    if !failures.is_empty() {
        tracing::warn!(
            failed = failures.len(),
            total,
            groups,
            "batch partly failed"
        );
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

/// Leaves the consumer's failure note for message `id` (of `stream` at a version, when the
/// body named one), if notes are kept; a note that cannot be written is logged, never fatal.
async fn note_failure(
    notes: Option<Notes<'_>>,
    id: &str,
    stream: Option<(&str, u64)>,
    error: &str,
) {
    if let Some(notes) = notes {
        let note = FailureNote::new(notes.consumer, id, stream, error, chrono::Utc::now());
        if let Err(e) = notes.store.note(&note).await {
            tracing::warn!(message_id = %id, error = %e, "failure note not written");
        }
    }
}

/// A message group of a batch: its records in order, the notifications handed over (of a
/// prefix of them), and the poison record that ends that prefix, if any.
#[derive(Default)]
struct Group {
    /// Indices into the batch's records whose notification is handed over.
    handled: Vec<usize>,
    /// The first record of the group whose body is no notification, and why.
    poison: Option<(usize, String)>,
    /// Records after the poison one: held back unread.
    held: Vec<usize>,
}

/// Why a record failed itself, and the notification it held (none for a poison body).
type Cause<'a> = (String, Option<&'a Notification>);

/// [`process_fifo_batch_noting`] for a consumer that takes the whole batch at once: `handle`
/// gets the notifications of each message group, in record order (a record without a group
/// is a group of its own; a group's list ends before its first poison record), and answers
/// for each group, in the same order, with the index and error of the notification that
/// stopped it, if any. That record fails with a failure note; every later record of its group
/// fails without one (held back), and so does a poison record, which gets a note when the
/// records before it all went through. Other groups are unaffected. Failures are reported
/// in record order.
pub async fn process_fifo_groups_noting<F, Fut, E>(
    event: SqsEvent,
    notes: Option<Notes<'_>>,
    handle: F,
) -> SqsBatchResponse
where
    F: FnOnce(Vec<Vec<Notification>>) -> Fut,
    Fut: Future<Output = Vec<Option<(usize, E)>>>,
    E: Display,
{
    let total = event.records.len();
    let mut groups: Vec<Group> = Vec::new();
    let mut lists: Vec<Vec<Notification>> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (r, record) in event.records.iter().enumerate() {
        let g = match message_group(record) {
            Some(name) => *by_name.entry(name).or_insert_with(|| {
                groups.push(Group::default());
                lists.push(Vec::new());
                groups.len() - 1
            }),
            None => {
                groups.push(Group::default());
                lists.push(Vec::new());
                groups.len() - 1
            }
        };
        let group = &mut groups[g];
        if group.poison.is_some() {
            group.held.push(r);
            continue;
        }
        match serde_json::from_str::<Notification>(record.body.as_deref().unwrap_or("")) {
            Ok(n) => {
                group.handled.push(r);
                lists[g].push(n);
            }
            Err(e) => {
                group.poison = Some((
                    r,
                    format!("poison message: body is not a notification: {e}"),
                ));
            }
        }
    }
    // Kept to name the failed ones in spans and notes.
    let handed = lists.clone();
    let mut outcomes = handle(lists).await.into_iter();
    // Records failed: index, and (error, its notification) when it failed itself.
    let mut failed: Vec<(usize, Option<Cause<'_>>)> = Vec::new();
    for (group, notifications) in groups.iter().zip(&handed) {
        let stopped = match outcomes.next() {
            Some(outcome) => outcome.map(|(k, e)| (k, e.to_string())),
            None => Some((0, "the consumer gave no outcome for this group".to_owned())),
        }
        // An index past the group's end fails its last notification: a redelivery is harmless,
        // a loss is not.
        .and_then(|(k, e)| {
            group
                .handled
                .len()
                .checked_sub(1)
                .map(|last| (k.min(last), e))
        });
        let mut held: Vec<usize> = Vec::new();
        match stopped {
            Some((k, error)) => {
                failed.push((group.handled[k], Some((error, notifications.get(k)))));
                held.extend(&group.handled[k + 1..]);
                held.extend(group.poison.as_ref().map(|(r, _)| *r));
            }
            None => {
                if let Some((r, error)) = &group.poison {
                    failed.push((*r, Some((error.clone(), None))));
                }
            }
        }
        held.extend(&group.held);
        failed.extend(held.into_iter().map(|r| (r, None)));
    }
    failed.sort_by_key(|(r, _)| *r);
    let mut failures = Vec::with_capacity(failed.len());
    let mut groups_failed: HashSet<&str> = HashSet::new();
    for (r, cause) in failed {
        let record = &event.records[r];
        let id = record.message_id.clone().unwrap_or_default();
        let group = message_group(record);
        match cause {
            None => {
                tracing::warn!(message_id = %id, group = group.unwrap_or(""), "not handled: an earlier message of its group failed");
            }
            Some((error, n)) => {
                let log = || tracing::error!(message_id = %id, group = group.unwrap_or(""), %error, "message failed");
                match n {
                    Some(n) => message_span(&id, record, n).in_scope(log),
                    None => log(),
                }
                let stream = n.map(|n| (n.stream_id.as_str(), n.version));
                note_failure(notes, &id, stream, &error).await;
            }
        }
        groups_failed.insert(group.unwrap_or(""));
        failures.push(failure(id));
    }
    batch_response(failures, total, groups_failed.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold::StreamId;
    use eventfold_testkit::event_store::sample_events;
    use std::collections::HashMap;

    fn record(id: &str, group: &str, body: String) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_owned());
        m.body = Some(body);
        m.attributes = HashMap::from([(GROUP_ATTRIBUTE.to_owned(), group.to_owned())]);
        m
    }

    fn body(stream: &str, version: u64) -> String {
        let s = StreamId::new("acme", "Order", stream).expect("valid");
        let e = sample_events(&s, version - 1, 1).remove(0);
        serde_json::to_string(&Notification::of(&e).expect("valid")).expect("json")
    }

    #[tokio::test]
    async fn failures_leave_one_bounded_note_each_and_successes_none() {
        use eventfold_consumers::deadletter::{MAX_NOTE_ERROR, MemoryDeadLetterStore};
        let store = MemoryDeadLetterStore::new();
        let mut event = SqsEvent::default();
        event.records = vec![
            record("ok", "a", body("a", 1)),
            record("bad", "a", body("a", 2)),
            record("held", "a", body("a", 3)),
            record("poison", "b", "{".into()),
        ];
        let notes = Notes {
            consumer: "projector",
            store: &store,
        };
        let long = "e".repeat(MAX_NOTE_ERROR * 2);
        let response = process_fifo_batch_noting(event, Some(notes), |n| {
            let fail = n.version == 2;
            let long = long.clone();
            async move { if fail { Err(long) } else { Ok(()) } }
        })
        .await;
        assert_eq!(response.batch_item_failures.len(), 3);
        let bad = store
            .note_of("projector", "bad")
            .await
            .expect("note")
            .expect("written");
        assert_eq!(bad.stream_id.as_deref(), Some("acme/Order-a"));
        assert_eq!(bad.version, Some(2));
        assert_eq!(bad.tenant.as_deref(), Some("acme"));
        assert!(bad.error.chars().count() <= MAX_NOTE_ERROR + 1);
        let poison = store
            .note_of("projector", "poison")
            .await
            .expect("note")
            .expect("written");
        assert!(
            poison.error.starts_with("poison message"),
            "{}",
            poison.error
        );
        assert_eq!(poison.stream_id, None);
        for quiet in ["ok", "held"] {
            assert_eq!(
                store.note_of("projector", quiet).await.expect("note"),
                None,
                "{quiet}"
            );
        }
    }

    #[tokio::test]
    async fn a_failure_stops_its_group_only() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("a1", "a", body("a", 1)),
            record("b1", "b", body("b", 1)),
            record("a2", "a", "{not json".into()),
            record("b2", "b", body("b", 2)),
            record("a3", "a", body("a", 3)),
            record("c1", "c", body("c", 1)),
            record("c2", "c", body("c", 2)),
            record("c3", "c", body("c", 3)),
        ];
        let mut seen = Vec::new();
        let response = process_fifo_batch(event, |n| {
            seen.push(format!("{}@{}", n.stream_id, n.version));
            let fail = n.stream_id.ends_with("-c") && n.version == 2;
            async move { if fail { Err("refused") } else { Ok(()) } }
        })
        .await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["a2", "a3", "c2", "c3"]);
        assert_eq!(
            seen,
            [
                "acme/Order-a@1",
                "acme/Order-b@1",
                "acme/Order-b@2",
                "acme/Order-c@1",
                "acme/Order-c@2"
            ]
        );
    }

    /// `stream@version` of each notification of each group.
    fn names(groups: &[Vec<Notification>]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|n| format!("{}@{}", n.stream_id, n.version))
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn groups_are_handed_over_whole_and_fail_from_their_stopping_notification() {
        use eventfold_consumers::deadletter::MemoryDeadLetterStore;
        let store = MemoryDeadLetterStore::new();
        let mut event = SqsEvent::default();
        let mut loose = record("x1", "", body("x", 1));
        loose.attributes.clear();
        event.records = vec![
            record("a1", "a", body("a", 1)),
            record("b1", "b", body("b", 1)),
            record("a2", "a", body("a", 2)),
            record("c1", "c", body("c", 1)),
            record("b2", "b", body("b", 2)),
            record("a3", "a", body("a", 3)),
            record("c2", "c", "{not json".into()),
            record("b3", "b", body("b", 3)),
            record("c3", "c", body("c", 3)),
            loose,
        ];
        let notes = Notes {
            consumer: "projector",
            store: &store,
        };
        let mut handed = Vec::new();
        let response = process_fifo_groups_noting(event, Some(notes), |groups| {
            handed = names(&groups);
            // Group a stops at its second notification; b and c and the loose one go through.
            let outcomes = groups
                .iter()
                .map(|g| {
                    g.first()
                        .filter(|n| n.stream_id.ends_with("-a"))
                        .map(|_| (1, "refused"))
                })
                .collect();
            async move { outcomes }
        })
        .await;
        assert_eq!(
            handed,
            [
                vec!["acme/Order-a@1", "acme/Order-a@2", "acme/Order-a@3"],
                vec!["acme/Order-b@1", "acme/Order-b@2", "acme/Order-b@3"],
                vec!["acme/Order-c@1"],
                vec!["acme/Order-x@1"],
            ]
        );
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["a2", "a3", "c2", "c3"], "in record order");
        let a2 = store
            .note_of("projector", "a2")
            .await
            .expect("note")
            .expect("written");
        assert_eq!(
            (a2.stream_id.as_deref(), a2.version, a2.error.as_str()),
            (Some("acme/Order-a"), Some(2), "refused")
        );
        let c2 = store
            .note_of("projector", "c2")
            .await
            .expect("note")
            .expect("written");
        assert!(c2.error.starts_with("poison message"), "{}", c2.error);
        for quiet in ["a1", "a3", "b1", "c1", "c3", "x1"] {
            assert_eq!(
                store.note_of("projector", quiet).await.expect("note"),
                None,
                "{quiet}"
            );
        }
    }

    #[tokio::test]
    async fn a_poison_record_behind_a_failure_is_held_back_without_a_note() {
        use eventfold_consumers::deadletter::MemoryDeadLetterStore;
        let store = MemoryDeadLetterStore::new();
        let mut event = SqsEvent::default();
        event.records = vec![
            record("a1", "a", body("a", 1)),
            record("a2", "a", "{".into()),
            record("a3", "a", body("a", 3)),
        ];
        let notes = Notes {
            consumer: "projector",
            store: &store,
        };
        let response = process_fifo_groups_noting(event, Some(notes), |groups| async move {
            assert_eq!(names(&groups), [vec!["acme/Order-a@1"]]);
            vec![Some((0, "down"))]
        })
        .await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["a1", "a2", "a3"]);
        assert!(
            store
                .note_of("projector", "a1")
                .await
                .expect("note")
                .is_some()
        );
        assert_eq!(store.note_of("projector", "a2").await.expect("note"), None);
    }

    #[tokio::test]
    async fn a_missing_or_out_of_range_outcome_fails_rather_than_acknowledges() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record("a1", "a", body("a", 1)),
            record("a2", "a", body("a", 2)),
            record("b1", "b", body("b", 1)),
        ];
        let response = process_fifo_groups_noting(event, None, |_groups| async move {
            vec![Some((7, "past the end"))]
        })
        .await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["a2", "b1"]);
    }
}
