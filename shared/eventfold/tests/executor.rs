//! The command path end to end over the in-memory store: create/extend, rejections,
//! "already done", optimistic concurrency, conflict retries, concurrent writers, snapshots,
//! the state cache, upcasters and time travel.

mod common;

use common::{
    Counter, CounterCommand, CounterEvent, CounterState, CounterV2, FOREIGN, Probe, add, ctx,
    replay, stream,
};
use eventfold::CacheFor;
use eventfold::executor::Backoff;
use eventfold::{
    Aggregate, CommandError, CommandExecutor, CommandOutcome, DomainEvent, EventStore,
    ExecutorConfig, LoadOptions, NewEvent, Rejection, Snapshot, StateCache, StreamId, Upcasters,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn config(cache_capacity: usize, snapshot_every: u64, max_attempts: u32) -> ExecutorConfig {
    ExecutorConfig {
        snapshot_every,
        max_attempts,
        retry_budget: None,
        cache_capacity,
        backoff: None,
    }
}

/// The counter's states (`Counter` and `CounterV2` share their state type: one cache).
type Cache = StateCache<CounterState>;
/// An executor of the counter, with its cache.
type Exec = CommandExecutor<Probe, Cache>;

fn executor_with(store: &Probe, config: ExecutorConfig) -> Exec {
    CommandExecutor::new(store.clone(), config).caching()
}

fn executor(store: &Probe) -> Exec {
    executor_with(store, config(16, 100, 8))
}

async fn run<C: CacheFor<Counter>>(
    exec: &CommandExecutor<Probe, C>,
    s: &StreamId,
    command: CounterCommand,
) -> CommandOutcome<CounterState> {
    exec.execute::<Counter>(s, None, &command, &ctx("cmd"))
        .await
        .unwrap_or_else(|e| panic!("{command:?} should succeed: {e}"))
}

fn amounts(events: &[eventfold::EventEnvelope]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e.data["n"].as_i64().expect("an Added event"))
        .collect()
}

#[tokio::test]
async fn the_fixture_store_is_a_faithful_store() {
    // The probe wraps the memory store; everything below trusts it to behave the same.
    eventfold_testkit::event_store::run_all(&Probe::new(), "probe").await;
}

