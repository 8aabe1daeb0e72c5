//! The projector's mechanics over the in-memory stores, with tiny views over raw JSON:
//! exactly once per view (duplicates acknowledged, gaps filled from the event store, thin
//! notifications read), missing versions, view errors, category routing, counter views,
//! checkpoint races and upcasting before views.

use async_trait::async_trait;
use eventfold::{EventEnvelope, EventStore, MemoryEventStore, Metadata, Upcasters};
use eventfold_consumers::Notification;
use eventfold_consumers::projection::{
    Applied, ApplyError, CounterView, Doc, Found, ListQuery, MemoryReadModelStore, ModelKey, Page,
    Projector, ReadModelError, ReadModelStore, StreamView,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------------
// Test views
// ---------------------------------------------------------------------------------------------

/// A test view's refusal of bad data.
fn invalid(why: &str) -> ApplyError {
    ApplyError::Invalid(why.to_owned())
}

/// Stream view `log` of `Thing` streams: the versions, types and schema versions it saw and
/// the sum of the `n` of `Added` events. `Added` without a numeric `n` is refused;
/// `Deleted` removes the document.
struct Log;

impl StreamView for Log {
    fn name(&self) -> &str {
        "log"
    }

    fn category(&self) -> &str {
        "Thing"
    }

    fn apply(&self, doc: Option<Value>, e: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        if e.event_type == "Deleted" {
            return Ok(None);
        }
        let mut doc = doc.unwrap_or_else(|| json!({"seen": [], "sum": 0}));
        if e.event_type == "Added" {
            let n = e.data["n"]
                .as_i64()
                .ok_or_else(|| invalid("Added without n"))?;
            doc["sum"] = json!(doc["sum"].as_i64().unwrap_or(0) + n);
        }
        let seen = doc["seen"]
            .as_array_mut()
            .ok_or_else(|| invalid("corrupt log"))?;
        seen.push(json!(format!(
            "{}@{}/s{}",
            e.event_type, e.version, e.schema_version
        )));
        Ok(Some(doc))
    }

    fn index(&self, doc: &Value) -> Option<(String, String)> {
        Some(("all".into(), format!("{:08}", doc["sum"].as_i64()?)))
    }
}

/// Counter view `totals` of `Thing` streams: per `day` (or `any`), how many `Added` and the
/// sum of their `n`. Refuses `Poison`.
struct Totals;

impl CounterView for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    fn category(&self) -> &str {
        "Thing"
    }

    fn contribution(
        &self,
        e: &EventEnvelope,
    ) -> Result<Option<(String, BTreeMap<String, i64>)>, ApplyError> {
        match e.event_type.as_str() {
            "Added" => {
                let n = e.data["n"]
                    .as_i64()
                    .ok_or_else(|| invalid("Added without n"))?;
                let day = e.data["day"].as_str().unwrap_or("any").to_owned();
                Ok(Some((
                    day,
                    BTreeMap::from([("count".to_owned(), 1), ("n".to_owned(), n)]),
                )))
            }
            "Poison" => Err(invalid("poisoned")),
            _ => Ok(None),
        }
    }
}

/// Stream view `other-log` of `Other` streams: counts events.
struct OtherLog;

impl StreamView for OtherLog {
    fn name(&self) -> &str {
        "other-log"
    }

    fn category(&self) -> &str {
        "Other"
    }

