//! The group side of [`Streams`]: reads after committed offsets, consume with long poll and
//! auto-commit, monotonic commits, seek, lag, each either on the group's single cursor or
//! as a member of the group (its partitions only, checked against its generation: see
//! [`crate::members`]); and the time-ordered history, which touches no group. A consume and a history page stop at the configured byte budget
//! ([`StreamsConfig::page_bytes`](crate::StreamsConfig::page_bytes)) as well as at their
//! count.

use super::members::{MemberClaim, members_only};
use super::ports::{GroupState, GroupStore, TopicCatalogue, Versioned};
use super::service::{Streams, check_partition, lock};
use super::types::{
    ConsumeRequest, Consumed, HistoryPage, HistoryQuery, PartitionLag, Record, SeekTo,
};
use super::{
    MAX_CONSUME, MAX_HISTORY_LIMIT, MAX_WAIT_MS, Offsets, StreamingError, Topic, partition_stream,
    validate_token,
};
use chrono::{DateTime, Utc};
use eventfold::page::{PageBudget, wire_len};
use eventfold::store::EventStore;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Records scanned per history page at most (filters may skip many), beyond the page size.
const HISTORY_SCAN: usize = 5000;
/// Conflict retries of a group write.
const GROUP_ATTEMPTS: u32 = 64;

