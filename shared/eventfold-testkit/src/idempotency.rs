//! The contract every [`IdempotencyStore`] adapter must pass, run through the engine with a
//! hand-moved clock: run it from each adapter's tests.
//!
//! Each check works under the tenant `prefix` (and tenants derived from it) with keys of its
//! own, so suites can share one table; failures panic with the broken rule. The concurrency
//! check spawns its requests through the `spawn` the adapter's test passes, so the suite
//! itself needs no runtime.

use chrono::{DateTime, Utc};
use eventfold_idempotency::{
    Begin, Finished, Idempotency, IdempotencyConfig, IdempotencyKey, IdempotencyRecord,
    IdempotencyStore, ManualClock, NotStored, PayloadHash, Scope, Status, StoredResponse,
    payload_hash, validate_key,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// A store as the contract takes it.
pub type Store = Arc<dyn IdempotencyStore>;

/// What one of the concurrent requests got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// It took the lock and ran (request number given).
    Ran(usize),
    /// It found the winner still running.
    Waited,
    /// It found the winner completed and replayed this body.
    Replayed(String),
    /// Anything else (a reused key, an error): a broken contract.
    Other(String),
}

/// A request of the concurrency check, ready to be spawned.
pub type Task = Pin<Box<dyn Future<Output = Attempt> + Send>>;

/// Runs a task concurrently (e.g. `tokio::spawn`, awaiting its handle) and returns a future
/// of its result; [`inline`] runs it in place.
pub type Spawn = fn(Task) -> Task;

/// A [`Spawn`] that runs tasks in place: they still overlap at their awaits, on one thread.
pub fn inline(task: Task) -> Task {
    task
}

/// Runs every check against `store`; `prefix` is the tenant (unique to this run).
pub async fn run_all(store: Store, prefix: &str, spawn: Spawn) {
    first_request_runs_and_a_running_duplicate_waits(store.clone(), prefix).await;
    a_completed_request_replays_its_stored_response(store.clone(), prefix).await;
    another_payload_with_a_used_key_is_refused(store.clone(), prefix).await;
    an_expired_lock_is_taken_over_and_late_finishes_are_refused(store.clone(), prefix).await;
    an_expired_completed_record_is_taken_over(store.clone(), prefix).await;
    a_failed_handler_leaves_no_record(store.clone(), prefix).await;
    an_oversized_response_goes_out_unstored(store.clone(), prefix).await;
    keys_are_scoped_by_tenant_and_actor(store.clone(), prefix).await;
    without_a_deadline_the_lock_lasts_the_default(store.clone(), prefix).await;
    concurrent_requests_with_one_key_have_one_winner(store, prefix, spawn).await;
}

struct Fixture {
    engine: Idempotency<Store>,
    clock: ManualClock,
    start: DateTime<Utc>,
}

fn fixture(store: &Store, config: IdempotencyConfig) -> Fixture {
    // Millisecond time, as stores keep it; real time so a store's TTL never sees the past.
    let start = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
    let clock = ManualClock::new(start);
    Fixture {
        engine: Idempotency::new(store.clone(), config).with_clock(Arc::new(clock.clone())),
        clock,
        start,
    }
}

fn key(name: &str) -> IdempotencyKey {
    validate_key(name).expect("contract keys are valid")
}

fn hash(body: &str) -> PayloadHash {
    payload_hash("POST", "/contract/commands", body.as_bytes())
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

fn ms(m: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(m)
}

fn response(status: u16, n: u64) -> StoredResponse {
    StoredResponse::new(status, crate::event_store::rich_data(n).to_string())
        .with_header("content-type", "application/json")
        .with_header("location", format!("/contract/things/{n}"))
}

async fn run<'a>(
    engine: &'a Idempotency<Store>,
    scope: &Scope,
    k: &str,
    payload: &PayloadHash,
    deadline: Option<DateTime<Utc>>,
) -> eventfold_idempotency::Lock<'a, Store> {
    match engine.begin(scope, &key(k), payload, deadline).await {
        Ok(Begin::Run(lock)) => lock,
        other => panic!("{k}: expected to run, got {other:?}"),
    }
}