    fn apply(&self, doc: Option<Value>, _e: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        let count = doc.and_then(|d| d["count"].as_i64()).unwrap_or(0);
        Ok(Some(json!({"count": count + 1})))
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const TENANT: &str = "t1";
const THING: &str = "t1/Thing-a";
const THING_B: &str = "t1/Thing-b";
const OTHER: &str = "t1/Other-x";

type Events = Arc<MemoryEventStore>;

fn envelope(stream: &str, version: u64, event_type: &str, data: Value) -> EventEnvelope {
    EventEnvelope {
        event_id: uuid::Uuid::now_v7(),
        stream_id: stream.into(),
        version,
        event_type: event_type.into(),
        schema_version: 1,
        data,
        occurred_at: chrono::Utc::now(),
        metadata: Metadata {
            tenant: TENANT.into(),
            ..Metadata::default()
        },
    }
}

fn added(n: i64) -> (&'static str, Value) {
    ("Added", json!({"n": n}))
}

/// Appends the events (versions after the stream's current end) and returns their
/// notifications in order.
async fn write(events: &Events, stream: &str, items: &[(&str, Value)]) -> Vec<Notification> {
    let start = events
        .load_range(stream, 1, None, None)
        .await
        .expect("readable")
        .len() as u64;
    let mut out = Vec::new();
    for (i, (event_type, data)) in items.iter().enumerate() {
        let version = start + 1 + i as u64;
        let e = envelope(stream, version, event_type, data.clone());
        events
            .append(
                stream,
                eventfold::ExpectedVersion::assumed(version - 1),
                vec![e.clone()],
                None,
            )
            .await
            .expect("append");
        out.push(Notification::of(&e).expect("valid stream"));
    }
    out
}

fn projector<R: ReadModelStore>(events: &Events, models: R) -> Projector<Events, R> {
    Projector::new(events.clone(), models)
        .with_stream_view(Arc::new(Log))
        .with_counter_view(Arc::new(Totals))
        .with_stream_view(Arc::new(OtherLog))
}

async fn handle<R: ReadModelStore>(p: &Projector<Events, R>, n: &Notification) -> Applied {
    p.handle(n)
        .await
        .unwrap_or_else(|e| panic!("{} v{} applies: {e}", n.stream_id, n.version))
}

/// `log` and `totals` after every notification exactly once, in order.
async fn in_order(
    events: &Events,
    notifications: &[Notification],
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let p = projector(events, MemoryReadModelStore::new());
    for n in notifications {
        handle(&p, n).await;
    }
    views(p.models())
}

fn views(models: &MemoryReadModelStore) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    (
        models.snapshot(TENANT, "log"),
        models.snapshot(TENANT, "totals"),
    )
}

fn applied(views_changed: usize, duplicates: usize, events_read: usize) -> Applied {
    Applied {
        views_changed,
        duplicates,
        events_read,
        behind: 0,
    }
}

/// [`applied`] by a catch-up that reached `behind` versions back.
fn caught_up(views_changed: usize, events_read: usize, behind: u64) -> Applied {
    Applied {
        behind,
        ..applied(views_changed, 0, events_read)
    }
}

/// The error's variant name (`ProjectError` is not reachable from outside the crate).
fn variant(e: &impl std::fmt::Debug) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn in_order_notifications_change_each_view_once() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(2), ("Noted", json!({})), added(5)]).await;
    let p = projector(&events, MemoryReadModelStore::new());
    for n in &ns {
        assert_eq!(handle(&p, n).await, applied(2, 0, 0));
    }
    let (log, totals) = views(p.models());
    assert_eq!(
        log["a"],
        json!({"seen": ["Added@1/s1", "Noted@2/s1", "Added@3/s1"], "sum": 7})
    );
    assert_eq!(
        totals,
        BTreeMap::from([("any".to_owned(), json!({"count": 2, "n": 7}))])
    );
    let doc = p
        .models()
        .get(TENANT, "log", "a")
        .await
        .expect("get")
        .expect("a doc");
    assert_eq!(doc.checkpoint, 3);
    assert_eq!(doc.index, Some(("all".into(), "00000007".into())));
    assert_eq!(
        p.models()
            .checkpoint("totals", THING)
            .await
            .expect("checkpoint"),
        3
    );
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_without_effect() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(1), added(10)]).await;
    let p = projector(&events, MemoryReadModelStore::new());
    handle(&p, &ns[0]).await;
    handle(&p, &ns[1]).await;
    let before = views(p.models());
    for n in [&ns[0], &ns[1], &ns[1], &ns[0].clone().thin()] {
        assert_eq!(handle(&p, n).await, applied(0, 2, 0));
    }
    assert_eq!(views(p.models()), before);
    assert_eq!(before.1["any"], json!({"count": 2, "n": 11}));
}

#[tokio::test]
async fn a_gap_is_filled_from_the_event_store_like_in_order_application() {
    let events = Events::default();
    let ns = write(
        &events,
        THING,
        &[added(1), added(2), ("Noted", json!({})), added(4), added(8)],
    )
    .await;
    let p = projector(&events, MemoryReadModelStore::new());
    handle(&p, &ns[0]).await;
    // v4 after v1: v2..=v4 are read from the table, once per view.
    assert_eq!(handle(&p, &ns[3]).await, caught_up(2, 6, 2));
    assert_eq!(p.models().checkpoint("totals", THING).await.expect("cp"), 4);
    // The notifications of the gap arrive late: duplicates.
    assert_eq!(handle(&p, &ns[1]).await, applied(0, 2, 0));
    assert_eq!(handle(&p, &ns[2]).await, applied(0, 2, 0));
    assert_eq!(handle(&p, &ns[4]).await, applied(2, 0, 0));
    assert_eq!(views(p.models()), in_order(&events, &ns).await);

    // A first notification past version 1 reads everything before it.
    let fresh = projector(&events, MemoryReadModelStore::new());
    assert_eq!(handle(&fresh, &ns[4]).await, caught_up(2, 10, 4));
    assert_eq!(views(fresh.models()), in_order(&events, &ns).await);
}

#[tokio::test]
async fn a_thin_notification_reads_its_event_from_the_store() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(3), added(4)]).await;
    let p = projector(&events, MemoryReadModelStore::new());
    for n in &ns {
        assert_eq!(handle(&p, &n.clone().thin()).await, applied(2, 0, 2));
    }
    assert_eq!(views(p.models()), in_order(&events, &ns).await);
}

