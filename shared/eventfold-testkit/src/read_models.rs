//! The contract every [`ReadModelStore`] adapter must pass: run it from each adapter's tests.
//!
//! Every check works in its own view under tenants derived from `tenant_prefix`, so suites can
//! share one table; failures panic with the broken rule.

use eventfold_consumers::projection::{
    Doc, Found, ListQuery, ModelKey, Page, ReadModelError, ReadModelStore,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Runs every check against `store`. `tenant_prefix` must be unique to this run and a valid
/// tenant (`[A-Za-z0-9_-]`, at most 56 characters).
pub async fn run_all(store: &dyn ReadModelStore, tenant_prefix: &str) {
    put_and_get_follow_the_expected_checkpoint(store, tenant_prefix).await;
    null_data_keeps_the_checkpoint_but_hides_the_doc(store, tenant_prefix).await;
    counters_add_and_move_the_checkpoint_atomically(store, tenant_prefix).await;
    an_empty_add_is_a_plain_conditional_checkpoint_move(store, tenant_prefix).await;
    list_by_key_pages_through_every_doc_once_in_order(store, tenant_prefix).await;
    list_by_index_pages_newest_first(store, tenant_prefix).await;
    tenants_are_isolated(store, tenant_prefix).await;
    invalid_cursors_are_refused(store, tenant_prefix).await;
    get_many_reads_what_single_reads_do(store, tenant_prefix).await;
}

fn doc(key: &str, data: Value, checkpoint: u64, index: Option<(&str, &str)>) -> Doc {
    Doc {
        key: key.to_owned(),
        data,
        checkpoint,
        index: index.map(|(p, s)| (p.to_owned(), s.to_owned())),
    }
}

fn rich(n: u64) -> Value {
    crate::event_store::rich_data(n)
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, ReadModelError>) -> bool {
    matches!(r, Err(ReadModelError::Conflict { .. }))
}

async fn put(store: &dyn ReadModelStore, tenant: &str, view: &str, d: Doc, expected: u64) {
    let key = d.key.clone();
    store
        .put(tenant, view, d, expected)
        .await
        .unwrap_or_else(|e| panic!("put {view}/{key} at expected {expected}: {e}"));
}

/// Follows cursors from the first page to the last: the pages, in order.
async fn all_pages(
    store: &dyn ReadModelStore,
    tenant: &str,
    view: &str,
    index: Option<&str>,
    limit: usize,
) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(
                tenant,
                view,
                ListQuery {
                    index: index.map(str::to_owned),
                    cursor: cursor.take(),
                    limit,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("list {view} (index {index:?}, limit {limit}): {e}"));
        assert!(
            page.docs.len() <= limit,
            "a page of {view} holds {} docs, more than its limit {limit}",
            page.docs.len()
        );
        cursor = page.next.clone();
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(
            pages.len() <= 1000,
            "listing {view} does not terminate (limit {limit})"
        );
    }
}

/// Every doc of a listing, across its pages, in order.
async fn list_all(
    store: &dyn ReadModelStore,
    tenant: &str,
    view: &str,
    index: Option<&str>,
    limit: usize,
) -> Vec<Doc> {
    all_pages(store, tenant, view, index, limit)
        .await
        .into_iter()
        .flat_map(|p| p.docs)
        .collect()
}

/// A put lands only at the expected checkpoint (0: no document); a refused put writes nothing.
pub async fn put_and_get_follow_the_expected_checkpoint(store: &dyn ReadModelStore, prefix: &str) {
    let (tenant, view) = (prefix, "contract-put");
    assert!(store.get(tenant, view, "k1").await.expect("get").is_none());

    let first = doc("k1", rich(1), 1, None);
    let stale = store.put(tenant, view, first.clone(), 1).await;
    assert!(
        is_conflict(&stale),
        "put on a missing doc expecting 1: {stale:?}"
    );
    assert!(
        store.get(tenant, view, "k1").await.expect("get").is_none(),
        "a refused put wrote a doc"
    );

    put(store, tenant, view, first.clone(), 0).await;
    assert_eq!(
        store.get(tenant, view, "k1").await.expect("get"),
        Some(first.clone())
    );

    let second = doc(
        "k1",
        json!({"n": 3, "state": "placed"}),
        3,
        Some(("c-1", "2026#k1")),
    );
    for expected in [0, 2, 3] {
        let r = store.put(tenant, view, second.clone(), expected).await;
        assert!(
            is_conflict(&r),
            "put at checkpoint 1 expecting {expected}: {r:?}"
        );
        assert_eq!(
            store.get(tenant, view, "k1").await.expect("get"),
            Some(first.clone()),
            "a refused put changed the doc"
        );
    }
    put(store, tenant, view, second.clone(), 1).await;
    assert_eq!(
        store.get(tenant, view, "k1").await.expect("get"),
        Some(second)
    );
    assert!(store.get(tenant, view, "k2").await.expect("get").is_none());
}

