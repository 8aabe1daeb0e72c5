//! Documents: conditional puts, hidden (`Null`) documents and batched reads.

use super::{deltas, doc, is_conflict, list_all, put, rich};
use eventfold_consumers::projection::{Found, ModelKey, ReadModelStore, ViewPointer};
use serde_json::{Value, json};

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

/// `get_many` returns, in the order asked (repeats included), what `get`, `checkpoint` and
/// `pointer` return for each key: documents (with data, hidden, counter), missing documents,
/// counter checkpoints and missing ones, a stored view pointer and a missing one, across more
/// keys than one batched request holds (100).
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
    // A stored pointer (where the store keeps them) and one never stored.
    let pointed = format!("{prefix}-many-pointed");
    let stored = ViewPointer::initial()
        .register_build("contract")
        .expect("register");
    let keeps_pointers = store.set_pointer(&pointed, &stored).await.is_ok();
    keys.push(ModelKey::Pointer {
        view: pointed.clone(),
    });
    keys.push(ModelKey::Pointer {
        view: format!("{prefix}-many-unpointed"),
    });

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
            ModelKey::Pointer { view } => {
                Found::Pointer(store.pointer(view).await.expect("pointer"))
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
    if keeps_pointers {
        assert_eq!(found[121], Found::Pointer(stored));
    }
    assert_eq!(found[122], Found::Pointer(ViewPointer::initial()));
}
