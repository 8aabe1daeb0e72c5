//! Republishing failed stream batches: a batch the stream mapping gave up on is described on
//! the stream's on-failure queue; its commits are read from the events table and published
//! again, packed as the stream publisher packs them ([`publish_packed`]), with bounded
//! backoff. Only the commits that still fail become letters, and the description comes again
//! while deliveries remain. A redrive of such a letter republishes its commit the same way.
//! Backing off never runs past the invocation's deadline: the attempts stop when the next
//! pause would pass it, a publish call is cut at it, and what did not go out is reported
//! (its letter says so, its record is a batch item failure and comes again).

use crate::intake::{Arrival, RecordError};
use crate::redrive::{BatchInfo, CommitKey};
use crate::{DlqProcessor, chain};
use aws_lambda_events::event::sqs::SqsMessage;
use chrono::Utc;
use eventfold::{StoreError, StreamId};
use eventfold_aws::sns::{AfterFailure, Outgoing, PublishError, publish_packed};
use eventfold_consumers::deadletter::{
    Change, DeadLetter, DeadLetterError, STREAM_CONSUMER, Status, UNKNOWN_TENANT, letter_id,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// Why a commit did not go out again.
#[derive(Debug, thiserror::Error)]
pub enum CommitFailure {
    /// The events table does not hold it.
    #[error("the commit is not in the events table")]
    Missing,
    /// Reading it from the events table failed.
    #[error("reading the commit failed")]
    Read(#[source] StoreError),
    /// One of its events cannot travel as a notification (why, as the SNS adapter says it).
    #[error(transparent)]
    Unpublishable(PublishError),
    /// The invocation's deadline came before the event went out (after `attempts`
    /// attempts, the last refusal when there was one); its record comes again.
    #[error("not published before the invocation's deadline ({attempts} attempts){}", .last.as_ref().map(|l| format!(": {l}")).unwrap_or_default())]
    OutOfTime {
        /// Attempts made.
        attempts: u32,
        /// The last refusal, if an attempt was made.
        last: Option<PublishError>,
    },
    /// The topic refused an event of it on every attempt (the last refusal, as SNS said it).
    #[error("not published after {attempts} attempts: {last}")]
    NotPublished {
        /// Attempts made.
        attempts: u32,
        /// The last refusal.
        #[source]
        last: PublishError,
    },
}

/// The id of the letter of a commit whose notification could not be published.
pub fn stream_letter_id(stream_id: &str, version: u64) -> String {
    letter_id(&[STREAM_CONSUMER, stream_id, &version.to_string()])
}

impl DlqProcessor {
    /// A stream batch the mapping gave up on: republish its commits from the events table.
    /// Returns the letters recorded and whether the record should come again.
    pub(crate) async fn stream_failure(
        &self,
        record: &SqsMessage,
        queue: &str,
        deadline: Option<Instant>,
    ) -> Result<(Vec<DeadLetter>, bool), RecordError> {
        let arrival = Arrival::of(record, queue);
        let receives = arrival.receive_count();
        let retries_left = receives < self.stream_retry_receives;
        let info = match BatchInfo::from_message(&arrival.body) {
            Ok(info) => info,
            Err(e) => {
                let id = letter_id(&[queue, &arrival.message_id]);
                let error = format!("not a stream batch description: {}", chain(&e));
                let letter = arrival.letter(id, STREAM_CONSUMER, Some(error));
                return Ok((vec![self.letters.record(letter).await?], false));
            }
        };
        self.stats.range_reads.fetch_add(1, Ordering::Relaxed);
        let keys = match self.range.commits(&info).await {
            Ok(keys) => keys,
            Err(e) if e.transient && retries_left => return Err(RecordError::RangeNotReadable(e)),
            Err(e) => {
                let id = letter_id(&[
                    "stream-batch",
                    &info.shard_id,
                    &info.start_sequence_number,
                    &info.end_sequence_number,
                ]);
                let error = format!(
                    "the batch's records are no longer readable ({}); views may miss its commits until the next event of their streams or a rebuild",
                    chain(&e)
                );
                let letter = arrival.letter(id, STREAM_CONSUMER, Some(error));
                return Ok((vec![self.letters.record(letter).await?], false));
            }
        };
        let failed = self.republish(&keys, deadline).await;
        let out_of_time = failed
            .iter()
            .any(|(_, f)| matches!(f, CommitFailure::OutOfTime { .. }));
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
        for (k, failure) in failed {
            let suffix = if retries_left || out_of_time {
                format!(
                    " (retrying automatically: delivery {receives} of {})",
                    self.stream_retry_receives
                )
            } else {
                " (automatic retries exhausted: redrive it)".to_owned()
            };
            let error = format!("{}{suffix}", chain(&failure));
            let letter = DeadLetter {
                tenant: StreamId::parse(&k.stream_id)
                    .map(|s| s.tenant().to_owned())
                    .unwrap_or_else(|_| UNKNOWN_TENANT.to_owned()),
                stream_id: Some(k.stream_id.clone()),
                first_version: Some(k.version),
                last_version: Some(k.version + k.count.max(1) - 1),
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
                ..arrival.letter(
                    stream_letter_id(&k.stream_id, k.version),
                    STREAM_CONSUMER,
                    Some(error),
                )
            };
            recorded.push(self.letters.record(letter).await?);
        }
        // Cut short by the deadline, the record comes again even past its retries: its
        // attempts were not made.
        let retry = !recorded.is_empty() && (retries_left || out_of_time);
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
    /// stream publisher packs them, retrying what fails with bounded backoff, never past
    /// `deadline`. Returns the commits that still did not go out, with why.
    pub(crate) async fn republish(
        &self,
        keys: &[CommitKey],
        deadline: Option<Instant>,
    ) -> Vec<(CommitKey, CommitFailure)> {
        let mut failed: BTreeMap<usize, CommitFailure> = BTreeMap::new();
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
                        match Outgoing::of(e) {
                            Ok(m) => {
                                messages.push(m);
                                owners.push(i);
                            }
                            Err(why) => {
                                failed.insert(i, CommitFailure::Unpublishable(why));
                            }
                        }
                    }
                }
                Ok(_) => {
                    failed.insert(i, CommitFailure::Missing);
                }
                Err(e) => {
                    failed.insert(i, CommitFailure::Read(e));
                }
            }
        }
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut last_error: BTreeMap<usize, PublishError> = BTreeMap::new();
        let attempts = self.backoff.attempts.max(1);
        let mut made = 0;
        let mut out_of_time = false;
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
                if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                    out_of_time = true;
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let batch: Vec<Outgoing> = pending.iter().map(|&p| messages[p].clone()).collect();
            let call = publish_packed(&*self.sink, &batch, AfterFailure::Continue);
            let sent = match deadline {
                None => call.await,
                Some(d) => match tokio::time::timeout_at(d.into(), call).await {
                    Ok(sent) => sent,
                    // A call still running at the deadline may yet publish some entries:
                    // they come again with the record, and consumers skip what they had.
                    Err(_) => {
                        out_of_time = true;
                        break;
                    }
                },
            };
            made += 1;
            self.stats
                .publish_calls
                .fetch_add(sent.calls as u64, Ordering::Relaxed);
            let mut still = Vec::new();
            for (position, result) in sent.results.into_iter().enumerate() {
                let why = match result {
                    Some(Ok(())) => continue,
                    Some(Err(why)) => why,
                    None => PublishError::NoResult,
                };
                last_error.insert(pending[position], why);
                still.push(pending[position]);
            }
            pending = still;
        }
        for p in pending {
            let failure = if out_of_time {
                CommitFailure::OutOfTime {
                    attempts: made,
                    last: last_error.remove(&p),
                }
            } else {
                let last = last_error.remove(&p).unwrap_or(PublishError::NoResult);
                CommitFailure::NotPublished { attempts, last }
            };
            failed.entry(owners[p]).or_insert(failure);
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
}