#[tokio::test]
async fn the_first_command_creates_the_stream_and_later_ones_extend_it() {
    let store = Probe::new();
    let exec = executor(&store);
    let s = stream("create");

    let first = exec
        .execute::<Counter>(
            &s,
            None,
            &CounterCommand::AddMany { ns: vec![2, 3] },
            &ctx("c1"),
        )
        .await
        .expect("first command succeeds");
    assert!(first.created);
    assert_eq!(first.version, 2);
    assert_eq!(first.stream_id, s.to_string());
    assert_eq!(first.attempts, 1);
    assert_eq!(
        first.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(
        first
            .events
            .iter()
            .all(|e| e.metadata == ctx("c1") && e.stream_id == s.to_string())
    );
    assert_eq!(first.state.total, 5);

    let second = run(&exec, &s, add(4)).await;
    assert!(!second.created);
    assert_eq!(second.version, 3);
    assert_eq!(second.events.len(), 1);
    assert_eq!(second.events[0].version, 3);
    assert_eq!(second.state.total, 9);

    let stored = store.events(&s).await;
    assert_eq!(amounts(&stored), vec![2, 3, 4]);
    assert_eq!(replay(&stored), *second.state);
}

#[tokio::test]
async fn a_rejection_names_the_rule_and_writes_nothing() {
    let store = Probe::new();
    let exec = executor(&store);
    let s = stream("reject");

    // On a stream that does not exist yet: nothing gets created.
    let err = exec
        .execute::<Counter>(&s, None, &add(0), &ctx("c0"))
        .await
        .expect_err("adding zero is refused");
    assert!(
        matches!(&err, CommandError::Rejected(r) if r.rule == "amount-not-zero"),
        "{err:?}"
    );
    assert_eq!(store.version(&s).await, 0);

    run(&exec, &s, add(10)).await;
    // A multi-event command whose second event breaks a rule writes none of them.
    let err = exec
        .execute::<Counter>(
            &s,
            None,
            &CounterCommand::AddMany {
                ns: vec![1, common::LIMIT],
            },
            &ctx("c2"),
        )
        .await
        .expect_err("leaving the limit is refused");
    assert!(
        matches!(&err, CommandError::Rejected(r) if r.rule == "within-limit"),
        "{err:?}"
    );
    assert_eq!(store.version(&s).await, 1);

    // The executor is still usable and its state unaffected.
    let next = run(&exec, &s, add(1)).await;
    assert_eq!((next.version, next.state.total), (2, 11));
}

#[tokio::test]
async fn an_empty_decision_appends_nothing_and_reports_the_current_version() {
    let store = Probe::new();
    let exec = executor(&store);
    let s = stream("idem");

    let once = run(&exec, &s, CounterCommand::SetOnce { id: "a".into() }).await;
    assert_eq!(
        (once.version, once.events.len(), once.created),
        (1, 1, true)
    );
    run(&exec, &s, add(3)).await;

    let again = run(&exec, &s, CounterCommand::SetOnce { id: "a".into() }).await;
    assert!(again.events.is_empty());
    assert!(!again.created);
    assert_eq!(again.version, 2);
    assert_eq!(again.attempts, 1);
    assert_eq!(again.state.total, 3);
    assert!(again.state.marks.contains("a"));
    assert_eq!(store.version(&s).await, 2);

    // "Already done" on a stream that does not exist yet creates nothing either.
    let fresh = stream("idem-empty");
    let noop = run(&exec, &fresh, CounterCommand::Reset).await;
    assert_eq!(
        (noop.version, noop.events.len(), noop.created),
        (0, 0, false)
    );
    assert_eq!(*noop.state, Counter::initial());
    assert_eq!(store.version(&fresh).await, 0);
}

#[tokio::test]
async fn expected_version_must_match_the_stream() {
    for cache_capacity in [0, 16] {
        let store = Probe::new();
        let exec = executor_with(&store, config(cache_capacity, 100, 8));
        let s = stream("expected");

        let created = exec
            .execute::<Counter>(&s, Some(0), &add(1), &ctx("c1"))
            .await
            .expect("expected 0 on a new stream succeeds");
        assert!(created.created);

        for stale in [0, 5] {
            let err = exec
                .execute::<Counter>(&s, Some(stale), &add(2), &ctx("c2"))
                .await
                .expect_err("a wrong expected version conflicts");
            assert!(
                matches!(&err, CommandError::Conflict { stream_id, expected, actual }
                    if *stream_id == s.to_string() && *expected == stale && *actual == 1),
                "cache {cache_capacity}: {err:?}"
            );
            assert_eq!(
                store.version(&s).await,
                1,
                "cache {cache_capacity}: nothing appended"
            );
        }

        let ok = exec
            .execute::<Counter>(&s, Some(1), &add(2), &ctx("c3"))
            .await
            .expect("the right expected version succeeds");
        assert_eq!(
            (ok.version, ok.state.total),
            (2, 3),
            "cache {cache_capacity}"
        );
    }
}

#[tokio::test]
async fn expected_version_is_judged_against_the_store_not_a_stale_cache() {
    let store = Probe::new();
    let a = executor(&store);
    let b = executor(&store);
    let s = stream("stale");

    run(&a, &s, add(1)).await; // a caches version 1
    run(&b, &s, add(2)).await; // b loads version 1, writes 2; a's cache is now stale

    // The caller saw version 2 elsewhere; a's cache says 1 but must not refuse on that.
    let ok = a
        .execute::<Counter>(&s, Some(2), &add(3), &ctx("a2"))
        .await
        .expect("expected version equal to the true version succeeds");
    assert_eq!((ok.version, ok.state.total), (3, 6));

    // b's cache now says 2; expecting that stale version must conflict and write nothing.
    let err = b
        .execute::<Counter>(&s, Some(2), &add(4), &ctx("b2"))
        .await
        .expect_err("expecting the stale cached version conflicts");
    assert!(
        matches!(
            err,
            CommandError::Conflict {
                expected: 2,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(amounts(&store.events(&s).await), vec![1, 2, 3]);
}

#[tokio::test]
async fn a_stale_cache_cannot_call_a_command_already_done() {
    let store = Probe::new();
    let a = executor(&store);
    let b = executor(&store);
    let s = stream("stale-noop");

    run(&a, &s, add(5)).await;
    run(&a, &s, CounterCommand::Reset).await; // a caches total 0 at version 2
    run(&b, &s, add(7)).await; // the counter is at 7 now; a does not know

    let out = run(&a, &s, CounterCommand::Reset).await;
    assert_eq!(
        out.events.len(),
        1,
        "the reset must be carried out, not skipped"
    );
    assert_eq!((out.version, out.state.total), (4, 0));
    assert_eq!(replay(&store.events(&s).await).total, 0);
}

#[tokio::test]
async fn a_stale_cache_cannot_reject_a_command() {
    let store = Probe::new();
    let a = executor(&store);
    let b = executor(&store);
    let s = stream("stale-reject");

    run(&a, &s, add(common::LIMIT)).await; // a caches the counter at its limit
    run(&b, &s, CounterCommand::Reset).await; // back to 0; a does not know

    let out = a
        .execute::<Counter>(&s, None, &add(5), &ctx("a2"))
        .await
        .expect("the rule holds on the stream as it is");
    assert_eq!((out.version, out.state.total), (3, 5));

    // A rejection that the fresh state confirms still stands, and writes nothing.
    let err = a
        .execute::<Counter>(&s, None, &add(common::LIMIT), &ctx("a3"))
        .await
        .expect_err("over the limit");
    assert!(
        matches!(&err, CommandError::Rejected(r) if r.rule == "within-limit"),
        "{err:?}"
    );
    assert_eq!(store.version(&s).await, 3);
}

/// An executor whose backoff only counts how often it is asked to wait.
fn counting_executor(store: &Probe, max_attempts: u32) -> (Exec, Arc<AtomicU32>) {
    let waits = Arc::new(AtomicU32::new(0));
    let counter = waits.clone();
    let backoff: Backoff = Arc::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    });
    let cfg = ExecutorConfig {
        backoff: Some(backoff),
        ..config(16, 100, max_attempts)
    };
    (executor_with(store, cfg), waits)
}

#[tokio::test]
async fn a_lost_race_is_decided_again_on_fresh_state() {
    const MAX: u32 = 4;
    for k in 0..MAX {
        let store = Probe::new();
        let (exec, waits) = counting_executor(&store, MAX);
        let s = stream(&format!("race-{k}"));
        run(&exec, &s, add(1)).await;

        store.inject_conflicts(k);
        let out = run(&exec, &s, add(5)).await;
        assert_eq!(out.attempts, k + 1);
        assert_eq!(out.version, 2 + u64::from(k));
        assert_eq!(out.state.total, 1 + i64::from(k) * FOREIGN + 5);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].version, out.version);
        assert!(!out.created);
        assert_eq!(waits.load(Ordering::SeqCst), k, "one wait per retry");

        let mut expected = vec![1];
        expected.extend(std::iter::repeat_n(FOREIGN, k as usize));
        expected.push(5);
        let stored = store.events(&s).await;
        assert_eq!(amounts(&stored), expected);
        assert_eq!(replay(&stored), *out.state);
    }
}

