//! Per consumer: how far behind the events table it is, and whether it is stuck.
//!
//! Lag is computed from the snapshot alone: for every source stream of a consumer, the
//! commits past its checkpoint (a stream view keeps it in the document, a counter view and a
//! saga as `_cp#{name}` items). A saga only sees the event types of its queue's filter policy,
//! so only commits holding one of those count (a stream whose newest events are not saga
//! inputs is not behind). The stream publisher keeps no checkpoint the console can read (its
//! position is the DynamoDB stream's iterator, inside Lambda's event source mapping): its lag
//! is the `IteratorAge` the mapping reports ([`crate::iterator_age`]), the age of the newest
//! record it sent, and it is stalled when that age reaches the stall period (records waiting
//! that long are not moving).

use crate::source::{CommitRow, Snapshot};
use chrono::{DateTime, Duration as Span, Utc};
use eventfold::StreamId;
use eventfold_consumers::deadletter::Status;
use shop::registry::ViewImpl;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Event types the saga queue's filter policy lets through (infra/template.yaml,
/// `SagaSubscription`); topic records never reach it.
pub const SAGA_INPUTS: &[&str] = &[
    "OrderPlaced",
    "OrderConfirmed",
    "OrderCancelled",
    "StockReserved",
    "StockReleased",
    "PaymentAuthorized",
    "PaymentDeclined",
    "PaymentPending",
    "PaymentReceived",
    "PaymentVoided",
    "PaymentRefunded",
];

/// The saga's checkpoint name.
pub const SAGA: &str = "saga:OrderFulfilment";

/// What a consumer is fed from and where its checkpoints are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A view with one document per stream of `category`.
    StreamView(&'static str),
    /// A view of counters, fed by streams of `category`.
    CounterView(&'static str),
    /// The saga, fed by its input event types of every non-topic stream.
    Saga,
    /// The stream publisher (no readable position).
    Publisher,
}

/// One consumer's state on the overview.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerLag {
    /// Its name (a view name, `saga:OrderFulfilment`, `stream-publisher`).
    pub name: String,
    /// The consumer as dead letters and failure notes name it.
    pub dlq_consumer: &'static str,
    /// How it is fed.
    pub kind: Kind,
    /// Commits not yet applied, across its streams (`None`: not measurable).
    pub behind: Option<u64>,
    /// Streams with unapplied commits.
    pub streams_behind: usize,
    /// The oldest unapplied commit's time.
    pub oldest_unapplied: Option<DateTime<Utc>>,
    /// Sum of its checkpoints: grows when it makes progress.
    pub applied: u64,
    /// Failure notes of the last hour.
    pub failures_last_hour: usize,
    /// Open dead letters.
    pub open_letters: usize,
    /// Saga instances past their deadline.
    pub overdue: usize,
    /// Work waiting and no progress for the stall period.
    pub stalled: bool,
    /// The stream publisher's iterator age (the metric's latest), for it only.
    pub iterator_age: Option<crate::iterator_age::PublisherAge>,
}

impl ConsumerLag {
    /// Whether it needs an operator: stalled, or a dead letter open, or a deadline missed.
    pub fn stuck(&self) -> bool {
        self.stalled || self.open_letters > 0 || self.overdue > 0
    }
}

/// The consumers of the shop: a projector per stored view, the saga, the publisher.
pub fn consumers() -> Vec<(String, Kind)> {
    let mut out: Vec<(String, Kind)> = shop::registry::stored_views()
        .map(|v| match v {
            ViewImpl::Stream(s) => (v.name().to_owned(), Kind::StreamView(s.category())),
            ViewImpl::Counter(c) => (v.name().to_owned(), Kind::CounterView(c.category())),
        })
        .collect();
    out.push((SAGA.to_owned(), Kind::Saga));
    out.push(("stream-publisher".to_owned(), Kind::Publisher));
    out
}

