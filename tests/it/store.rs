//! DynamoDB event store: the shared contract, concurrency, paging, snapshots, limits, upcasters.

use eventfold::{
    Aggregate, CommandError, CommandExecutor, EventStore, ExecutorConfig, LoadOptions, StoreError,
    StreamId, Upcasters,
};
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::{DynamoEventStore, RequestCounter, tokio_backoff};
use serde_json::json;
use shop::Inventory;
use shop::inventory::InventoryCommand;
use shop::registry::ShopCaches;
use std::collections::BTreeSet;
use std::sync::Arc;
use tests::{ctx, events_table, quiet_stack, unique_tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_store_passes_the_store_contract() {
    let stack = quiet_stack().await;
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    eventfold_testkit::event_store::run_all(&store, &unique_tenant("contract")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_lose_or_duplicate_a_commit() {
    const WRITERS: u64 = 16;
    const COMMANDS: u64 = 50;
    let stack = quiet_stack().await;
    let tenant = unique_tenant("race");
    let stream = StreamId::new(&tenant, "Inventory", "hot-sku").expect("valid");
    let table = events_table(&stack);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        // Each writer is its own "Lambda instance": own executor and cache, own client.
        let store = DynamoEventStore::from_sdk(&stack.sdk, &table);
        let exec = CommandExecutor::new(
            store,
            // How many commands make it within a retry budget is a rate, measured by
            // `eventfold-bench commands` (hot stream); this test is about correctness under
            // contention.
            ExecutorConfig {
                max_attempts: 20,
                backoff: Some(tokio_backoff()),
                ..ExecutorConfig::default()
            },
        )
        .caching::<ShopCaches>();
        let (stream, tenant) = (stream.clone(), tenant.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut gave_up = 0u64;
            for i in 0..COMMANDS {
                let quantity = (w * 1000 + i + 1) as i64;
                let cmd = InventoryCommand::ReceiveStock { quantity };
                // A conflict after the executor's retries is an honest "not written": resend.
                loop {
                    match exec
                        .execute::<Inventory>(
                            &stream,
                            None,
                            &cmd,
                            &ctx(&tenant, &format!("{w}-{i}")),
                        )
                        .await
                    {
                        Ok(out) => {
                            assert_eq!(out.events.len(), 1);
                            acknowledged.push((quantity, out.events[0].event_id));
                            break;
                        }
                        Err(CommandError::Conflict { .. }) => {
                            gave_up += 1;
                            continue;
                        }
                        Err(e) => panic!("writer {w} command {i}: {e}"),
                    }
                }
            }
            (acknowledged, gave_up)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut gave_up = 0;
    for t in tasks {
        let (acked, conflicts) = t.await.expect("writer finished");
        acknowledged.extend(acked);
        gave_up += conflicts;
    }
    eprintln!(
        "{gave_up} of {} commands gave up after their retries and were sent again",
        WRITERS * COMMANDS
    );
    let store = DynamoEventStore::from_sdk(&stack.sdk, &table);
    let events = store
        .load_range(&stream.to_string(), 1, None, None)
        .await
        .expect("history");
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    let expected: Vec<u64> = (1..=WRITERS * COMMANDS).collect();
    assert_eq!(versions, expected, "versions must be contiguous from 1");
    let stored: BTreeSet<(i64, uuid::Uuid)> = events
        .iter()
        .map(|e| (e.data["quantity"].as_i64().expect("quantity"), e.event_id))
        .collect();
    let acked: BTreeSet<(i64, uuid::Uuid)> = acknowledged.iter().copied().collect();
    assert_eq!(
        acked.len() as u64,
        WRITERS * COMMANDS,
        "every command acknowledged once"
    );
    assert_eq!(
        stored, acked,
        "each acknowledged commit is stored exactly once, nothing else is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_spanning_several_query_pages_loads_completely() {
    let stack = quiet_stack().await;
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let tenant = unique_tenant("pages");
    let stream = StreamId::new(&tenant, "Blob", "big").expect("valid");
    let key = stream.to_string();
    // 10 commits of ~300 KB: about 3 MB, so at least three 1 MB query pages.
    let blob = "x".repeat(300 * 1024);
    for v in 0..10u64 {
        let mut events = eventfold_testkit::event_store::sample_events(&stream, v, 1);
        events[0].data = json!({"n": v + 1, "blob": blob});
        store
            .append(&key, eventfold::ExpectedVersion::assumed(v), events, None)
            .await
            .expect("append");
    }
    let loaded = store
        .load(&key, LoadOptions::default())
        .await
        .expect("load");
    assert_eq!(loaded.version, 10);
    assert_eq!(loaded.events.len(), 10, "no page may be dropped");
    assert!(
        loaded.requests >= 3,
        "expected several pages, got {} request(s)",
        loaded.requests
    );
    for (i, e) in loaded.events.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1);
        assert_eq!(e.data["n"], json!(i + 1));
        assert_eq!(e.data["blob"].as_str().map(str::len), Some(blob.len()));
    }
    let range = store
        .load_range(&key, 4, Some(9), None)
        .await
        .expect("range");
    assert_eq!(
        range.iter().map(|e| e.version).collect::<Vec<_>>(),
        (4..=9).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_loads_from_its_snapshot_in_at_most_two_requests() {
    let stack = quiet_stack().await;
    let table = events_table(&stack);
    let tenant = unique_tenant("snap");
    let stream = StreamId::new(&tenant, "Inventory", "long").expect("valid");
    let writer = CommandExecutor::new(
        DynamoEventStore::from_sdk(&stack.sdk, &table),
        ExecutorConfig::default(),
    )
    .caching::<ShopCaches>();
    for i in 0..1000 {
        writer
            .execute::<Inventory>(
                &stream,
                None,
                &InventoryCommand::ReceiveStock { quantity: 1 },
                &ctx(&tenant, &format!("c{i}")),
            )
            .await
            .expect("command");
    }
    let counter = RequestCounter::new();
    let store = DynamoEventStore::new(counted_dynamo_client(&stack.sdk, &counter), &table);
    let options = LoadOptions {
        state_schema: Some(Inventory::STATE_SCHEMA),
        snapshot_every: 100,
    };
    let loaded = store
        .load(&stream.to_string(), options)
        .await
        .expect("load");
    assert_eq!(loaded.version, 1000);
    assert!(counter.get() <= 2, "load took {} requests", counter.get());
    assert!(
        loaded.events.len() <= 100,
        "folded {} events",
        loaded.events.len()
    );
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.version), Some(1000));
    // A fresh executor (cold Lambda) reaches the same state as the writer's live one.
    let fresh = CommandExecutor::new(store, ExecutorConfig::default()).caching::<ShopCaches>();
    let (version, state) = fresh.load::<Inventory>(&stream).await.expect("load");
    let (_, live) = writer.load::<Inventory>(&stream).await.expect("load");
    assert_eq!((version, state.on_hand), (1000, 1000));
    assert_eq!(state, live);
    // A changed state schema ignores every snapshot and replays all events.
    let replay = fresh
        .store()
        .load(
            &stream.to_string(),
            LoadOptions {
                state_schema: Some(Inventory::STATE_SCHEMA + 1),
                snapshot_every: 100,
            },
        )
        .await
        .expect("load");
    assert!(replay.snapshot.is_none());
    assert_eq!(replay.events.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_commands_cost_one_request_and_cold_ones_two() {
    let stack = quiet_stack().await;
    let counter = RequestCounter::new();
    let store = DynamoEventStore::new(
        counted_dynamo_client(&stack.sdk, &counter),
        events_table(&stack),
    );
    let tenant = unique_tenant("cost");
    let stream = StreamId::new(&tenant, "Inventory", "s").expect("valid");
    let exec =
        CommandExecutor::new(store.clone(), ExecutorConfig::default()).caching::<ShopCaches>();
    let cmd = InventoryCommand::ReceiveStock { quantity: 2 };
    exec.execute::<Inventory>(&stream, None, &cmd, &ctx(&tenant, "a"))
        .await
        .expect("cold");
    let before = counter.get();
    exec.execute::<Inventory>(&stream, None, &cmd, &ctx(&tenant, "b"))
        .await
        .expect("warm");
    assert_eq!(counter.get() - before, 1, "a warm command is one PutItem");
    let cold = CommandExecutor::new(store, ExecutorConfig::default()).caching::<ShopCaches>();
    let before = counter.get();
    let out = cold
        .execute::<Inventory>(&stream, None, &cmd, &ctx(&tenant, "c"))
        .await
        .expect("cold");
    assert_eq!(
        counter.get() - before,
        2,
        "a cold command is one Query and one PutItem"
    );
    assert_eq!(out.version, 3);
    // A stale cache (another instance wrote) costs a conflict and a reload, never a lost write.
    exec.execute::<Inventory>(&stream, None, &cmd, &ctx(&tenant, "d"))
        .await
        .expect("stale cache recovers");
    let (v, state) = cold.load::<Inventory>(&stream).await.expect("load");
    assert_eq!((v, state.on_hand), (4, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_commit_is_refused_before_any_write() {
    let stack = quiet_stack().await;
    let counter = RequestCounter::new();
    let store = DynamoEventStore::new(
        counted_dynamo_client(&stack.sdk, &counter),
        events_table(&stack),
    );
    let tenant = unique_tenant("big");
    let stream = StreamId::new(&tenant, "Blob", "b").expect("valid");
    let mut events = eventfold_testkit::event_store::sample_events(&stream, 0, 1);
    events[0].data = json!({"blob": "y".repeat(420 * 1024)});
    let before = counter.get();
    let err = store
        .append(
            &stream.to_string(),
            eventfold::ExpectedVersion::assumed(0),
            events,
            None,
        )
        .await
        .expect_err("too large");
    assert!(
        matches!(&err, StoreError::TooLarge { limit, stream_id, .. }
            if *limit == 400 * 1024 && *stream_id == stream.to_string()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&stream.to_string()), "{err}");
    assert_eq!(
        counter.get(),
        before,
        "no request may be sent for a commit that cannot fit"
    );
    let loaded = store
        .load(&stream.to_string(), LoadOptions::default())
        .await
        .expect("load");
    assert_eq!(loaded.version, 0);
}

/// A snapshot that would push the commit past the item limit is dropped, not the commit:
/// the events are written and the stream loads by replaying them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_too_large_for_the_item_is_dropped_and_the_events_written() {
    let stack = quiet_stack().await;
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let tenant = unique_tenant("bigsnap");
    let stream = StreamId::new(&tenant, "Blob", "b").expect("valid");
    let events = eventfold_testkit::event_store::sample_events(&stream, 0, 2);
    let snapshot = eventfold::Snapshot {
        version: 2,
        state_schema: 1,
        state: json!({"hoard": "z".repeat(420 * 1024)}),
    };
    let done = store
        .append(
            &stream.to_string(),
            eventfold::ExpectedVersion::assumed(0),
            events.clone(),
            Some(snapshot),
        )
        .await
        .expect("the events are written");
    assert_eq!(done.version, 2);
    let loaded = store
        .load(
            &stream.to_string(),
            LoadOptions {
                state_schema: Some(1),
                snapshot_every: 1,
            },
        )
        .await
        .expect("load");
    assert!(loaded.snapshot.is_none(), "the snapshot was dropped");
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.events.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_under_an_old_schema_load_through_upcasters() {
    let stack = quiet_stack().await;
    let store = Arc::new(DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack)));
    let tenant = unique_tenant("upcast");
    let stream = StreamId::new(&tenant, "Inventory", "old").expect("valid");
    // Schema 1 of StockReceived called the field `qty`.
    let mut old = eventfold_testkit::event_store::sample_events(&stream, 0, 2);
    for e in &mut old {
        e.event_type = "StockReceived".into();
        e.schema_version = 1;
        e.data = json!({"qty": 5});
    }
    store
        .append(
            &stream.to_string(),
            eventfold::ExpectedVersion::assumed(0),
            old,
            None,
        )
        .await
        .expect("append old events");
    let plain =
        CommandExecutor::new(store.clone(), ExecutorConfig::default()).caching::<ShopCaches>();
    assert!(matches!(
        plain.load::<Inventory>(&stream).await,
        Err(CommandError::Internal(_))
    ));
    let upcasting = CommandExecutor::new(store.clone(), ExecutorConfig::default())
        .caching::<ShopCaches>()
        .with_upcasters(Upcasters::new().register("StockReceived", 1, |mut d| {
            let qty = d["qty"].take();
            json!({"quantity": qty})
        }));
    let (version, state) = upcasting
        .load::<Inventory>(&stream)
        .await
        .expect("upcast load");
    assert_eq!((version, state.on_hand), (2, 10));
    // New decisions append on top of the upcast history.
    let out = upcasting
        .execute::<Inventory>(
            &stream,
            Some(2),
            &InventoryCommand::ReceiveStock { quantity: 1 },
            &ctx(&tenant, "n"),
        )
        .await
        .expect("command");
    assert_eq!((out.version, out.state.on_hand), (3, 11));
}
