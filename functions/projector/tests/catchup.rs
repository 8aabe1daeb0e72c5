//! Bounded catch-up, measured: a 10,000-commit gap on one stream (in process, memory stores,
//! the shop's views) is read and checkpointed a page at a time; the test prints the
//! throughput and the process's peak RSS before and after.

use eventfold::{EventEnvelope, EventStore, MemoryEventStore, Metadata, NewEvent, StreamId};
use eventfold_consumers::Notification;
use eventfold_consumers::projection::{CATCH_UP_PAGE, MemoryReadModelStore, ReadModelStore};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

const GAP: u64 = 10_000;

fn received(stream: &StreamId, version: u64) -> EventEnvelope {
    NewEvent {
        event_type: "StockReceived".into(),
        schema_version: 1,
        data: json!({ "quantity": 1 }),
    }
    .into_envelope(
        stream,
        version,
        chrono::Utc::now(),
        Metadata {
            tenant: stream.tenant().into(),
            actor: "tester".into(),
            correlation_id: "c".into(),
            causation_id: "c".into(),
            command_id: format!("cmd-{version}"),
            trace: None,
        },
    )
}

/// The process's peak resident set (`VmHWM`), in KiB; 0 where `/proc` is not there.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_ten_thousand_commit_gap_is_caught_up_in_bounded_pages() {
    let events = Arc::new(MemoryEventStore::new());
    let stream = StreamId::new("acme", "Inventory", "sku-gap").expect("valid");
    let mut last = None;
    for v in 1..=GAP {
        let e = received(&stream, v);
        events
            .append(
                &stream.to_string(),
                eventfold::ExpectedVersion::assumed(v - 1),
                vec![e.clone()],
                None,
            )
            .await
            .expect("append");
        last = Some(e);
    }
    let last = last.expect("written");
    let projector = shop::views::projector(events, MemoryReadModelStore::new());
    let before = peak_rss_kib();
    let start = Instant::now();
    let applied = projector
        .handle(&Notification::of(&last).expect("valid"))
        .await
        .expect("caught up");
    let elapsed = start.elapsed();
    let after = peak_rss_kib();
    let doc = projector
        .models()
        .get("acme", shop::views::STOCK_LEVELS, "sku-gap")
        .await
        .expect("get")
        .expect("doc");
    assert_eq!(doc.checkpoint, GAP);
    assert_eq!(doc.data["on_hand"], GAP as i64);
    assert_eq!(applied.events_read as u64, GAP, "each event read once");
    println!(
        "catch-up of a {GAP}-commit gap (in process, memory stores, pages of {CATCH_UP_PAGE}): {:.0} commits/s, {} pages; peak RSS {} KiB before, {} KiB after",
        GAP as f64 / elapsed.as_secs_f64(),
        GAP.div_ceil(CATCH_UP_PAGE),
        before,
        after
    );
}
