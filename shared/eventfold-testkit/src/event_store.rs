//! The contract every [`EventStore`] adapter must pass: run it from each adapter's tests.
//!
//! Each check takes a unique `prefix` so suites can share one table; failures panic with the
//! broken rule.

use chrono::{TimeZone, Utc};
use eventfold::envelope::{EventEnvelope, Metadata, NewEvent, StreamId};
use eventfold::store::{EventStore, ExpectedVersion, LoadOptions, Snapshot, StoreError};
use serde_json::json;

fn stream(prefix: &str, name: &str) -> StreamId {
    StreamId::new(prefix, "Contract", name).expect("contract stream ids are valid")
}

/// A payload exercising every JSON shape a store must round-trip (unicode, floats, extremes,
/// null, empty string, nested empty containers), tagged with `n`.
pub fn rich_data(n: u64) -> serde_json::Value {
    json!({
        "n": n,
        "text": "ünïcödé ✓",
        "float": 1.5,
        "neg": -7,
        "big": u64::MAX,
        "flag": true,
        "none": null,
        "empty": "",
        "list": [1, "two", {"three": [3]}],
        "nested": {"a": {"b": []}, "m": {}}
    })
}

/// Builds `count` events for `stream` starting after `after`, as one commit: they share the
/// commit's metadata (one command id per commit), as [`validate_append`] requires.
///
/// [`validate_append`]: eventfold::store::validate_append
pub fn sample_events(stream: &StreamId, after: u64, count: u64) -> Vec<EventEnvelope> {
    let metadata = Metadata {
        tenant: stream.tenant().into(),
        actor: "tester".into(),
        correlation_id: "corr-1".into(),
        causation_id: "cause-1".into(),
        command_id: format!("cmd-{}", after + 1),
        trace: None,
    };
    (1..=count)
        .map(|i| {
            NewEvent {
                event_type: "Thing Happened".into(),
                schema_version: 2,
                data: rich_data(after + i),
            }
            .into_envelope(
                stream,
                after + i,
                Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                    .single()
                    .expect("valid date")
                    + chrono::Duration::nanoseconds(123_456_789),
                metadata.clone(),
            )
        })
        .collect()
}

fn all() -> LoadOptions {
    LoadOptions {
        state_schema: None,
        snapshot_every: 100,
    }
}

/// Runs every check against `store`.
pub async fn run_all(store: &dyn EventStore, prefix: &str) {
    empty_stream_loads_as_version_zero(store, prefix).await;
    appended_events_round_trip_exactly(store, prefix).await;
    stale_expected_version_conflicts_and_writes_nothing(store, prefix).await;
    commits_are_atomic_and_ranges_cut_through_them(store, prefix).await;
    snapshots_shorten_loads_only_for_their_schema(store, prefix).await;
    malformed_appends_are_invalid(store, prefix).await;
    catch_up_reads_exactly_the_commits_after_a_boundary(store, prefix).await;
    observed_versions_are_commit_boundaries_at_the_head(store, prefix).await;
    unobserved_versions_are_refused(store, prefix).await;
    lent_loads_equal_owned_loads(store, prefix).await;
}

