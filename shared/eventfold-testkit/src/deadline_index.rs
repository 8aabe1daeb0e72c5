//! The contract every [`DeadlineIndex`] adapter must pass: run it from each adapter's tests.
//!
//! Every check works under saga names derived from `prefix`, so suites can share one table;
//! failures panic with the broken rule.

use chrono::{DateTime, TimeDelta, Utc};
use eventfold_consumers::projection::ReadModelStore;
use eventfold_consumers::saga::{
    CheckpointMove, Deadline, DeadlineIndex, DeadlineWrite, DueInstance, Together,
};

/// Runs every check against `index`. `prefix` must be unique to this run (letters, digits,
/// `-`; at most 40 characters).
pub async fn run_all(index: &dyn DeadlineIndex, prefix: &str) {
    deadlines_are_set_replaced_and_removed(index, prefix).await;
    writes_for_older_versions_are_ignored(index, prefix).await;
    due_lists_the_earliest_first_up_to_the_limit(index, prefix).await;
    sagas_are_isolated(index, prefix).await;
}

/// A fixed instant with sub-second digits (adapters must keep them).
fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2031-05-06T07:08:09.123456789Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("fixed instant: {e}"))
}

fn deadline(seconds: i64, correlation: &str) -> Deadline {
    Deadline {
        due_at: base() + TimeDelta::seconds(seconds),
        correlation_id: correlation.to_owned(),
    }
}

async fn set_at(
    index: &dyn DeadlineIndex,
    saga: &str,
    stream: &str,
    version: u64,
    d: Option<&Deadline>,
) {
    index
        .set_deadline(saga, stream, version, d)
        .await
        .unwrap_or_else(|e| panic!("set_deadline {saga} {stream} v{version} {d:?}: {e}"));
}

/// Sets a deadline as of version 1 (the checks that do not race).
async fn set(index: &dyn DeadlineIndex, saga: &str, stream: &str, d: Option<&Deadline>) {
    set_at(index, saga, stream, 1, d).await;
}

async fn due(index: &dyn DeadlineIndex, saga: &str, until: i64, limit: usize) -> Vec<DueInstance> {
    index
        .due(saga, base() + TimeDelta::seconds(until), limit)
        .await
        .unwrap_or_else(|e| panic!("due {saga} until +{until}s: {e}"))
}

fn streams(due: &[DueInstance]) -> Vec<&str> {
    due.iter().map(|d| d.stream_id.as_str()).collect()
}

/// A deadline is listed once due (`until` inclusive), exactly as set; setting it again
/// replaces it (no second entry); `None` removes it, and removing nothing is fine.
pub async fn deadlines_are_set_replaced_and_removed(index: &dyn DeadlineIndex, prefix: &str) {
    let saga = format!("{prefix}-set");
    let stream = format!("{prefix}/Saga-one");
    set(index, &saga, &stream, None).await;
    assert!(due(index, &saga, 10_000, 10).await.is_empty());

    let first = deadline(60, "corr-1");
    set(index, &saga, &stream, Some(&first)).await;
    assert!(
        due(index, &saga, 59, 10).await.is_empty(),
        "listed before it is due"
    );
    assert_eq!(
        due(index, &saga, 60, 10).await,
        [DueInstance {
            stream_id: stream.clone(),
            deadline: first.clone()
        }],
        "due exactly at its time, with every digit and the correlation id kept"
    );

    let later = deadline(120, "corr-2");
    set(index, &saga, &stream, Some(&later)).await;
    assert!(
        due(index, &saga, 119, 10).await.is_empty(),
        "the replaced deadline is still listed"
    );
    assert_eq!(
        due(index, &saga, 1000, 10).await,
        [DueInstance {
            stream_id: stream.clone(),
            deadline: later
        }],
        "one entry per instance"
    );

    set(index, &saga, &stream, None).await;
    assert!(
        due(index, &saga, 10_000, 10).await.is_empty(),
        "a removed deadline is still listed"
    );
    set(index, &saga, &stream, None).await;
}