async fn begin_outcome(
    engine: &Idempotency<Store>,
    scope: &Scope,
    k: &str,
    payload: &PayloadHash,
) -> String {
    match engine.begin(scope, &key(k), payload, None).await {
        Ok(Begin::Run(lock)) => {
            let _ = lock.release().await;
            "run".into()
        }
        Ok(Begin::KeyReused) => "key-reused".into(),
        Ok(Begin::InProgress { retry_after }) => format!("in-progress {}s", retry_after.as_secs()),
        Ok(Begin::Replay(r)) => format!("replay {} {}", r.status, r.body),
        Err(e) => format!("error {e}"),
    }
}

async fn stored(store: &Store, record_key: &str) -> Option<IdempotencyRecord> {
    store
        .get(record_key)
        .await
        .unwrap_or_else(|e| panic!("get {record_key}: {e}"))
}

async fn finish(lock: eventfold_idempotency::Lock<'_, Store>, r: StoredResponse) -> Finished {
    lock.finish(r).await.expect("finish")
}

/// The first request locks the key with an `INPROGRESS` record that expires at its deadline;
/// a duplicate meanwhile waits, told how long the lock has left.
pub async fn first_request_runs_and_a_running_duplicate_waits(store: Store, prefix: &str) {
    let f = fixture(&store, IdempotencyConfig::default());
    let scope = Scope::new(prefix, "alice");
    let body = r#"{"type":"CreateOrder","data":{"customer_id":"c-1"}}"#;
    let deadline = f.start + secs(10);
    let lock = run(&f.engine, &scope, "first", &hash(body), Some(deadline)).await;
    let written = lock.record().clone();
    assert_eq!(written.status, Status::InProgress);
    assert_eq!(
        written.expires_at, deadline,
        "an in-progress lock lasts until the deadline"
    );
    assert_eq!(written.tenant, prefix);
    assert_eq!(written.key, "first");
    assert_eq!(
        stored(&store, &written.record_key).await.as_ref(),
        Some(&written),
        "the in-progress record reads back as written"
    );
    f.clock.advance(ms(2_500));
    // Same payload, formatted differently: still the same request.
    let again = r#"{ "data": { "customer_id": "c-1" }, "type": "CreateOrder" }"#;
    match f
        .engine
        .begin(&scope, &key("first"), &hash(again), None)
        .await
    {
        Ok(Begin::InProgress { retry_after }) => assert_eq!(
            retry_after,
            Duration::from_secs(8),
            "7.5 s left on the lock rounds up to 8"
        ),
        other => panic!("a duplicate of a running request must wait, got {other:?}"),
    }
    assert_eq!(
        stored(&store, &written.record_key).await.as_ref(),
        Some(&written),
        "a waiting duplicate writes nothing"
    );
    assert_eq!(finish(lock, response(201, 1)).await, Finished::Stored);
}