/// A `Null` document keeps its checkpoint for `get` and is left out of every listing.
pub async fn null_data_keeps_the_checkpoint_but_hides_the_doc(
    store: &dyn ReadModelStore,
    prefix: &str,
) {
    let (tenant, view) = (prefix, "contract-null");
    put(
        store,
        tenant,
        view,
        doc("a", json!({"v": 1}), 1, Some(("p", "1"))),
        0,
    )
    .await;
    put(
        store,
        tenant,
        view,
        doc("b", json!({"v": 2}), 1, Some(("p", "2"))),
        0,
    )
    .await;
    put(store, tenant, view, doc("c", json!({"v": 3}), 1, None), 0).await;
    put(store, tenant, view, doc("b", Value::Null, 2, None), 1).await;
    // Never visible: the first write of a stream can already be a removal.
    put(store, tenant, view, doc("d", Value::Null, 5, None), 0).await;

    let b = store
        .get(tenant, view, "b")
        .await
        .expect("get")
        .expect("b is kept");
    assert_eq!((b.data, b.checkpoint), (Value::Null, 2));
    let d = store
        .get(tenant, view, "d")
        .await
        .expect("get")
        .expect("d is kept");
    assert_eq!((d.data, d.checkpoint), (Value::Null, 5));

    let keys: Vec<String> = list_all(store, tenant, view, None, 10)
        .await
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(keys, ["a", "c"], "Null docs must be hidden from list");
    let indexed: Vec<String> = list_all(store, tenant, view, Some("p"), 10)
        .await
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(indexed, ["a"], "Null docs must be hidden from index lists");

    // The checkpoint still guards the hidden doc, and it can come back.
    let r = store
        .put(tenant, view, doc("b", json!({"v": 4}), 3, None), 1)
        .await;
    assert!(
        is_conflict(&r),
        "put on a Null doc at a stale checkpoint: {r:?}"
    );
    put(store, tenant, view, doc("b", json!({"v": 4}), 3, None), 2).await;
    let keys: Vec<String> = list_all(store, tenant, view, None, 10)
        .await
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

fn deltas(entries: &[(&str, &[(&str, i64)])]) -> Vec<(String, BTreeMap<String, i64>)> {
    entries
        .iter()
        .map(|(key, counters)| {
            (
                (*key).to_owned(),
                counters
                    .iter()
                    .map(|(c, d)| ((*c).to_owned(), *d))
                    .collect(),
            )
        })
        .collect()
}

/// `add` sums counters and moves the (view, stream) checkpoint in one step, or does nothing.
pub async fn counters_add_and_move_the_checkpoint_atomically(
    store: &dyn ReadModelStore,
    prefix: &str,
) {
    let (tenant, view) = (prefix, "contract-counter");
    let s1 = format!("{prefix}/Contract-one");
    let s2 = format!("{prefix}/Contract-two");
    assert_eq!(store.checkpoint(view, &s1).await.expect("checkpoint"), 0);

    store
        .add(
            tenant,
            view,
            &s1,
            0,
            2,
            deltas(&[
                ("2026-01-01", &[("orders", 1), ("cents", 500)]),
                ("2026-01-02", &[("orders", 1)]),
            ]),
        )
        .await
        .expect("first add");
    assert_eq!(store.checkpoint(view, &s1).await.expect("checkpoint"), 2);

    for expected in [0, 1, 3] {
        let r = store
            .add(
                tenant,
                view,
                &s1,
                expected,
                9,
                deltas(&[("2026-01-01", &[("orders", 100)])]),
            )
            .await;
        assert!(
            is_conflict(&r),
            "add at checkpoint 2 expecting {expected}: {r:?}"
        );
    }
    assert_eq!(
        store.checkpoint(view, &s1).await.expect("checkpoint"),
        2,
        "a refused add moved the checkpoint"
    );
    let day1 = store
        .get(tenant, view, "2026-01-01")
        .await
        .expect("get")
        .expect("counter doc");
    assert_eq!(
        day1.data,
        json!({"orders": 1, "cents": 500}),
        "a refused add changed a counter"
    );
    assert_eq!(day1.checkpoint, 0, "counter docs carry checkpoint 0");

    store
        .add(
            tenant,
            view,
            &s1,
            2,
            3,
            deltas(&[("2026-01-01", &[("orders", 1), ("cents", -200)])]),
        )
        .await
        .expect("second add");
    store
        .add(
            tenant,
            view,
            &s2,
            0,
            1,
            deltas(&[("2026-01-01", &[("orders", 5)])]),
        )
        .await
        .expect("add of another stream");
    // A contribution of nothing still moves the checkpoint.
    store
        .add(tenant, view, &s2, 1, 4, Vec::new())
        .await
        .expect("empty add");
    assert_eq!(store.checkpoint(view, &s1).await.expect("checkpoint"), 3);
    assert_eq!(store.checkpoint(view, &s2).await.expect("checkpoint"), 4);

    let docs = list_all(store, tenant, view, None, 1).await;
    let got: Vec<(String, Value)> = docs.into_iter().map(|d| (d.key, d.data)).collect();
    assert_eq!(
        got,
        [
            ("2026-01-01".to_owned(), json!({"orders": 7, "cents": 300})),
            ("2026-01-02".to_owned(), json!({"orders": 1})),
        ]
    );
}

/// An `add` without deltas is a plain conditional checkpoint move (what a saga runner keeps
/// per source stream): it creates the checkpoint from 0, moves it only from the expected
/// value, and writes no document.
pub async fn an_empty_add_is_a_plain_conditional_checkpoint_move(
    store: &dyn ReadModelStore,
    prefix: &str,
) {
    let (tenant, view) = (prefix, "contract-checkpoint");
    let stream = format!("{prefix}/Contract-moved");
    store
        .add(tenant, view, &stream, 0, 1, Vec::new())
        .await
        .expect("first move from 0");
    assert_eq!(
        store.checkpoint(view, &stream).await.expect("checkpoint"),
        1
    );
    for expected in [0, 2, 5] {
        let r = store
            .add(tenant, view, &stream, expected, 7, Vec::new())
            .await;
        assert!(
            is_conflict(&r),
            "empty add at checkpoint 1 expecting {expected}: {r:?}"
        );
    }
    assert_eq!(
        store.checkpoint(view, &stream).await.expect("checkpoint"),
        1,
        "a refused move moved the checkpoint"
    );
    store
        .add(tenant, view, &stream, 1, 7, Vec::new())
        .await
        .expect("move from 1");
    assert_eq!(
        store.checkpoint(view, &stream).await.expect("checkpoint"),
        7
    );
    assert!(
        list_all(store, tenant, view, None, 10).await.is_empty(),
        "a checkpoint move wrote a document"
    );
}

/// Without an index, `list` returns every visible doc exactly once, by key ascending, across
/// pages of at most `limit` docs.
pub async fn list_by_key_pages_through_every_doc_once_in_order(
    store: &dyn ReadModelStore,
    prefix: &str,
) {
    let (tenant, view) = (prefix, "contract-list");
    let mut expected = BTreeSet::new();
    // Written out of order, with hidden docs in between.
    for i in [
        7u64, 3, 12, 0, 22, 5, 18, 1, 9, 14, 20, 2, 11, 16, 4, 21, 8, 13, 6, 19, 10, 15, 17,
    ] {
        let key = format!("k{i:02}");
        if i % 5 == 4 {
            put(store, tenant, view, doc(&key, Value::Null, 1, None), 0).await;
        } else {
            put(store, tenant, view, doc(&key, json!({"i": i}), 1, None), 0).await;
            expected.insert(key);
        }
    }
    let expected: Vec<String> = expected.into_iter().collect();
    for limit in [1, 2, 5, 7, 18, 50] {
        let pages = all_pages(store, tenant, view, None, limit).await;
        let keys: Vec<String> = pages
            .iter()
            .flat_map(|p| p.docs.iter().map(|d| d.key.clone()))
            .collect();
        assert_eq!(keys, expected, "listing by key with limit {limit}");
        assert!(
            pages.len() <= expected.len() + 1,
            "{} pages for {} docs at limit {limit}",
            pages.len(),
            expected.len()
        );
        for d in pages.iter().flat_map(|p| &p.docs) {
            assert_eq!(d.checkpoint, 1);
            assert!(
                d.data.get("i").is_some(),
                "listed doc {} lost its data",
                d.key
            );
        }
    }
}

/// With an index partition, `list` returns that partition's docs newest (greatest sort key)
/// first, exactly once across pages, with their index.
pub async fn list_by_index_pages_newest_first(store: &dyn ReadModelStore, prefix: &str) {
    let (tenant, view) = (prefix, "contract-index");
    let mut c1 = Vec::new();
    for i in [4u32, 1, 9, 6, 2, 8, 3, 7, 5] {
        let key = format!("o-{i}");
        let (partition, sort) = if i % 3 == 0 {
            ("c-2".to_owned(), format!("2026-02-{i:02}#{key}"))
        } else {
            c1.push((format!("2026-01-{i:02}#{key}"), key.clone()));
            ("c-1".to_owned(), format!("2026-01-{i:02}#{key}"))
        };
        let d = doc(&key, json!({"order": key}), 2, Some((&partition, &sort)));
        put(store, tenant, view, d, 0).await;
    }
    put(store, tenant, view, doc("unindexed", json!({}), 1, None), 0).await;
    c1.sort();
    c1.reverse();
    for limit in [1, 2, 4, 10] {
        let docs = list_all(store, tenant, view, Some("c-1"), limit).await;
        let got: Vec<(String, String)> = docs
            .iter()
            .map(|d| {
                let (partition, sort) =
                    d.index.clone().expect("indexed docs list with their index");
                assert_eq!(partition, "c-1");
                (sort, d.key.clone())
            })
            .collect();
        assert_eq!(
            got, c1,
            "index partition c-1 with limit {limit}, newest first"
        );
    }
    let c2: Vec<String> = list_all(store, tenant, view, Some("c-2"), 2)
        .await
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(c2, ["o-9", "o-6", "o-3"]);
    assert!(
        list_all(store, tenant, view, Some("c-3"), 5)
            .await
            .is_empty()
    );
    assert_eq!(list_all(store, tenant, view, None, 100).await.len(), 10);

    // Moving a doc to another partition moves it in the index.
    let moved = doc(
        "o-9",
        json!({"order": "o-9"}),
        3,
        Some(("c-1", "2026-03-01#o-9")),
    );
    put(store, tenant, view, moved, 2).await;
    let first = list_all(store, tenant, view, Some("c-1"), 1).await;
    assert_eq!(first.first().map(|d| d.key.as_str()), Some("o-9"));
    let c2: Vec<String> = list_all(store, tenant, view, Some("c-2"), 2)
        .await
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(c2, ["o-6", "o-3"]);
}

/// One tenant never sees, changes or pages into another tenant's documents.
pub async fn tenants_are_isolated(store: &dyn ReadModelStore, prefix: &str) {
    let view = "contract-tenants";
    let (mine, other) = (format!("{prefix}-a"), format!("{prefix}-b"));
    put(
        store,
        &mine,
        view,
        doc("k", json!({"owner": "a"}), 1, Some(("p", "1"))),
        0,
    )
    .await;
    put(
        store,
        &mine,
        view,
        doc("j", json!({"owner": "a"}), 1, Some(("p", "2"))),
        0,
    )
    .await;
    store
        .add(
            &mine,
            "contract-tenant-counts",
            &format!("{mine}/Contract-x"),
            0,
            1,
            deltas(&[("day", &[("n", 1)])]),
        )
        .await
        .expect("add");

    assert!(store.get(&other, view, "k").await.expect("get").is_none());
    assert!(list_all(store, &other, view, None, 10).await.is_empty());
    assert!(
        list_all(store, &other, view, Some("p"), 10)
            .await
            .is_empty()
    );
    assert!(
        list_all(store, &other, "contract-tenant-counts", None, 10)
            .await
            .is_empty()
    );

    // The same key in another tenant is another document.
    put(
        store,
        &other,
        view,
        doc("k", json!({"owner": "b"}), 7, None),
        0,
    )
    .await;
    let k = store
        .get(&mine, view, "k")
        .await
        .expect("get")
        .expect("mine");
    assert_eq!((k.data, k.checkpoint), (json!({"owner": "a"}), 1));

    // A cursor issued to one tenant opens nothing of another's.
    for index in [None, Some("p")] {
        let page = store
            .list(
                &mine,
                view,
                ListQuery {
                    index: index.map(str::to_owned),
                    cursor: None,
                    limit: 1,
                },
            )
            .await
            .expect("list");
        let cursor = page.next.expect("two docs at limit 1 leave a next page");
        let r = store
            .list(
                &other,
                view,
                ListQuery {
                    index: index.map(str::to_owned),
                    cursor: Some(cursor),
                    limit: 10,
                },
            )
            .await;
        match r {
            Err(ReadModelError::InvalidCursor) => {}
            Ok(p) => assert!(
                p.docs.iter().all(|d| d.data["owner"] == "b"),
                "another tenant's cursor leaked docs: {p:?}"
            ),
            Err(e) => panic!("foreign cursor: {e}"),
        }
    }
}

/// A cursor the store did not issue is refused as invalid.
pub async fn invalid_cursors_are_refused(store: &dyn ReadModelStore, prefix: &str) {
    let (tenant, view) = (prefix, "contract-cursor");
    put(
        store,
        tenant,
        view,
        doc("a", json!({}), 1, Some(("p", "1"))),
        0,
    )
    .await;
    for cursor in ["not a cursor", "", "%%%", "eyJmb28iOiJiYXIifQ"] {
        for index in [None, Some("p")] {
            let r = store
                .list(
                    tenant,
                    view,
                    ListQuery {
                        index: index.map(str::to_owned),
                        cursor: Some(cursor.to_owned()),
                        limit: 10,
                    },
                )
                .await;
            assert!(
                matches!(r, Err(ReadModelError::InvalidCursor)),
                "cursor {cursor:?} (index {index:?}): {r:?}"
            );
        }
    }
}

/// `get_many` returns, in the order asked (repeats included), what `get` and `checkpoint`
/// return for each key: documents (with data, hidden, counter), missing documents, counter
/// checkpoints and missing ones, across more keys than one batched request holds (100).
pub async fn get_many_reads_what_single_reads_do(store: &dyn ReadModelStore, prefix: &str) {
    let (tenant, view, counters) = (prefix, "contract-many", "contract-many-counter");
    assert!(
        store.get_many(&[]).await.expect("empty read").is_empty(),
        "nothing asked, something found"
    );
    put(
        store,
        tenant,
        view,
        doc("k000", rich(1), 3, Some(("p", "s"))),
        0,
    )
    .await;
    put(store, tenant, view, doc("k001", Value::Null, 2, None), 0).await;
    let stream = format!("{prefix}/Contract-counted");
    store
        .add(
            tenant,
            counters,
            &stream,
            0,
            5,
            deltas(&[("day", &[("orders", 2)])]),
        )
        .await
        .expect("add");
    for i in 2..110 {
        put(
            store,
            tenant,
            view,
            doc(&format!("k{i:03}"), json!({"i": i}), 1, None),
            0,
        )
        .await;
    }

    let doc_key = |key: &str| ModelKey::Doc {
        tenant: tenant.to_owned(),
        view: view.to_owned(),
        key: key.to_owned(),
    };
    let checkpoint_key = |stream_id: &str| ModelKey::Checkpoint {
        view: counters.to_owned(),
        stream_id: stream_id.to_owned(),
    };
    let mut keys: Vec<ModelKey> = (0..115).map(|i| doc_key(&format!("k{i:03}"))).collect();
    keys.push(checkpoint_key(&stream));
    keys.push(checkpoint_key(&format!("{prefix}/Contract-never")));
    keys.push(ModelKey::Doc {
        tenant: tenant.to_owned(),
        view: counters.to_owned(),
        key: "day".to_owned(),
    });
    keys.push(ModelKey::Doc {
        tenant: format!("{prefix}x"),
        view: view.to_owned(),
        key: "k000".to_owned(),
    });
    keys.push(doc_key("k000"));
    keys.push(checkpoint_key(&stream));

    let found = store.get_many(&keys).await.expect("get_many");
    assert_eq!(found.len(), keys.len(), "one answer per key asked");
    for (key, got) in keys.iter().zip(&found) {
        let single = match key {
            ModelKey::Doc { tenant, view, key } => {
                Found::Doc(store.get(tenant, view, key).await.expect("get"))
            }
            ModelKey::Checkpoint { view, stream_id } => {
                Found::Checkpoint(store.checkpoint(view, stream_id).await.expect("checkpoint"))
            }
        };
        assert_eq!(got, &single, "get_many and a single read differ on {key:?}");
    }
    // The single reads could both be wrong the same way: pin what they must say.
    assert_eq!(
        found[0],
        Found::Doc(Some(doc("k000", rich(1), 3, Some(("p", "s")))))
    );
    assert_eq!(
        found[1],
        Found::Doc(Some(doc("k001", Value::Null, 2, None)))
    );
    assert_eq!(
        found[109],
        Found::Doc(Some(doc("k109", json!({"i": 109}), 1, None)))
    );
    assert_eq!(found[110], Found::Doc(None));
    assert_eq!(found[115], Found::Checkpoint(5));
    assert_eq!(found[116], Found::Checkpoint(0));
    match &found[117] {
        Found::Doc(Some(d)) => assert_eq!(d.data, json!({"orders": 2})),
        other => panic!("the counter document read as {other:?}"),
    }
    assert_eq!(
        found[118],
        Found::Doc(None),
        "another tenant's document was read"
    );
}
