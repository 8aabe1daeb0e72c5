//! `daily-sales` counters after real order histories.

use crate::support::{TENANT, World, add, at, cancel, confirm, create, place};
use eventfold_consumers::projection::CounterView;
use serde_json::json;
use shop::views::{DAILY_SALES, DailySales};
use std::collections::BTreeMap;

#[tokio::test]
async fn placed_orders_count_once_on_the_utc_day_they_were_placed() {
    let mut world = World::new();
    // Day 1: two placed orders (one later cancelled: still a sale that day), one draft.
    world
        .order(
            TENANT,
            "o-1",
            at("2024-03-01", 9, 0),
            &[create("a"), add("fig", 2, 100), place(), confirm()],
        )
        .await;
    world
        .order(
            TENANT,
            "o-2",
            at("2024-03-01", 10, 0),
            &[create("b"), add("kiwi", 1, 250), place(), cancel("no")],
        )
        .await;
    world
        .order(
            TENANT,
            "o-3",
            at("2024-03-01", 11, 0),
            &[create("c"), add("fig", 1, 100)],
        )
        .await;
    // Created late on day 1, placed after midnight: counts on day 2.
    world
        .order(
            TENANT,
            "o-4",
            at("2024-03-01", 23, 59),
            &[create("a"), add("fig", 3, 100), place()],
        )
        .await;
    // Another tenant's sales are its own.
    world
        .order(
            "other",
            "o-1",
            at("2024-03-01", 9, 0),
            &[create("z"), add("fig", 1, 7), place()],
        )
        .await;

    let projector = world.rebuild().await;
    let sales = projector.models().snapshot(TENANT, DAILY_SALES);
    assert_eq!(
        sales,
        BTreeMap::from([
            (
                "2024-03-01".to_owned(),
                json!({"orders": 2, "revenue": 450})
            ),
            (
                "2024-03-02".to_owned(),
                json!({"orders": 1, "revenue": 300})
            ),
        ])
    );
    assert_eq!(
        projector.models().snapshot("other", DAILY_SALES),
        BTreeMap::from([("2024-03-01".to_owned(), json!({"orders": 1, "revenue": 7}))])
    );

    // Redelivering everything changes nothing.
    for stream in &world.streams {
        for n in world.notifications(stream).await {
            let applied = projector.handle(&n).await.expect("applies");
            assert_eq!(applied.views_changed, 0);
        }
    }
    assert_eq!(projector.models().snapshot(TENANT, DAILY_SALES), sales);
}

#[tokio::test]
async fn only_order_placed_contributes() {
    let mut world = World::new();
    let history = world
        .order(
            TENANT,
            "o-1",
            at("2024-03-05", 12, 0),
            &[create("a"), add("fig", 2, 100), place(), confirm()],
        )
        .await;
    let contributions: Vec<_> = history
        .iter()
        .map(|e| DailySales.contribution(e).expect("decodes"))
        .collect();
    assert_eq!(
        contributions,
        [
            None,
            None,
            Some((
                "2024-03-05".to_owned(),
                BTreeMap::from([("orders".to_owned(), 1), ("revenue".to_owned(), 200)])
            )),
            None,
        ]
    );

    let mut unknown = history[2].clone();
    unknown.event_type = "OrderAudited".into();
    assert_eq!(DailySales.contribution(&unknown).expect("ignored"), None);
    let mut bad = history[2].clone();
    bad.data = json!({"total": "lots"});
    assert!(DailySales.contribution(&bad).is_err());
}
