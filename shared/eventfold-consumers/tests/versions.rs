//! The projector over several versions of a view (in-memory stores): every active version is
//! kept current from the batch after its registration, a rebuild pinned to the new version
//! meets the live stream without applying anything twice (stream and counter views), and a
//! retired version is written no more.

use eventfold::{EventEnvelope, EventStore, MemoryEventStore, Metadata};
use eventfold_consumers::Notification;
use eventfold_consumers::projection::{
    ApplyError, CounterView, MemoryReadModelStore, Projector, ReadModelError, ReadModelStore,
    StreamView, ViewPointer, stored_name,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const TENANT: &str = "t1";

/// Stream view `log`: the versions it saw, in order.
struct Log;

impl StreamView for Log {
    fn name(&self) -> &str {
        "log"
    }
    fn category(&self) -> &str {
        "Thing"
    }
    fn apply(&self, doc: Option<Value>, e: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        let mut seen = doc
            .and_then(|d| d["seen"].as_array().cloned())
            .unwrap_or_default();
        seen.push(json!(e.version));
        Ok(Some(json!({ "seen": seen })))
    }
}

/// Counter view `count`: how many events, under key `all` (double application shows).
struct Count;

impl CounterView for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn category(&self) -> &str {
        "Thing"
    }
    fn contribution(
        &self,
        _e: &EventEnvelope,
    ) -> Result<Option<(String, BTreeMap<String, i64>)>, ApplyError> {
        Ok(Some(("all".into(), BTreeMap::from([("n".to_owned(), 1)]))))
    }
}

type Events = Arc<MemoryEventStore>;
type Models = Arc<MemoryReadModelStore>;

async fn write(events: &Events, stream: &str, count: u64) -> Vec<Notification> {
    let start = events
        .load_range(stream, 1, None, None)
        .await
        .expect("readable")
        .len() as u64;
    let mut out = Vec::new();
    for version in start + 1..=start + count {
        let e = EventEnvelope {
            event_id: uuid::Uuid::now_v7(),
            stream_id: stream.into(),
            version,
            event_type: "Happened".into(),
            schema_version: 1,
            data: json!({}),
            occurred_at: chrono::Utc::now(),
            metadata: Metadata {
                tenant: TENANT.into(),
                ..Metadata::default()
            },
        };
        events
            .append(
                stream,
                eventfold::ExpectedVersion::assumed(version - 1),
                vec![e.clone()],
                None,
            )
            .await
            .expect("append");
        out.push(Notification::of(&e).expect("valid"));
    }
    out
}

fn live(events: &Events, models: &Models) -> Projector<Events, Models> {
    Projector::new(events.clone(), models.clone())
        .with_stream_view(Arc::new(Log))
        .with_counter_view(Arc::new(Count))
}

/// A rebuild's projector: both views under their names of `version`, pointers ignored.
fn pinned(events: &Events, models: &Models, version: u32) -> Projector<Events, Models> {
    use eventfold_consumers::projection::versions::{VersionedCounter, VersionedStream};
    Projector::new(events.clone(), models.clone())
        .with_stream_view(Arc::new(VersionedStream::new(
            Arc::new(Log),
            stored_name("log", version),
        )))
        .with_counter_view(Arc::new(VersionedCounter::new(
            Arc::new(Count),
            stored_name("count", version),
        )))
        .pinned()
}

async fn register(models: &Models, view: &str) -> ViewPointer {
    let p = models.pointer(view).await.expect("read");
    let next = p.register_build("test").expect("register");
    models.set_pointer(view, &next).await.expect("write");
    next
}

/// A head notification, as the rebuild sends one per stream.
fn head(n: &Notification) -> Notification {
    Notification {
        event: None,
        ..n.clone()
    }
}