/// The checkpoint of `name` (of `kind`) for `stream` in `snap` (0: nothing applied).
pub fn checkpoint(snap: &Snapshot, name: &str, kind: Kind, stream: &str) -> u64 {
    // A view's checkpoints are those of its live version (see the view's pointer).
    let name = &snap.live_name(name);
    let key = (name.to_owned(), stream.to_owned());
    match kind {
        Kind::StreamView(_) => {
            let Ok(id) = StreamId::parse(stream) else {
                return 0;
            };
            let doc = (name.to_owned(), format!("{}/{}", id.tenant(), id.id()));
            snap.doc_checkpoints.get(&doc).copied().unwrap_or(0)
        }
        Kind::CounterView(_) | Kind::Saga => snap.checkpoints.get(&key).copied().unwrap_or(0),
        Kind::Publisher => 0,
    }
}

/// Whether `kind` consumes `commit` at all.
fn feeds(kind: Kind, category: &str, commit: &CommitRow) -> bool {
    match kind {
        Kind::StreamView(c) | Kind::CounterView(c) => c == category,
        Kind::Saga => {
            category != eventfold_streaming::TOPIC_CATEGORY
                && commit
                    .events
                    .iter()
                    .any(|e| SAGA_INPUTS.contains(&e.event_type.as_str()))
        }
        Kind::Publisher => false,
    }
}

/// Whether a failure of the projector on `stream` concerns the view of `kind`: one projector
/// serves every view, so its failures are told apart by the stream's category (a failure
/// with no known stream concerns them all).
fn concerns(kind: Kind, stream: Option<&str>) -> bool {
    match (kind, stream.map(StreamId::parse)) {
        (Kind::StreamView(c) | Kind::CounterView(c), Some(Ok(s))) => s.category() == c,
        _ => true,
    }
}

/// The lag of every consumer in `snap` (stall flags off: see [`StallTracker`]).
pub fn compute(snap: &Snapshot) -> Vec<ConsumerLag> {
    let hour_ago = snap.taken_at - Span::hours(1);
    consumers()
        .into_iter()
        .map(|(name, kind)| {
            let dlq_consumer = match kind {
                Kind::StreamView(_) | Kind::CounterView(_) => "projector",
                Kind::Saga => "saga",
                Kind::Publisher => "stream-publisher",
            };
            let mut lag = ConsumerLag {
                name: name.clone(),
                dlq_consumer,
                kind,
                behind: (kind != Kind::Publisher).then_some(0),
                streams_behind: 0,
                oldest_unapplied: None,
                applied: 0,
                failures_last_hour: snap
                    .notes
                    .iter()
                    .filter(|n| n.consumer == dlq_consumer && n.at >= hour_ago)
                    .filter(|n| concerns(kind, n.stream_id.as_deref()))
                    .count(),
                open_letters: snap
                    .letters
                    .iter()
                    .filter(|l| l.consumer == dlq_consumer && l.status == Status::Open)
                    .filter(|l| concerns(kind, l.stream_id.as_deref()))
                    .count(),
                overdue: 0,
                stalled: false,
                iterator_age: (kind == Kind::Publisher).then_some(snap.publisher),
            };
            if kind == Kind::Publisher {
                return lag;
            }
            for (stream, commits) in &snap.streams {
                let Ok(id) = StreamId::parse(stream) else {
                    continue;
                };
                if !commits.iter().any(|c| feeds(kind, id.category(), c)) {
                    continue;
                }
                let cp = checkpoint(snap, &name, kind, stream);
                lag.applied += cp;
                let pending: Vec<&CommitRow> = commits
                    .iter()
                    .filter(|c| c.last_version() > cp && feeds(kind, id.category(), c))
                    .collect();
                if let Some(first) = pending.first() {
                    lag.streams_behind += 1;
                    lag.behind = lag.behind.map(|b| b + pending.len() as u64);
                    lag.oldest_unapplied = Some(
                        lag.oldest_unapplied
                            .map_or(first.committed_at, |o| o.min(first.committed_at)),
                    );
                }
            }
            if kind == Kind::Saga {
                lag.overdue = overdue(snap).len();
            }
            lag
        })
        .collect()
}

