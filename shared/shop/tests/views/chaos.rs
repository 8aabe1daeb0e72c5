//! Chaos delivery: every notification three times, shuffled within its stream, streams
//! interleaved, 10% of notifications lost entirely (never the last of a stream), 10% of
//! the copies thin. The views must end exactly as a clean in-order rebuild, and the daily
//! sales must count every placed order exactly once.

use crate::support::{
    Events, Rng, World, add, at, cancel, confirm, create, place, receive, release, remove, reserve,
    ship,
};
use eventfold::{DomainEvent, StreamId};
use eventfold_consumers::Notification;
use eventfold_consumers::projection::{
    Applied, ListQuery, MemoryReadModelStore, Projector, ReadModelStore,
};
use serde_json::{Value, json};
use shop::order::{OrderCommand, OrderEvent, OrderStatus};
use shop::views::{DAILY_SALES, ORDER_SUMMARY, STOCK_LEVELS};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const SEEDS: [u64; 5] = [1, 7, 42, 1234, 0xC0FFEE];
const ORDERS: usize = 40;
const CUSTOMERS: u64 = 8;
const TENANTS: [&str; 2] = ["acme", "globex"];
const DAYS: [&str; 5] = [
    "2024-03-01",
    "2024-03-02",
    "2024-03-03",
    "2024-03-04",
    "2024-03-05",
];
const SKUS: [(&str, i64); 6] = [
    ("apple", 120),
    ("pear", 95),
    ("fig", 310),
    ("kiwi", 45),
    ("plum", 80),
    ("lime", 30),
];

/// What happens to an order after it is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Draft,
    Placed,
    Confirmed,
    Shipped,
    CancelledDraft,
    CancelledPlaced,
    CancelledConfirmed,
}

impl Fate {
    fn pick(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..15 => Self::Draft,
            15..30 => Self::Placed,
            30..50 => Self::Confirmed,
            50..75 => Self::Shipped,
            75..82 => Self::CancelledDraft,
            82..91 => Self::CancelledPlaced,
            _ => Self::CancelledConfirmed,
        }
    }

    fn placed(self) -> bool {
        !matches!(self, Self::Draft | Self::CancelledDraft)
    }

    fn cancelled(self) -> bool {
        matches!(
            self,
            Self::CancelledDraft | Self::CancelledPlaced | Self::CancelledConfirmed
        )
    }
}

struct OrderPlan {
    tenant: &'static str,
    start: chrono::DateTime<chrono::Utc>,
    fill: Vec<OrderCommand>,
    fate: Fate,
}

fn plan(rng: &mut Rng) -> OrderPlan {
    let tenant = if rng.chance(20) {
        TENANTS[1]
    } else {
        TENANTS[0]
    };
    let customer = format!("c-{}", rng.below(CUSTOMERS));
    let day = DAYS[rng.index(DAYS.len())];
    let start = at(day, 7 + rng.below(14) as u32, rng.below(50) as u32);
    let fate = Fate::pick(rng);
    let mut fill = vec![create(&customer)];
    let mut skus = BTreeSet::new();
    for _ in 0..1 + rng.below(4) {
        let (sku, price) = SKUS[rng.index(SKUS.len())];
        fill.push(add(sku, 1 + rng.below(5) as i64, price));
        skus.insert(sku);
    }
    if rng.chance(25) {
        let sku = *skus
            .iter()
            .nth(rng.index(skus.len()))
            .expect("a sku in the order");
        fill.push(remove(sku));
        skus.remove(sku);
        if skus.is_empty() {
            let (sku, price) = SKUS[rng.index(SKUS.len())];
            fill.push(add(sku, 1, price));
        }
    }
    OrderPlan {
        tenant,
        start,
        fill,
        fate,
    }
}

/// ~40 orders of ~8 customers per tenant over five days, with the inventory streams their
/// reservations touch.
async fn build(rng: &mut Rng) -> World {
    let mut world = World::new();
    for tenant in TENANTS {
        for (sku, _) in SKUS {
            world
                .inventory(tenant, sku, at(DAYS[0], 6, 0), &[receive(10_000)])
                .await;
        }
    }
    let mut plans: Vec<OrderPlan> = (0..ORDERS).map(|_| plan(rng)).collect();
    plans.sort_by_key(|p| p.start);
    for (i, p) in plans.iter().enumerate() {
        let id = format!("o-{i:02}");
        let mut commands = p.fill.clone();
        if p.fate.placed() {
            commands.push(place());
        }
        if matches!(
            p.fate,
            Fate::Confirmed | Fate::Shipped | Fate::CancelledConfirmed
        ) {
            commands.push(confirm());
        }
        if p.fate == Fate::Shipped {
            commands.push(ship(&format!("TRK-{i}")));
        }
        if p.fate.cancelled() {
            commands.push(cancel("customer request"));
        }
        world.order(p.tenant, &id, p.start, &commands).await;
        if p.fate.placed() {
            let later = p.start + chrono::Duration::minutes(30);
            let state = world.order_state(p.tenant, &id).await;
            for (sku, line) in &state.lines {
                let mut stock = vec![reserve(&id, line.quantity)];
                if p.fate.cancelled() {
                    stock.push(release(&id));
                }
                world.inventory(p.tenant, sku, later, &stock).await;
            }
        }
    }
    world
}