/// A success (and a caller's 4xx mistake) is stored `COMPLETED` for `expires_after` and
/// replayed exactly (status, headers, body) to duplicates.
pub async fn a_completed_request_replays_its_stored_response(store: Store, prefix: &str) {
    let f = fixture(&store, IdempotencyConfig::default());
    let scope = Scope::new(prefix, "alice");
    let payload = hash(r#"{"n":1}"#);
    let lock = run(
        &f.engine,
        &scope,
        "replay",
        &payload,
        Some(f.start + secs(10)),
    )
    .await;
    let written = lock.record().clone();
    f.clock.advance(ms(700));
    let answer = response(201, 2);
    assert_eq!(finish(lock, answer.clone()).await, Finished::Stored);
    let expected = IdempotencyRecord {
        status: Status::Completed,
        expires_at: f.start + ms(700) + secs(3600),
        response: Some(answer.clone()),
        ..written.clone()
    };
    assert_eq!(
        stored(&store, &written.record_key).await,
        Some(expected),
        "completed: response stored, expiring an hour after completion"
    );
    f.clock.advance(secs(1800));
    for _ in 0..2 {
        match f.engine.begin(&scope, &key("replay"), &payload, None).await {
            Ok(Begin::Replay(r)) => assert_eq!(r, answer, "the replay is the stored response"),
            other => panic!("a completed duplicate must replay, got {other:?}"),
        }
    }
    // A caller's mistake is an answer too: replayed, not run again.
    let lock = run(&f.engine, &scope, "replay-4xx", &payload, None).await;
    let refused = StoredResponse::new(422, r#"{"type":"rejected"}"#);
    assert_eq!(finish(lock, refused.clone()).await, Finished::Stored);
    match f
        .engine
        .begin(&scope, &key("replay-4xx"), &payload, None)
        .await
    {
        Ok(Begin::Replay(r)) => assert_eq!(r, refused),
        other => panic!("a stored 4xx must replay, got {other:?}"),
    }
}

/// The same key with another payload is refused, while the first runs and after it
/// completed, and the refusal changes nothing.
pub async fn another_payload_with_a_used_key_is_refused(store: Store, prefix: &str) {
    let f = fixture(&store, IdempotencyConfig::default());
    let scope = Scope::new(prefix, "alice");
    let (first, other) = (hash(r#"{"sku":"a","n":1}"#), hash(r#"{"sku":"a","n":2}"#));
    let lock = run(
        &f.engine,
        &scope,
        "reused",
        &first,
        Some(f.start + secs(10)),
    )
    .await;
    let written = lock.record().clone();
    assert_eq!(
        begin_outcome(&f.engine, &scope, "reused", &other).await,
        "key-reused",
        "while in progress"
    );
    assert_eq!(
        stored(&store, &written.record_key).await.as_ref(),
        Some(&written)
    );
    assert_eq!(finish(lock, response(200, 3)).await, Finished::Stored);
    assert_eq!(
        begin_outcome(&f.engine, &scope, "reused", &other).await,
        "key-reused",
        "after completion"
    );
    let answer = response(200, 3);
    assert_eq!(
        begin_outcome(&f.engine, &scope, "reused", &first).await,
        format!("replay 200 {}", answer.body),
        "the original request still replays"
    );
}

/// A lock past its expiry (at it, exactly) is taken over; the old holder's late release and
/// late complete are refused and leave the new lock alone.
pub async fn an_expired_lock_is_taken_over_and_late_finishes_are_refused(
    store: Store,
    prefix: &str,
) {
    let f = fixture(&store, IdempotencyConfig::default());
    let scope = Scope::new(prefix, "alice");
    let payload = hash(r#"{"slow":true}"#);
    let first = run(
        &f.engine,
        &scope,
        "takeover",
        &payload,
        Some(f.start + secs(5)),
    )
    .await;
    f.clock.advance(secs(5) - ms(1));
    assert_eq!(
        begin_outcome(&f.engine, &scope, "takeover", &payload).await,
        "in-progress 1s",
        "a millisecond before expiry the lock holds"
    );
    f.clock.advance(ms(1));
    let second = run(
        &f.engine,
        &scope,
        "takeover",
        &payload,
        Some(f.clock_now() + secs(5)),
    )
    .await;
    let second_record = second.record().clone();
    assert_ne!(second_record.lock_id, first.record().lock_id);
    assert_eq!(first.release().await.expect("release"), Finished::LockLost);
    assert_eq!(
        stored(&store, &second_record.record_key).await.as_ref(),
        Some(&second_record),
        "a late release must not delete the new lock"
    );
    f.clock.advance(secs(5));
    let third = run(
        &f.engine,
        &scope,
        "takeover",
        &payload,
        Some(f.clock_now() + secs(5)),
    )
    .await;
    let third_record = third.record().clone();
    assert_eq!(finish(second, response(201, 4)).await, Finished::LockLost);
    assert_eq!(
        stored(&store, &third_record.record_key).await.as_ref(),
        Some(&third_record),
        "a late complete must not overwrite the new lock"
    );
    assert_eq!(finish(third, response(201, 5)).await, Finished::Stored);
    assert_eq!(
        begin_outcome(&f.engine, &scope, "takeover", &payload).await,
        format!("replay 201 {}", response(201, 5).body),
        "the request that finished in time is the one replayed"
    );
}

/// A completed record stops replaying when it expires: the next request with the key runs,
/// even with another payload.
pub async fn an_expired_completed_record_is_taken_over(store: Store, prefix: &str) {
    let f = fixture(&store, IdempotencyConfig::default());
    let scope = Scope::new(prefix, "alice");
    let (old, new) = (hash(r#"{"v":"old"}"#), hash(r#"{"v":"new"}"#));
    let lock = run(&f.engine, &scope, "expired", &old, None).await;
    assert_eq!(finish(lock, response(200, 6)).await, Finished::Stored);
    f.clock.advance(secs(3600) - ms(1));
    assert_eq!(
        begin_outcome(&f.engine, &scope, "expired", &new).await,
        "key-reused",
        "still live a millisecond before expiry"
    );
    f.clock.advance(ms(1));
    let lock = run(&f.engine, &scope, "expired", &new, None).await;
    assert_eq!(lock.record().payload_hash, new);
    assert_eq!(finish(lock, response(200, 7)).await, Finished::Stored);
    assert_eq!(
        begin_outcome(&f.engine, &scope, "expired", &new).await,
        format!("replay 200 {}", response(200, 7).body)
    );
}

/// A handler that failed (5xx, or released without a response) leaves no record: the retry
/// runs.
pub async fn a_failed_handler_leaves_no_record(store: Store, prefix: &str) {
    let f = fixture(&store, IdempotencyConfig::default());
    let scope = Scope::new(prefix, "alice");
    let payload = hash(r#"{"flaky":1}"#);
    let lock = run(&f.engine, &scope, "failed", &payload, None).await;
    let record_key = lock.record().record_key.clone();
    assert_eq!(
        finish(lock, StoredResponse::new(503, r#"{"type":"unavailable"}"#)).await,
        Finished::Released(NotStored::ServerError { status: 503 })
    );
    assert_eq!(
        stored(&store, &record_key).await,
        None,
        "a 5xx deletes its record"
    );
    let lock = run(&f.engine, &scope, "failed", &payload, None).await;
    assert_eq!(
        lock.release().await.expect("release"),
        Finished::Released(NotStored::Released)
    );
    assert_eq!(
        stored(&store, &record_key).await,
        None,
        "a release deletes its record"
    );
    let lock = run(&f.engine, &scope, "failed", &payload, None).await;
    assert_eq!(finish(lock, response(201, 8)).await, Finished::Stored);
}

/// A response over the limit is not stored: the lock is deleted and the response goes out.
pub async fn an_oversized_response_goes_out_unstored(store: Store, prefix: &str) {
    let f = fixture(
        &store,
        IdempotencyConfig {
            max_response_bytes: 1024,
            ..IdempotencyConfig::default()
        },
    );
    let scope = Scope::new(prefix, "alice");
    let payload = hash(r#"{"big":true}"#);
    let lock = run(&f.engine, &scope, "oversized", &payload, None).await;
    let record_key = lock.record().record_key.clone();
    let big = StoredResponse::new(200, "x".repeat(1025));
    assert_eq!(
        finish(lock, big).await,
        Finished::Released(NotStored::TooLarge {
            size: 1025,
            limit: 1024
        })
    );
    assert_eq!(stored(&store, &record_key).await, None);
    let lock = run(&f.engine, &scope, "oversized", &payload, None).await;
    let fits = StoredResponse::new(200, "x".repeat(1024));
    assert_eq!(
        finish(lock, fits.clone()).await,
        Finished::Stored,
        "the limit itself fits"
    );
    assert_eq!(
        stored(&store, &record_key).await.and_then(|r| r.response),
        Some(fits)
    );
}

/// The same key from another actor or tenant is another record: no waiting, no reuse, no
/// replay of someone else's response.
pub async fn keys_are_scoped_by_tenant_and_actor(store: Store, prefix: &str) {
    let f = fixture(&store, IdempotencyConfig::default());
    let alice = Scope::new(prefix, "alice");
    let bob = Scope::new(prefix, "bob");
    let elsewhere = Scope::new(format!("{prefix}-other"), "alice");
    let payload = hash(r#"{"same":"body"}"#);
    let a = run(&f.engine, &alice, "shared-key", &payload, None).await;
    let b = run(&f.engine, &bob, "shared-key", &payload, None).await;
    let e = run(&f.engine, &elsewhere, "shared-key", &payload, None).await;
    let keys = [&a, &b, &e].map(|l| l.record().record_key.clone());
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    assert_eq!(finish(a, response(201, 10)).await, Finished::Stored);
    assert_eq!(finish(b, response(201, 11)).await, Finished::Stored);
    assert_eq!(finish(e, response(201, 12)).await, Finished::Stored);
    for (scope, n) in [(&alice, 10), (&bob, 11), (&elsewhere, 12)] {
        assert_eq!(
            begin_outcome(&f.engine, scope, "shared-key", &payload).await,
            format!("replay 201 {}", response(201, n).body),
            "each scope replays its own response"
        );
    }
    // Another payload under the same key is only a reuse within one scope.
    let carol = Scope::new(prefix, "carol");
    let lock = run(
        &f.engine,
        &carol,
        "shared-key",
        &hash(r#"{"other":1}"#),
        None,
    )
    .await;
    assert_eq!(
        lock.release().await.expect("release"),
        Finished::Released(NotStored::Released)
    );
}

/// With no deadline, a lock lasts the configured default.
pub async fn without_a_deadline_the_lock_lasts_the_default(store: Store, prefix: &str) {
    let f = fixture(
        &store,
        IdempotencyConfig {
            default_in_progress: Duration::from_secs(30),
            ..IdempotencyConfig::default()
        },
    );
    let scope = Scope::new(prefix, "alice");
    let payload = hash(r#"{"local":true}"#);
    let lock = run(&f.engine, &scope, "no-deadline", &payload, None).await;
    assert_eq!(lock.record().expires_at, f.start + secs(30));
    f.clock.advance(secs(30) - ms(1));
    assert_eq!(
        begin_outcome(&f.engine, &scope, "no-deadline", &payload).await,
        "in-progress 1s"
    );
    f.clock.advance(ms(1));
    let retry = run(&f.engine, &scope, "no-deadline", &payload, None).await;
    assert_eq!(finish(retry, response(200, 13)).await, Finished::Stored);
    assert_eq!(finish(lock, response(200, 14)).await, Finished::LockLost);
}

/// Many requests with one key at once: exactly one runs; every other one waits or replays the
/// winner's response.
pub async fn concurrent_requests_with_one_key_have_one_winner(
    store: Store,
    prefix: &str,
    spawn: Spawn,
) {
    const REQUESTS: usize = 8;
    let f = fixture(&store, IdempotencyConfig::default());
    let engine = Arc::new(f.engine);
    let scope = Scope::new(prefix, "alice");
    let payload = hash(r#"{"race":true}"#);
    let tasks: Vec<Task> = (0..REQUESTS)
        .map(|i| {
            let (engine, scope, payload) = (engine.clone(), scope.clone(), payload.clone());
            spawn(Box::pin(async move {
                match engine.begin(&scope, &key("race"), &payload, None).await {
                    Ok(Begin::Run(lock)) => {
                        let answer = StoredResponse::new(201, format!("winner {i}"));
                        match lock.finish(answer).await {
                            Ok(Finished::Stored) => Attempt::Ran(i),
                            other => Attempt::Other(format!("winner {i} finished: {other:?}")),
                        }
                    }
                    Ok(Begin::InProgress { .. }) => Attempt::Waited,
                    Ok(Begin::Replay(r)) => Attempt::Replayed(r.body),
                    Ok(Begin::KeyReused) => Attempt::Other("key reused".into()),
                    Err(e) => Attempt::Other(e.to_string()),
                }
            }))
        })
        .collect();
    let attempts = join_all(tasks).await;
    let winners: Vec<usize> = attempts
        .iter()
        .filter_map(|a| match a {
            Attempt::Ran(i) => Some(*i),
            _ => None,
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one request may run: {attempts:?}"
    );
    let body = format!("winner {}", winners[0]);
    for a in &attempts {
        assert!(
            matches!(a, Attempt::Ran(_) | Attempt::Waited) || *a == Attempt::Replayed(body.clone()),
            "a loser must wait or replay the winner: {attempts:?}"
        );
    }
    assert_eq!(
        begin_outcome(&engine, &scope, "race", &payload).await,
        format!("replay 201 {body}")
    );
}

/// Polls every task until all are done; results in task order.
async fn join_all(tasks: Vec<Task>) -> Vec<Attempt> {
    let mut pending: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
    let mut results: Vec<Option<Attempt>> = vec![None; pending.len()];
    std::future::poll_fn(|cx| {
        let mut busy = false;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(task) = slot {
                match task.as_mut().poll(cx) {
                    Poll::Ready(a) => {
                        *result = Some(a);
                        *slot = None;
                    }
                    Poll::Pending => busy = true,
                }
            }
        }
        if busy { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    results.into_iter().flatten().collect()
}

impl Fixture {
    fn clock_now(&self) -> DateTime<Utc> {
        eventfold_idempotency::Clock::now(&self.clock)
    }
}