#[tokio::test]
async fn a_version_the_store_lacks_is_missing_and_writes_nothing() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(1), added(2)]).await;
    // Announces v3, which the table does not (yet) hold.
    let mut ahead = ns[1].clone().thin();
    ahead.version = 3;
    let p = projector(&events, MemoryReadModelStore::new());
    let err = p.handle(&ahead).await.expect_err("v3 is missing");
    assert_eq!(variant(&err), "Missing");
    assert!(err.to_string().contains("lacks versions 1..=3"), "{err}");
    assert_eq!(views(p.models()), (BTreeMap::new(), BTreeMap::new()));
    assert_eq!(p.models().get(TENANT, "log", "a").await.expect("get"), None);
    assert_eq!(p.models().checkpoint("totals", THING).await.expect("cp"), 0);

    // After v1: still missing (v2..=v3), still nothing written.
    handle(&p, &ns[0]).await;
    let before = views(p.models());
    let err = p.handle(&ahead).await.expect_err("v3 is missing");
    assert!(err.to_string().contains("lacks versions 2..=3"), "{err}");
    assert_eq!(views(p.models()), before);
    assert_eq!(p.models().checkpoint("totals", THING).await.expect("cp"), 1);

    // Once the table has it, the same notification applies.
    let late = write(&events, THING, &[added(4)]).await;
    assert_eq!(late[0].version, 3);
    assert_eq!(handle(&p, &ahead).await, caught_up(2, 4, 1));
    assert_eq!(
        views(p.models()),
        in_order(&events, &[ns, late].concat()).await
    );
}

#[tokio::test]
async fn a_view_error_is_not_acknowledged_and_leaves_the_checkpoint() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(1), ("Added", json!({"m": 2}))]).await;
    let p = projector(&events, MemoryReadModelStore::new());
    handle(&p, &ns[0]).await;
    let before = views(p.models());
    for _ in 0..2 {
        let err = p
            .handle(&ns[1])
            .await
            .expect_err("log refuses Added without n");
        assert_eq!(variant(&err), "View");
        assert!(
            err.to_string()
                .contains("view log cannot apply Added v2 of t1/Thing-a"),
            "{err}"
        );
        assert_eq!(views(p.models()), before);
        let doc = p
            .models()
            .get(TENANT, "log", "a")
            .await
            .expect("get")
            .expect("doc");
        assert_eq!(doc.checkpoint, 1);
        assert_eq!(p.models().checkpoint("totals", THING).await.expect("cp"), 1);
    }
}

#[tokio::test]
async fn checkpoints_are_per_view() {
    let events = Events::default();
    // `log` takes Poison, `totals` refuses it.
    let ns = write(&events, THING, &[added(1), ("Poison", json!({}))]).await;
    let p = projector(&events, MemoryReadModelStore::new());
    handle(&p, &ns[0]).await;
    let err = p.handle(&ns[1]).await.expect_err("totals refuses Poison");
    assert_eq!(variant(&err), "View");
    let doc = p
        .models()
        .get(TENANT, "log", "a")
        .await
        .expect("get")
        .expect("doc");
    assert_eq!(doc.checkpoint, 2, "log moved on");
    assert_eq!(
        p.models().checkpoint("totals", THING).await.expect("cp"),
        1,
        "totals did not"
    );
    // The retry is a duplicate for log and fails again for totals.
    let err = p.handle(&ns[1]).await.expect_err("still poisoned");
    assert_eq!(variant(&err), "View");
    assert_eq!(
        p.models()
            .get(TENANT, "log", "a")
            .await
            .expect("get")
            .expect("doc"),
        doc
    );
}

#[tokio::test]
async fn categories_route_only_to_their_views() {
    let events = Events::default();
    let other = write(&events, OTHER, &[added(100), added(200)]).await;
    let thing = write(&events, THING, &[added(1)]).await;
    let p = projector(&events, MemoryReadModelStore::new());
    for n in &other {
        assert_eq!(handle(&p, n).await, applied(1, 0, 0));
    }
    assert_eq!(views(p.models()), (BTreeMap::new(), BTreeMap::new()));
    assert_eq!(p.models().checkpoint("totals", OTHER).await.expect("cp"), 0);
    assert_eq!(
        p.models().snapshot(TENANT, "other-log"),
        BTreeMap::from([("x".to_owned(), json!({"count": 2}))])
    );
    assert_eq!(handle(&p, &thing[0]).await, applied(2, 0, 0));
    assert_eq!(
        p.models().snapshot(TENANT, "other-log")["x"],
        json!({"count": 2})
    );

    // A category without views: acknowledged, nothing to do.
    let none = write(&events, "t1/Nobody-1", &[added(1)]).await;
    assert_eq!(handle(&p, &none[0]).await, Applied::default());
    // A notification naming no valid stream.
    let mut bad = none[0].clone();
    bad.stream_id = "not a stream".into();
    assert_eq!(
        variant(&p.handle(&bad).await.expect_err("bad stream")),
        "BadNotification"
    );
}