/// Saga deadline entries past due at the snapshot's time, most overdue first.
pub fn overdue(snap: &Snapshot) -> Vec<&crate::source::DeadlineRow> {
    let mut due: Vec<_> = snap
        .deadlines
        .iter()
        .filter(|d| d.due_at.is_some_and(|t| t < snap.taken_at))
        .collect();
    due.sort_by_key(|d| d.due_at);
    due
}

/// Remembers, per consumer, when it last made progress, to flag stalls: work waiting and
/// no checkpoint moved for the stall period.
#[derive(Debug)]
pub struct StallTracker {
    period: Duration,
    seen: HashMap<String, (u64, Instant)>,
}

impl StallTracker {
    /// A tracker flagging `period` without progress.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            seen: HashMap::new(),
        }
    }

    /// Sets `stalled` on each of `lags` as of `now`.
    pub fn observe(&mut self, lags: &mut [ConsumerLag], now: Instant) {
        for lag in lags {
            let behind = lag.behind.unwrap_or(0);
            let entry = self
                .seen
                .entry(lag.name.clone())
                .or_insert((lag.applied, now));
            // Progress (a checkpoint moved) or nothing to do: the clock restarts.
            if entry.0 != lag.applied || behind == 0 {
                *entry = (lag.applied, now);
            }
            lag.stalled = behind > 0 && now.duration_since(entry.1) >= self.period;
            let old = lag.iterator_age.and_then(|a| a.oldest());
            if old.is_some_and(|a| a.to_std().is_ok_and(|a| a >= self.period)) {
                lag.stalled = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::EventRow;
    use aws_sdk_dynamodb::types::AttributeValue;
    use eventfold::Metadata;

    fn commit(stream: &str, version: u64, types: &[&str]) -> CommitRow {
        CommitRow {
            stream_id: stream.to_owned(),
            version,
            events: types
                .iter()
                .enumerate()
                .map(|(i, t)| EventRow {
                    event_id: format!("{stream}-{version}-{i}"),
                    event_type: (*t).to_owned(),
                    schema_version: 1,
                    occurred_at: Utc::now(),
                })
                .collect(),
            metadata: Metadata::root("acme", "dev", "c1"),
            committed_at: Utc::now() - Span::minutes(5),
            snapshot: None,
        }
    }

    fn snap() -> Snapshot {
        let mut s = Snapshot {
            taken_at: Utc::now(),
            ..Snapshot::default()
        };
        s.streams.insert(
            "acme/Order-o1".into(),
            vec![
                commit("acme/Order-o1", 1, &["OrderCreated"]),
                commit("acme/Order-o1", 2, &["ItemAdded", "ItemAdded"]),
                commit("acme/Order-o1", 4, &["OrderPlaced"]),
            ],
        );
        s.index();
        s
    }

    fn of<'a>(lags: &'a [ConsumerLag], name: &str) -> &'a ConsumerLag {
        lags.iter().find(|l| l.name == name).expect("consumer")
    }

    #[test]
    fn a_stream_view_is_behind_by_the_commits_past_its_documents_checkpoint() {
        let mut s = snap();
        s.doc_checkpoints
            .insert(("order-summary".into(), "acme/o1".into()), 3);
        let lags = compute(&s);
        let view = of(&lags, "order-summary");
        assert_eq!(view.behind, Some(1));
        assert_eq!(view.streams_behind, 1);
        assert_eq!(view.applied, 3);
        // Nothing applied for the counter view: every commit of the order waits.
        assert_eq!(of(&lags, "daily-sales").behind, Some(3));
        // The saga sees only OrderPlaced among them.
        assert_eq!(of(&lags, SAGA).behind, Some(1));
        assert_eq!(of(&lags, "stream-publisher").behind, None);
        assert_eq!(
            of(&lags, "stream-publisher").iterator_age,
            Some(crate::iterator_age::PublisherAge::Unknown)
        );
    }

    #[test]
    fn the_publisher_is_stalled_when_its_iterator_age_reaches_the_period() {
        use crate::iterator_age::PublisherAge;
        let mut s = snap();
        let mut tracker = StallTracker::new(Duration::from_secs(60));
        let at = Utc::now();
        s.publisher = PublisherAge::Age { ms: 2_000.0, at };
        let mut lags = compute(&s);
        tracker.observe(&mut lags, Instant::now());
        assert!(!of(&lags, "stream-publisher").stalled);
        s.publisher = PublisherAge::Age { ms: 61_000.0, at };
        let mut lags = compute(&s);
        tracker.observe(&mut lags, Instant::now());
        assert!(of(&lags, "stream-publisher").stalled);
        assert!(of(&lags, "stream-publisher").stuck());
    }

    #[test]
    fn a_view_s_lag_follows_its_live_version() {
        let mut s = snap();
        // v1 is current, v2 (building) has seen nothing: the lag is v1's.
        s.doc_checkpoints
            .insert(("order-summary".into(), "acme/o1".into()), 4);
        let pointer = |json: &str| serde_json::from_str(json).expect("pointer");
        let building = r#"{"live":1,"latest":2,"building":2,"retiring":null,"retire_after":null,"rev":1,"note":null}"#;
        let mut item = std::collections::HashMap::new();
        item.insert("pk".into(), AttributeValue::S("_view".into()));
        item.insert("sk".into(), AttributeValue::S("order-summary".into()));
        item.insert("pointer".into(), AttributeValue::S(building.into()));
        crate::source::read_model_item(&mut s, &item);
        assert_eq!(s.pointer("order-summary"), pointer(building));
        assert_eq!(of(&compute(&s), "order-summary").behind, Some(0));
        // Promoted: the lag is v2's, which is behind.
        s.pointers.insert(
            "order-summary".into(),
            pointer(r#"{"live":2,"latest":2,"building":null,"retiring":1,"retire_after":null,"rev":2,"note":null}"#),
        );
        assert_eq!(of(&compute(&s), "order-summary").behind, Some(3));
        s.doc_checkpoints
            .insert(("order-summary@v2".into(), "acme/o1".into()), 4);
        assert_eq!(of(&compute(&s), "order-summary").behind, Some(0));
    }

    #[test]
    fn a_consumer_with_work_and_no_progress_for_the_period_is_stalled() {
        let s = snap();
        let mut tracker = StallTracker::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut lags = compute(&s);
        tracker.observe(&mut lags, t0);
        assert!(
            !of(&lags, "order-summary").stalled,
            "fresh lag is not a stall"
        );
        tracker.observe(&mut lags, t0 + Duration::from_secs(61));
        assert!(of(&lags, "order-summary").stalled);
        assert!(of(&lags, "order-summary").stuck());
        // Progress restarts the clock.
        let mut moved = s.clone();
        moved
            .doc_checkpoints
            .insert(("order-summary".into(), "acme/o1".into()), 1);
        let mut lags = compute(&moved);
        tracker.observe(&mut lags, t0 + Duration::from_secs(62));
        assert!(!of(&lags, "order-summary").stalled);
    }

    #[test]
    fn a_projector_letter_counts_for_the_views_of_its_streams_category_only() {
        let mut s = snap();
        let letter = serde_json::json!({
            "id": "ab", "tenant": "acme", "status": "open", "source_queue": "projector-dlq",
            "consumer": "projector", "stream_id": "acme/Inventory-sku", "first_version": 1,
            "last_version": 1, "event_type": "StockReceived", "message_id": null, "body": "{}",
            "attributes": {}, "receive_count": 5, "first_failure_at": Utc::now(),
            "last_failure_at": Utc::now(), "last_error": "bad", "blocked_behind": null,
            "changed_by": null, "changed_at": null, "reason": null
        });
        s.letters
            .push(serde_json::from_value(letter).expect("a letter"));
        let lags = compute(&s);
        assert_eq!(of(&lags, "stock-levels").open_letters, 1);
        assert_eq!(of(&lags, "order-summary").open_letters, 0);
        assert_eq!(of(&lags, SAGA).open_letters, 0);
    }
}