#[tokio::test]
async fn a_building_version_is_kept_current_and_meets_the_rebuild_without_double_counting() {
    let events: Events = Arc::new(MemoryEventStore::new());
    let models: Models = Arc::new(MemoryReadModelStore::new());
    let projector = live(&events, &models);
    for n in write(&events, "t1/Thing-a", 3).await {
        projector.handle(&n).await.expect("v1");
    }
    let before_b = write(&events, "t1/Thing-b", 2).await;
    projector.handle(&before_b[1]).await.expect("v1");
    assert_eq!(models.snapshot(TENANT, "log@v2"), BTreeMap::new());

    register(&models, "log").await;
    register(&models, "count").await;
    // After the registration the live projector writes both versions: stream a's v2 is
    // caught up from the table whole, in the same order as v1.
    let a4 = write(&events, "t1/Thing-a", 1).await;
    let done = projector.handle(&a4[0]).await.expect("both");
    assert_eq!(done.views_changed, 4, "log and count, v2 and v1");
    assert_eq!(
        models.snapshot(TENANT, "log@v2")["a"],
        json!({"seen": [1, 2, 3, 4]})
    );
    // The rebuild replays every stream to its head: a is already there (a duplicate), b is
    // new to v2.
    let rebuild = pinned(&events, &models, 2);
    let a = rebuild.handle(&head(&a4[0])).await.expect("a");
    assert_eq!(a.views_changed, 0, "the projector got there first: {a:?}");
    let b = rebuild.handle(&head(&before_b[1])).await.expect("b");
    assert_eq!(b.views_changed, 2);
    // A redelivery after the rebuild changes nothing anywhere.
    let again = projector.handle(&a4[0]).await.expect("dup");
    assert_eq!((again.views_changed, again.duplicates), (0, 4));
    assert_eq!(
        models.snapshot(TENANT, "log@v2"),
        models.snapshot(TENANT, "log")
    );
    assert_eq!(
        models.snapshot(TENANT, "count@v2"),
        models.snapshot(TENANT, "count")
    );
    assert_eq!(
        models.snapshot(TENANT, "count@v2")["all"],
        json!({"n": 6}),
        "each of the six events counted once"
    );
}

#[tokio::test]
async fn a_batch_applies_every_active_version_and_a_retired_one_is_written_no_more() {
    let events: Events = Arc::new(MemoryEventStore::new());
    let models: Models = Arc::new(MemoryReadModelStore::new());
    let projector = live(&events, &models);
    let building = register(&models, "log").await;
    let ns = write(&events, "t1/Thing-a", 3).await;
    let outcomes = projector
        .handle_batch(&[vec![ns[0].clone(), ns[2].clone(), ns[1].clone()]])
        .await;
    assert!(outcomes[0].failure.is_none(), "{:?}", outcomes[0].failure);
    assert_eq!(
        models.snapshot(TENANT, "log@v2")["a"],
        json!({"seen": [1, 2, 3]})
    );
    assert_eq!(
        models.snapshot(TENANT, "log"),
        models.snapshot(TENANT, "log@v2")
    );

    let now = chrono::Utc::now();
    let promoted = building
        .promote(2, now, chrono::Duration::zero(), "test")
        .expect("promote");
    models.set_pointer("log", &promoted).await.expect("flip");
    let retired = promoted.retire(1, now, "test").expect("retire");
    models.set_pointer("log", &retired).await.expect("retire");
    let dropped = models
        .drop_view(&[TENANT.to_owned()], "log")
        .await
        .expect("drop");
    assert_eq!(dropped, 1);
    let n4 = write(&events, "t1/Thing-a", 1).await;
    projector.handle_batch(&[n4]).await;
    assert_eq!(
        models.snapshot(TENANT, "log@v2")["a"],
        json!({"seen": [1, 2, 3, 4]})
    );
    assert!(
        models.snapshot(TENANT, "log").is_empty(),
        "the retired version is not written again"
    );
}

#[tokio::test]
async fn a_stale_pointer_write_is_a_conflict() {
    let models = MemoryReadModelStore::new();
    let first = ViewPointer::initial().register_build("a").expect("ok");
    models.set_pointer("v", &first).await.expect("first write");
    // A second operator who read the pointer before the first write.
    let stale = ViewPointer::initial().register_build("b").expect("ok");
    assert!(matches!(
        models.set_pointer("v", &stale).await,
        Err(ReadModelError::Conflict { .. })
    ));
    assert_eq!(models.pointer("v").await.expect("read"), first);
}