#[tokio::test]
async fn counter_views_sum_across_streams_exactly_once_under_duplicates() {
    let events = Events::default();
    let day = |n: i64, d: &str| ("Added", json!({"n": n, "day": d}));
    let a = write(
        &events,
        THING,
        &[
            day(1, "mon"),
            day(2, "tue"),
            ("Noted", json!({})),
            day(4, "mon"),
        ],
    )
    .await;
    let b = write(&events, THING_B, &[day(10, "mon"), day(20, "wed")]).await;
    let other = write(&events, "t2/Thing-a", &[day(1000, "mon")]).await;
    let p = projector(&events, MemoryReadModelStore::new());
    // Three rounds, newest first, alternating full and thin, streams interleaved.
    for round in 0..3 {
        for (i, n) in a
            .iter()
            .rev()
            .chain(b.iter().rev())
            .chain(&other)
            .enumerate()
        {
            let n = if (i + round) % 2 == 0 {
                n.clone()
            } else {
                n.clone().thin()
            };
            p.handle(&n).await.expect("applies");
        }
    }
    assert_eq!(
        p.models().snapshot(TENANT, "totals"),
        BTreeMap::from([
            ("mon".to_owned(), json!({"count": 3, "n": 15})),
            ("tue".to_owned(), json!({"count": 1, "n": 2})),
            ("wed".to_owned(), json!({"count": 1, "n": 20})),
        ])
    );
    assert_eq!(
        p.models().snapshot("t2", "totals"),
        BTreeMap::from([("mon".to_owned(), json!({"count": 1, "n": 1000}))])
    );
    assert_eq!(p.models().checkpoint("totals", THING).await.expect("cp"), 4);
    assert_eq!(
        p.models().checkpoint("totals", THING_B).await.expect("cp"),
        2
    );
    assert_eq!(views(p.models()), in_order(&events, &[a, b].concat()).await);
}

#[tokio::test]
async fn a_deleted_document_is_hidden_but_keeps_its_checkpoint() {
    let events = Events::default();
    let ns = write(
        &events,
        THING,
        &[added(1), ("Deleted", json!({})), added(5)],
    )
    .await;
    let p = projector(&events, MemoryReadModelStore::new());
    handle(&p, &ns[0]).await;
    handle(&p, &ns[1]).await;
    assert_eq!(p.models().snapshot(TENANT, "log"), BTreeMap::new());
    let all = p
        .models()
        .list(
            TENANT,
            "log",
            ListQuery {
                index: Some("all".into()),
                cursor: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(all.docs.is_empty());
    let doc = p
        .models()
        .get(TENANT, "log", "a")
        .await
        .expect("get")
        .expect("a tombstone");
    assert_eq!(
        (doc.data, doc.checkpoint, doc.index),
        (Value::Null, 2, None)
    );
    assert_eq!(handle(&p, &ns[1]).await, applied(0, 2, 0));
    handle(&p, &ns[2]).await;
    assert_eq!(
        p.models().snapshot(TENANT, "log")["a"],
        json!({"seen": ["Added@3/s1"], "sum": 5})
    );
}

/// A read-model store where another consumer gets in first: before the next `put` / `add`
/// it performs the queued write itself; `stubborn` makes every write conflict.
#[derive(Default)]
struct Racing {
    inner: MemoryReadModelStore,
    before_put: Mutex<Option<(Doc, u64)>>,
    before_add: Mutex<Option<AddArgs>>,
    stubborn: AtomicBool,
    conflicts: AtomicUsize,
}

type AddArgs = (u64, u64, Vec<(String, BTreeMap<String, i64>)>);

impl Racing {
    fn conflict(&self, view: &str, key: &str) -> ReadModelError {
        self.conflicts.fetch_add(1, Ordering::SeqCst);
        ReadModelError::Conflict {
            view: view.into(),
            key: key.into(),
        }
    }
}

#[async_trait]
impl ReadModelStore for Racing {
    async fn get(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
    ) -> Result<Option<Doc>, ReadModelError> {
        self.inner.get(tenant, view, key).await
    }

    async fn put(
        &self,
        tenant: &str,
        view: &str,
        doc: Doc,
        expected: u64,
    ) -> Result<(), ReadModelError> {
        let interloper = self.before_put.lock().expect("lock").take();
        if let Some((theirs, their_expected)) = interloper {
            self.inner
                .put(tenant, view, theirs, their_expected)
                .await
                .expect("the other consumer writes");
        }
        if self.stubborn.load(Ordering::SeqCst) {
            return Err(self.conflict(view, &doc.key));
        }
        let key = doc.key.clone();
        match self.inner.put(tenant, view, doc, expected).await {
            Err(ReadModelError::Conflict { .. }) => Err(self.conflict(view, &key)),
            other => other,
        }
    }

    async fn checkpoint(&self, view: &str, stream_id: &str) -> Result<u64, ReadModelError> {
        self.inner.checkpoint(view, stream_id).await
    }

    async fn add(
        &self,
        tenant: &str,
        view: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        deltas: Vec<(String, BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError> {
        let interloper = self.before_add.lock().expect("lock").take();
        if let Some((their_expected, their_new, their_deltas)) = interloper {
            self.inner
                .add(
                    tenant,
                    view,
                    stream_id,
                    their_expected,
                    their_new,
                    their_deltas,
                )
                .await
                .expect("the other consumer writes");
        }
        if self.stubborn.load(Ordering::SeqCst) {
            return Err(self.conflict(view, stream_id));
        }
        match self
            .inner
            .add(tenant, view, stream_id, expected, new, deltas)
            .await
        {
            Err(ReadModelError::Conflict { .. }) => Err(self.conflict(view, stream_id)),
            other => other,
        }
    }

    async fn list(
        &self,
        tenant: &str,
        view: &str,
        query: ListQuery,
    ) -> Result<Page, ReadModelError> {
        self.inner.list(tenant, view, query).await
    }
}

#[tokio::test]
async fn a_concurrent_checkpoint_move_is_retried_and_ends_correct() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(1), added(2), added(4)]).await;
    // What the other consumer writes: the state after v2.
    let reference = projector(&events, MemoryReadModelStore::new());
    handle(&reference, &ns[0]).await;
    handle(&reference, &ns[1]).await;
    let their_doc = reference
        .models()
        .get(TENANT, "log", "a")
        .await
        .expect("get")
        .expect("doc");

    let p = projector(&events, Racing::default());
    handle(&p, &ns[0]).await;
    *p.models().before_put.lock().expect("lock") = Some((their_doc, 1));
    *p.models().before_add.lock().expect("lock") = Some((
        1,
        2,
        vec![(
            "any".to_owned(),
            BTreeMap::from([("count".to_owned(), 1), ("n".to_owned(), 2)]),
        )],
    ));
    // v3 after v1: the gap v2..=v3 is read, the write conflicts (the checkpoint moved to 2),
    // the retry reads only v3 and wins.
    let got = handle(&p, &ns[2]).await;
    assert_eq!(p.models().conflicts.load(Ordering::SeqCst), 2);
    assert_eq!((got.views_changed, got.duplicates), (2, 0));
    assert_eq!(views(&p.models().inner), in_order(&events, &ns).await);

    // When the other consumer applied the very same version, the retry is a duplicate.
    let more = write(&events, THING, &[added(8)]).await;
    let reference_doc = {
        handle(&reference, &ns[2]).await;
        handle(&reference, &more[0]).await;
        reference
            .models()
            .get(TENANT, "log", "a")
            .await
            .expect("get")
            .expect("doc")
    };
    *p.models().before_put.lock().expect("lock") = Some((reference_doc, 3));
    *p.models().before_add.lock().expect("lock") = Some((
        3,
        4,
        vec![(
            "any".to_owned(),
            BTreeMap::from([("count".to_owned(), 1), ("n".to_owned(), 8)]),
        )],
    ));
    let got = handle(&p, &more[0]).await;
    assert_eq!((got.views_changed, got.duplicates), (0, 2));
    assert_eq!(p.models().conflicts.load(Ordering::SeqCst), 4);
    assert_eq!(views(&p.models().inner), views(reference.models()));
}

#[tokio::test]
async fn a_checkpoint_that_keeps_moving_is_reported_after_bounded_attempts() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(1)]).await;
    let p = projector(&events, Racing::default());
    p.models().stubborn.store(true, Ordering::SeqCst);
    let err = p.handle(&ns[0]).await.expect_err("never wins");
    assert_eq!(variant(&err), "ReadModel");
    assert!(err.to_string().contains("checkpoint conflict"), "{err}");
    let attempts = p.models().conflicts.load(Ordering::SeqCst);
    assert!(
        (2..=10).contains(&attempts),
        "bounded retries, got {attempts}"
    );
    assert_eq!(views(&p.models().inner), (BTreeMap::new(), BTreeMap::new()));
}

