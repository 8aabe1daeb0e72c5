//! The read-model side of the notifications one invocation handles: their checkpoints read
//! in one request at its start, their checkpoint moves and deadline entries written in one
//! at its end.
//!
//! Handling a notification costs the saga steps it causes and nothing more on the
//! read-models table: the checkpoints of every source stream of the batch are read with one
//! [`ReadModelStore::get_many`], moved in memory as inputs are handled, and the moves and the
//! deadline entries the steps call for are written together by [`SagaRunner::commit`] (one
//! `TransactWriteItems` on DynamoDB, [`DeadlineIndex::write_together`]). When that cannot be
//! (a condition failed, or the store has no such write) they are made one at a time as before,
//! deadlines first. Nothing is weakened: every step's effects are idempotent, and a batch whose
//! writes are lost (a crash before the commit, or a commit that fails) is handled again in
//! full on redelivery, exactly as a crash before a per-message checkpoint move was.

use super::*;
use crate::projection::{Found, ModelKey};
use crate::saga::deadline::{CheckpointMove, Deadline, DeadlineWrite, Together};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The checkpoints and pending writes of the notifications of one invocation
/// ([`SagaRunner::begin`], [`SagaRunner::handle_in`], [`SagaRunner::commit`]). Shared by
/// reference while its notifications are handled one after another.
#[derive(Debug, Default)]
pub struct SagaBatch {
    inner: Mutex<Inner>,
    /// When the invocation must answer: the commands of its steps stop retrying lost races
    /// by then ([`SagaBatch::until`]).
    answer_by: Option<std::time::Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per source stream: the checkpoint stored when the batch read it (the condition of its
    /// move), and where the handled inputs have taken it since.
    checkpoints: HashMap<String, (u64, u64)>,
    /// Per saga stream: the newest deadline entry its steps call for.
    deadlines: BTreeMap<String, (u64, Option<Deadline>)>,
}

impl SagaBatch {
    /// The batch of an invocation that must answer by `deadline`: a command its steps send
    /// to a hot stream retries lost races until then (within the executor's retry budget),
    /// and no longer.
    pub fn until(mut self, deadline: Option<std::time::Instant>) -> Self {
        self.answer_by = deadline;
        self
    }

    /// When the invocation must answer, if known.
    pub(super) fn answer_by(&self) -> Option<std::time::Instant> {
        self.answer_by
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // No lock is held across an await, and every mutation completes before unlocking.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the batch has the checkpoint of `stream_id`, if it read it.
    pub(super) fn checkpoint(&self, stream_id: &str) -> Option<u64> {
        self.lock().checkpoints.get(stream_id).map(|(_, at)| *at)
    }

    /// Remembers the stored checkpoint of `stream_id` (read outside the batch's first read).
    pub(super) fn known(&self, stream_id: &str, stored: u64) {
        self.lock()
            .checkpoints
            .entry(stream_id.to_owned())
            .or_insert((stored, stored));
    }

    /// Moves the checkpoint of `stream_id` to `to` (written by the commit).
    pub(super) fn advance(&self, stream_id: &str, to: u64) {
        let mut inner = self.lock();
        let entry = inner
            .checkpoints
            .entry(stream_id.to_owned())
            .or_insert((0, 0));
        entry.1 = entry.1.max(to);
    }

    /// Sets the deadline entry of saga stream `stream_id` as of `version` (the newest wins).
    pub(super) fn deadline(&self, stream_id: &str, version: u64, deadline: Option<Deadline>) {
        let mut inner = self.lock();
        let entry = inner
            .deadlines
            .entry(stream_id.to_owned())
            .or_insert((0, None));
        if entry.0 <= version {
            *entry = (version, deadline);
        }
    }

    /// The writes the batch calls for, taken out of it.
    fn take(&self) -> (Vec<DeadlineWrite>, Vec<CheckpointMove>) {
        let mut inner = self.lock();
        let deadlines = std::mem::take(&mut inner.deadlines)
            .into_iter()
            .map(|(stream_id, (version, deadline))| DeadlineWrite {
                stream_id,
                version,
                deadline,
            })
            .collect();
        let mut moves: Vec<CheckpointMove> = inner
            .checkpoints
            .iter_mut()
            .filter(|(_, (stored, at))| at > stored)
            .map(|(stream_id, (stored, at))| {
                let m = CheckpointMove {
                    stream_id: stream_id.clone(),
                    expected: *stored,
                    new: *at,
                };
                // Written or not, the next commit of this batch starts from here.
                *stored = *at;
                m
            })
            .collect();
        moves.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        (deadlines, moves)
    }
}

impl<G, E, R> SagaRunner<G, E, R>
where
    G: Saga,
    SagaCaches<G>: CacheFor<G>,
    E: EventStore,
    R: ReadModelStore + DeadlineIndex,
{
    /// A batch for `notifications`: their source streams' checkpoints, read in one request.
    pub async fn begin(&self, notifications: &[Notification]) -> Result<SagaBatch, SagaError> {
        let name = checkpoint_name::<G>();
        let mut streams: Vec<&str> = notifications.iter().map(|n| n.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let keys: Vec<ModelKey> = streams
            .iter()
            .map(|s| ModelKey::Checkpoint {
                view: name.clone(),
                stream_id: (*s).to_owned(),
            })
            .collect();
        let batch = SagaBatch::default();
        if keys.is_empty() {
            return Ok(batch);
        }
        let found = if keys.len() == 1 {
            // One key: a plain read (cheaper than a batched one on DynamoDB).
            vec![Found::Checkpoint(
                self.models.checkpoint(&name, streams[0]).await?,
            )]
        } else {
            self.models.get_many(&keys).await?
        };
        for (stream, found) in streams.iter().zip(found) {
            if let Found::Checkpoint(at) = found {
                batch.known(stream, at);
            }
        }
        Ok(batch)
    }

    /// Writes what `batch`'s handled notifications call for: every deadline entry and
    /// checkpoint move together when the store can and every condition holds, else one at a
    /// time (deadlines first; a checkpoint another consumer moved past the batch's is taken).
    /// An error leaves the checkpoints where they were: the batch's notifications must be
    /// delivered again.
    pub async fn commit(&self, batch: &SagaBatch) -> Result<(), SagaError> {
        let name = checkpoint_name::<G>();
        let (deadlines, moves) = batch.take();
        if deadlines.len() + moves.len() > 1
            && self
                .models
                .write_together(&name, &deadlines, &moves)
                .await?
                == Together::Written
        {
            return Ok(());
        }
        for d in &deadlines {
            self.models
                .set_deadline(&name, &d.stream_id, d.version, d.deadline.as_ref())
                .await?;
        }
        for m in &moves {
            self.advance(&name, &m.stream_id, m.expected, m.new).await?;
        }
        Ok(())
    }

    /// Moves the checkpoint of `stream_id` from `from` to `to`. When another consumer moved
    /// it first, its position is taken if it is at least `to`.
    async fn advance(
        &self,
        name: &str,
        stream_id: &str,
        from: u64,
        to: u64,
    ) -> Result<u64, SagaError> {
        let tenant = StreamId::parse(stream_id)
            .map(|s| s.tenant().to_owned())
            .unwrap_or_default();
        match self
            .models
            .add(&tenant, name, stream_id, from, to, Vec::new())
            .await
        {
            Ok(()) => Ok(to),
            Err(ReadModelError::Conflict { view, key }) => {
                let now = self.models.checkpoint(name, stream_id).await?;
                if now >= to {
                    Ok(now)
                } else {
                    Err(ReadModelError::Conflict { view, key }.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}
