//! `order-summary` documents after real order histories, and the `orders-by-customer` index.

use crate::support::{
    TENANT, World, add, at, cancel, confirm, create, place, remove, rfc3339, ship,
};
use eventfold_consumers::projection::{ListQuery, ReadModelStore, StreamView};
use serde_json::{Value, json};
use shop::views::{ORDER_SUMMARY, OrderSummary, OrderSummaryDoc};

async fn summary(world: &World, order_id: &str) -> Value {
    world
        .rebuild()
        .await
        .models()
        .snapshot(TENANT, ORDER_SUMMARY)
        .remove(order_id)
        .unwrap_or_else(|| panic!("a summary of {order_id}"))
}

#[tokio::test]
async fn a_draft_shows_its_lines_sorted_by_sku_with_amounts_and_total() {
    let mut world = World::new();
    let start = at("2024-03-01", 9, 0);
    world
        .order(
            TENANT,
            "o-1",
            start,
            &[
                create("alice"),
                add("pear", 2, 150),
                add("apple", 1, 500),
                add("pear", 1, 150),
            ],
        )
        .await;
    assert_eq!(
        summary(&world, "o-1").await,
        json!({
            "order_id": "o-1",
            "customer_id": "alice",
            "status": "Draft",
            "lines": [
                {"sku": "apple", "quantity": 1, "unit_price": 500, "amount": 500},
                {"sku": "pear", "quantity": 3, "unit_price": 150, "amount": 450},
            ],
            "total": 950,
            "tracking_id": null,
            "cancel_reason": null,
            "version": 4,
            "created_at": "2024-03-01T09:00:00.000000Z",
            "updated_at": "2024-03-01T09:03:00.000000Z",
            "placed_at": null,
        })
    );
}

#[tokio::test]
async fn an_order_goes_from_draft_to_shipped() {
    let mut world = World::new();
    let start = at("2024-03-02", 23, 58);
    world
        .order(
            TENANT,
            "o-2",
            start,
            &[
                create("bob"),
                add("apple", 2, 500),
                add("kiwi", 5, 30),
                remove("apple"),
                add("fig", 1, 1000),
                place(),
                confirm(),
                ship("TRACK-9"),
            ],
        )
        .await;
    let doc: OrderSummaryDoc =
        serde_json::from_value(summary(&world, "o-2").await).expect("a typed summary");
    assert_eq!(doc.status.as_str(), "Shipped");
    assert_eq!(
        doc.lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity, l.amount.minor()))
            .collect::<Vec<_>>(),
        [("fig", 1, 1000), ("kiwi", 5, 150)]
    );
    assert_eq!(doc.total.minor(), 1150);
    assert_eq!(doc.tracking_id.as_deref(), Some("TRACK-9"));
    assert_eq!(doc.cancel_reason, None);
    assert_eq!(doc.version, 8);
    assert_eq!(doc.created_at, "2024-03-02T23:58:00.000000Z");
    // Placed at minute 5 after the start: past midnight.
    assert_eq!(
        doc.placed_at.as_deref(),
        Some("2024-03-03T00:03:00.000000Z")
    );
    assert_eq!(doc.updated_at, "2024-03-03T00:05:00.000000Z");
}