/// [`EventStore::load_commits`] (what the command path folds) reads what
/// [`EventStore::load`] reads: the same version, snapshot and events in the same order, with
/// and without a usable snapshot, and nothing for a stream never written.
pub async fn lent_loads_equal_owned_loads(store: &dyn EventStore, prefix: &str) {
    let s = stream(prefix, "lent");
    let key = s.to_string();
    let snapshot = Snapshot {
        version: 3,
        state_schema: 5,
        state: json!({"lines": {"a": 1}}),
    };
    let mut at = ExpectedVersion::NEW;
    for (count, snap) in [(1, None), (2, Some(snapshot.clone())), (2, None)] {
        at = store
            .append(&key, at, sample_events(&s, at.get(), count), snap)
            .await
            .expect("append")
            .expected();
    }
    for state_schema in [Some(5), Some(6), None] {
        let options = LoadOptions {
            state_schema,
            snapshot_every: 2,
        };
        let owned = store.load(&key, options).await.expect("load");
        let lent = store.load_commits(&key, options).await.expect("lent load");
        assert_eq!(lent.version, owned.version, "{state_schema:?}");
        assert_eq!(lent.expected(), owned.expected());
        assert_eq!(lent.snapshot.as_deref(), owned.snapshot.as_ref());
        assert_eq!(
            lent.events().cloned().collect::<Vec<_>>(),
            owned.events,
            "{state_schema:?}"
        );
    }
    let fast = store
        .load_commits(
            &key,
            LoadOptions {
                state_schema: Some(5),
                snapshot_every: 2,
            },
        )
        .await
        .expect("lent load");
    assert_eq!(fast.snapshot.as_deref(), Some(&snapshot));
    assert_eq!(
        fast.events().map(|e| e.version).collect::<Vec<_>>(),
        vec![4, 5],
        "a lent load starts after its snapshot too"
    );
    let none = store
        .load_commits(&stream(prefix, "lent-none").to_string(), all())
        .await
        .expect("lent load of nothing");
    assert_eq!((none.version, none.events().count()), (0, 0));
    assert_eq!(none.snapshot, None);
}

/// The versions the port hands out to append after are commit boundaries at the head: never
/// the middle of a commit, never past the end. After commits of 3 and 2 events a load and
/// the appends report 3 and 5, not 1, 2 or 4; a catch-up read from a boundary ends at the
/// head; a version the stream has since passed (a stale one, the only wrong version a
/// writer can hold) conflicts and writes nothing.
pub async fn observed_versions_are_commit_boundaries_at_the_head(
    store: &dyn EventStore,
    prefix: &str,
) {
    let s = stream(prefix, "boundaries");
    let key = s.to_string();
    let three = store
        .append(&key, ExpectedVersion::NEW, sample_events(&s, 0, 3), None)
        .await
        .expect("append")
        .expected();
    assert_eq!(three.get(), 3, "an append reports the end of its commit");
    let loaded = store.load(&key, all()).await.expect("load");
    assert_eq!(loaded.expected(), three, "a load reports the head");
    let tail = store
        .load_after(&key, ExpectedVersion::NEW)
        .await
        .expect("catch up");
    assert_eq!(
        ExpectedVersion::NEW.after(&tail),
        Some(three),
        "a catch-up ends at the head"
    );
    let five = store
        .append(&key, three, sample_events(&s, 3, 2), None)
        .await
        .expect("append")
        .expected();
    assert_eq!(five.get(), 5);
    let tail = store.load_after(&key, three).await.expect("catch up");
    assert_eq!(three.after(&tail), Some(five));
    assert_eq!(
        three.after(&tail[1..]),
        None,
        "a tail with a hole is not a catch-up"
    );
    let stale = store
        .append(&key, three, sample_events(&s, 3, 1), None)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected: 3, .. })),
        "{stale:?}"
    );
    assert_eq!(store.load(&key, all()).await.expect("load").version, 5);
}

/// A version no load or append reported ([`ExpectedVersion::assumed`], not vouched for), in
/// the middle of a commit or past the head, is a conflict and writes nothing; the head
/// itself is accepted. (The memory store sees every commit; the DynamoDB store reads the
/// commit holding such a version before its conditional `PutItem`, which sees only its own
/// key.)
pub async fn unobserved_versions_are_refused(store: &dyn EventStore, prefix: &str) {
    let s = stream(prefix, "unobserved");
    let key = s.to_string();
    store
        .append(&key, ExpectedVersion::NEW, sample_events(&s, 0, 3), None)
        .await
        .expect("append");
    for wrong in [1, 2, 4, 10] {
        let v = ExpectedVersion::assumed(wrong);
        let refused = store
            .append(&key, v, sample_events(&s, wrong, 1), None)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { .. })),
            "appending after {wrong} of a 3-event stream: {refused:?}"
        );
    }
    let versions: Vec<u64> = store
        .load_range(&key, 1, None, None)
        .await
        .expect("range")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3], "nothing written");
    let at_head = store
        .append(
            &key,
            ExpectedVersion::assumed(3),
            sample_events(&s, 3, 1),
            None,
        )
        .await
        .expect("the head, even assumed, is a boundary");
    assert_eq!(at_head.version, 4);
}

