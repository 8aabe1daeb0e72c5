//! Consumer groups with members over the memory adapters, on a clock the test moves:
//! exclusive partitions per generation, expiry on the next call, refusals of stale members,
//! per-member auto-commit, and the single cursor once the last member is gone.

use chrono::{DateTime, Utc};
use eventfold::{MemoryEventStore, Metadata};
use eventfold_streaming::{
    ConsumeRequest, MemberClaim, MemoryGroupStore, MemoryTopicCatalogue, NewRecord, Offsets,
    StreamingError, Streams, StreamsConfig, TopicSettings,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

type Mem = Streams<Arc<MemoryEventStore>, MemoryTopicCatalogue, MemoryGroupStore>;

/// Streams whose clock reads `now` (epoch ms).
async fn streams(now: Arc<AtomicI64>) -> Mem {
    let s = Streams::new(
        Arc::new(MemoryEventStore::new()),
        MemoryTopicCatalogue::new(),
        MemoryGroupStore::new(),
        StreamsConfig {
            clock: Arc::new(move || {
                DateTime::<Utc>::from_timestamp_millis(now.load(Ordering::SeqCst)).expect("time")
            }),
            ..StreamsConfig::default()
        },
    );
    let settings = TopicSettings {
        partitions: 4,
        ..TopicSettings::default()
    };
    s.create_topic("acme", "alice", "orders", settings)
        .await
        .expect("topic");
    let ctx = Metadata::root("acme", "alice", "c-1".to_owned());
    let records = (0..40)
        .map(|i| NewRecord {
            event_type: "t".into(),
            data: json!({"n": i}),
            key: Some(format!("k-{i}")),
            headers: BTreeMap::new(),
        })
        .collect();
    s.publish(&ctx, "orders", records, None)
        .await
        .expect("publish");
    s
}

fn as_member(id: &str, generation: Option<u64>, auto_commit: bool) -> ConsumeRequest {
    ConsumeRequest {
        topic: "orders".into(),
        group: "g".into(),
        max: 1000,
        wait: Duration::ZERO,
        auto_commit,
        member: Some(MemberClaim {
            member_id: id.into(),
            generation,
        }),
    }
}

fn rebalanced(e: StreamingError) -> u64 {
    match e {
        StreamingError::Rebalanced { generation, .. } => generation,
        other => panic!("expected rebalanced, got {other:?}"),
    }
}

#[tokio::test]
async fn members_own_their_partitions_expire_and_stale_commits_are_refused() {
    let now = Arc::new(AtomicI64::new(1_000_000));
    let s = streams(now.clone()).await;
    let a = s
        .join("acme", "orders", "g", Some("a"), 5_000)
        .await
        .expect("join a");
    let b = s
        .join("acme", "orders", "g", Some("b"), 2_000)
        .await
        .expect("join b");
    assert_eq!((a.generation, b.generation), (1, 2));
    assert_eq!(b.partitions, vec![2, 3]);
    let a = s.heartbeat("acme", "orders", "g", "a").await.expect("hb");
    assert_eq!((a.generation, a.partitions.clone()), (2, vec![0, 1]));

    // Each reads only its partitions; together they read every record once.
    let got_a = s
        .consume("acme", &as_member("a", Some(2), false), None)
        .await
        .expect("a");
    let got_b = s
        .consume("acme", &as_member("b", None, false), None)
        .await
        .expect("b");
    assert!(got_a.records.iter().all(|r| r.partition < 2));
    assert!(got_b.records.iter().all(|r| r.partition >= 2));
    let ids: BTreeSet<_> = got_a
        .records
        .iter()
        .chain(&got_b.records)
        .map(|r| r.event_id)
        .collect();
    assert_eq!(ids.len(), 40);
    assert_eq!(got_b.generation, Some(2));

    // A single-cursor caller and an unowned partition are refused; nothing moves.
    let e = s
        .consume(
            "acme",
            &ConsumeRequest {
                member: None,
                ..as_member("x", None, false)
            },
            None,
        )
        .await;
    assert_eq!(rebalanced(e.expect_err("single cursor")), 2);
    let claim_b = MemberClaim {
        member_id: "b".into(),
        generation: Some(2),
    };
    let e = s
        .commit_as("acme", "orders", "g", &[(0, 1)].into(), Some(&claim_b))
        .await;
    assert_eq!(rebalanced(e.expect_err("unowned")), 2);
    let head_b: Offsets = [(2, 1)].into();
    s.commit_as("acme", "orders", "g", &head_b, Some(&claim_b))
        .await
        .expect("b commits");

    // b stops heartbeating: 2 s later the next call (a's heartbeat) moves its partitions.
    now.fetch_add(1_500, Ordering::SeqCst);
    s.heartbeat("acme", "orders", "g", "a")
        .await
        .expect("a renews");
    assert_eq!(
        s.describe_group("acme", "orders", "g")
            .await
            .expect("d")
            .generation,
        2
    );
    now.fetch_add(600, Ordering::SeqCst);
    let a = s
        .heartbeat("acme", "orders", "g", "a")
        .await
        .expect("a renews");
    assert_eq!((a.generation, a.partitions), (3, vec![0, 1, 2, 3]));
    let e = s
        .commit_as("acme", "orders", "g", &[(2, 5)].into(), Some(&claim_b))
        .await;
    assert_eq!(rebalanced(e.expect_err("zombie")), 3);
    let e = s.heartbeat("acme", "orders", "g", "b").await;
    assert_eq!(rebalanced(e.expect_err("zombie heartbeat")), 3);
    let d = s
        .describe_group("acme", "orders", "g")
        .await
        .expect("describe");
    assert_eq!(d.members.len(), 1);
    assert!(d.partitions.iter().all(|p| p.owner.as_deref() == Some("a")));
    assert_eq!(d.partitions[2].committed, 1, "the zombie moved nothing");
    // The new owner starts from what b committed.
    let got = s
        .consume("acme", &as_member("a", Some(3), false), None)
        .await
        .expect("a");
    let first_of_2 = got
        .records
        .iter()
        .filter(|r| r.partition == 2)
        .map(|r| r.offset)
        .min();
    assert_eq!(first_of_2, Some(2));

    // The last member leaves: single-cursor mode again.
    assert_eq!(s.leave("acme", "orders", "g", "a").await.expect("leave"), 4);
    s.commit("acme", "orders", "g", &[(0, 1)].into())
        .await
        .expect("single cursor again");
}

#[tokio::test]
async fn a_members_auto_commit_is_its_own_and_a_rebalance_forgets_it() {
    let now = Arc::new(AtomicI64::new(5_000_000));
    let s = streams(now.clone()).await;
    s.join("acme", "orders", "g", Some("a"), 10_000)
        .await
        .expect("join");
    let first = s
        .consume("acme", &as_member("a", None, true), None)
        .await
        .expect("1");
    assert_eq!(first.records.len(), 40);
    // The second call commits the first's delivery.
    let second = s
        .consume("acme", &as_member("a", None, true), None)
        .await
        .expect("2");
    assert!(second.records.is_empty());
    assert_eq!(second.committed.values().sum::<u64>(), 40);
    // A consume in a generation that is over is refused.
    s.join("acme", "orders", "g", Some("b"), 10_000)
        .await
        .expect("join b");
    let e = s
        .consume("acme", &as_member("a", Some(1), true), None)
        .await;
    assert_eq!(rebalanced(e.expect_err("stale")), 2);
    assert!(matches!(
        s.join("acme", "orders", "g", Some("c"), 999).await,
        Err(StreamingError::Invalid(_))
    ));
}