#[tokio::test]
async fn every_step_of_the_life_cycle_shows_in_the_status() {
    let mut world = World::new();
    world
        .order(
            TENANT,
            "o-3",
            at("2024-03-01", 8, 0),
            &[create("carol"), add("fig", 1, 10)],
        )
        .await;
    let projector = world.projector();
    let mut statuses = Vec::new();
    let steps = [place(), confirm(), cancel("changed my mind")];
    for (i, step) in std::iter::once(None)
        .chain(steps.iter().map(Some))
        .enumerate()
    {
        if let Some(step) = step {
            world
                .order(
                    TENANT,
                    "o-3",
                    at("2024-03-04", 8, i as u32),
                    std::slice::from_ref(step),
                )
                .await;
        }
        for n in world.notifications("acme/Order-o-3").await {
            projector.handle(&n).await.expect("applies");
        }
        let doc = projector.models().snapshot(TENANT, ORDER_SUMMARY)["o-3"].clone();
        statuses.push(doc["status"].as_str().expect("a status").to_owned());
    }
    assert_eq!(statuses, ["Draft", "Placed", "Confirmed", "Cancelled"]);
    let doc = projector.models().snapshot(TENANT, ORDER_SUMMARY)["o-3"].clone();
    assert_eq!(doc["cancel_reason"], "changed my mind");
    assert_eq!(doc["placed_at"], "2024-03-04T08:01:00.000000Z");
    assert_eq!(doc["total"], 10);
    assert_eq!(doc["version"], 5);
}

#[tokio::test]
async fn orders_by_customer_lists_newest_first_in_pages() {
    let mut world = World::new();
    // Created out of order in time; dana has five orders, erin one.
    let dana = [("d-3", 3), ("d-1", 1), ("d-5", 5), ("d-2", 2), ("d-4", 4)];
    for (id, day) in dana {
        world
            .order(
                TENANT,
                id,
                at(&format!("2024-03-0{day}"), 12, 0),
                &[create("dana")],
            )
            .await;
    }
    world
        .order(TENANT, "e-1", at("2024-03-09", 12, 0), &[create("erin")])
        .await;
    // Another tenant's dana is not listed.
    world
        .order("other", "x-1", at("2024-03-09", 12, 0), &[create("dana")])
        .await;
    let projector = world.rebuild().await;
    let models = projector.models();

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = models
            .list(
                TENANT,
                ORDER_SUMMARY,
                ListQuery {
                    index: Some("dana".into()),
                    cursor: cursor.take(),
                    limit: 2,
                },
            )
            .await
            .expect("lists");
        pages += 1;
        assert!(page.docs.len() <= 2);
        seen.extend(page.docs.iter().map(|d| {
            assert_eq!(
                d.index,
                OrderSummary.index(&d.data),
                "the stored index is the view's"
            );
            d.data["order_id"].as_str().expect("an order id").to_owned()
        }));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["d-5", "d-4", "d-3", "d-2", "d-1"]);
    assert_eq!(pages, 3);

    let erin = models
        .list(
            TENANT,
            ORDER_SUMMARY,
            ListQuery {
                index: Some("erin".into()),
                cursor: None,
                limit: 10,
            },
        )
        .await
        .expect("lists");
    assert_eq!(erin.docs.len(), 1);
    assert_eq!(
        erin.docs[0].index,
        Some((
            "erin".to_owned(),
            format!("{}#e-1", rfc3339(at("2024-03-09", 12, 0)))
        ))
    );
    assert_eq!(erin.next, None);
}

#[tokio::test]
async fn unknown_event_types_are_ignored_but_bad_data_of_a_known_type_is_an_error() {
    let mut world = World::new();
    let history = world
        .order(
            TENANT,
            "o-4",
            at("2024-03-01", 8, 0),
            &[create("fred"), add("fig", 1, 10)],
        )
        .await;
    let view = OrderSummary;
    let doc = history
        .iter()
        .try_fold(None, |doc, e| view.apply(doc, e))
        .expect("applies");

    let mut unknown = history[1].clone();
    unknown.version = 3;
    unknown.event_type = "GiftWrapped".into();
    unknown.data = json!({"paper": "gold"});
    assert_eq!(view.apply(doc.clone(), &unknown).expect("ignored"), doc);

    let mut bad = history[1].clone();
    bad.version = 3;
    bad.data = json!({"sku": "fig"});
    assert!(view.apply(doc.clone(), &bad).is_err());

    // An order event before the order exists is not a valid order stream.
    assert!(view.apply(None, &history[1]).is_err());
}
