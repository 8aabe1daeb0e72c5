//! The processor's mechanics: DLQ messages -> dead letters, stream batch descriptions ->
//! republished commits (or dead letters), redrive and discard.

use crate::Sources;
use crate::redrive::{BatchInfo, CommitKey, QueueSender, StreamRange};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use eventfold::deadletter::{
    Change, DeadLetter, DeadLetterError, DeadLetterStore, Filter, STREAM_CONSUMER, Status,
    UNKNOWN_TENANT, letter_id, record_blocking, redrive_plan,
};
use eventfold::projection::Notification;
use eventfold::{EventStore, StreamId};
use eventfold_aws::sns::{NotificationSink, Outgoing, group_id, pack};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The source name of the stream's on-failure queue (its letters' consumer is
/// [`STREAM_CONSUMER`]).
pub const STREAM_SOURCE: &str = "stream-failures";

/// Why a redrive, a discard or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The dead-letter store said no (not found, not open) or failed.
    #[error(transparent)]
    Store(DeadLetterError),
    /// The letter cannot be redriven (and why): discard it, or rebuild the views.
    #[error("cannot redrive: {0}")]
    CannotRedrive(String),
    /// Sending it back failed; retry later.
    #[error("redrive not sent: {0}")]
    Send(String),
}

impl From<DeadLetterError> for DlqError {
    fn from(e: DeadLetterError) -> Self {
        Self::Store(e)
    }
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redriven {
    /// The letter whose message was sent back.
    pub sent: String,
    /// Every letter the send covered (now `redriven`), lowest version first.
    pub redriven: Vec<String>,
}

/// Pauses between attempts to republish a stream batch's commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in one invocation (at least 1).
    pub attempts: u32,
    /// First pause; doubles per attempt, capped at 2 s.
    pub first: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 4,
            first: Duration::from_millis(200),
        }
    }
}

/// Requests spent on recovering commits, for the report's figures.
#[derive(Debug, Default)]
pub struct RecoveryStats {
    /// Commits republished (automatically or by a redrive).
    pub commits_recovered: AtomicU64,
    /// `PublishBatch` calls made for them.
    pub publish_calls: AtomicU64,
    /// Event-table reads made for them.
    pub table_reads: AtomicU64,
    /// Stream-range resolutions (`GetShardIterator` + `GetRecords` pages).
    pub range_reads: AtomicU64,
}

/// What one batch did: the response for Lambda and the letters it recorded.
#[derive(Debug, Default)]
pub struct Processed {
    /// Records to redeliver.
    pub response: SqsBatchResponse,
    /// Letters recorded (new or seen again).
    pub recorded: Vec<DeadLetter>,
}

/// The DLQ processor over its ports.
pub struct DlqProcessor {
    letters: Arc<dyn DeadLetterStore>,
    events: Arc<dyn EventStore>,
    sink: Arc<dyn NotificationSink>,
    queues: Arc<dyn QueueSender>,
    range: Arc<dyn StreamRange>,
    sources: Sources,
    backoff: Backoff,
    stream_retry_receives: u32,
    stats: RecoveryStats,
}

impl std::fmt::Debug for DlqProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqProcessor")
            .field("sources", &self.sources)
            .field("backoff", &self.backoff)
            .field("stream_retry_receives", &self.stream_retry_receives)
            .finish()
    }
}

fn failure(id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id.to_owned();
    f
}

fn epoch_ms(
    attrs: &std::collections::HashMap<String, String>,
    name: &str,
) -> Option<DateTime<Utc>> {
    attrs
        .get(name)
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis)
}

fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The id of the letter of a commit whose notification could not be published.
pub fn stream_letter_id(stream_id: &str, version: u64) -> String {
    letter_id(&[STREAM_CONSUMER, stream_id, &version.to_string()])
}

impl DlqProcessor {
    /// A processor over its ports.
    pub fn new(
        letters: Arc<dyn DeadLetterStore>,
        events: Arc<dyn EventStore>,
        sink: Arc<dyn NotificationSink>,
        queues: Arc<dyn QueueSender>,
        range: Arc<dyn StreamRange>,
        sources: Sources,
    ) -> Self {
        Self {
            letters,
            events,
            sink,
            queues,
            range,
            sources,
            backoff: Backoff::default(),
            stream_retry_receives: 10,
            stats: RecoveryStats::default(),
        }
    }

