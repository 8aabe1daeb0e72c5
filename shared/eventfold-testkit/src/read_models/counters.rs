//! Counter views: `add` sums counters and moves a (view, stream) checkpoint in one step.

use super::{deltas, is_conflict, list_all};
use eventfold_consumers::projection::ReadModelStore;
use serde_json::{Value, json};

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
