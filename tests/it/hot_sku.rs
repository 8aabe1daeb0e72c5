//! The hot SKU on DynamoDB (moto): one inventory stream through thousands of cancelled
//! orders (reserve then release, order ids of the maximum length), driven by the executor
//! against the real event store, as the saga drives it. Every command succeeds, late
//! reservations of released orders are never taken, and every snapshot the executor writes
//! stays under `shop::inventory::STATE_BOUND_BYTES`; a cold executor then loads the stream
//! from its last snapshot. (Under the old design, one order id per cancellation for ever,
//! the state of 10,000 cancellations is ~1.4 MB: no snapshot fits a 400 KB item.)

use chrono::{DateTime, Duration, Utc};
use eventfold::{CommandExecutor, EventStore, ExecutorConfig, LoadOptions, StreamId};
use eventfold_aws::DynamoEventStore;
use shop::inventory::{self, Inventory, InventoryCommand, MAX_REMEMBERED_RELEASES};
use shop::registry::ShopCaches;
use shop::{Aggregate, MAX_KEY_LEN, OrderId};
use std::time::Instant;
use tests::{ctx, events_table, quiet_stack, unique_tenant};

/// Cancelled orders on the one SKU (override: `HOT_SKU_CYCLES`).
const CYCLES: u64 = 10_000;

fn order_id(i: u64) -> OrderId {
    let head = format!("order-{i}-");
    format!("{head}{}", "x".repeat(MAX_KEY_LEN - head.len()))
        .parse()
        .expect("a valid id")
}

fn placed(i: u64) -> DateTime<Utc> {
    "2026-01-01T00:00:00Z"
        .parse::<DateTime<Utc>>()
        .expect("a time")
        + Duration::seconds(i as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_sku_with_ten_thousand_cancelled_orders_keeps_working() {
    let cycles = std::env::var("HOT_SKU_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CYCLES);
    let stack = quiet_stack().await;
    let table = events_table(&stack);
    let tenant = unique_tenant("hot");
    let stream = StreamId::new(&tenant, "Inventory", "hot-sku").expect("valid");
    let config = ExecutorConfig::default();
    let every = config.snapshot_every;
    let exec = CommandExecutor::new(DynamoEventStore::from_sdk(&stack.sdk, &table), config)
        .caching::<ShopCaches>();
    let started = Instant::now();
    let run = async |command: &InventoryCommand, id: String| {
        exec.execute::<Inventory>(&stream, None, command, &ctx(&tenant, &id))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"))
    };
    run(
        &InventoryCommand::ReceiveStock { quantity: 100 },
        "stock".into(),
    )
    .await;
    let (mut snapshots, mut largest, mut late) = (0u64, 0usize, 0u64);
    for i in 0..cycles {
        let reserve = InventoryCommand::ReserveStock {
            order_id: order_id(i),
            quantity: 1 + (i % 3) as i64,
            placed_at: Some(placed(i)),
        };
        let reserved = run(&reserve, format!("reserve-{i}")).await;
        assert_eq!(reserved.events.len(), 1, "order {i} reserves");
        let release = InventoryCommand::ReleaseStock {
            order_id: order_id(i),
        };
        let released = run(&release, format!("release-{i}")).await;
        assert_eq!(released.events.len(), 1, "order {i} releases");
        for bytes in [reserved.snapshot_bytes, released.snapshot_bytes]
            .into_iter()
            .flatten()
        {
            snapshots += 1;
            largest = largest.max(bytes);
        }
        // Now and then the saga's late ReserveStock of a released order arrives: of one
        // just released (remembered: already done) or of one long gone (past the horizon:
        // refused). Neither holds stock.
        if i % 500 == 499 {
            for back in [1, MAX_REMEMBERED_RELEASES as u64 + 10] {
                let Some(j) = i.checked_sub(back) else {
                    continue;
                };
                let stale = InventoryCommand::ReserveStock {
                    order_id: order_id(j),
                    quantity: 1 + (j % 3) as i64,
                    placed_at: Some(placed(j)),
                };
                match exec
                    .execute::<Inventory>(
                        &stream,
                        None,
                        &stale,
                        &ctx(&tenant, &format!("late-{j}")),
                    )
                    .await
                {
                    Ok(out) => assert!(out.events.is_empty(), "order {j} reserved again"),
                    Err(eventfold::CommandError::Rejected(r)) => {
                        assert_eq!(r.rule, "reservation-expired")
                    }
                    Err(e) => panic!("late reservation of {j}: {e}"),
                }
                late += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let version = 1 + 2 * cycles;
    println!(
        "hot sku: {cycles} cancelled orders ({version} events, {late} late reservations) in {:.1}s; {snapshots} snapshots, the largest {largest} bytes",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        snapshots,
        version / every,
        "a snapshot every {every} events"
    );
    assert!(
        largest <= inventory::STATE_BOUND_BYTES,
        "snapshot of {largest} bytes, over the bound of {}",
        inventory::STATE_BOUND_BYTES
    );
    // The store holds the last snapshot, under the bound, and a cold executor starts from it.
    let store = DynamoEventStore::from_sdk(&stack.sdk, &table);
    let loaded = store
        .load(
            &stream.to_string(),
            LoadOptions {
                state_schema: Some(Inventory::STATE_SCHEMA),
                snapshot_every: every,
            },
        )
        .await
        .expect("loads");
    let snapshot = loaded.snapshot.expect("a snapshot");
    assert_eq!(snapshot.version, version / every * every);
    let stored = serde_json::to_vec(&snapshot.state).expect("json").len();
    assert!(stored <= inventory::STATE_BOUND_BYTES, "{stored} bytes");
    let cold = CommandExecutor::new(store, ExecutorConfig::default()).caching::<ShopCaches>();
    let (at, state) = cold.load::<Inventory>(&stream).await.expect("loads");
    assert_eq!(at, version);
    assert_eq!((state.on_hand, state.reserved()), (100, 0));
    assert_eq!(
        state.released.len() as u64,
        cycles.min(MAX_REMEMBERED_RELEASES as u64)
    );
    let fresh = InventoryCommand::ReserveStock {
        order_id: order_id(cycles),
        quantity: 100,
        placed_at: Some(placed(cycles)),
    };
    let out = cold
        .execute::<Inventory>(&stream, None, &fresh, &ctx(&tenant, "fresh"))
        .await
        .expect("the SKU still takes orders");
    assert_eq!(out.events.len(), 1);
    assert_eq!(Inventory::fold(state, [].iter()).available(), 100);
}