/// `load_after` a commit boundary returns every later event, in order, and nothing at the head.
pub async fn catch_up_reads_exactly_the_commits_after_a_boundary(
    store: &dyn EventStore,
    prefix: &str,
) {
    let s = stream(prefix, "catchup");
    let key = s.to_string();
    let mut version = ExpectedVersion::NEW;
    let mut observed = vec![version];
    for size in [2, 1, 3, 1, 1, 2, 1] {
        version = store
            .append(&key, version, sample_events(&s, version.get(), size), None)
            .await
            .expect("append")
            .expected();
        observed.push(version);
    }
    assert_eq!(version.get(), 11);
    let at = |v: u64| {
        *observed
            .iter()
            .find(|o| o.get() == v)
            .unwrap_or_else(|| panic!("{v} is a commit boundary"))
    };
    for (boundary, expected) in [
        (0, 1..=11),
        (2, 3..=11),
        (6, 7..=11),
        (8, 9..=11),
        (10, 11..=11),
    ] {
        let tail = store
            .load_after(&key, at(boundary))
            .await
            .expect("catch up");
        assert_eq!(
            tail.iter().map(|e| e.version).collect::<Vec<_>>(),
            expected.collect::<Vec<_>>(),
            "after {boundary}"
        );
    }
    assert!(
        store
            .load_after(&key, version)
            .await
            .expect("catch up")
            .is_empty()
    );
}

/// A stream never written has version 0 and no events.
pub async fn empty_stream_loads_as_version_zero(store: &dyn EventStore, prefix: &str) {
    let s = stream(prefix, "empty").to_string();
    let loaded = store.load(&s, all()).await.expect("load works");
    assert_eq!(loaded.version, 0);
    assert!(loaded.events.is_empty() && loaded.snapshot.is_none());
    let range = store
        .load_range(&s, 1, None, None)
        .await
        .expect("range works");
    assert!(range.is_empty());
}

/// Everything in an envelope survives the store unchanged.
pub async fn appended_events_round_trip_exactly(store: &dyn EventStore, prefix: &str) {
    let s = stream(prefix, "roundtrip");
    let events = sample_events(&s, 0, 2);
    let done = store
        .append(&s.to_string(), ExpectedVersion::NEW, events.clone(), None)
        .await
        .expect("first append succeeds");
    assert_eq!(done.version, 2);
    let loaded = store.load(&s.to_string(), all()).await.expect("load works");
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.expected(), done.expected());
    assert_eq!(loaded.events, events, "envelopes must round-trip exactly");
}

/// Appending at a version the stream has passed is a conflict and leaves the stream as it was.
pub async fn stale_expected_version_conflicts_and_writes_nothing(
    store: &dyn EventStore,
    prefix: &str,
) {
    let s = stream(prefix, "conflict");
    let key = s.to_string();
    let first = store
        .append(&key, ExpectedVersion::NEW, sample_events(&s, 0, 1), None)
        .await
        .expect("first append succeeds")
        .expected();
    store
        .append(&key, first, sample_events(&s, 1, 2), None)
        .await
        .expect("second append succeeds");
    for stale in [ExpectedVersion::NEW, first] {
        let err = store
            .append(&key, stale, sample_events(&s, stale.get(), 1), None)
            .await
            .expect_err("stale append must fail");
        assert!(
            matches!(err, StoreError::Conflict { expected, .. } if expected == stale.get()),
            "{err:?}"
        );
    }
    let loaded = store.load(&key, all()).await.expect("load works");
    assert_eq!(loaded.version, 3);
    let versions: Vec<u64> = loaded.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![1, 2, 3]);
}