#[tokio::test]
async fn upcasters_apply_before_views_see_the_data() {
    let events = Events::default();
    // Schema 1 of Added called the field `amount`.
    let old = |amount: i64| ("Added", json!({"amount": amount}));
    let ns = write(&events, THING, &[old(3), old(5), old(7)]).await;
    let upcasters = || Upcasters::new().register("Added", 1, |d| json!({"n": d["amount"].clone()}));

    // Without upcasters the views cannot read the old schema.
    let plain = projector(&events, MemoryReadModelStore::new());
    assert_eq!(
        variant(&plain.handle(&ns[0]).await.expect_err("old schema")),
        "View"
    );

    // With them: the carried event (v1), a thin one (v2) and a gap (v3 after v1) all upcast.
    let p = projector(&events, MemoryReadModelStore::new()).with_upcasters(upcasters());
    handle(&p, &ns[0]).await;
    handle(&p, &ns[1].clone().thin()).await;
    handle(&p, &ns[2]).await;
    let fresh = projector(&events, MemoryReadModelStore::new()).with_upcasters(upcasters());
    handle(&fresh, &ns[0]).await;
    assert_eq!(handle(&fresh, &ns[2]).await, caught_up(2, 4, 1));

    for models in [p.models(), fresh.models()] {
        let (log, totals) = views(models);
        assert_eq!(
            log["a"],
            json!({"seen": ["Added@1/s2", "Added@2/s2", "Added@3/s2"], "sum": 15})
        );
        assert_eq!(totals["any"], json!({"count": 3, "n": 15}));
    }
}

