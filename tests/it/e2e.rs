//! End to end on the emulator: commands over HTTP -> events table -> stream -> SNS FIFO ->
//! SQS FIFO -> projector -> read models -> query API; and the projector under chaos.

use eventfold::{CommandExecutor, EventStore, ExecutorConfig, StreamId};
use eventfold_aws::DynamoEventStore;
use eventfold_aws::read_models::DynamoReadModelStore;
use eventfold_consumers::Notification;
use eventfold_consumers::projection::ReadModelStore;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};
use shop::inventory::InventoryCommand;
use shop::order::OrderCommand;
use shop::registry::ShopCaches;
use shop::{Inventory, Order};
use std::time::{Duration, Instant};
use tests::{ctx, events_table, quiet_stack, rw_token, stack, table, unique_tenant};

const COMMANDS: &str = "/api/v1/events/commands";

async fn post(http: &Http, token: &str, aggregate: &str, id: &str, kind: &str, data: Value) {
    let body = json!({"aggregate_type": aggregate, "aggregate_id": id, "type": kind, "data": data});
    let r = http.post(COMMANDS, Some(token), &body).await.expect("post");
    assert!(
        r.status == 200 || r.status == 201,
        "{kind} on {id}: {} {}",
        r.status,
        r.json
    );
}

/// Polls `path` until `check` accepts the reply, for at most `limit`.
async fn eventually(
    http: &Http,
    token: &str,
    path: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let r = http.get(path, Some(token)).await.expect("get");
        if r.status == 200 && check(&r.json) {
            return r.json;
        }
        assert!(
            start.elapsed() < limit,
            "{path} did not converge within {limit:?}; last: {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_orders_reach_every_view_through_the_real_fan_out() {
    let stack = stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("e2e");
    let t = rw_token(&tenant);
    post(
        &http,
        &t,
        "Inventory",
        "sku-a",
        "ReceiveStock",
        json!({"quantity": 10}),
    )
    .await;
    post(
        &http,
        &t,
        "Inventory",
        "sku-b",
        "ReceiveStock",
        json!({"quantity": 5}),
    )
    .await;
    let orders = [
        ("o-1", "c-1", "sku-a", 2, 500),
        ("o-2", "c-1", "sku-b", 1, 1200),
        ("o-3", "c-2", "sku-a", 3, 100),
    ];
    for (order, customer, sku, qty, price) in orders {
        post(
            &http,
            &t,
            "Order",
            order,
            "CreateOrder",
            json!({"customer_id": customer}),
        )
        .await;
        post(
            &http,
            &t,
            "Order",
            order,
            "AddItem",
            json!({"sku": sku, "quantity": qty, "unit_price": price}),
        )
        .await;
        post(
            &http,
            &t,
            "Inventory",
            sku,
            "ReserveStock",
            json!({"order_id": order, "quantity": qty}),
        )
        .await;
        post(&http, &t, "Order", order, "PlaceOrder", json!({})).await;
    }
    let wait = Duration::from_secs(60);
    let summary = eventually(
        &http,
        &t,
        "/api/v1/events/queries/order-summary?order_id=o-2",
        wait,
        |j| j["item"]["status"] == "Placed",
    )
    .await;
    assert_eq!(summary["item"]["total"], 1200);
    assert_eq!(summary["item"]["customer_id"], "c-1");
    let by_customer = eventually(
        &http,
        &t,
        "/api/v1/events/queries/orders-by-customer?customer_id=c-1",
        wait,
        |j| {
            j["items"]
                .as_array()
                .is_some_and(|a| a.len() == 2 && a.iter().all(|o| o["status"] == "Placed"))
        },
    )
    .await;
    let ids: Vec<&str> = by_customer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["o-2", "o-1"], "newest first");
    let stock = eventually(
        &http,
        &t,
        "/api/v1/events/queries/stock-levels?sku=sku-a",
        wait,
        |j| j["item"]["reserved"] == 5,
    )
    .await;
    assert_eq!(
        (
            stock["item"]["on_hand"].clone(),
            stock["item"]["available"].clone()
        ),
        (json!(10), json!(5))
    );
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let sales = eventually(
        &http,
        &t,
        &format!("/api/v1/events/queries/daily-sales?day={day}"),
        wait,
        |j| j["item"]["orders"] == 3,
    )
    .await;
    assert_eq!(sales["item"]["revenue"], 1000 + 1200 + 300);
    // Another tenant sees none of it.
    let other = rw_token(&unique_tenant("e2e-other"));
    let r = http
        .get(
            "/api/v1/events/queries/order-summary?order_id=o-2",
            Some(&other),
        )
        .await
        .expect("get");
    assert_eq!(r.status, 404);
}

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_shuffled_and_dropped_notifications_still_equal_a_rebuild() {
    let stack = quiet_stack().await;
    let events = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let models_table = table(&stack, "ReadModelsTable");
    let tenant = unique_tenant("chaos");
    let exec =
        CommandExecutor::new(events.clone(), ExecutorConfig::default()).caching::<ShopCaches>();
    let mut rng = Lcg(0x5eed_cafe);
    let mut streams = Vec::new();
    for s in 0..3 {
        let sku = StreamId::new(&tenant, "Inventory", &format!("sku-{s}")).expect("valid");
        exec.execute::<Inventory>(
            &sku,
            None,
            &InventoryCommand::ReceiveStock { quantity: 50 },
            &ctx(&tenant, "r"),
        )
        .await
        .expect("stock");
        streams.push(sku);
    }
    let mut placed = 0;
    let mut revenue = 0;
    for o in 0..8 {
        let order = StreamId::new(&tenant, "Order", &format!("o-{o}")).expect("valid");
        let run = |c: OrderCommand| {
            let (exec, order, tenant) = (&exec, order.clone(), tenant.clone());
            async move {
                exec.execute::<Order>(&order, None, &c, &ctx(&tenant, "c"))
                    .await
                    .expect("order command")
            }
        };
        run(OrderCommand::CreateOrder {
            customer_id: format!("c-{}", o % 3).parse().expect("an id"),
        })
        .await;
        let qty = 1 + rng.below(3) as i64;
        let price = 100 * (1 + rng.below(9) as i64);
        let sku = format!("sku-{}", o % 3);
        run(OrderCommand::AddItem {
            sku: sku.parse().expect("a sku"),
            quantity: qty,
            unit_price: price.into(),
        })
        .await;
        let inv = StreamId::new(&tenant, "Inventory", &sku).expect("valid");
        exec.execute::<Inventory>(
            &inv,
            None,
            &InventoryCommand::ReserveStock {
                order_id: format!("o-{o}").parse().expect("an id"),
                quantity: qty,
                placed_at: None,
            },
            &ctx(&tenant, "v"),
        )
        .await
        .expect("reserve");
        if o % 4 != 3 {
            run(OrderCommand::PlaceOrder {
                payment_method: None,
            })
            .await;
            placed += 1;
            revenue += qty * price;
        }
        if o % 4 == 2 {
            run(OrderCommand::CancelOrder {
                reason: "changed mind".into(),
            })
            .await;
        }
        streams.push(order);
    }
    // Every notification, from the table, per stream in order.
    let mut per_stream: Vec<Vec<Notification>> = Vec::new();
    for s in &streams {
        let history = events
            .load_range(&s.to_string(), 1, None, None)
            .await
            .expect("history");
        per_stream.push(
            history
                .iter()
                .map(|e| Notification::of(e).expect("valid"))
                .collect(),
        );
    }
    // Three copies each, 10% dropped (never a stream's last), 10% thin, shuffled within a
    // stream, streams interleaved at random.
    let mut queues: Vec<Vec<Notification>> = per_stream
        .iter()
        .map(|ns| {
            let mut copies = Vec::new();
            for (i, n) in ns.iter().enumerate() {
                if i + 1 < ns.len() && rng.below(10) == 0 {
                    continue;
                }
                for _ in 0..3 {
                    copies.push(if rng.below(10) == 0 {
                        n.clone().thin()
                    } else {
                        n.clone()
                    });
                }
            }
            for i in (1..copies.len()).rev() {
                copies.swap(i, rng.below(i as u64 + 1) as usize);
            }
            copies
        })
        .collect();
    let models = DynamoReadModelStore::from_sdk(&stack.sdk, &models_table);
    let live = shop::views::projector(events.clone(), models);
    while queues.iter().any(|q| !q.is_empty()) {
        let non_empty: Vec<usize> = (0..queues.len())
            .filter(|i| !queues[*i].is_empty())
            .collect();
        let pick = non_empty[rng.below(non_empty.len() as u64) as usize];
        let n = queues[pick].pop().expect("non-empty");
        live.handle(&n)
            .await
            .expect("projector applies or acknowledges every copy");
    }
    // Rebuild each view from the table and compare with the live one.
    let heads = cli::rebuild::stream_heads(
        &aws_sdk_dynamodb::Client::new(&stack.sdk),
        &events_table(&stack),
    )
    .await
    .expect("scan");
    let models = DynamoReadModelStore::from_sdk(&stack.sdk, &models_table);
    let tenants = [tenant.clone()].into_iter().collect();
    for view in [
        shop::views::ORDER_SUMMARY,
        shop::views::STOCK_LEVELS,
        shop::views::DAILY_SALES,
    ] {
        let shadow = format!("{view}{}", cli::rebuild::SHADOW_SUFFIX);
        let category = cli::rebuild::category_of(view).expect("known view");
        let p = cli::rebuild::projector_for(
            events.clone(),
            DynamoReadModelStore::from_sdk(&stack.sdk, &models_table),
            view,
            &shadow,
        );
        let report = cli::rebuild::rebuild(&p, &category, &heads, |_, _| {})
            .await
            .expect("rebuild");
        assert!(report.streams > 0);
        let diffs = cli::rebuild::differences(&models, &tenants, view, &shadow)
            .await
            .expect("compare");
        assert!(
            diffs.is_empty(),
            "{view} differs from its rebuild: {diffs:#?}"
        );
        let live_docs = cli::rebuild::all_docs(&models, &tenant, view)
            .await
            .expect("docs");
        assert!(!live_docs.is_empty(), "{view} has documents");
        // Rebuilding again resumes: nothing left to do.
        let again = cli::rebuild::rebuild(&p, &category, &heads, |_, _| {})
            .await
            .expect("rebuild");
        assert_eq!(again.already_done, again.streams);
    }
    let sales = cli::rebuild::all_docs(&models, &tenant, shop::views::DAILY_SALES)
        .await
        .expect("docs");
    let orders: i64 = sales.values().filter_map(|d| d["orders"].as_i64()).sum();
    let total: i64 = sales.values().filter_map(|d| d["revenue"].as_i64()).sum();
    assert_eq!(
        (orders, total),
        (placed, revenue),
        "each placed order counted exactly once"
    );
    let stock = models
        .get(&tenant, shop::views::STOCK_LEVELS, "sku-0")
        .await
        .expect("get")
        .expect("doc");
    assert_eq!(stock.data["on_hand"], 50);
}