/// Everything delivered in one chaos run, and how the projector took it.
#[derive(Debug, Default)]
struct Delivery {
    handled: usize,
    dropped: usize,
    thin: usize,
    applied: Applied,
}

async fn deliver_chaotically(
    world: &World,
    rng: &mut Rng,
) -> (Projector<Events, MemoryReadModelStore>, Delivery) {
    let mut delivery = Delivery::default();
    let mut queues: Vec<VecDeque<Notification>> = Vec::new();
    for stream in &world.streams {
        let notifications = world.notifications(stream).await;
        let last = notifications.len() - 1;
        let mut copies = Vec::new();
        for (i, n) in notifications.into_iter().enumerate() {
            if i != last && rng.chance(10) {
                delivery.dropped += 1;
                continue;
            }
            for _ in 0..3 {
                if rng.chance(10) {
                    delivery.thin += 1;
                    copies.push(n.clone().thin());
                } else {
                    copies.push(n.clone());
                }
            }
        }
        rng.shuffle(&mut copies);
        queues.push(copies.into());
    }
    let projector = world.projector();
    loop {
        let open: Vec<usize> = (0..queues.len())
            .filter(|&q| !queues[q].is_empty())
            .collect();
        if open.is_empty() {
            break;
        }
        let q = open[rng.index(open.len())];
        let n = queues[q].pop_front().expect("a non-empty queue");
        let applied = projector.handle(&n).await.unwrap_or_else(|e| {
            panic!(
                "{} v{} (thin: {}) must apply: {e}",
                n.stream_id,
                n.version,
                n.event.is_none()
            )
        });
        delivery.handled += 1;
        delivery.applied.views_changed += applied.views_changed;
        delivery.applied.duplicates += applied.duplicates;
        delivery.applied.events_read += applied.events_read;
    }
    (projector, delivery)
}