    /// Republishes with `backoff` (tests use short pauses).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Leaves a stream batch's unpublished commits to an operator after `receives` deliveries.
    pub fn with_stream_retry_receives(mut self, receives: u32) -> Self {
        self.stream_retry_receives = receives.max(1);
        self
    }

    /// The dead-letter store.
    pub fn letters(&self) -> &dyn DeadLetterStore {
        &*self.letters
    }

    /// Requests spent on recovery so far.
    pub fn stats(&self) -> &RecoveryStats {
        &self.stats
    }

    /// Handles every record of `event`; see [`Self::process`].
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.process(event).await.response
    }

    /// Handles every record: a DLQ message becomes a letter; a stream batch description is
    /// republished (its failures become letters, and the record is retried while deliveries
    /// remain). A record that could not be handled (the store failed) is redelivered.
    pub async fn process(&self, event: SqsEvent) -> Processed {
        let mut out = Processed::default();
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let arn = record.event_source_arn.clone().unwrap_or_default();
            let outcome = match self.sources.of(&arn) {
                Some((STREAM_SOURCE, queue)) => self.stream_failure(record, &queue).await,
                Some((consumer, queue)) => self
                    .dead_message(record, consumer, &queue)
                    .await
                    .map(|l| (vec![l], false))
                    .map_err(|e| e.to_string()),
                None => Err(format!("a record from an unknown queue {arn}")),
            };
            match outcome {
                Ok((letters, retry)) => {
                    if retry {
                        out.response.batch_item_failures.push(failure(&id));
                    }
                    out.recorded.extend(letters);
                }
                Err(error) => {
                    tracing::error!(message_id = %id, %error, "dead-letter record not handled; redelivered");
                    out.response.batch_item_failures.push(failure(&id));
                }
            }
        }
        for l in &out.recorded {
            metrics::counter!("dead_letters", "consumer" => l.consumer.clone()).increment(1);
            tracing::warn!(id = %l.id, consumer = %l.consumer, tenant = %l.tenant, stream_id = l.stream_id.as_deref().unwrap_or(""), blocked_behind = l.blocked_behind.as_deref().unwrap_or(""), error = l.last_error.as_deref().unwrap_or(""), "dead letter recorded");
        }
        out
    }

    /// A message a consumer's queue gave up on -> its letter, with the consumer's last error.
    async fn dead_message(
        &self,
        record: &SqsMessage,
        consumer: &str,
        queue: &str,
    ) -> Result<DeadLetter, DeadLetterError> {
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone().unwrap_or_default();
        let announced = serde_json::from_str::<Notification>(&body)
            .ok()
            .and_then(|n| StreamId::parse(&n.stream_id).ok().map(|s| (n, s)));
        let note = self.letters.note_of(consumer, &message_id).await?;
        let now = Utc::now();
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
        let letter = DeadLetter {
            id: letter_id(&[queue, &message_id]),
            tenant: announced
                .as_ref()
                .map(|(_, s)| s.tenant().to_owned())
                .unwrap_or_else(|| UNKNOWN_TENANT.to_owned()),
            status: Status::Open,
            source_queue: queue.to_owned(),
            consumer: consumer.to_owned(),
            stream_id: announced.as_ref().map(|(n, _)| n.stream_id.clone()),
            first_version: announced.as_ref().map(|(n, _)| n.version),
            last_version: announced.as_ref().map(|(n, _)| n.version),
            event_type: announced.as_ref().map(|(n, _)| n.event_type.clone()),
            message_id: Some(message_id),
            body,
            attributes,
            receive_count: receive_count(record),
            first_failure_at: epoch_ms(&record.attributes, "ApproximateFirstReceiveTimestamp")
                .unwrap_or(now),
            last_failure_at: note.as_ref().map_or(now, |n| n.at),
            last_error,
            blocked_behind: None,
            changed_by: None,
            changed_at: None,
            reason: None,
        };
        record_blocking(&*self.letters, letter).await
    }

    /// A stream batch the mapping gave up on: republish its commits from the events table.
    /// Returns the letters recorded and whether the record should come again.
    async fn stream_failure(
        &self,
        record: &SqsMessage,
        queue: &str,
    ) -> Result<(Vec<DeadLetter>, bool), String> {
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone().unwrap_or_default();
        let receives = receive_count(record);
        let retries_left = receives < self.stream_retry_receives;
        let now = Utc::now();
        let batch_letter = |error: String, info: Option<&BatchInfo>| DeadLetter {
            id: match info {
                Some(i) => letter_id(&[
                    "stream-batch",
                    &i.shard_id,
                    &i.start_sequence_number,
                    &i.end_sequence_number,
                ]),
                None => letter_id(&[queue, &message_id]),
            },
            tenant: UNKNOWN_TENANT.to_owned(),
            status: Status::Open,
            source_queue: queue.to_owned(),
            consumer: STREAM_CONSUMER.to_owned(),
            stream_id: None,
            first_version: None,
            last_version: None,
            event_type: None,
            message_id: Some(message_id.clone()),
            body: body.clone(),
            attributes: BTreeMap::new(),
            receive_count: receives,
            first_failure_at: epoch_ms(&record.attributes, "ApproximateFirstReceiveTimestamp")
                .unwrap_or(now),
            last_failure_at: now,
            last_error: Some(error),
            blocked_behind: None,
            changed_by: None,
            changed_at: None,
            reason: None,
        };
        let info = match BatchInfo::from_message(&body) {
            Ok(info) => info,
            Err(e) => {
                let letter = self
                    .letters
                    .record(batch_letter(
                        format!("not a stream batch description: {e}"),
                        None,
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok((vec![letter], false));
            }
        };
        self.stats.range_reads.fetch_add(1, Ordering::Relaxed);
        let keys = match self.range.commits(&info).await {
            Ok(keys) => keys,
            Err(e) if e.transient && retries_left => {
                return Err(format!(
                    "the stream range is not readable yet: {}",
                    e.message
                ));
            }
            Err(e) => {
                let letter = self
                    .letters
                    .record(batch_letter(
                        format!(
                            "the batch's records are no longer readable ({}); views may miss its commits until the next event of their streams or a rebuild",
                            e.message
                        ),
                        Some(&info),
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok((vec![letter], false));
            }
        };
        let failed = self.republish(&keys).await;
        let mut recorded = Vec::new();
        let failed_keys: BTreeSet<(String, u64)> = failed
            .iter()
            .map(|(k, _)| (k.stream_id.clone(), k.version))
            .collect();
        if receives > 1 {
            // Earlier deliveries may have left letters for commits that went out now.
            for k in keys
                .iter()
                .filter(|k| !failed_keys.contains(&(k.stream_id.clone(), k.version)))
            {
                self.close_recovered(k).await;
            }
        }
        for (k, error) in failed {
            let tenant = StreamId::parse(&k.stream_id)
                .map(|s| s.tenant().to_owned())
                .unwrap_or_else(|_| UNKNOWN_TENANT.to_owned());
            let last = k.version + k.count.max(1) - 1;
            let suffix = if retries_left {
                format!(
                    " (retrying automatically: delivery {receives} of {})",
                    self.stream_retry_receives
                )
            } else {
                " (automatic retries exhausted: redrive it)".to_owned()
            };
            let letter = DeadLetter {
                id: stream_letter_id(&k.stream_id, k.version),
                tenant,
                status: Status::Open,
                source_queue: queue.to_owned(),
                consumer: STREAM_CONSUMER.to_owned(),
                stream_id: Some(k.stream_id.clone()),
                first_version: Some(k.version),
                last_version: Some(last),
                event_type: None,
                message_id: Some(message_id.clone()),
                body: json!({
                    "stream_id": k.stream_id,
                    "version": k.version,
                    "count": k.count,
                    "batch": {
                        "shard_id": info.shard_id,
                        "start_sequence_number": info.start_sequence_number,
                        "end_sequence_number": info.end_sequence_number,
                    }
                })
                .to_string(),
                attributes: BTreeMap::new(),
                receive_count: receives,
                first_failure_at: epoch_ms(&record.attributes, "ApproximateFirstReceiveTimestamp")
                    .unwrap_or(now),
                last_failure_at: now,
                last_error: Some(format!("{error}{suffix}")),
                blocked_behind: None,
                changed_by: None,
                changed_at: None,
                reason: None,
            };
            recorded.push(
                self.letters
                    .record(letter)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let retry = !recorded.is_empty() && retries_left;
        Ok((recorded, retry))
    }

    /// Marks the open letter of a commit that went out after all as redriven.
    async fn close_recovered(&self, k: &CommitKey) {
        let Ok(stream) = StreamId::parse(&k.stream_id) else {
            return;
        };
        let id = stream_letter_id(&k.stream_id, k.version);
        let change = Change {
            to: Status::Redriven,
            by: "dlq-processor".to_owned(),
            reason: Some("republished automatically".to_owned()),
            at: Utc::now(),
        };
        match self.letters.change(stream.tenant(), &id, &change).await {
            Ok(_) | Err(DeadLetterError::NotFound(_) | DeadLetterError::NotOpen { .. }) => {}
            Err(e) => tracing::warn!(%id, error = %e, "recovered commit's letter not closed"),
        }
    }

    /// Reads `keys`' commits from the events table and publishes their events, packed as the
    /// stream publisher packs them, retrying what fails with bounded backoff. Returns the
    /// commits that still did not go out, with why.
    async fn republish(&self, keys: &[CommitKey]) -> Vec<(CommitKey, String)> {
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        let mut messages: Vec<Outgoing> = Vec::new();
        let mut owners: Vec<usize> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let last = k.version + k.count.max(1) - 1;
            self.stats.table_reads.fetch_add(1, Ordering::Relaxed);
            match self
                .events
                .load_range(&k.stream_id, k.version, Some(last), None)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    for e in &events {
                        match Notification::of(e)
                            .map_err(|e| e.to_string())
                            .and_then(Outgoing::new)
                        {
                            Ok(m) => {
                                messages.push(m);
                                owners.push(i);
                            }
                            Err(why) => {
                                failed.insert(i, why);
                            }
                        }
                    }
                }
                Ok(_) => {
                    failed.insert(i, "the commit is not in the events table".to_owned());
                }
                Err(e) => {
                    failed.insert(i, format!("reading the commit failed: {e}"));
                }
            }
        }
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut last_error: BTreeMap<usize, String> = BTreeMap::new();
        let attempts = self.backoff.attempts.max(1);
        for attempt in 0..attempts {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                let pause = self
                    .backoff
                    .first
                    .saturating_mul(1 << (attempt - 1).min(10))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(pause).await;
            }
            let batch: Vec<Outgoing> = pending.iter().map(|&p| messages[p].clone()).collect();
            let mut still = Vec::new();
            for call in pack(&batch) {
                self.stats.publish_calls.fetch_add(1, Ordering::Relaxed);
                let results = self.sink.publish(&batch[call.clone()]).await;
                for (offset, position) in call.enumerate() {
                    if let Some(Ok(())) = results.get(offset) {
                        continue;
                    }
                    let why = match results.get(offset) {
                        Some(Err(why)) => why.clone(),
                        _ => "no result".to_owned(),
                    };
                    last_error.insert(pending[position], why);
                    still.push(pending[position]);
                }
            }
            pending = still;
        }
        for p in pending {
            let why = last_error.remove(&p).unwrap_or_default();
            failed
                .entry(owners[p])
                .or_insert_with(|| format!("not published after {attempts} attempts: {why}"));
        }
        let recovered = keys.len() - failed.len();
        self.stats
            .commits_recovered
            .fetch_add(recovered as u64, Ordering::Relaxed);
        failed
            .into_iter()
            .map(|(i, why)| (keys[i].clone(), why))
            .collect()
    }

    /// Letters of `tenant` (`None`: all) passing `filter`, oldest first.
    pub async fn list(
        &self,
        tenant: Option<&str>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DlqError> {
        Ok(self.letters.list(tenant, filter, limit).await?)
    }

    /// The letter `id` of `tenant` (`None`: of any tenant).
    pub async fn get(&self, tenant: Option<&str>, id: &str) -> Result<DeadLetter, DlqError> {
        self.letters
            .get(tenant, id)
            .await?
            .ok_or_else(|| DlqError::Store(DeadLetterError::NotFound(id.to_owned())))
    }

    /// Sends the open letter `id` back to its consumer, with every open letter of its stream
    /// that the send covers (the consumer's checkpoints make it exactly once, in order), and
    /// marks them redriven by `by`.
    pub async fn redrive(
        &self,
        tenant: Option<&str>,
        id: &str,
        by: &str,
    ) -> Result<Redriven, DlqError> {
        let tenant = match tenant {
            Some(t) => t.to_owned(),
            None => self.get(None, id).await?.tenant,
        };
        let plan = redrive_plan(&*self.letters, &tenant, id).await?;
        let send = &plan.send;
        if send.consumer == STREAM_CONSUMER {
            let (Some(stream_id), Some(first), Some(last)) =
                (&send.stream_id, send.first_version, send.last_version)
            else {
                return Err(DlqError::CannotRedrive(
                    "the batch's commits are unknown (its stream records were no longer readable): rebuild the views, then discard it".to_owned(),
                ));
            };
            let key = CommitKey {
                stream_id: stream_id.clone(),
                version: first,
                count: last + 1 - first,
            };
            if let Some((_, why)) = self.republish(std::slice::from_ref(&key)).await.pop() {
                return Err(DlqError::Send(why));
            }
        } else {
            let queue = self.sources.queue_of(&send.consumer).ok_or_else(|| {
                DlqError::CannotRedrive(format!("no queue for consumer {}", send.consumer))
            })?;
            let group = send
                .attributes
                .get("MessageGroupId")
                .cloned()
                .or_else(|| send.stream_id.as_deref().map(group_id));
            let dedup = format!("redrive-{}-{}", send.id, Utc::now().timestamp_millis());
            self.queues
                .send(queue, &send.body, group.as_deref(), &dedup)
                .await
                .map_err(DlqError::Send)?;
        }
        let change = Change {
            to: Status::Redriven,
            by: by.to_owned(),
            reason: Some(format!("redriven with {}", send.id)),
            at: Utc::now(),
        };
        let mut redriven = Vec::new();
        for l in &plan.covers {
            match self.letters.change(&tenant, &l.id, &change).await {
                Ok(_) => redriven.push(l.id.clone()),
                // Another redrive closed it meanwhile: the send covered it anyway.
                Err(DeadLetterError::NotOpen { .. }) if l.id != id => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Redriven {
            sent: send.id.clone(),
            redriven,
        })
    }

    /// Redrives every open letter (of `consumer`, when given) of every tenant; returns what
    /// each redrive did, and the letters that could not be redriven with why.
    pub async fn redrive_all(
        &self,
        consumer: Option<&str>,
        by: &str,
    ) -> Result<(Vec<Redriven>, Vec<(String, String)>), DlqError> {
        let filter = Filter {
            consumer: consumer.map(str::to_owned),
            status: Some(Status::Open),
            stream_id: None,
        };
        let open = self.letters.list(None, &filter, usize::MAX).await?;
        let mut done: BTreeSet<String> = BTreeSet::new();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for l in open {
            if done.contains(&l.id) {
                continue;
            }
            match self.redrive(Some(&l.tenant), &l.id, by).await {
                Ok(r) => {
                    done.extend(r.redriven.iter().cloned());
                    ok.push(r);
                }
                Err(e) => failed.push((l.id.clone(), e.to_string())),
            }
        }
        Ok((ok, failed))
    }

    /// Gives up on the open letter `id` for `reason`.
    pub async fn discard(
        &self,
        tenant: Option<&str>,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<DeadLetter, DlqError> {
        let tenant = match tenant {
            Some(t) => t.to_owned(),
            None => self.get(None, id).await?.tenant,
        };
        let change = Change {
            to: Status::Discarded,
            by: by.to_owned(),
            reason: Some(reason.to_owned()),
            at: Utc::now(),
        };
        Ok(self.letters.change(&tenant, id, &change).await?)
    }
}
