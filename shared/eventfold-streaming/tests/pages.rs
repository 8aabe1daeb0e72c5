//! Consume answers and history pages stop at the byte budget
//! ([`StreamsConfig::page_bytes`]) as well as at their count, and the next call carries on
//! exactly where they stopped.

use eventfold::{MemoryEventStore, Metadata, wire_len};
use eventfold_streaming::{
    ConsumeRequest, HistoryQuery, MemoryGroupStore, MemoryTopicCatalogue, NewRecord, Record,
    Streams, StreamsConfig,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

type Mem = Streams<Arc<MemoryEventStore>, MemoryTopicCatalogue, MemoryGroupStore>;

/// The test topic's records: 40, spread over 4 partitions by key, each with about 1 KB of
/// quotes (2 KB in the body, 4 KB on the wire), every third an `order.paid`.
async fn streams_with_records(page_bytes: usize) -> Mem {
    let s = Streams::new(
        Arc::new(MemoryEventStore::new()),
        MemoryTopicCatalogue::new(),
        MemoryGroupStore::new(),
        StreamsConfig {
            page_bytes,
            ..StreamsConfig::default()
        },
    );
    let context = Metadata::root("acme", "alice", "c-1".to_owned());
    for i in 0..40u64 {
        let kind = if i % 3 == 0 {
            "order.paid"
        } else {
            "order.viewed"
        };
        let record = NewRecord {
            event_type: kind.into(),
            data: json!({"n": i, "text": "\"".repeat(1000)}),
            key: Some(format!("k{i}")),
            headers: BTreeMap::new(),
        };
        s.publish(&context, "user-events", vec![record], None)
            .await
            .expect("publish");
    }
    s
}

/// What `records` cost in a page: each record's wire bytes and its comma.
fn cost(records: &[Record]) -> usize {
    records.iter().map(|r| wire_len(r) + 1).sum()
}

#[track_caller]
fn assert_within(records: &[Record], budget: usize) {
    assert!(!records.is_empty(), "an answer carries a record");
    assert!(
        records.len() == 1 || cost(records) <= budget,
        "{} records of {} bytes past {budget}",
        records.len(),
        cost(records)
    );
}

#[tokio::test]
async fn consume_answers_stop_at_the_budget_take_every_partition_in_turn_and_lose_nothing() {
    let one = wire_len(&"\"".repeat(1000)); // the bulk of one record
    for budget in [1, 6 * one, 20 * one] {
        let s = streams_with_records(budget).await;
        let request = ConsumeRequest {
            topic: "user-events".into(),
            group: "g".into(),
            max: 1000,
            wait: Duration::ZERO,
            auto_commit: true,
            member: None,
        };
        let mut seen: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut calls = 0;
        loop {
            let got = s.consume("acme", &request, None).await.expect("consume");
            if got.records.is_empty() {
                break;
            }
            calls += 1;
            assert_within(&got.records, budget);
            if calls == 1 && budget >= 6 * one {
                // Room for more than one record: every partition gets its turn.
                let partitions: BTreeSet<u32> = got.records.iter().map(|r| r.partition).collect();
                assert_eq!(partitions.len(), 4, "budget {budget}");
            }
            for r in &got.records {
                seen.entry(r.partition).or_default().push(r.offset);
            }
        }
        // Each partition delivered 1, 2, 3, ... once each, in order, then nothing more.
        let total: usize = seen.values().map(Vec::len).sum();
        assert_eq!(total, 40, "budget {budget}");
        for offsets in seen.values() {
            assert_eq!(*offsets, (1..=offsets.len() as u64).collect::<Vec<_>>());
        }
        match budget {
            1 => assert_eq!(calls, 40),
            b if b == 6 * one => assert!((7..=10).contains(&calls), "{calls} calls"),
            _ => assert!((2..=3).contains(&calls), "{calls} calls"),
        }
    }
}

#[tokio::test]
async fn history_pages_stop_at_the_budget_and_the_cursor_carries_on_exactly_there() {
    let one = wire_len(&"\"".repeat(1000));
    for (event_type, wanted) in [(None, 0..40), (Some("order.paid"), 0..14)] {
        // The records of the filter, by publish number `n`.
        let expected: Vec<u64> = match event_type {
            None => wanted.collect(),
            Some(_) => wanted.map(|i| 3 * i).collect(),
        };
        for budget in [1, 5 * one, usize::MAX] {
            let s = streams_with_records(budget).await;
            let mut q = HistoryQuery {
                topic: "user-events".into(),
                event_type: event_type.map(str::to_owned),
                limit: 1000,
                ..Default::default()
            };
            let mut pages: Vec<Vec<Record>> = Vec::new();
            loop {
                let page = s.history("acme", &q).await.expect("history");
                assert_within(&page.records, budget);
                if let Some(previous) = pages.last() {
                    // The previous page stopped only because this one's first did not fit.
                    assert!(cost(previous) + wire_len(&page.records[0]) + 1 > budget);
                }
                pages.push(page.records);
                match page.next {
                    Some(n) => q.after = Some(n),
                    None => break,
                }
            }
            let read: Vec<&Record> = pages.iter().flatten().collect();
            // In time order (ties by partition, then offset) across the pages...
            let order: Vec<_> = read
                .iter()
                .map(|r| (r.timestamp, r.partition, r.offset))
                .collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(order, sorted, "budget {budget}, {event_type:?}");
            // ...each record of the filter exactly once (published in `n` order).
            let mut numbers: Vec<u64> = read
                .iter()
                .map(|r| r.data["n"].as_u64().expect("n"))
                .collect();
            numbers.sort_unstable();
            assert_eq!(numbers, expected, "budget {budget}, {event_type:?}");
            let count = expected.len();
            match budget {
                1 => assert_eq!(pages.len(), count),
                usize::MAX => assert_eq!(pages.len(), 1),
                _ => assert!(
                    pages.len() > 1 && pages.len() < count,
                    "{} pages",
                    pages.len()
                ),
            }
        }
    }
}
