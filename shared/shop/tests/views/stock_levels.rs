//! `stock-levels` documents after real inventory histories.

use crate::support::{TENANT, World, at, receive, release, reserve};
use eventfold_consumers::projection::StreamView;
use serde_json::json;
use shop::views::{STOCK_LEVELS, StockLevels};

#[tokio::test]
async fn receiving_reserving_and_releasing_move_on_hand_reserved_and_available() {
    let mut world = World::new();
    world
        .inventory(
            TENANT,
            "apple",
            at("2024-03-01", 7, 0),
            &[
                receive(10),
                reserve("o-1", 3),
                reserve("o-2", 4),
                release("o-1"),
                receive(5),
                // Already done: no event.
                release("o-1"),
            ],
        )
        .await;
    world
        .inventory(TENANT, "fig", at("2024-03-02", 7, 0), &[receive(1)])
        .await;
    world
        .inventory("other", "apple", at("2024-03-02", 7, 0), &[receive(99)])
        .await;

    let projector = world.rebuild().await;
    let levels = projector.models().snapshot(TENANT, STOCK_LEVELS);
    assert_eq!(levels.len(), 2);
    assert_eq!(
        levels["apple"],
        json!({
            "sku": "apple",
            "on_hand": 15,
            "reserved": 4,
            "available": 11,
            "version": 5,
            "updated_at": "2024-03-01T07:04:00.000000Z",
        })
    );
    assert_eq!(levels["fig"]["available"], 1);
    assert_eq!(
        projector.models().snapshot("other", STOCK_LEVELS)["apple"]["on_hand"],
        99
    );

    // The view agrees with the aggregate.
    let state = world.inventory_state(TENANT, "apple").await;
    assert_eq!(levels["apple"]["on_hand"], state.on_hand);
    assert_eq!(levels["apple"]["reserved"], state.reserved());
    assert_eq!(levels["apple"]["available"], state.available());
}

#[tokio::test]
async fn the_sku_comes_from_the_stream_id_and_unknown_types_are_ignored() {
    let mut world = World::new();
    let history = world
        .inventory(
            TENANT,
            "sku-1.blue:XL",
            at("2024-03-01", 7, 0),
            &[receive(2)],
        )
        .await;
    let view = StockLevels;
    let doc = view.apply(None, &history[0]).expect("applies");
    assert_eq!(
        doc.as_ref().map(|d| d["sku"].clone()),
        Some(json!("sku-1.blue:XL"))
    );

    let mut unknown = history[0].clone();
    unknown.version = 2;
    unknown.event_type = "StockCounted".into();
    assert_eq!(view.apply(doc.clone(), &unknown).expect("ignored"), doc);

    let mut bad = history[0].clone();
    bad.version = 2;
    bad.data = json!({"quantity": "two"});
    assert!(view.apply(doc, &bad).is_err());
}