/// A write for an older version than the stored one changes nothing (neither a deadline nor
/// a removal); one for the same version replaces, one for a newer version too, and a removal
/// remembers its version.
pub async fn writes_for_older_versions_are_ignored(index: &dyn DeadlineIndex, prefix: &str) {
    let saga = format!("{prefix}-race");
    let stream = format!("{prefix}/Saga-raced");
    let listed = |due: Vec<DueInstance>| -> Vec<String> {
        due.into_iter().map(|d| d.deadline.correlation_id).collect()
    };
    set_at(index, &saga, &stream, 5, Some(&deadline(10, "v5"))).await;
    set_at(index, &saga, &stream, 4, Some(&deadline(20, "v4"))).await;
    set_at(index, &saga, &stream, 3, None).await;
    assert_eq!(
        listed(due(index, &saga, 1000, 10).await),
        ["v5"],
        "an older write replaced or removed a newer deadline"
    );
    set_at(index, &saga, &stream, 5, Some(&deadline(30, "v5-again"))).await;
    assert_eq!(listed(due(index, &saga, 1000, 10).await), ["v5-again"]);
    set_at(index, &saga, &stream, 7, None).await;
    set_at(index, &saga, &stream, 6, Some(&deadline(40, "v6"))).await;
    assert!(
        due(index, &saga, 1000, 10).await.is_empty(),
        "an older deadline came back after a newer removal"
    );
    set_at(index, &saga, &stream, 8, Some(&deadline(50, "v8"))).await;
    assert_eq!(listed(due(index, &saga, 1000, 10).await), ["v8"]);
    set_at(index, &saga, &stream, 9, None).await;
}

/// `due` lists the earliest first (ties by stream id), never more than `limit`, and only up
/// to `until`.
pub async fn due_lists_the_earliest_first_up_to_the_limit(index: &dyn DeadlineIndex, prefix: &str) {
    let saga = format!("{prefix}-order");
    for (name, seconds) in [
        ("e", 50),
        ("b", 10),
        ("d", 30),
        ("a", 30),
        ("c", 20),
        ("z", 90),
    ] {
        let stream = format!("{prefix}/Saga-{name}");
        set(index, &saga, &stream, Some(&deadline(seconds, name))).await;
    }
    let all = due(index, &saga, 60, 10).await;
    let want: Vec<String> = ["b", "c", "a", "d", "e"]
        .iter()
        .map(|n| format!("{prefix}/Saga-{n}"))
        .collect();
    assert_eq!(streams(&all), want, "earliest first, ties by stream id");
    assert_eq!(streams(&due(index, &saga, 60, 2).await), want[..2].to_vec());
    assert_eq!(
        streams(&due(index, &saga, 20, 10).await),
        want[..2].to_vec(),
        "until is inclusive and bounds the list"
    );
    for name in ["a", "b", "c", "d", "e", "z"] {
        set(index, &saga, &format!("{prefix}/Saga-{name}"), None).await;
    }
    assert!(due(index, &saga, 10_000, 10).await.is_empty());
}

/// Each saga sees only its own instances, even for the same stream id.
pub async fn sagas_are_isolated(index: &dyn DeadlineIndex, prefix: &str) {
    let (one, two) = (format!("{prefix}-iso1"), format!("{prefix}-iso2"));
    let stream = format!("{prefix}/Saga-shared");
    set(index, &one, &stream, Some(&deadline(5, "one"))).await;
    set(index, &two, &stream, Some(&deadline(7, "two"))).await;
    let of_one = due(index, &one, 100, 10).await;
    assert_eq!(of_one.len(), 1);
    assert_eq!(of_one[0].deadline.correlation_id, "one");
    set(index, &one, &stream, None).await;
    let of_two = due(index, &two, 100, 10).await;
    assert_eq!(
        of_two
            .iter()
            .map(|d| d.deadline.correlation_id.as_str())
            .collect::<Vec<_>>(),
        ["two"],
        "removing one saga's entry removed another's"
    );
    set(index, &two, &stream, None).await;
}

fn entry(stream: &str, version: u64, d: Option<Deadline>) -> DeadlineWrite {
    DeadlineWrite {
        stream_id: stream.to_owned(),
        version,
        deadline: d,
    }
}