/// Every page of a customer's orders (small pages, to exercise the cursor).
async fn orders_of(
    models: &MemoryReadModelStore,
    tenant: &str,
    customer: &str,
) -> Vec<(String, Value, Option<(String, String)>)> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = models
            .list(
                tenant,
                ORDER_SUMMARY,
                ListQuery {
                    index: Some(customer.to_owned()),
                    cursor: cursor.take(),
                    limit: 3,
                },
            )
            .await
            .expect("lists");
        all.extend(page.docs.into_iter().map(|d| (d.key, d.data, d.index)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// Per tenant and day: (orders placed, revenue), straight from the event histories.
async fn placed_per_day(world: &World) -> BTreeMap<(String, String), (i64, i64)> {
    let mut sales = BTreeMap::new();
    for stream in &world.streams {
        for e in world.history(stream).await {
            if e.event_type != "OrderPlaced" {
                continue;
            }
            let OrderEvent::OrderPlaced { total, .. } =
                OrderEvent::decode(&e.event_type, &e.data).expect("decodes")
            else {
                unreachable!("an OrderPlaced")
            };
            let tenant = StreamId::parse(stream).expect("valid").tenant().to_owned();
            let day = e.occurred_at.format("%Y-%m-%d").to_string();
            let entry = sales.entry((tenant, day)).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += total.minor();
        }
    }
    sales
}

async fn check_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let world = build(&mut rng).await;
    let (chaos, delivery) = deliver_chaotically(&world, &mut rng).await;
    let rebuild = world.rebuild().await;
    let (chaotic, clean) = (chaos.models(), rebuild.models());

    // The chaos really happened.
    assert!(delivery.dropped > 0, "seed {seed}: {delivery:?}");
    assert!(delivery.thin > 0, "seed {seed}: {delivery:?}");
    assert!(delivery.applied.duplicates > 0, "seed {seed}: {delivery:?}");
    assert!(
        delivery.applied.events_read > 0,
        "seed {seed}: {delivery:?}"
    );

    // Every view equals the rebuild.
    for tenant in TENANTS {
        for view in [ORDER_SUMMARY, STOCK_LEVELS, DAILY_SALES] {
            assert_eq!(
                chaotic.snapshot(tenant, view),
                clean.snapshot(tenant, view),
                "seed {seed}: {tenant} {view} differs from the rebuild"
            );
        }
        for c in 0..CUSTOMERS {
            let customer = format!("c-{c}");
            let listed = orders_of(chaotic, tenant, &customer).await;
            assert_eq!(
                listed,
                orders_of(clean, tenant, &customer).await,
                "seed {seed}: orders-by-customer of {tenant} {customer}"
            );
            let sorts: Vec<_> = listed
                .iter()
                .map(|(_, _, index)| index.clone().expect("indexed").1)
                .collect();
            assert!(
                sorts.windows(2).all(|w| w[0] > w[1]),
                "seed {seed}: newest first: {sorts:?}"
            );
        }
    }

    // The rebuild (hence the chaos) agrees with the command side.
    let mut orders = 0;
    for stream in &world.streams {
        let id = StreamId::parse(stream).expect("valid");
        let (tenant, key) = (id.tenant(), id.id());
        match id.category() {
            "Order" => {
                orders += 1;
                let state = world.order_state(tenant, key).await;
                let doc = &clean.snapshot(tenant, ORDER_SUMMARY)[key];
                assert_eq!(
                    doc["status"],
                    json!(state.status.map(OrderStatus::as_str)),
                    "seed {seed} {stream}"
                );
                assert_eq!(doc["customer_id"], json!(state.customer_id));
                let lines: Vec<Value> = state
                    .lines
                    .iter()
                    .map(|(sku, l)| {
                        json!({
                            "sku": sku,
                            "quantity": l.quantity,
                            "unit_price": l.unit_price,
                            "amount": l.unit_price.checked_times(l.quantity),
                        })
                    })
                    .collect();
                assert_eq!(doc["lines"], json!(lines), "seed {seed} {stream}");
                assert_eq!(doc["total"], state.total().minor(), "seed {seed} {stream}");
                assert_eq!(doc["tracking_id"], json!(state.tracking_id));
                assert_eq!(doc["cancel_reason"], json!(state.cancel_reason));
                assert_eq!(doc["version"], world.history(stream).await.len());
            }
            "Inventory" => {
                let state = world.inventory_state(tenant, key).await;
                let doc = &clean.snapshot(tenant, STOCK_LEVELS)[key];
                assert_eq!(doc["on_hand"], state.on_hand, "seed {seed} {stream}");
                assert_eq!(doc["reserved"], state.reserved(), "seed {seed} {stream}");
                assert_eq!(doc["available"], state.available(), "seed {seed} {stream}");
            }
            other => panic!("unexpected category {other}"),
        }
    }
    assert_eq!(orders, ORDERS);

    // Daily sales count each placed order exactly once, on the day it was placed.
    let expected = placed_per_day(&world).await;
    let mut counted = BTreeMap::new();
    for tenant in TENANTS {
        for (day, doc) in chaotic.snapshot(tenant, DAILY_SALES) {
            let orders = doc["orders"].as_i64().expect("orders");
            let revenue = doc["revenue"].as_i64().expect("revenue");
            counted.insert((tenant.to_owned(), day), (orders, revenue));
        }
    }
    assert_eq!(counted, expected, "seed {seed}: daily sales");
    let placed = expected.values().map(|(n, _)| n).sum::<i64>();
    let summaries: Vec<Value> = TENANTS
        .iter()
        .flat_map(|t| chaotic.snapshot(t, ORDER_SUMMARY).into_values())
        .collect();
    assert_eq!(
        placed,
        summaries
            .iter()
            .filter(|d| !d["placed_at"].is_null())
            .count() as i64,
        "seed {seed}: one sale per placed order"
    );
    assert_eq!(
        expected.values().map(|(_, r)| r).sum::<i64>(),
        summaries
            .iter()
            .filter(|d| !d["placed_at"].is_null())
            .map(|d| d["total"].as_i64().expect("a total"))
            .sum::<i64>(),
        "seed {seed}: revenue is the sum of the placed totals"
    );
    assert!(expected.len() > 2, "seed {seed}: sales on several days");
}

#[tokio::test]
async fn chaotic_delivery_ends_exactly_like_an_in_order_rebuild() {
    for seed in SEEDS {
        check_seed(seed).await;
    }
}
