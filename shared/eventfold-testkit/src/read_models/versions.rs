//! View versions: pointers written conditionally on their revision, read singly and in
//! batches alike, and a retired version dropped without touching any other.

use super::{deltas, doc, is_conflict, put};
use eventfold_consumers::projection::{ReadModelStore, ViewPointer, stored_name};
use serde_json::json;

/// A missing pointer reads as the initial one; a write lands only on the revision before it
/// (a stale or repeated write is a conflict and changes nothing); `pointers` reads what
/// `pointer` reads, in the order asked.
pub async fn pointers_move_by_conditional_writes(store: &dyn ReadModelStore, prefix: &str) {
    let view = format!("{prefix}-pointed");
    let other = format!("{prefix}-unpointed");
    assert_eq!(
        store.pointer(&view).await.expect("read"),
        ViewPointer::initial()
    );
    let building = ViewPointer::initial()
        .register_build("contract")
        .expect("register");
    store
        .set_pointer(&view, &building)
        .await
        .expect("first write");
    let again = store.set_pointer(&view, &building).await;
    assert!(is_conflict(&again), "the same write twice: {again:?}");
    let stale = ViewPointer::initial().register_build("other").expect("ok");
    let r = store.set_pointer(&view, &stale).await;
    assert!(is_conflict(&r), "a write from a stale read: {r:?}");
    assert_eq!(store.pointer(&view).await.expect("read"), building);

    let now = chrono::Utc::now();
    let promoted = building
        .promote(2, now, chrono::Duration::seconds(5), "contract")
        .expect("promote");
    store.set_pointer(&view, &promoted).await.expect("flip");
    assert_eq!(store.pointer(&view).await.expect("read"), promoted);
    let skipped = promoted.retire(1, now + chrono::Duration::seconds(5), "contract");
    let skipped = skipped
        .expect("retire")
        .register_build("contract")
        .expect("ok");
    let r = store.set_pointer(&view, &skipped).await;
    assert!(is_conflict(&r), "a write skipping a revision: {r:?}");

    let both = store
        .pointers(&[other.clone(), view.clone(), other.clone()])
        .await
        .expect("batch");
    assert_eq!(
        both,
        [ViewPointer::initial(), promoted, ViewPointer::initial()]
    );
}

/// Dropping a version deletes its documents (hidden ones too) for the tenants named and its
/// counter checkpoints, and nothing of the other versions or tenants.
pub async fn dropping_a_version_leaves_the_others(store: &dyn ReadModelStore, prefix: &str) {
    let (tenant, kept_tenant) = (format!("{prefix}-drop"), format!("{prefix}-keep"));
    let base = format!("{prefix}-dropped");
    let (old, new) = (stored_name(&base, 1), stored_name(&base, 2));
    for (t, v) in [(&tenant, &old), (&tenant, &new), (&kept_tenant, &old)] {
        put(
            store,
            t,
            v,
            doc("a", json!({"n": 1}), 1, Some(("p", "s"))),
            0,
        )
        .await;
        put(store, t, v, doc("b", serde_json::Value::Null, 2, None), 0).await;
    }
    store
        .add(
            &tenant,
            &old,
            "t/S-1",
            0,
            3,
            deltas(&[("day", &[("n", 2)])]),
        )
        .await
        .expect("counter");
    let dropped = store
        .drop_view(std::slice::from_ref(&tenant), &old)
        .await
        .expect("drop");
    assert_eq!(
        dropped, 4,
        "two documents, one counter document, one checkpoint"
    );
    for key in ["a", "b", "day"] {
        assert!(
            store.get(&tenant, &old, key).await.expect("get").is_none(),
            "{old}/{key} survived the drop"
        );
    }
    assert_eq!(store.checkpoint(&old, "t/S-1").await.expect("cp"), 0);
    for (t, v) in [(&tenant, &new), (&kept_tenant, &old)] {
        let kept = store.get(t, v, "a").await.expect("get");
        assert_eq!(kept.map(|d| d.data), Some(json!({"n": 1})), "{t}/{v}");
    }
}