/// A shared memory store that counts the reads a projector makes (batched or single).
struct Counted {
    inner: Models,
    reads: std::sync::atomic::AtomicUsize,
}

impl Counted {
    fn take(&self) -> usize {
        self.reads.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
    fn read(&self) {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ReadModelStore for Counted {
    async fn get(
        &self,
        tenant: &str,
        view: &str,
        key: &str,
    ) -> Result<Option<eventfold_consumers::projection::Doc>, ReadModelError> {
        self.read();
        self.inner.get(tenant, view, key).await
    }
    async fn put(
        &self,
        tenant: &str,
        view: &str,
        doc: eventfold_consumers::projection::Doc,
        expected: u64,
    ) -> Result<(), ReadModelError> {
        self.inner.put(tenant, view, doc, expected).await
    }
    async fn checkpoint(&self, view: &str, stream_id: &str) -> Result<u64, ReadModelError> {
        self.read();
        self.inner.checkpoint(view, stream_id).await
    }
    async fn get_many(
        &self,
        keys: &[eventfold_consumers::projection::ModelKey],
    ) -> Result<Vec<eventfold_consumers::projection::Found>, ReadModelError> {
        self.read();
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
        self.inner
            .add(tenant, view, stream_id, expected, new, deltas)
            .await
    }
    async fn list(
        &self,
        tenant: &str,
        view: &str,
        query: eventfold_consumers::projection::ListQuery,
    ) -> Result<eventfold_consumers::projection::Page, ReadModelError> {
        self.inner.list(tenant, view, query).await
    }
    async fn pointer(&self, view: &str) -> Result<ViewPointer, ReadModelError> {
        self.read();
        self.inner.pointer(view).await
    }
    async fn pointers(&self, views: &[String]) -> Result<Vec<ViewPointer>, ReadModelError> {
        self.read();
        self.inner.pointers(views).await
    }
}

#[tokio::test]
async fn a_batch_reads_the_pointers_with_its_states_and_takes_a_registration_at_once() {
    let events: Events = Arc::new(MemoryEventStore::new());
    let models: Models = Arc::new(MemoryReadModelStore::new());
    let counted = Arc::new(Counted {
        inner: models.clone(),
        reads: Default::default(),
    });
    let projector = Projector::new(events.clone(), counted.clone())
        .with_stream_view(Arc::new(Log))
        .with_counter_view(Arc::new(Count));
    let ns = write(&events, "t1/Thing-a", 3).await;
    // The first batch of an instance reads the pointers, then the states.
    projector.handle_batch(&[vec![ns[0].clone()]]).await;
    assert_eq!(counted.take(), 2);
    // Afterwards one read: the pointers again, with the states the seen ones select.
    projector.handle_batch(&[vec![ns[1].clone()]]).await;
    assert_eq!(counted.take(), 1);
    // A version registered between two batches is written by the very next one (its
    // stream caught up from the table), at the cost of a second read.
    register(&models, "log").await;
    let outcome = projector.handle_batch(&[vec![ns[2].clone()]]).await;
    assert!(outcome[0].failure.is_none(), "{:?}", outcome[0].failure);
    assert_eq!(counted.take(), 2);
    assert_eq!(
        models.snapshot(TENANT, "log@v2")["a"],
        json!({"seen": [1, 2, 3]})
    );
    assert_eq!(
        models.snapshot(TENANT, "log")["a"],
        json!({"seen": [1, 2, 3]})
    );
    // And the pointers it read are the ones it goes on with: one read again.
    let more = write(&events, "t1/Thing-a", 1).await;
    projector.handle_batch(&[more]).await;
    assert_eq!(counted.take(), 1);
    assert_eq!(
        models.snapshot(TENANT, "log@v2")["a"],
        json!({"seen": [1, 2, 3, 4]})
    );
}
