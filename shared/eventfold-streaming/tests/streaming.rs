//! Streaming over the memory adapters: topics, publish order, consumer groups, history, and
//! the catalogue and group-store contracts.

use eventfold::{EventStore, MemoryEventStore, Metadata};
use eventfold_streaming::{
    ConsumeRequest, HistoryQuery, MemoryGroupStore, MemoryTopicCatalogue, NewRecord, Offsets,
    SeekTo, StreamingError, Streams, StreamsConfig, TopicSettings, partition_for,
};
use eventfold_testkit::streaming as contract;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

type Mem = Streams<Arc<MemoryEventStore>, MemoryTopicCatalogue, MemoryGroupStore>;

fn streams() -> Mem {
    Streams::new(
        Arc::new(MemoryEventStore::new()),
        MemoryTopicCatalogue::new(),
        MemoryGroupStore::new(),
        StreamsConfig::default(),
    )
}

fn ctx(tenant: &str) -> Metadata {
    Metadata::root(tenant, "alice", uuid::Uuid::now_v7().to_string())
}

fn record(event_type: &str, key: Option<&str>, n: u64) -> NewRecord {
    NewRecord {
        event_type: event_type.into(),
        data: json!({"n": n}),
        key: key.map(str::to_owned),
        headers: BTreeMap::new(),
    }
}

fn consume(topic: &str, group: &str, max: usize, auto_commit: bool) -> ConsumeRequest {
    ConsumeRequest {
        topic: topic.into(),
        group: group.into(),
        max,
        wait: Duration::ZERO,
        auto_commit,
        member: None,
    }
}

#[tokio::test]
async fn catalogue_and_group_contracts_hold_in_memory() {
    contract::run_catalogue(&MemoryTopicCatalogue::new(), "acme").await;
    contract::run_groups(&MemoryGroupStore::new(), "acme").await;
}

#[tokio::test]
async fn default_topics_exist_for_every_tenant_and_creates_are_idempotent() {
    let s = streams();
    let page = s.list_topics("acme", None, 100).await.expect("list");
    let names: Vec<&str> = page.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "data-lake-events",
            "mlops-events",
            "security-events",
            "system-events",
            "user-events"
        ]
    );
    assert!(page.topics.iter().all(|t| t.settings.partitions == 4));
    assert!(matches!(
        s.topic("acme", "nope").await,
        Err(StreamingError::UnknownTopic(_))
    ));
    let settings = TopicSettings {
        partitions: 2,
        retention_days: 1,
        description: "clicks".into(),
    };
    let (_, created) = s
        .create_topic("acme", "alice", "clicks", settings.clone())
        .await
        .expect("create");
    assert!(created);
    let (again, created) = s
        .create_topic("acme", "bob", "clicks", settings.clone())
        .await
        .expect("same settings");
    assert!(!created);
    assert_eq!(again.created_by, "alice");
    let other = TopicSettings {
        partitions: 3,
        ..settings
    };
    assert!(matches!(
        s.create_topic("acme", "alice", "clicks", other).await,
        Err(StreamingError::TopicExists { .. })
    ));
    // Another tenant sees none of it.
    assert!(matches!(
        s.topic("globex", "clicks").await,
        Err(StreamingError::UnknownTopic(_))
    ));
    let bad = TopicSettings {
        partitions: 65,
        ..TopicSettings::default()
    };
    assert!(matches!(
        s.create_topic("acme", "alice", "big", bad).await,
        Err(StreamingError::Invalid(_))
    ));
    assert!(matches!(
        s.create_topic("acme", "alice", "Bad Name", TopicSettings::default())
            .await,
        Err(StreamingError::Invalid(_))
    ));
}