/// The memory store, remembering the most events one read returned.
#[derive(Default)]
struct Widest {
    inner: Events,
    widest: AtomicUsize,
    reads: AtomicUsize,
}

#[async_trait]
impl EventStore for Widest {
    async fn load(
        &self,
        stream_id: &str,
        options: eventfold::LoadOptions,
    ) -> Result<eventfold::LoadedStream, eventfold::StoreError> {
        self.inner.load(stream_id, options).await
    }

    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, eventfold::StoreError> {
        let got = self
            .inner
            .load_range(stream_id, from_version, to_version, limit)
            .await?;
        self.widest.fetch_max(got.len(), Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(got)
    }

    async fn append(
        &self,
        stream_id: &str,
        expected_version: eventfold::ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<eventfold::Snapshot>,
    ) -> Result<eventfold::AppendOutcome, eventfold::StoreError> {
        self.inner
            .append(stream_id, expected_version, events, snapshot)
            .await
    }
}

#[tokio::test]
async fn a_long_gap_is_read_and_checkpointed_a_page_at_a_time() {
    use eventfold_consumers::projection::CATCH_UP_PAGE;
    let store = Widest::default();
    let mut items: Vec<(&str, Value)> = (1..=1000).map(added).collect();
    // Version 950 is refused by both views: pages before it are kept.
    items[949] = ("Added", json!({"m": 1}));
    let ns = write(&store.inner, THING, &items).await;
    let p = Projector::new(store, MemoryReadModelStore::new())
        .with_stream_view(Arc::new(Log))
        .with_counter_view(Arc::new(Totals));
    let err = p
        .handle(&ns[999])
        .await
        .expect_err("version 950 is refused");
    assert_eq!(variant(&err), "View");
    let widest = p.events().widest.load(Ordering::SeqCst);
    assert!(
        widest as u64 <= CATCH_UP_PAGE,
        "at most one page per read, got {widest}"
    );
    let doc = p
        .models()
        .get(TENANT, "log", "a")
        .await
        .expect("get")
        .expect("doc");
    assert_eq!(
        doc.checkpoint, 900,
        "every full page before the poison is kept"
    );
    assert_eq!(
        p.models().checkpoint("totals", THING).await.expect("cp"),
        900
    );
    assert_eq!(doc.data["sum"], (1..=900).sum::<i64>());
    // Reads: nine pages per view up to 900, plus the refused page of each.
    assert_eq!(p.events().reads.load(Ordering::SeqCst), 20);
}

// ---------------------------------------------------------------------------------------------
// Batches: one batched read, one write per (view, stream) and group, exact partial failures
// ---------------------------------------------------------------------------------------------

/// A read-model store that logs every request (`get_many`, `get log a`, `checkpoint totals
/// t1/Thing-a`, `put log a`, `add totals t1/Thing-a`) and fails those it is told to: the
/// writes of the named documents / source streams, and batched reads.
#[derive(Default)]
struct Faulty {
    inner: MemoryReadModelStore,
    log: Mutex<Vec<String>>,
    failing_writes: Mutex<Vec<String>>,
    failing_batches: AtomicBool,
}

impl Faulty {
    fn record(&self, request: String) -> Result<(), ReadModelError> {
        let failing = self.failing_writes.lock().expect("lock").contains(&request)
            || (request == "get_many" && self.failing_batches.load(Ordering::SeqCst));
        self.log.lock().expect("lock").push(request.clone());
        if failing {
            return Err(ReadModelError::Unavailable(
                format!("injected: {request}").into(),
            ));
        }
        Ok(())
    }

    fn fail(&self, request: &str) {
        self.failing_writes
            .lock()
            .expect("lock")
            .push(request.to_owned());
    }

    fn heal(&self) {
        self.failing_writes.lock().expect("lock").clear();
        self.failing_batches.store(false, Ordering::SeqCst);
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().expect("lock"))
    }
}

#[async_trait]
impl ReadModelStore for Faulty {
    async fn get(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
    ) -> Result<Option<Doc>, ReadModelError> {
        self.record(format!("get {view} {key}"))?;
        self.inner.get(tenant, view, key).await
    }

    async fn put(
        &self,
        tenant: &str,
        view: &str,
        doc: Doc,
        expected: u64,
    ) -> Result<(), ReadModelError> {
        self.record(format!("put {view} {}", doc.key))?;
        self.inner.put(tenant, view, doc, expected).await
    }

    async fn checkpoint(&self, view: &str, stream_id: &str) -> Result<u64, ReadModelError> {
        self.record(format!("checkpoint {view} {stream_id}"))?;
        self.inner.checkpoint(view, stream_id).await
    }

    async fn get_many(&self, keys: &[ModelKey]) -> Result<Vec<Found>, ReadModelError> {
        self.record("get_many".to_owned())?;
        self.inner.get_many(keys).await
    }