/// A commit of several events lands whole; ranges may start and end inside a commit.
pub async fn commits_are_atomic_and_ranges_cut_through_them(store: &dyn EventStore, prefix: &str) {
    let s = stream(prefix, "ranges");
    let key = s.to_string();
    let mut expected_version = ExpectedVersion::NEW;
    for size in [3, 1, 4, 2] {
        let done = store
            .append(
                &key,
                expected_version,
                sample_events(&s, expected_version.get(), size),
                None,
            )
            .await
            .expect("append succeeds");
        expected_version = done.expected();
    }
    assert_eq!(expected_version.get(), 10);
    let mid = store
        .load_range(&key, 2, Some(6), None)
        .await
        .expect("range");
    assert_eq!(
        mid.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    let limited = store
        .load_range(&key, 5, None, Some(3))
        .await
        .expect("range");
    assert_eq!(
        limited.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    let tail = store.load_range(&key, 9, None, None).await.expect("range");
    assert_eq!(
        tail.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![9, 10]
    );
    let past = store.load_range(&key, 11, None, None).await.expect("range");
    assert!(past.is_empty());
    // Far past the head, up to the largest version there is: empty, never a wrap-around.
    for from in [1_000, i64::MAX as u64, u64::MAX - 1, u64::MAX] {
        let far = store
            .load_range(&key, from, None, Some(10))
            .await
            .expect("range");
        assert!(far.is_empty(), "from {from}: {far:?}");
    }
    let open_ended = store
        .load_range(&key, 10, Some(u64::MAX), None)
        .await
        .expect("range");
    assert_eq!(
        open_ended.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![10]
    );
}

/// A load stops at the newest snapshot of the requested schema and ignores other schemas.
pub async fn snapshots_shorten_loads_only_for_their_schema(store: &dyn EventStore, prefix: &str) {
    let s = stream(prefix, "snapshots");
    let key = s.to_string();
    let two = store
        .append(&key, ExpectedVersion::NEW, sample_events(&s, 0, 2), None)
        .await
        .expect("append")
        .expected();
    let snap = Snapshot {
        version: 4,
        state_schema: 7,
        state: json!({"sum": 10, "items": ["a", "b"]}),
    };
    let four = store
        .append(&key, two, sample_events(&s, 2, 2), Some(snap.clone()))
        .await
        .expect("append with snapshot")
        .expected();
    store
        .append(&key, four, sample_events(&s, 4, 1), None)
        .await
        .expect("append");
    let fast = store
        .load(
            &key,
            LoadOptions {
                state_schema: Some(7),
                snapshot_every: 4,
            },
        )
        .await
        .expect("load");
    assert_eq!(fast.version, 5);
    assert_eq!(fast.snapshot, Some(snap));
    assert_eq!(
        fast.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![5]
    );
    let other_schema = store
        .load(
            &key,
            LoadOptions {
                state_schema: Some(8),
                snapshot_every: 4,
            },
        )
        .await
        .expect("load");
    assert_eq!(
        other_schema.snapshot, None,
        "a snapshot of another schema must be ignored"
    );
    assert_eq!(other_schema.events.len(), 5);
}

/// Empty commits, wrong versions, foreign events and misplaced snapshots are refused.
pub async fn malformed_appends_are_invalid(store: &dyn EventStore, prefix: &str) {
    let s = stream(prefix, "invalid");
    let key = s.to_string();
    let new = ExpectedVersion::NEW;
    let empty = store.append(&key, new, vec![], None).await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))), "{empty:?}");
    let gap = store.append(&key, new, sample_events(&s, 1, 1), None).await;
    assert!(matches!(gap, Err(StoreError::Invalid(_))), "{gap:?}");
    let other = stream(prefix, "other");
    let foreign = store
        .append(&key, new, sample_events(&other, 0, 1), None)
        .await;
    assert!(
        matches!(foreign, Err(StoreError::Invalid(_))),
        "{foreign:?}"
    );
    let bad_snap = Snapshot {
        version: 9,
        state_schema: 1,
        state: json!({}),
    };
    let misplaced = store
        .append(&key, new, sample_events(&s, 0, 1), Some(bad_snap))
        .await;
    assert!(
        matches!(misplaced, Err(StoreError::Invalid(_))),
        "{misplaced:?}"
    );
    let loaded = store.load(&key, all()).await.expect("load");
    assert_eq!(loaded.version, 0, "refused appends write nothing");
}