#[tokio::test]
async fn keyed_records_keep_their_order_in_one_partition_and_offsets_are_contiguous() {
    let s = streams();
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for round in 0..5u64 {
        let batch: Vec<NewRecord> = (0..20u64)
            .map(|i| record("user.created", Some(&format!("k{}", i % 7)), round * 20 + i))
            .collect();
        let placed = s
            .publish(&ctx("acme"), "user-events", batch, None)
            .await
            .expect("publish");
        assert_eq!(placed.len(), 20);
        for (i, p) in placed.iter().enumerate() {
            let key = format!("k{}", i % 7);
            assert_eq!(p.partition, partition_for(&key, 4));
            expected.entry(key).or_default().push(p.offset);
        }
    }
    for offsets in expected.values() {
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    }
    let info = s.topic_info("acme", "user-events").await.expect("info");
    let total: u64 = info.heads.iter().map(|h| h.head).sum();
    assert_eq!(total, 100);
    for h in &info.heads {
        let events = s
            .store()
            .load_range(
                &format!("acme/Topic-user-events.{}", h.partition),
                1,
                None,
                None,
            )
            .await
            .expect("read");
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=h.head).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn bad_records_write_nothing() {
    let s = streams();
    let big = NewRecord {
        data: json!("x".repeat(70 * 1024)),
        ..record("t", None, 0)
    };
    let cases = [
        (
            vec![record("ok", None, 1), record("bad type!", None, 2)],
            "invalid",
        ),
        (vec![record("ok", None, 1), big], "too large"),
        (Vec::new(), "invalid"),
        ((0..101).map(|i| record("t", None, i)).collect(), "invalid"),
        (
            vec![NewRecord {
                data: (0..30).fold(json!(1), |inner, _| json!([inner])),
                ..record("t", None, 0)
            }],
            "too deep for the store",
        ),
        (
            vec![NewRecord {
                data: json!({"n": 1e200}),
                ..record("t", None, 0)
            }],
            "a number the store cannot hold",
        ),
        (
            vec![NewRecord {
                data: json!({"": 1}),
                ..record("t", None, 0)
            }],
            "an empty key",
        ),
        (
            vec![NewRecord {
                key: Some(String::new()),
                ..record("t", None, 0)
            }],
            "invalid",
        ),
    ];
    for (records, why) in cases {
        let err = s
            .publish(&ctx("acme"), "user-events", records, None)
            .await
            .expect_err(why);
        assert!(
            matches!(
                err,
                StreamingError::Invalid(_) | StreamingError::TooLarge(_)
            ),
            "{err:?}"
        );
    }
    assert!(matches!(
        s.publish(&ctx("acme"), "nope", vec![record("t", None, 0)], None)
            .await,
        Err(StreamingError::UnknownTopic(_))
    ));
    let info = s.topic_info("acme", "user-events").await.expect("info");
    assert!(info.heads.iter().all(|h| h.head == 0), "{:?}", info.heads);
}

#[tokio::test]
async fn a_group_sees_records_again_until_it_commits_and_commits_never_go_back() {
    let s = streams();
    let batch = (0..10).map(|i| record("t", None, i)).collect();
    s.publish(&ctx("acme"), "user-events", batch, None)
        .await
        .expect("publish");
    let first = s
        .consume("acme", &consume("user-events", "g", 100, false), None)
        .await
        .expect("consume");
    assert_eq!(first.records.len(), 10);
    let again = s
        .consume("acme", &consume("user-events", "g", 100, false), None)
        .await
        .expect("consume");
    assert_eq!(again.records, first.records, "no commit: the same records");
    let mut offsets = Offsets::new();
    for r in &first.records {
        let at = offsets.entry(r.partition).or_insert(0);
        *at = (*at).max(r.offset);
    }
    let committed = s
        .commit("acme", "user-events", "g", &offsets)
        .await
        .expect("commit");
    assert_eq!(committed, offsets);
    let lower: Offsets = offsets.keys().map(|p| (*p, 1)).collect();
    let still = s
        .commit("acme", "user-events", "g", &lower)
        .await
        .expect("a lower commit is ignored");
    assert_eq!(still, offsets);
    let lag = s.lag("acme", "user-events", "g").await.expect("lag");
    assert!(lag.iter().all(|l| l.lag == 0), "{lag:?}");
    let none = s
        .consume("acme", &consume("user-events", "g", 100, false), None)
        .await
        .expect("consume");
    assert!(none.records.is_empty());
    // Out of range: a partition the topic lacks, an offset past the head.
    assert!(matches!(
        s.commit("acme", "user-events", "g", &[(4, 1)].into()).await,
        Err(StreamingError::OutOfRange(_))
    ));
    assert!(matches!(
        s.commit("acme", "user-events", "g", &[(0, 999)].into())
            .await,
        Err(StreamingError::OutOfRange(_))
    ));
    let other = s
        .consume("acme", &consume("user-events", "other", 3, false), None)
        .await
        .expect("another group starts at the beginning");
    assert_eq!(other.records.len(), 3);
    for bad in [
        consume("user-events", "g", 0, false),
        consume("user-events", "g", 1001, false),
        consume("user-events", "bad group", 1, false),
    ] {
        assert!(matches!(
            s.consume("acme", &bad, None).await,
            Err(StreamingError::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn auto_commit_commits_the_previous_delivery_on_the_next_call() {
    let s = streams();
    let batch = (0..6).map(|i| record("t", Some("one"), i)).collect();
    s.publish(&ctx("acme"), "user-events", batch, None)
        .await
        .expect("publish");
    let a = s
        .consume("acme", &consume("user-events", "g", 4, true), None)
        .await
        .expect("consume");
    let seen: Vec<u64> = a.records.iter().map(|r| r.offset).collect();
    assert_eq!(seen, [1, 2, 3, 4]);
    assert!(a.committed.values().all(|o| *o == 0));
    let b = s
        .consume("acme", &consume("user-events", "g", 4, true), None)
        .await
        .expect("consume");
    let seen: Vec<u64> = b.records.iter().map(|r| r.offset).collect();
    assert_eq!(seen, [5, 6]);
    let p = partition_for("one", 4);
    assert_eq!(b.committed.get(&p), Some(&4));
    let c = s
        .consume("acme", &consume("user-events", "g", 4, true), None)
        .await
        .expect("consume");
    assert!(c.records.is_empty());
    assert_eq!(c.committed.get(&p), Some(&6));
    let lag = s.lag("acme", "user-events", "g").await.expect("lag");
    assert!(lag.iter().all(|l| l.lag == 0), "{lag:?}");
}

#[tokio::test]
async fn seek_moves_a_group_to_earliest_latest_or_a_time() {
    let s = streams();
    s.publish(
        &ctx("acme"),
        "user-events",
        vec![record("t", Some("k"), 1), record("t", Some("k"), 2)],
        None,
    )
    .await
    .expect("publish");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.publish(
        &ctx("acme"),
        "user-events",
        vec![record("t", Some("k"), 3)],
        None,
    )
    .await
    .expect("publish");
    let p = partition_for("k", 4);
    let latest = s
        .seek("acme", "user-events", "g", SeekTo::Latest)
        .await
        .expect("seek");
    assert_eq!(latest.get(&p), Some(&3));
    let got = s
        .consume("acme", &consume("user-events", "g", 10, false), None)
        .await
        .expect("consume");
    assert!(got.records.is_empty());
    s.seek("acme", "user-events", "g", SeekTo::Timestamp(between))
        .await
        .expect("seek");
    let got = s
        .consume("acme", &consume("user-events", "g", 10, false), None)
        .await
        .expect("consume");
    let data: Vec<u64> = got
        .records
        .iter()
        .filter_map(|r| r.data["n"].as_u64())
        .collect();
    assert_eq!(data, [3]);
    s.seek("acme", "user-events", "g", SeekTo::Earliest)
        .await
        .expect("seek");
    let got = s
        .consume("acme", &consume("user-events", "g", 10, false), None)
        .await
        .expect("consume");
    assert_eq!(got.records.len(), 3);
}

#[tokio::test]
async fn history_merges_partitions_in_time_order_with_filters_and_a_stable_cursor() {
    let s = streams();
    for i in 0..30u64 {
        let kind = if i % 3 == 0 {
            "order.paid"
        } else {
            "order.viewed"
        };
        s.publish(
            &ctx("acme"),
            "user-events",
            vec![record(kind, Some(&format!("k{}", i % 5)), i)],
            None,
        )
        .await
        .expect("publish");
    }
    let all = |q: HistoryQuery| {
        let s = &s;
        async move {
            let mut out = Vec::new();
            let mut q = q;
            loop {
                let page = s.history("acme", &q).await.expect("history");
                out.extend(page.records);
                match page.next {
                    Some(n) => q.after = Some(n),
                    None => break,
                }
            }
            out
        }
    };
    let base = HistoryQuery {
        topic: "user-events".into(),
        limit: 7,
        ..Default::default()
    };
    let everything = all(base.clone()).await;
    let order: Vec<u64> = everything
        .iter()
        .filter_map(|r| r.data["n"].as_u64())
        .collect();
    assert_eq!(
        order,
        (0..30).collect::<Vec<_>>(),
        "time order across partitions"
    );
    let paid = all(HistoryQuery {
        event_type: Some("order.paid".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(paid.len(), 10);
    let k2 = all(HistoryQuery {
        key: Some("k2".into()),
        ..base.clone()
    })
    .await;
    let k2: Vec<u64> = k2.iter().filter_map(|r| r.data["n"].as_u64()).collect();
    assert_eq!(k2, [2, 7, 12, 17, 22, 27]);
    let since = everything[10].timestamp;
    let until = everything[19].timestamp;
    let window = all(HistoryQuery {
        since: Some(since),
        until: Some(until),
        ..base.clone()
    })
    .await;
    assert!(
        window
            .iter()
            .all(|r| r.timestamp >= since && r.timestamp <= until)
    );
    let expected = everything
        .iter()
        .filter(|r| r.timestamp >= since && r.timestamp <= until)
        .count();
    assert_eq!(window.len(), expected);
    assert!(expected >= 10);
    // History touches no group.
    let lag = s.lag("acme", "user-events", "g").await.expect("lag");
    assert!(lag.iter().all(|l| l.committed == 0));
    assert!(matches!(
        s.history(
            "acme",
            &HistoryQuery {
                limit: 0,
                ..base.clone()
            }
        )
        .await,
        Err(StreamingError::Invalid(_))
    ));
    assert!(matches!(
        s.history(
            "globex",
            &HistoryQuery {
                topic: "nope".into(),
                ..base
            }
        )
        .await,
        Err(StreamingError::UnknownTopic(_))
    ));
}

#[tokio::test]
async fn a_long_poll_returns_when_a_record_arrives() {
    let config = StreamsConfig {
        sleep: Some(Arc::new(|d| Box::pin(tokio::time::sleep(d)))),
        ..StreamsConfig::default()
    };
    let s = Arc::new(Streams::new(
        Arc::new(MemoryEventStore::new()),
        MemoryTopicCatalogue::new(),
        MemoryGroupStore::new(),
        config,
    ));
    s.topic("acme", "user-events").await.expect("topic");
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let req = ConsumeRequest {
                wait: Duration::from_secs(5),
                ..consume("user-events", "g", 10, false)
            };
            let got = s.consume("acme", &req, None).await.expect("consume");
            (got.records.len(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.publish(
        &ctx("acme"),
        "user-events",
        vec![record("t", None, 1)],
        None,
    )
    .await
    .expect("publish");
    let (n, took) = waiter.await.expect("joins");
    assert_eq!(n, 1);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let empty = s
        .consume(
            "acme",
            &ConsumeRequest {
                wait: Duration::from_millis(300),
                ..consume("user-events", "g2", 10, false)
            },
            None,
        )
        .await
        .expect("consume");
    assert_eq!(
        empty.records.len(),
        1,
        "a new group starts at the beginning"
    );
    let started = std::time::Instant::now();
    let waited = s
        .consume(
            "acme",
            &ConsumeRequest {
                wait: Duration::from_millis(300),
                ..consume("user-events", "g3", 10, true)
            },
            None,
        )
        .await
        .expect("consume");
    assert_eq!(waited.records.len(), 1);
    let nothing = s
        .consume(
            "acme",
            &ConsumeRequest {
                wait: Duration::from_millis(300),
                ..consume("user-events", "g3", 10, true)
            },
            None,
        )
        .await
        .expect("consume");
    assert!(nothing.records.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
}

#[tokio::test]
async fn lost_races_are_counted_once_each() {
    // Two processes on one store: each caches the heads it wrote, so the second one's
    // append makes the first one's cached head stale.
    let store = Arc::new(MemoryEventStore::new());
    let topics = Arc::new(MemoryTopicCatalogue::new());
    let groups = Arc::new(MemoryGroupStore::new());
    let process = || {
        Streams::new(
            store.clone(),
            topics.clone(),
            groups.clone(),
            StreamsConfig::default(),
        )
    };
    let (a, b) = (process(), process());
    let one = TopicSettings {
        partitions: 1,
        ..TopicSettings::default()
    };
    a.create_topic("acme", "alice", "orders", one)
        .await
        .expect("created");
    let records = |n| vec![record("t", Some("k"), n)];
    a.publish(&ctx("acme"), "orders", records(1), None)
        .await
        .expect("a publishes");
    b.publish(&ctx("acme"), "orders", records(2), None)
        .await
        .expect("b publishes after a");
    assert_eq!(a.take_contention(), Default::default());
    let placed = a
        .publish(&ctx("acme"), "orders", records(3), None)
        .await
        .expect("a retries past b's record");
    assert_eq!(placed[0].offset, 3);
    let taken = a.take_contention();
    assert_eq!((taken.lost, taken.retried), (1, 1));
    assert_eq!(a.take_contention(), Default::default(), "taken once");
    assert_eq!(b.take_contention(), Default::default());
}