impl<E: EventStore, C: TopicCatalogue, G: GroupStore> Streams<E, C, G> {
    /// Up to `max` records after `after` across `parts` (partitions of the topic), each
    /// partition's share first, then what is left from the partitions that had more.
    async fn read_after(
        &self,
        tenant: &str,
        topic: &Topic,
        parts: &[u32],
        after: &Offsets,
        max: usize,
        reads: &mut u32,
    ) -> Result<Vec<Record>, StreamingError> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let share = max.div_ceil(parts.len()).max(1);
        let mut out = Vec::new();
        let mut full = Vec::new();
        for &p in parts {
            if out.len() >= max {
                break;
            }
            let from = after.get(&p).copied().unwrap_or(0) + 1;
            let want = share.min(max - out.len());
            let got = self
                .read_partition(tenant, topic, p, from, want, reads)
                .await?;
            if got.len() == want {
                full.push(p);
            }
            out.extend(got);
        }
        // The partitions with more records only top the answer up while it has room.
        let read_bytes: usize = out.iter().map(wire_len).sum();
        for p in full {
            if out.len() >= max || read_bytes >= self.config.page_bytes {
                break;
            }
            let from = out
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .max()
                .unwrap_or(0)
                + 1;
            let want = max - out.len();
            out.extend(
                self.read_partition(tenant, topic, p, from, want, reads)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn read_partition(
        &self,
        tenant: &str,
        topic: &Topic,
        p: u32,
        from: u64,
        want: usize,
        reads: &mut u32,
    ) -> Result<Vec<Record>, StreamingError> {
        let key = partition_stream(tenant, &topic.name, p)?.to_string();
        *reads += 1;
        let events = self.store.load_range(&key, from, None, Some(want)).await?;
        if let Some(last) = events.last() {
            self.saw(&key, last.version);
        }
        Ok(events
            .into_iter()
            .map(|e| Record::from_envelope(&topic.name, p, e))
            .collect())
    }

    pub(super) async fn group_state(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Versioned<GroupState>, StreamingError> {
        Ok(self
            .groups
            .get(tenant, topic, group)
            .await?
            .unwrap_or(Versioned {
                value: GroupState::default(),
                revision: 0,
            }))
    }

    /// Writes `change(state)` with optimistic concurrency, reading again after a lost race;
    /// a refusal of `change` writes nothing. Returns what is stored.
    pub(super) async fn update_group(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        mut current: Versioned<GroupState>,
        change: impl Fn(&GroupState) -> Result<GroupState, StreamingError>,
    ) -> Result<Versioned<GroupState>, StreamingError> {
        for attempt in 1..=GROUP_ATTEMPTS {
            let mut next = change(&current.value)?;
            if next == current.value && current.revision > 0 {
                return Ok(Versioned {
                    value: next,
                    revision: current.revision,
                });
            }
            next.updated_at = Some(Utc::now());
            if self
                .groups
                .put(tenant, topic, group, &next, current.revision)
                .await?
            {
                return Ok(Versioned {
                    value: next,
                    revision: current.revision + 1,
                });
            }
            self.lost_race(attempt < GROUP_ATTEMPTS);
            current = self.group_state(tenant, topic, group).await?;
        }
        Err(StreamingError::Conflict(format!(
            "group '{group}' of '{topic}' stayed contended"
        )))
    }

    /// Up to `max` records after the group's committed offsets, waiting up to `wait` (and
    /// not past `deadline`) for one to arrive when none is there.
    pub async fn consume(
        &self,
        tenant: &str,
        req: &ConsumeRequest,
        deadline: Option<Instant>,
    ) -> Result<Consumed, StreamingError> {
        validate_token("group_id", &req.group)?;
        if !(1..=MAX_CONSUME).contains(&req.max) {
            return Err(StreamingError::Invalid(format!(
                "max must be 1..={MAX_CONSUME}"
            )));
        }
        if req.wait > Duration::from_millis(MAX_WAIT_MS) {
            return Err(StreamingError::Invalid(format!(
                "wait_ms must be 0..={MAX_WAIT_MS}"
            )));
        }
        let topic = self.topic(tenant, &req.topic).await?;
        let partitions = topic.settings.partitions;
        let state = self.settled(tenant, &topic, &req.group).await?;
        let membership = &state.value.membership;
        let mut reads = 1;
        let mut committed = state.value.committed.clone();
        let (parts, pending, generation) = match &req.member {
            None if membership.is_active() => {
                return Err(members_only(
                    membership.generation,
                    membership.members.len(),
                ));
            }
            None => (
                (0..partitions).collect::<Vec<u32>>(),
                &state.value.delivered,
                None,
            ),
            Some(claim) => {
                let m = membership.check(claim)?;
                (
                    m.partitions.clone(),
                    &m.delivered,
                    Some(membership.generation),
                )
            }
        };
        if req.auto_commit {
            merge_max(&mut committed, pending);
        }
        let started = Instant::now();
        let stop_at = {
            let until = started + req.wait;
            deadline.map_or(until, |d| d.min(until))
        };
        let (first, longest) = self.config.poll_interval;
        let mut interval = first;
        let records = loop {
            let records = self
                .read_after(tenant, &topic, &parts, &committed, req.max, &mut reads)
                .await?;
            let records = fair_page(records, self.config.page_bytes);
            let Some(sleep) = &self.config.sleep else {
                break records;
            };
            let now = Instant::now();
            if !records.is_empty() || now >= stop_at {
                break records;
            }
            sleep(interval.min(stop_at - now)).await;
            interval = (interval * 3 / 2).min(longest);
        };
        if req.auto_commit {
            let mut delivered = Offsets::new();
            for r in &records {
                let at = delivered.entry(r.partition).or_insert(0);
                *at = (*at).max(r.offset);
            }
            let base = committed.clone();
            let now = self.now();
            // A member commits only while the generation it read in lasts.
            let claim = req.member.as_ref().map(|c| MemberClaim {
                member_id: c.member_id.clone(),
                generation,
            });
            let written = self
                .update_group(tenant, &topic.name, &req.group, state, |s| {
                    let mut next = s.clone();
                    next.membership.settle(now, partitions);
                    merge_max(&mut next.committed, &base);
                    match &claim {
                        None if next.membership.is_active() => {
                            return Err(members_only(
                                next.membership.generation,
                                next.membership.members.len(),
                            ));
                        }
                        None => next.delivered = delivered.clone(),
                        Some(c) => {
                            next.membership.check(c)?;
                            if let Some(m) = next.membership.members.get_mut(&c.member_id) {
                                m.delivered = delivered.clone();
                            }
                        }
                    }
                    Ok(next)
                })
                .await?;
            committed = written.value.committed;
        }
        Ok(Consumed {
            records,
            committed,
            reads,
            generation,
        })
    }

    /// Checks that every partition of `offsets` exists and no offset is past its head.
    async fn check_offsets(
        &self,
        tenant: &str,
        topic: &Topic,
        offsets: &Offsets,
    ) -> Result<(), StreamingError> {
        for (p, offset) in offsets {
            check_partition(topic, *p)?;
            let key = partition_stream(tenant, &topic.name, *p)?.to_string();
            let known = lock(&self.heads).get(&key).copied().unwrap_or(0);
            if *offset <= known {
                continue;
            }
            let head = self.head(tenant, topic, *p).await?;
            if *offset > head {
                return Err(StreamingError::OutOfRange(format!(
                    "offset {offset} of partition {p} is past its head {head}"
                )));
            }
        }
        Ok(())
    }

    /// Commits `offsets` (the last processed offset per partition) on `group`'s single
    /// cursor: monotonic, a lower offset than the committed one is ignored. Returns the
    /// committed offsets. Refused while the group has members.
    pub async fn commit(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        offsets: &Offsets,
    ) -> Result<Offsets, StreamingError> {
        self.commit_as(tenant, topic, group, offsets, None).await
    }

    /// [`Streams::commit`], by `member` when it names one: only partitions it owns, only in
    /// the generation it names (else [`StreamingError::Rebalanced`], nothing written), so a
    /// member that lost its partitions never moves their new owner's offsets.
    pub async fn commit_as(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        offsets: &Offsets,
        member: Option<&MemberClaim>,
    ) -> Result<Offsets, StreamingError> {
        validate_token("group_id", group)?;
        let topic = self.topic(tenant, topic).await?;
        self.check_offsets(tenant, &topic, offsets).await?;
        let partitions = topic.settings.partitions;
        let state = self.settled(tenant, &topic, group).await?;
        let now = self.now();
        let written = self
            .update_group(tenant, &topic.name, group, state, |s| {
                let mut next = s.clone();
                next.membership.settle(now, partitions);
                match member {
                    None if next.membership.is_active() => {
                        return Err(members_only(
                            next.membership.generation,
                            next.membership.members.len(),
                        ));
                    }
                    None => {}
                    Some(c) => next.membership.check_owns(c, offsets)?,
                }
                merge_max(&mut next.committed, offsets);
                Ok(next)
            })
            .await?;
        Ok(written.value.committed)
    }

    /// Moves `group` to `to` on every partition (the one way back); forgets any pending
    /// auto-commit (the members' too: an operator's reset, allowed while members read).
    /// Returns the committed offsets.
    pub async fn seek(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        to: SeekTo,
    ) -> Result<Offsets, StreamingError> {
        validate_token("group_id", group)?;
        let topic = self.topic(tenant, topic).await?;
        let mut offsets = Offsets::new();
        for p in 0..topic.settings.partitions {
            let at = match to {
                SeekTo::Earliest => 0,
                SeekTo::Latest => self.head(tenant, &topic, p).await?,
                SeekTo::Timestamp(t) => self.offset_before(tenant, &topic, p, t).await?,
            };
            offsets.insert(p, at);
        }
        let state = self.group_state(tenant, &topic.name, group).await?;
        let written = self
            .update_group(tenant, &topic.name, group, state, |s| {
                let mut next = s.clone();
                next.committed = offsets.clone();
                next.delivered = Offsets::new();
                for m in next.membership.members.values_mut() {
                    m.delivered.clear();
                }
                Ok(next)
            })
            .await?;
        Ok(written.value.committed)
    }

    /// The last offset of partition `p` published before `t` (0: none): a binary search on
    /// the partition, whose records are in publish-time order. An expired record counts as
    /// before any time still asked about.
    async fn offset_before(
        &self,
        tenant: &str,
        topic: &Topic,
        p: u32,
        t: DateTime<Utc>,
    ) -> Result<u64, StreamingError> {
        let key = partition_stream(tenant, &topic.name, p)?.to_string();
        let head = self.store.head(&key).await?;
        let (mut lo, mut hi) = (0u64, head);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let at = self.store.load_range(&key, mid, Some(mid), Some(1)).await?;
            let before = at.first().is_none_or(|e| e.occurred_at < t);
            if before {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// Per-partition lag of `group` (head - committed), with each partition's owner.
    pub async fn lag(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PartitionLag>, StreamingError> {
        Ok(self.describe_group(tenant, topic, group).await?.partitions)
    }

    /// Lag per partition of a settled state.
    pub(super) async fn lag_of(
        &self,
        tenant: &str,
        topic: &Topic,
        state: &GroupState,
    ) -> Result<Vec<PartitionLag>, StreamingError> {
        let mut out = Vec::new();
        for p in 0..topic.settings.partitions {
            let head = self.head(tenant, topic, p).await?;
            let committed = state.committed.get(&p).copied().unwrap_or(0);
            out.push(PartitionLag {
                partition: p,
                head,
                committed,
                lag: head.saturating_sub(committed),
                owner: state.membership.owner(p).map(str::to_owned),
            });
        }
        Ok(out)
    }

    /// A page of the topic's records in time order, merged across partitions, filtered;
    /// touches no group.
    pub async fn history(
        &self,
        tenant: &str,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, StreamingError> {
        if !(1..=MAX_HISTORY_LIMIT).contains(&q.limit) {
            return Err(StreamingError::Invalid(format!(
                "limit must be 1..={MAX_HISTORY_LIMIT}"
            )));
        }
        if let Some(t) = &q.event_type {
            validate_token("event_type", t)?;
        }
        if let (Some(s), Some(u)) = (q.since, q.until)
            && s > u
        {
            return Err(StreamingError::Invalid("since is after until".into()));
        }
        let topic = self.topic(tenant, &q.topic).await?;
        let partitions = topic.settings.partitions;
        let mut cursor = Offsets::new();
        for p in 0..partitions {
            let start = match (&q.after, q.since) {
                (Some(after), _) => after.get(&p).copied().unwrap_or(0),
                (None, Some(since)) => self.offset_before(tenant, &topic, p, since).await?,
                (None, None) => 0,
            };
            cursor.insert(p, start);
        }
        if let Some(after) = &q.after
            && let Some(p) = after.keys().find(|p| **p >= partitions)
        {
            return Err(StreamingError::Invalid(format!(
                "cursor names partition {p}, which the topic does not have"
            )));
        }
        let chunk = q.limit.clamp(10, 200);
        let mut buffers: Vec<VecDeque<Record>> = vec![VecDeque::new(); partitions as usize];
        let mut done = vec![false; partitions as usize];
        let mut reads = 0;
        let mut records = Vec::new();
        let mut budget = PageBudget::new(self.config.page_bytes);
        let mut scanned = 0;
        loop {
            for p in 0..partitions as usize {
                if buffers[p].is_empty() && !done[p] {
                    let from = cursor[&(p as u32)] + 1;
                    let got = self
                        .read_partition(tenant, &topic, p as u32, from, chunk, &mut reads)
                        .await?;
                    if got.len() < chunk {
                        done[p] = true;
                    }
                    for r in got {
                        if q.until.is_some_and(|u| r.timestamp > u) {
                            done[p] = true;
                            break;
                        }
                        buffers[p].push_back(r);
                    }
                }
            }
            let next = (0..partitions as usize)
                .filter_map(|p| buffers[p].front().map(|r| (r.timestamp, p)))
                .min();
            let Some((_, p)) = next else {
                return Ok(HistoryPage {
                    records,
                    next: None,
                });
            };
            let Some(r) = buffers[p].pop_front() else {
                continue;
            };
            let wanted = q.event_type.as_ref().is_none_or(|t| *t == r.event_type)
                && q.key.as_ref().is_none_or(|k| Some(k) == r.key.as_ref());
            if wanted && !budget.admit_item(&r) {
                // The page is full: this record opens the next one (the cursor stays before
                // it). The budget takes a page's first record whatever its size, so a page
                // is never empty.
                return Ok(HistoryPage {
                    records,
                    next: Some(cursor),
                });
            }
            cursor.insert(p as u32, r.offset);
            scanned += 1;
            if wanted {
                records.push(r);
            }
            if records.len() >= q.limit || scanned >= q.limit + HISTORY_SCAN {
                let exhausted = (0..partitions as usize).all(|p| done[p] && buffers[p].is_empty());
                return Ok(HistoryPage {
                    records,
                    next: (!exhausted).then_some(cursor),
                });
            }
        }
    }
}

/// The records a consume answers within `page_bytes` ([`PageBudget`]): admitted round-robin
/// over the partitions (each one's next record in turn), so that large records of one
/// partition do not crowd the others out, until the next would pass the budget. Each
/// partition keeps a prefix of its records, in the order read, so the offsets delivered per
/// partition stay contiguous and what is left is read again by the next call.
fn fair_page(records: Vec<Record>, page_bytes: usize) -> Vec<Record> {
    let mut ranks: BTreeMap<u32, usize> = BTreeMap::new();
    let mut turns: Vec<(usize, u32, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let rank = ranks.entry(r.partition).or_insert(0);
            *rank += 1;
            (*rank, r.partition, i)
        })
        .collect();
    turns.sort_unstable();
    let mut budget = PageBudget::new(page_bytes);
    let mut keep = vec![false; records.len()];
    for (_, _, i) in turns {
        if !budget.admit_item(&records[i]) {
            break;
        }
        keep[i] = true;
    }
    records
        .into_iter()
        .zip(keep)
        .filter_map(|(r, kept)| kept.then_some(r))
        .collect()
}

/// `into[p] = max(into[p], from[p])` for every partition of `from`.
fn merge_max(into: &mut Offsets, from: &Offsets) {
    for (p, o) in from {
        let at = into.entry(*p).or_insert(0);
        *at = (*at).max(*o);
    }
}