fn moved(stream: &str, expected: u64, new: u64) -> CheckpointMove {
    CheckpointMove {
        stream_id: stream.to_owned(),
        expected,
        new,
    }
}

/// For adapters that write a batch's entries and checkpoint moves together
/// ([`DeadlineIndex::write_together`] not left to its default): every write is made at once,
/// each under its own condition, and one failed condition (an entry older than the stored
/// one, a checkpoint not where the move expects it) writes nothing of the batch.
pub async fn writes_together_all_or_nothing<S>(store: &S, prefix: &str)
where
    S: DeadlineIndex + ReadModelStore,
{
    let saga = format!("{prefix}-together");
    let (one, two) = (format!("{prefix}/Saga-one"), format!("{prefix}/Saga-two"));
    let (src_a, src_b) = (format!("{prefix}/Src-a"), format!("{prefix}/Src-b"));
    let together = |deadlines: Vec<DeadlineWrite>, moves: Vec<CheckpointMove>| {
        let saga = saga.clone();
        async move {
            store
                .write_together(&saga, &deadlines, &moves)
                .await
                .unwrap_or_else(|e| panic!("write_together {deadlines:?} {moves:?}: {e}"))
        }
    };
    let checkpoint = |stream: String| {
        let saga = saga.clone();
        async move {
            store
                .checkpoint(&saga, &stream)
                .await
                .unwrap_or_else(|e| panic!("checkpoint {stream}: {e}"))
        }
    };
    let listed = || async {
        due(store, &saga, 10_000, 10)
            .await
            .into_iter()
            .map(|d| (d.stream_id, d.deadline.correlation_id))
            .collect::<Vec<_>>()
    };

    let written = together(
        vec![
            entry(&one, 2, Some(deadline(10, "one-v2"))),
            entry(&two, 1, Some(deadline(20, "two-v1"))),
        ],
        vec![moved(&src_a, 0, 3), moved(&src_b, 0, 1)],
    )
    .await;
    assert_eq!(written, Together::Written, "a batch whose conditions hold");
    assert_eq!(
        listed().await,
        [
            (one.clone(), "one-v2".to_owned()),
            (two.clone(), "two-v1".to_owned())
        ]
    );
    assert_eq!(
        (
            checkpoint(src_a.clone()).await,
            checkpoint(src_b.clone()).await
        ),
        (3, 1)
    );

    // An entry older than the stored one: nothing of the batch is written.
    let stale = together(
        vec![
            entry(&one, 1, None),
            entry(&two, 2, Some(deadline(30, "two-v2"))),
        ],
        vec![moved(&src_a, 3, 5)],
    )
    .await;
    assert_eq!(stale, Together::NotWritten, "an entry for an older version");
    assert_eq!(checkpoint(src_a.clone()).await, 3, "the move was written");
    assert_eq!(
        listed().await,
        [
            (one.clone(), "one-v2".to_owned()),
            (two.clone(), "two-v1".to_owned())
        ],
        "an entry of a batch that failed was written"
    );

    // A checkpoint that moved meanwhile: nothing of the batch is written.
    let conflict = together(
        vec![entry(&two, 2, None)],
        vec![moved(&src_a, 3, 5), moved(&src_b, 0, 2)],
    )
    .await;
    assert_eq!(
        conflict,
        Together::NotWritten,
        "a checkpoint not where expected"
    );
    assert_eq!(
        (
            checkpoint(src_a.clone()).await,
            checkpoint(src_b.clone()).await
        ),
        (3, 1)
    );
    assert_eq!(listed().await.len(), 2, "the removal was written");

    // Removals and moves together, the same version as stored included.
    let done = together(
        vec![entry(&one, 2, None), entry(&two, 3, None)],
        vec![moved(&src_a, 3, 5), moved(&src_b, 1, 2)],
    )
    .await;
    assert_eq!(done, Together::Written);
    assert!(listed().await.is_empty(), "removed entries are listed");
    assert_eq!((checkpoint(src_a).await, checkpoint(src_b).await), (5, 2));
}