    async fn add(
        &self,
        tenant: &str,
        view: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        deltas: Vec<(String, BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError> {
        self.record(format!("add {view} {stream_id}"))?;
        self.inner
            .add(tenant, view, stream_id, expected, new, deltas)
            .await
    }

    async fn list(
        &self,
        tenant: &str,
        view: &str,
        query: ListQuery,
    ) -> Result<Page, ReadModelError> {
        self.inner.list(tenant, view, query).await
    }
}

/// Both views and both checkpoints of `stream` (log document key `key`).
async fn checkpoints(models: &MemoryReadModelStore, key: &str, stream: &str) -> (u64, u64) {
    let log = models
        .get(TENANT, "log", key)
        .await
        .expect("get")
        .map_or(0, |d| d.checkpoint);
    let totals = models
        .checkpoint("totals", stream)
        .await
        .expect("checkpoint");
    (log, totals)
}

#[tokio::test]
async fn a_batch_reads_once_and_writes_each_view_and_stream_once() {
    let events = Events::default();
    let a = write(&events, THING, &(1..=10).map(added).collect::<Vec<_>>()).await;
    let b = write(&events, THING_B, &[added(100)]).await;
    let x = write(&events, OTHER, &[("Seen", json!({}))]).await;
    let p = projector(&events, Faulty::default());
    let outcomes = p.handle_batch(&[a.clone(), b.clone(), x.clone()]).await;
    for o in &outcomes {
        assert!(o.failure.is_none(), "{:?}", o.failure);
    }
    assert_eq!(outcomes[0].applied, vec![applied(2, 0, 0); 10]);
    assert_eq!(outcomes[1].applied, [applied(2, 0, 0)]);
    assert_eq!(outcomes[2].applied, [applied(1, 0, 0)]);
    assert_eq!(
        p.models().take_log(),
        [
            "get_many",
            "put log a",
            "add totals t1/Thing-a",
            "put log b",
            "add totals t1/Thing-b",
            "put other-log x",
        ]
    );
    let all: Vec<Notification> = [a.clone(), b.clone()].concat();
    assert_eq!(views(&p.models().inner), in_order(&events, &all).await);
    assert_eq!(
        p.models().inner.snapshot(TENANT, "other-log")["x"],
        json!({"count": 1})
    );

    // The same batch again: one read, no write, every notification a duplicate.
    let again = p.handle_batch(&[a, b, x]).await;
    assert_eq!(p.models().take_log(), ["get_many"]);
    assert_eq!(again[0].applied, vec![applied(0, 2, 0); 10]);
    assert_eq!(views(&p.models().inner), in_order(&events, &all).await);
}

#[tokio::test]
async fn duplicates_and_reordering_within_a_group_apply_each_event_once() {
    let events = Events::default();
    let ns = write(
        &events,
        THING,
        &[
            added(1),
            added(2),
            ("Renamed", json!({})),
            added(8),
            added(16),
        ],
    )
    .await;
    let p = projector(&events, Faulty::default());
    let shuffled = vec![
        ns[1].clone(),
        ns[0].clone(),
        ns[1].clone(),
        ns[2].clone(),
        ns[4].clone(),
        ns[3].clone(),
        ns[4].clone(),
        ns[3].clone().thin(),
    ];
    let outcome = p.handle_batch(&[shuffled]).await.remove(0);
    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    // v2 first: v1..=v2 read from the store (by each view); v5 after v3: v4..=v5 read.
    assert_eq!(
        outcome.applied,
        [
            caught_up(2, 4, 1),
            applied(0, 2, 0),
            applied(0, 2, 0),
            applied(2, 0, 0),
            caught_up(2, 4, 1),
            applied(0, 2, 0),
            applied(0, 2, 0),
            applied(0, 2, 0),
        ]
    );
    assert_eq!(
        p.models().take_log(),
        ["get_many", "put log a", "add totals t1/Thing-a"]
    );
    assert_eq!(views(&p.models().inner), in_order(&events, &ns).await);
    assert_eq!(
        p.models().inner.snapshot(TENANT, "totals")["any"],
        json!({"count": 4, "n": 27}),
        "each Added counted exactly once"
    );
}

#[tokio::test]
async fn a_refused_event_stops_its_group_where_one_at_a_time_would() {
    let events = Events::default();
    // Totals refuses the Poison event at v3; Log takes it.
    let a = write(
        &events,
        THING,
        &[added(1), added(2), ("Poison", json!({})), added(4)],
    )
    .await;
    let b = write(&events, THING_B, &[added(10), added(20)]).await;
    let p = projector(&events, Faulty::default());
    let outcomes = p.handle_batch(&[a.clone(), b.clone()]).await;
    assert_eq!(outcomes[0].applied, vec![applied(2, 0, 0); 2]);
    let failure = outcomes[0].failure.as_ref().expect("v3 fails");
    assert_eq!(variant(failure), "View");
    assert!(outcomes[1].failure.is_none() && outcomes[1].applied.len() == 2);

    // One at a time stops at the same notification with the same durable effects.
    let reference = projector(&events, MemoryReadModelStore::new());
    handle(&reference, &a[0]).await;
    handle(&reference, &a[1]).await;
    assert!(reference.handle(&a[2]).await.is_err());
    for n in &b {
        handle(&reference, n).await;
    }
    assert_eq!(views(&p.models().inner), views(reference.models()));
    assert_eq!(checkpoints(&p.models().inner, "a", THING).await, (3, 2));
    assert_eq!(checkpoints(&p.models().inner, "b", THING_B).await, (2, 2));
}

#[tokio::test]
async fn a_failed_write_fails_every_notification_it_carried_and_no_other() {
    let events = Events::default();
    let a = write(&events, THING, &[added(1), added(2), added(4)]).await;
    let b = write(&events, THING_B, &[added(10), added(20)]).await;
    let p = projector(&events, Faulty::default());
    // The first batch lands a1 for every view.
    let first = p.handle_batch(&[a[..1].to_vec()]).await;
    assert!(first[0].failure.is_none());
    p.models().fail("put log a");
    let batch = [a.clone(), b.clone()];
    let outcomes = p.handle_batch(&batch).await;
    // a1 is a duplicate everywhere, so it stands; a2 and a3 rode on the failed write.
    assert_eq!(outcomes[0].applied, [applied(0, 2, 0)]);
    let failure = outcomes[0].failure.as_ref().expect("the log write failed");
    assert!(failure.to_string().contains("injected"), "{failure}");
    assert_eq!(
        outcomes[1].applied.len(),
        2,
        "the other stream is unaffected"
    );
    assert!(outcomes[1].failure.is_none());
    // totals of a moved on (its own write went through); log of a did not.
    assert_eq!(checkpoints(&p.models().inner, "a", THING).await, (1, 3));

    // Redelivered from the failure on: every event lands exactly once.
    p.models().heal();
    let redelivered = p.handle_batch(&[a[1..].to_vec()]).await;
    assert!(redelivered[0].failure.is_none());
    assert_eq!(
        redelivered[0].applied,
        vec![applied(1, 1, 0); 2],
        "log applies, totals had it"
    );
    let all = [a, b].concat();
    assert_eq!(views(&p.models().inner), in_order(&events, &all).await);
}

#[tokio::test]
async fn a_failed_batched_read_falls_back_to_single_reads() {
    let events = Events::default();
    let a = write(&events, THING, &[added(1), added(2)]).await;
    let x = write(&events, OTHER, &[("Seen", json!({}))]).await;
    let p = projector(&events, Faulty::default());
    p.models().failing_batches.store(true, Ordering::SeqCst);
    let outcomes = p.handle_batch(&[a.clone(), x]).await;
    assert!(outcomes.iter().all(|o| o.failure.is_none()));
    assert_eq!(
        p.models().take_log(),
        [
            "get_many",
            "get log a",
            "checkpoint totals t1/Thing-a",
            "put log a",
            "add totals t1/Thing-a",
            "get other-log x",
            "put other-log x",
        ]
    );
    assert_eq!(views(&p.models().inner), in_order(&events, &a).await);
}

#[tokio::test]
async fn a_checkpoint_moved_by_another_consumer_is_redone_one_at_a_time() {
    let events = Events::default();
    let ns = write(&events, THING, &[added(1), added(2), added(4)]).await;
    // What the other consumer writes meanwhile: the state after v2.
    let reference = projector(&events, MemoryReadModelStore::new());
    handle(&reference, &ns[0]).await;
    handle(&reference, &ns[1]).await;
    let their_doc = reference
        .models()
        .get(TENANT, "log", "a")
        .await
        .expect("get")
        .expect("doc");
    let p = projector(&events, Racing::default());
    *p.models().before_put.lock().expect("lock") = Some((their_doc, 0));
    *p.models().before_add.lock().expect("lock") = Some((
        0,
        2,
        vec![(
            "any".to_owned(),
            BTreeMap::from([("count".to_owned(), 2), ("n".to_owned(), 3)]),
        )],
    ));
    let outcome = p.handle_batch(std::slice::from_ref(&ns)).await.remove(0);
    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    assert_eq!(outcome.applied.len(), 3);
    assert_eq!(p.models().conflicts.load(Ordering::SeqCst), 2);
    assert_eq!(views(&p.models().inner), in_order(&events, &ns).await);
}

#[tokio::test]
async fn a_long_gap_in_a_batch_is_still_written_a_page_at_a_time() {
    use eventfold_consumers::projection::CATCH_UP_PAGE;
    let events = Events::default();
    let items: Vec<(&str, Value)> = (1..=250).map(added).collect();
    let ns = write(&events, THING, &items).await;
    let p = projector(&events, Faulty::default());
    let group = vec![ns[0].clone(), ns[1].clone(), ns[249].clone()];
    let outcome = p.handle_batch(&[group]).await.remove(0);
    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    let log = p.models().take_log();
    let puts = log.iter().filter(|r| *r == "put log a").count();
    let adds = log.iter().filter(|r| *r == "add totals t1/Thing-a").count();
    assert_eq!(
        (puts, adds),
        (3, 3),
        "pages of {CATCH_UP_PAGE}: up to 100, 200, 250"
    );
    assert_eq!(views(&p.models().inner), in_order(&events, &ns).await);
}
