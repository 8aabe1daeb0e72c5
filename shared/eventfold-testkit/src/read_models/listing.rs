//! Listing: pages by key and by index, cursors, and tenant isolation.

use super::{all_pages, deltas, doc, list_all, put};
use eventfold_consumers::projection::{ListQuery, ReadModelError, ReadModelStore};
use serde_json::{Value, json};
use std::collections::BTreeSet;

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