#[tokio::test]
async fn a_decision_given_as_a_function_runs_the_same_path() {
    let store = Probe::new();
    let (exec, _) = counting_executor(&store, 4);
    let s = stream("with");
    run(&exec, &s, add(1)).await;

    // A lost race: the function decides again, on the state the winner left.
    store.inject_conflicts(1);
    let seen = std::sync::Mutex::new(Vec::new());
    let out = exec
        .execute_with::<Counter, _>(
            &s,
            None,
            |state| {
                seen.lock().expect("lock").push(state.total);
                Ok(vec![CounterEvent::Added { n: 2 }])
            },
            &ctx("with"),
        )
        .await
        .expect("goes through");
    assert_eq!(*seen.lock().expect("lock"), [1, 1 + FOREIGN]);
    assert_eq!((out.attempts, out.state.total), (2, 3 + FOREIGN));

    // A rejection is one; any other error ends the command at once, writing nothing.
    let rejected = exec
        .execute_with::<Counter, _>(
            &s,
            None,
            |state| Counter::decide(state, &add(0)).map_err(CommandError::Rejected),
            &ctx("zero"),
        )
        .await;
    assert!(matches!(rejected, Err(CommandError::Rejected(r)) if r.rule == "amount-not-zero"));
    let calls = AtomicU32::new(0);
    let failed = exec
        .execute_with::<Counter, _>(
            &s,
            None,
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(CommandError::Internal("cannot decide".into()))
            },
            &ctx("broken"),
        )
        .await;
    assert!(matches!(failed, Err(CommandError::Internal(m)) if m.to_string() == "cannot decide"));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(store.version(&s).await, 3);
}

#[tokio::test]
async fn losing_the_race_to_create_a_stream_is_not_creating_it() {
    let store = Probe::new();
    let exec = executor(&store);
    let s = stream("race-new");
    store.inject_conflicts(1);
    let out = run(&exec, &s, add(5)).await;
    assert_eq!((out.attempts, out.version, out.created), (2, 2, false));
    assert_eq!(amounts(&store.events(&s).await), vec![FOREIGN, 5]);
}

#[tokio::test]
async fn contention_outlasting_max_attempts_is_a_conflict() {
    const MAX: u32 = 4;
    for k in [MAX, MAX + 3] {
        let store = Probe::new();
        let (exec, waits) = counting_executor(&store, MAX);
        let s = stream(&format!("hot-{k}"));
        run(&exec, &s, add(1)).await;

        store.inject_conflicts(k);
        let err = exec
            .execute::<Counter>(&s, None, &add(5), &ctx("c"))
            .await
            .expect_err("every attempt loses");
        assert!(
            matches!(&err, CommandError::Conflict { stream_id, .. } if *stream_id == s.to_string()),
            "{err:?}"
        );
        // MAX attempts, each beaten by a foreign writer; ours never landed.
        let mut expected = vec![1];
        expected.extend(std::iter::repeat_n(FOREIGN, MAX as usize));
        assert_eq!(amounts(&store.events(&s).await), expected);
        assert_eq!(
            waits.load(Ordering::SeqCst),
            MAX - 1,
            "no wait after the last attempt"
        );
    }
}

