//! The contract every [`TopicCatalogue`] and [`GroupStore`] adapter must pass (memory here,
//! DynamoDB in `eventfold-aws`'s integration tests). `prefix` keeps runs on a shared backend
//! apart: it is used as the tenant.

use chrono::{DateTime, Utc};
use eventfold_streaming::members::Member;
use eventfold_streaming::{CreateOutcome, GroupState, GroupStore, TopicCatalogue};
use eventfold_streaming::{Membership, Offsets, Topic, TopicSettings};

fn topic(name: &str, partitions: u32) -> Topic {
    Topic {
        name: name.to_owned(),
        settings: TopicSettings {
            partitions,
            retention_days: 3,
            description: format!("about {name}"),
        },
        // Whole milliseconds: what every adapter stores exactly.
        created_at: DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .unwrap_or_default(),
        created_by: "tester".into(),
    }
}

/// Runs every catalogue check.
pub async fn run_catalogue(catalogue: &dyn TopicCatalogue, prefix: &str) {
    create_never_overwrites_and_round_trips(catalogue, prefix).await;
    lists_page_in_name_order_per_tenant(catalogue, prefix).await;
    floors_only_rise(catalogue, prefix).await;
}

/// A topic reads back exactly; a second create of the name finds the first, unchanged.
pub async fn create_never_overwrites_and_round_trips(c: &dyn TopicCatalogue, prefix: &str) {
    let t = topic("orders", 8);
    assert_eq!(c.get(prefix, "orders").await.expect("get"), None);
    assert_eq!(
        c.create(prefix, &t).await.expect("create"),
        CreateOutcome::Created
    );
    assert_eq!(c.get(prefix, "orders").await.expect("get"), Some(t.clone()));
    let other = topic("orders", 2);
    assert_eq!(
        c.create(prefix, &other).await.expect("create"),
        CreateOutcome::Exists(t.clone())
    );
    assert_eq!(c.get(prefix, "orders").await.expect("get"), Some(t));
    let elsewhere = format!("{prefix}-other");
    assert_eq!(c.get(&elsewhere, "orders").await.expect("get"), None);
}

/// Lists are per tenant, in name order, paged without loss or repeat.
pub async fn lists_page_in_name_order_per_tenant(c: &dyn TopicCatalogue, prefix: &str) {
    let tenant = format!("{prefix}-list");
    for name in ["c", "a", "e", "b", "d"] {
        c.create(&tenant, &topic(name, 1)).await.expect("create");
    }
    c.create(&format!("{tenant}-x"), &topic("aa", 1))
        .await
        .expect("create");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = c.list(&tenant, after.as_deref(), 2).await.expect("list");
        assert!(page.topics.len() <= 2);
        seen.extend(page.topics.iter().map(|t| t.name.clone()));
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
}

/// A floor starts at 0 and never goes down.
pub async fn floors_only_rise(c: &dyn TopicCatalogue, prefix: &str) {
    let tenant = format!("{prefix}-floor");
    c.create(&tenant, &topic("f", 2)).await.expect("create");
    assert_eq!(c.floor(&tenant, "f", 1).await.expect("floor"), 0);
    c.raise_floor(&tenant, "f", 1, 2000).await.expect("raise");
    c.raise_floor(&tenant, "f", 1, 1000)
        .await
        .expect("lower is ignored");
    assert_eq!(c.floor(&tenant, "f", 1).await.expect("floor"), 2000);
    assert_eq!(c.floor(&tenant, "f", 0).await.expect("floor"), 0);
    assert_eq!(
        c.get(&tenant, "f")
            .await
            .expect("get")
            .map(|t| t.settings.partitions),
        Some(2),
        "floors leave the topic as it was"
    );
}

/// Runs every group-store check.
pub async fn run_groups(groups: &dyn GroupStore, prefix: &str) {
    revisions_guard_every_write(groups, prefix).await;
}

/// Writes need the current revision; a stale one writes nothing; members, generation and
/// pending auto-commits read back as written.
pub async fn revisions_guard_every_write(g: &dyn GroupStore, prefix: &str) {
    assert_eq!(g.get(prefix, "t", "g").await.expect("get"), None);
    let first = GroupState {
        committed: [(0, 5), (3, 7)].into(),
        delivered: [(1, 2)].into(),
        updated_at: DateTime::from_timestamp_millis(1_700_000_000_123),
        membership: Membership {
            generation: 7,
            members: [
                (
                    "m-1".to_owned(),
                    Member {
                        session_timeout_ms: 30_000,
                        expires_at_ms: 1_700_000_030_123,
                        partitions: vec![0, 1, 2],
                        delivered: [(1, 4)].into(),
                    },
                ),
                (
                    "m.2_x".to_owned(),
                    Member {
                        session_timeout_ms: 1_000,
                        expires_at_ms: 1_700_000_001_000,
                        partitions: vec![],
                        delivered: Offsets::new(),
                    },
                ),
            ]
            .into(),
        },
    };
    assert!(
        !g.put(prefix, "t", "g", &first, 1).await.expect("put"),
        "no record at 1 yet"
    );
    assert!(g.put(prefix, "t", "g", &first, 0).await.expect("put"));
    let got = g.get(prefix, "t", "g").await.expect("get").expect("stored");
    assert_eq!((got.value.clone(), got.revision), (first.clone(), 1));
    let second = GroupState {
        committed: [(0, 9)].into(),
        ..GroupState::default()
    };
    assert!(
        !g.put(prefix, "t", "g", &second, 0)
            .await
            .expect("stale put")
    );
    assert!(g.put(prefix, "t", "g", &second, 1).await.expect("put"));
    let got = g.get(prefix, "t", "g").await.expect("get").expect("stored");
    assert_eq!((got.value, got.revision), (second, 2));
    assert_eq!(g.get(prefix, "t", "other").await.expect("get"), None);
    assert_eq!(g.get(prefix, "u", "g").await.expect("get"), None);
}