const TASKS: i64 = 8;
const PER_TASK: i64 = 25;

/// Task `t` runs `PER_TASK` adds of distinct amounts through `executors[t]`, all on one stream.
async fn hammer(executors: Vec<Arc<Exec>>, store: &Probe, s: &StreamId) {
    assert_eq!(executors.len(), TASKS as usize);
    let tasks: Vec<_> = executors
        .into_iter()
        .enumerate()
        .map(|(t, exec)| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..PER_TASK {
                    let n = t as i64 * 100 + i + 1;
                    let out = exec
                        .execute::<Counter>(&s, None, &add(n), &ctx(&format!("c-{n}")))
                        .await
                        .unwrap_or_else(|e| panic!("add {n} failed: {e}"));
                    outcomes.push((n, out));
                    tokio::task::yield_now().await;
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("task completes"));
    }

    let total = (TASKS * PER_TASK) as u64;
    let sent: BTreeSet<i64> = outcomes.iter().map(|(n, _)| *n).collect();
    assert_eq!(sent.len() as u64, total);

    // Each command landed exactly once, as its own commit, at a distinct version.
    for (n, out) in &outcomes {
        assert_eq!(amounts(&out.events), vec![*n], "outcome of add {n}");
        assert_eq!(out.events[0].version, out.version);
    }
    let mut versions: Vec<u64> = outcomes.iter().map(|(_, o)| o.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
    assert_eq!(outcomes.iter().filter(|(_, o)| o.created).count(), 1);
    // The probe yields between read and write, so writers do collide and retry.
    let retries: u32 = outcomes.iter().map(|(_, o)| o.attempts - 1).sum();
    assert!(
        retries > 0,
        "the writers never contended; the test proves nothing"
    );

    let stored = store.events(s).await;
    assert_eq!(
        stored.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let stored_amounts: Vec<i64> = amounts(&stored);
    assert_eq!(stored_amounts.len() as u64, total);
    assert_eq!(stored_amounts.into_iter().collect::<BTreeSet<_>>(), sent);
    assert_eq!(store.version(s).await, total);

    let state = replay(&stored);
    assert_eq!(state.total, sent.iter().sum::<i64>());
    assert_eq!(state.adds, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_through_one_shared_executor_lose_nothing() {
    let store = Probe::new();
    let exec = Arc::new(executor_with(&store, config(16, 10, 1000)));
    let s = stream("shared");
    hammer(vec![exec.clone(); TASKS as usize], &store, &s).await;
    // The shared executor's view matches the store afterwards.
    let (version, state) = exec.load::<Counter>(&s).await.expect("load works");
    assert_eq!((version, state), (200, replay(&store.events(&s).await)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_through_separate_executors_lose_nothing() {
    let store = Probe::new();
    let s = stream("separate");
    let executors = (0..TASKS)
        .map(|_| Arc::new(executor_with(&store, config(16, 10, 1000))))
        .collect();
    hammer(executors, &store, &s).await;
}

#[tokio::test]
async fn snapshots_are_stored_at_each_multiple_of_snapshot_every() {
    let store = Probe::new();
    let exec = executor_with(&store, config(16, 10, 8));
    let s = stream("snap");
    let key = s.to_string();
    let mut live = Counter::initial();
    for n in 1..=25 {
        live = (*run(&exec, &s, add(n)).await.state).clone();
    }
    assert_eq!(store.snapshot_versions(&key), vec![10, 20]);

    let options = LoadOptions {
        state_schema: Some(Counter::STATE_SCHEMA),
        snapshot_every: 10,
    };
    let loaded = store.load(&key, options).await.expect("load works");
    assert_eq!(loaded.version, 25);
    let snap = loaded.snapshot.expect("the newest snapshot is used");
    assert_eq!(
        (snap.version, snap.state_schema),
        (20, Counter::STATE_SCHEMA)
    );
    let at_20: CounterState = serde_json::from_value(snap.state).expect("snapshot is a state");
    assert_eq!(at_20.total, (1..=20).sum::<i64>());
    assert_eq!(at_20.adds, 20);
    assert_eq!(
        loaded.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![21, 22, 23, 24, 25]
    );

    // A fresh executor (empty cache) starting from the snapshot sees what the live one does.
    let fresh = executor_with(&store, config(16, 10, 8));
    assert_eq!(
        fresh.load::<Counter>(&s).await.expect("load works"),
        (25, live)
    );
}

#[tokio::test]
async fn a_commit_crossing_a_multiple_carries_the_snapshot() {
    let store = Probe::new();
    let exec = executor_with(&store, config(16, 10, 8));
    let s = stream("snap-multi");
    let key = s.to_string();
    for _ in 0..9 {
        run(&exec, &s, add(1)).await;
    }
    assert!(store.snapshot_versions(&key).is_empty());

    let out = run(&exec, &s, CounterCommand::AddMany { ns: vec![1, 2, 3] }).await;
    assert_eq!(out.version, 12);
    assert_eq!(store.snapshot_versions(&key), vec![12]);

    let loaded = store
        .load(
            &key,
            LoadOptions {
                state_schema: Some(Counter::STATE_SCHEMA),
                snapshot_every: 10,
            },
        )
        .await
        .expect("load works");
    let snap = loaded.snapshot.expect("snapshot at 12");
    assert_eq!(snap.version, 12);
    assert_eq!(
        serde_json::from_value::<CounterState>(snap.state).expect("state"),
        *out.state
    );
    assert!(loaded.events.is_empty());

    // Staying below the next multiple takes no snapshot.
    run(
        &exec,
        &s,
        CounterCommand::AddMany {
            ns: vec![1, 1, 1, 1, 1, 1, 1],
        },
    )
    .await;
    assert_eq!(store.snapshot_versions(&key), vec![12]);
    run(&exec, &s, add(1)).await; // 19 -> 20
    assert_eq!(store.snapshot_versions(&key), vec![12, 20]);
}

#[tokio::test]
async fn snapshot_every_zero_never_snapshots() {
    let store = Probe::new();
    let exec = executor_with(&store, config(16, 0, 8));
    let s = stream("no-snap");
    for _ in 0..5 {
        run(&exec, &s, CounterCommand::AddMany { ns: vec![1; 4] }).await;
    }
    assert!(store.snapshot_versions(&s.to_string()).is_empty());
}

#[tokio::test]
async fn loads_use_snapshots_of_their_own_state_schema_only() {
    let store = Probe::new();
    let exec = executor_with(&store, config(16, 10, 8));
    let s = stream("schema");
    let key = s.to_string();
    for _ in 0..25 {
        run(&exec, &s, add(1)).await;
    }

    for other in [None, Some(Counter::STATE_SCHEMA + 1)] {
        let loaded = store
            .load(
                &key,
                LoadOptions {
                    state_schema: other,
                    snapshot_every: 10,
                },
            )
            .await
            .expect("load works");
        assert_eq!(loaded.snapshot, None, "schema {other:?}");
        assert_eq!(loaded.events.len(), 25, "schema {other:?}");
    }

    // Plant a snapshot that disagrees with the events: whoever honours it reads 999.
    let planted = CounterState {
        total: 999,
        ..CounterState::default()
    };
    let event = CounterEvent::Added { n: 1 }
        .encode()
        .expect("encodes")
        .into_envelope(&s, 26, chrono::Utc::now(), ctx("planted"));
    let snapshot = Snapshot {
        version: 26,
        state_schema: Counter::STATE_SCHEMA,
        state: serde_json::to_value(&planted).expect("serializes"),
    };
    store
        .inner()
        .append(
            &key,
            eventfold::ExpectedVersion::assumed(25),
            vec![event],
            Some(snapshot),
        )
        .await
        .expect("append works");

    let fresh = executor_with(&store, config(16, 10, 8));
    let (v1, same_schema) = fresh.load::<Counter>(&s).await.expect("load works");
    assert_eq!(
        (v1, same_schema.total),
        (26, 999),
        "the matching snapshot shortens the load"
    );
    let fresh = executor_with(&store, config(16, 10, 8));
    let (v2, other_schema) = fresh.load::<CounterV2>(&s).await.expect("load works");
    assert_eq!(
        (v2, other_schema.total),
        (26, 26),
        "another schema replays every event"
    );
}

#[tokio::test]
async fn a_warm_cache_decides_without_loading() {
    let store = Probe::new();
    let exec = executor_with(&store, config(16, 100, 8));
    let s = stream("warm");
    run(&exec, &s, add(1)).await;
    assert_eq!(store.loads(), 1, "the first command must read the stream");
    let out = run(&exec, &s, add(2)).await;
    run(&exec, &s, CounterCommand::SetOnce { id: "x".into() }).await;
    assert_eq!(
        store.loads(),
        1,
        "later commands decide on the cached state"
    );
    assert_eq!(out.state.total, 3);

    // Another stream is a miss of its own.
    run(&exec, &stream("warm-2"), add(1)).await;
    assert_eq!(store.loads(), 2);

    // "Already done" on the cached state is confirmed by one catch-up read (no append would
    // reveal a stale cache), never a full load, and that read warms the cache again.
    let catch_ups = store.catch_ups();
    let noop = run(&exec, &s, CounterCommand::SetOnce { id: "x".into() }).await;
    assert!(noop.events.is_empty());
    assert_eq!((store.loads(), store.catch_ups()), (2, catch_ups + 1));
    run(&exec, &s, add(1)).await;
    assert_eq!((store.loads(), store.catch_ups()), (2, catch_ups + 1));
}

#[tokio::test]
async fn without_a_cache_every_command_loads() {
    let store = Probe::new();
    let exec = executor_with(&store, config(0, 100, 8));
    let s = stream("cold");
    run(&exec, &s, add(1)).await;
    let out = run(&exec, &s, add(2)).await;
    assert_eq!(store.loads(), 2);
    assert_eq!((out.version, out.state.total), (2, 3));

    // `CommandExecutor::new` caches nothing (`NoCache`), whatever the capacity says.
    let uncached = CommandExecutor::new(store.clone(), config(16, 100, 8));
    for n in [3, 4] {
        uncached
            .execute::<Counter>(&s, None, &add(n), &ctx("nc"))
            .await
            .expect("adds");
    }
    assert_eq!(store.loads(), 4, "NoCache: every command loads");
}

/// A second aggregate beside the counter, whose state is of another type.
struct Tally;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "data")]
enum TallyEvent {
    Counted { label: String },
}

impl DomainEvent for TallyEvent {}

impl Aggregate for Tally {
    const CATEGORY: &'static str = "Tally";
    type Event = TallyEvent;
    type State = Vec<String>;
    type Command = String;

    fn initial() -> Vec<String> {
        Vec::new()
    }

    fn evolve(mut state: Vec<String>, event: &TallyEvent) -> Vec<String> {
        let TallyEvent::Counted { label } = event;
        state.push(label.clone());
        state
    }

    fn decide(_state: &Vec<String>, label: &String) -> Result<Vec<TallyEvent>, Rejection> {
        Ok(vec![TallyEvent::Counted {
            label: label.clone(),
        }])
    }
}

eventfold::state_caches! {
    /// The warm states of the counter and of the tally, a cache each.
    struct TwoCaches {
        counter: Counter,
        tally: Tally,
    }
}

#[tokio::test]
async fn one_executor_keeps_two_aggregates_states_apart_and_serves_both_warm() {
    let store = Probe::new();
    let exec = CommandExecutor::new(store.clone(), config(16, 100, 8)).caching::<TwoCaches>();
    let counter = stream("two");
    let tally = StreamId::new("t1", Tally::CATEGORY, "two").expect("valid stream id");
    let count = async |label: &str| {
        exec.execute::<Tally>(&tally, None, &label.to_owned(), &ctx(label))
            .await
            .expect("counts")
    };

    run(&exec, &counter, add(1)).await;
    count("a").await;
    assert_eq!(
        store.loads(),
        2,
        "the first command of each stream reads it"
    );
    let added = run(&exec, &counter, add(2)).await;
    let counted = count("b").await;
    assert_eq!(
        store.loads(),
        2,
        "the second command of each stream is served warm"
    );
    assert_eq!(store.catch_ups(), 0, "and reads nothing at all");
    assert_eq!((added.version, added.state.total), (2, 3));
    assert_eq!(
        (counted.version, counted.state.as_slice()),
        (2, &["a".into(), "b".into()][..])
    );

    // Each aggregate's states are in its own cache, and only there.
    let (counters, tallies) = (
        CacheFor::<Counter>::states(exec.caches()).expect("counters are cached"),
        CacheFor::<Tally>::states(exec.caches()).expect("tallies are cached"),
    );
    assert_eq!((counters.len(), tallies.len()), (1, 1));
    let (version, state) = counters
        .get(&counter.to_string())
        .expect("the counter is warm");
    assert_eq!((version.get(), state), (2, (*added.state).clone()));
    let (version, state) = tallies.get(&tally.to_string()).expect("the tally is warm");
    assert_eq!(
        (version.get(), state),
        (2, vec!["a".to_owned(), "b".to_owned()])
    );
    assert!(
        counters.get(&tally.to_string()).is_none(),
        "no tally among the counters"
    );
    assert!(
        tallies.get(&counter.to_string()).is_none(),
        "no counter among the tallies"
    );
}

fn legacy_added(s: &StreamId, version: u64, amount: i64) -> eventfold::EventEnvelope {
    NewEvent {
        event_type: "Added".into(),
        schema_version: 1,
        data: json!({ "amount": amount }),
    }
    .into_envelope(s, version, chrono::Utc::now(), ctx("legacy"))
}

fn amount_to_n() -> Upcasters {
    Upcasters::new().register("Added", 1, |old| json!({ "n": old["amount"].clone() }))
}

#[tokio::test]
async fn upcasters_lift_old_events_when_loading() {
    let store = Probe::new();
    let s = stream("legacy");
    let key = s.to_string();
    store
        .inner()
        .append(
            &key,
            eventfold::ExpectedVersion::assumed(0),
            vec![legacy_added(&s, 1, 5), legacy_added(&s, 2, 7)],
            None,
        )
        .await
        .expect("raw append works");

    let exec = executor(&store).with_upcasters(amount_to_n());
    let (version, state) = exec.load::<Counter>(&s).await.expect("old events load");
    assert_eq!((version, state.total, state.adds), (2, 12, 2));

    // New events are written at the current schema and are not upcast again.
    let out = run(&exec, &s, add(3)).await;
    assert_eq!(out.state.total, 15);
    assert_eq!(out.events[0].schema_version, 2);
    assert_eq!(out.events[0].data, json!({ "n": 3 }));

    let fresh = executor_with(&store, config(16, 100, 8)).with_upcasters(amount_to_n());
    assert_eq!(
        fresh.load::<Counter>(&s).await.expect("mixed schemas load"),
        (3, (*out.state).clone())
    );
    let at_1 = fresh
        .state_at::<Counter>(&s, 1)
        .await
        .expect("time travel works");
    assert_eq!(at_1.map(|st| st.total), Some(5));
}

#[tokio::test]
async fn old_events_without_their_upcaster_are_an_internal_error() {
    let store = Probe::new();
    let s = stream("legacy-bare");
    store
        .inner()
        .append(
            &s.to_string(),
            eventfold::ExpectedVersion::assumed(0),
            vec![legacy_added(&s, 1, 5)],
            None,
        )
        .await
        .expect("raw append works");

    let exec = executor_with(&store, config(16, 100, 8));
    let err = exec
        .load::<Counter>(&s)
        .await
        .expect_err("schema 1 data does not decode");
    assert!(
        matches!(&err, CommandError::Internal(m)
            if m.to_string().contains("a Added event of schema 1 reaches only schema 1")
                && m.to_string().contains("current schema is 2")),
        "names the type and the versions: {err:?}"
    );
    let err = exec
        .execute::<Counter>(&s, None, &add(1), &ctx("c"))
        .await
        .expect_err("nothing can be decided on an unreadable stream");
    assert!(matches!(err, CommandError::Internal(_)), "{err:?}");
    assert_eq!(store.version(&s).await, 1);
}

#[tokio::test]
async fn state_at_travels_back_and_is_none_past_the_end() {
    let store = Probe::new();
    let exec = executor(&store);
    let s = stream("history");
    let mut live = Counter::initial();
    for n in 1..=5 {
        live = (*run(&exec, &s, add(n)).await.state).clone();
    }
    let at = |v| {
        let exec = &exec;
        let s = &s;
        async move {
            exec.state_at::<Counter>(s, v)
                .await
                .expect("time travel works")
        }
    };
    assert_eq!(at(0).await, Some(Counter::initial()));
    let three = at(3).await.expect("version 3 exists");
    assert_eq!((three.total, three.adds), (6, 3));
    assert_eq!(at(5).await, Some(live));
    assert_eq!(at(6).await, None);
    assert_eq!(at(u64::MAX).await, None);
    let unknown = exec
        .state_at::<Counter>(&stream("nobody"), 1)
        .await
        .expect("time travel works");
    assert_eq!(unknown, None);
}

/// `Counter`, but every command is assumed to start its stream.
struct AssumingCounter;

impl Aggregate for AssumingCounter {
    const CATEGORY: &'static str = "Counter";
    type Event = CounterEvent;
    type State = CounterState;
    type Command = CounterCommand;

    fn initial() -> CounterState {
        Counter::initial()
    }
    fn evolve(state: CounterState, event: &CounterEvent) -> CounterState {
        Counter::evolve(state, event)
    }
    fn decide(
        state: &CounterState,
        command: &CounterCommand,
    ) -> Result<Vec<CounterEvent>, Rejection> {
        Counter::decide(state, command)
    }
    fn assume_new(_: &CounterCommand) -> bool {
        true
    }
}

#[tokio::test]
async fn a_command_assumed_to_create_its_stream_appends_without_reading() {
    let store = Probe::new();
    let exec = executor_with(&store, config(0, 100, 4));
    let s = stream("fresh");
    let out = exec
        .execute::<AssumingCounter>(&s, None, &add(2), &ctx("c1"))
        .await
        .expect("created");
    assert_eq!((out.version, out.created, out.state.total), (1, true, 2));
    assert_eq!(
        (store.loads(), store.catch_ups()),
        (0, 0),
        "one append, no read"
    );
}

#[tokio::test]
async fn a_wrong_assumption_reads_and_decides_again() {
    let store = Probe::new();
    let writer = executor_with(&store, config(0, 100, 4));
    let s = stream("exists");
    run(&writer, &s, add(5)).await;
    run(&writer, &s, CounterCommand::SetOnce { id: "a".into() }).await;
    let loads = store.loads();

    // The stream exists: the append at version 0 conflicts, the executor catches up and
    // decides on the real state.
    let exec = executor_with(&store, config(0, 100, 4));
    let out = exec
        .execute::<AssumingCounter>(&s, None, &add(1), &ctx("c2"))
        .await
        .expect("appended after catching up");
    assert_eq!((out.version, out.created, out.state.total), (3, false, 6));
    // "Already done" on the assumed state would be wrong here; on the real one it is right.
    let again = exec
        .execute::<AssumingCounter>(
            &s,
            None,
            &CounterCommand::SetOnce { id: "a".into() },
            &ctx("c3"),
        )
        .await
        .expect("already done");
    assert!(again.events.is_empty());
    assert_eq!(again.version, 3);
    // A rejection on the assumed state is confirmed by a read before it is answered.
    let cold = executor_with(&store, config(0, 100, 4));
    let before = store.catch_ups();
    let err = cold
        .execute::<AssumingCounter>(&s, None, &add(0), &ctx("c4"))
        .await
        .expect_err("amount-not-zero");
    assert!(matches!(err, CommandError::Rejected(r) if r.rule == "amount-not-zero"));
    assert_eq!(store.catch_ups(), before + 1, "confirmed by a read");
    assert_eq!(store.loads(), loads, "never a full load");
    assert_eq!(
        replay(
            &store
                .inner()
                .load_range(&s.to_string(), 1, None, None)
                .await
                .expect("history")
        )
        .total,
        6
    );
}

#[tokio::test]
async fn a_retry_budget_outlasts_max_attempts_but_not_its_deadline() {
    let store = Probe::new();
    let waits = Arc::new(AtomicU32::new(0));
    let counter = waits.clone();
    let backoff: Backoff = Arc::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    });
    let budgeted = |budget: Duration| {
        executor_with(
            &store,
            ExecutorConfig {
                backoff: Some(backoff.clone()),
                retry_budget: Some(budget),
                ..config(16, 100, 2)
            },
        )
    };
    let s = stream("budget");
    let exec = budgeted(Duration::from_secs(30));
    run(&exec, &s, add(1)).await;

    // Ten lost races, with max_attempts 2: the budget keeps the command going.
    store.inject_conflicts(10);
    let out = run(&exec, &s, add(5)).await;
    assert_eq!((out.attempts, out.version), (11, 12));
    assert_eq!(waits.load(Ordering::SeqCst), 10);

    // A caller's deadline that has passed ends the retries at the first conflict.
    store.inject_conflicts(3);
    let err = exec
        .execute_within::<Counter>(
            &s,
            None,
            &add(5),
            &ctx("d"),
            Some(std::time::Instant::now()),
        )
        .await
        .expect_err("no time left");
    assert!(matches!(err, CommandError::Conflict { .. }), "{err}");

    // With an expected version, a conflict is the caller's: no budget applies.
    let head = exec.load::<Counter>(&s).await.expect("load").0;
    store.inject_conflicts(1);
    let stale = exec
        .execute::<Counter>(&s, Some(head), &add(5), &ctx("e"))
        .await
        .expect_err("stale expected version");
    assert!(matches!(err_kind(&stale), "conflict"), "{stale}");
}

fn err_kind(e: &CommandError) -> &'static str {
    match e {
        CommandError::Conflict { .. } => "conflict",
        _ => "other",
    }
}

#[tokio::test]
async fn an_unreadable_snapshot_falls_back_to_a_full_replay() {
    let store = Probe::new();
    let s = stream("bad-snapshot");
    let key = s.to_string();
    let writer = executor_with(&store, config(0, 0, 8));
    for n in 1..=4 {
        run(&writer, &s, add(n)).await;
    }
    // A snapshot of the current schema whose state is not a CounterState at all (a state
    // change shipped without bumping STATE_SCHEMA).
    let event = CounterEvent::Added { n: 5 }
        .encode()
        .expect("encodes")
        .into_envelope(&s, 5, chrono::Utc::now(), ctx("broken"));
    let snapshot = Snapshot {
        version: 5,
        state_schema: Counter::STATE_SCHEMA,
        state: json!({"total": "not a number", "unexpected": [1, 2]}),
    };
    store
        .inner()
        .append(
            &key,
            eventfold::ExpectedVersion::assumed(4),
            vec![event],
            Some(snapshot),
        )
        .await
        .expect("append works");

    let fresh = executor_with(&store, config(16, 0, 8));
    let (version, state) = fresh.load::<Counter>(&s).await.expect("replays instead");
    assert_eq!((version, state.total), (5, 15));
    let out = run(&fresh, &s, add(1)).await;
    assert_eq!(
        (out.version, out.state.total),
        (6, 16),
        "commands still run"
    );
    let cold = executor_with(&store, config(0, 0, 8));
    let out = run(&cold, &s, add(1)).await;
    assert_eq!(
        (out.version, out.state.total),
        (7, 17),
        "on every cold load too"
    );
}
