//! The saga runner over the in-memory stores, with the toy transfer saga: a whole story under
//! one correlation id, duplicates, reordering and gaps, thin notifications, histories, a crash
//! between recording a step and sending it, refusals (failing and compensating), deadlines,
//! stale index entries, the refusal bound, bad input, and redelivery chaos.

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use eventfold::{
    AppendOutcome, CommandExecutor, DomainEvent, EventEnvelope, EventStore, ExecutorConfig,
    LoadOptions, LoadedStream, MemoryEventStore, Metadata, Snapshot, StoreError, StreamId,
};
use eventfold_consumers::Notification;
use eventfold_consumers::projection::{MemoryReadModelStore, ReadModelStore};
use eventfold_consumers::saga::runner::checkpoint_name;
use eventfold_consumers::saga::{Deadline, DeadlineIndex, RunnerConfig, SagaError, SagaRunner};
use eventfold_testkit::toy::{
    self, Account, AccountCommand, AccountEvent, AccountState, Phase, Transfer, TransferEvent,
    TransferState,
};
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const TENANT: &str = "acme";
const TIMEOUT: Duration = Duration::from_secs(60);

/// The memory store, except that the next append to a stream of a category in `fail_once`
/// fails as an unavailable store would (then the category is forgotten), and that a
/// `competitor` commit lands on its stream just before the next append there.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryEventStore,
    fail_once: Mutex<HashSet<String>>,
    fail_stream_once: Mutex<HashSet<String>>,
    competitor: Mutex<Option<EventEnvelope>>,
    /// Appends under way, and the most there were at once (each append yields once, so
    /// concurrent callers on one task overlap).
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Flaky {
    fn fail_next_append_to(&self, category: &str) {
        self.fail_once
            .lock()
            .expect("lock")
            .insert(category.to_owned());
    }

    fn fail_next_append_to_stream(&self, stream_id: &str) {
        self.fail_stream_once
            .lock()
            .expect("lock")
            .insert(stream_id.to_owned());
    }

    fn most_appends_at_once(&self) -> usize {
        self.most_in_flight.swap(0, Ordering::SeqCst)
    }

    fn race_next_append_with(&self, event: EventEnvelope) {
        *self.competitor.lock().expect("lock") = Some(event);
    }
}

#[async_trait]
impl EventStore for Flaky {
    async fn load(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedStream, StoreError> {
        self.inner.load(stream_id, options).await
    }

    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner
            .load_range(stream_id, from_version, to_version, limit)
            .await
    }

    async fn append(
        &self,
        stream_id: &str,
        expected_version: eventfold::ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError> {
        let category = StreamId::parse(stream_id)
            .map(|s| s.category().to_owned())
            .unwrap_or_default();
        if self.fail_once.lock().expect("lock").remove(&category)
            || self
                .fail_stream_once
                .lock()
                .expect("lock")
                .remove(stream_id)
        {
            return Err(StoreError::Unavailable("injected: the process died".into()));
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let competitor = {
            let mut slot = self.competitor.lock().expect("lock");
            slot.take_if(|e| e.stream_id == stream_id)
        };
        if let Some(e) = competitor {
            self.inner
                .append(
                    stream_id,
                    eventfold::ExpectedVersion::assumed(e.version - 1),
                    vec![e],
                    None,
                )
                .await
                .expect("the competitor commits first");
        }
        self.inner
            .append(stream_id, expected_version, events, snapshot)
            .await
    }
}

type Runner = SagaRunner<Transfer, Flaky, MemoryReadModelStore>;

fn runner_with(config: RunnerConfig) -> Runner {
    SagaRunner::new(
        CommandExecutor::new(Flaky::default(), ExecutorConfig::default()).caching(),
        MemoryReadModelStore::new(),
        config,
    )
}

fn runner() -> Runner {
    runner_with(RunnerConfig {
        timeout: TIMEOUT,
        ..RunnerConfig::default()
    })
}

fn stream(category: &str, id: &str) -> StreamId {
    StreamId::new(TENANT, category, id).expect("valid")
}

fn account_stream(id: &str) -> String {
    stream("Account", id).to_string()
}

fn saga_stream(id: &str) -> String {
    stream("Transfer", id).to_string()
}

async fn open(r: &Runner, account: &str, balance: i64) {
    r.executor()
        .execute::<Account>(
            &stream("Account", account),
            None,
            &AccountCommand::Open { balance },
            &Metadata::root(TENANT, "tester", format!("open-{account}")),
        )
        .await
        .expect("open");
}

/// Appends each event as its own commit.
async fn write(r: &Runner, events: &[EventEnvelope]) {
    for e in events {
        r.executor()
            .store()
            .append(
                &e.stream_id,
                eventfold::ExpectedVersion::assumed(e.version - 1),
                vec![e.clone()],
                None,
            )
            .await
            .expect("append");
    }
}

fn note(e: &EventEnvelope) -> Notification {
    Notification::of(e).expect("valid stream")
}

async fn events_of(r: &Runner, stream_id: &str) -> Vec<EventEnvelope> {
    r.executor()
        .store()
        .load_range(stream_id, 1, None, None)
        .await
        .expect("read")
}

async fn event_at(r: &Runner, stream_id: &str, version: u64) -> EventEnvelope {
    events_of(r, stream_id)
        .await
        .into_iter()
        .find(|e| e.version == version)
        .unwrap_or_else(|| panic!("{stream_id} has v{version}"))
}

async fn saga(r: &Runner, id: &str) -> TransferState {
    r.executor()
        .load::<Transfer>(&stream("Transfer", id))
        .await
        .expect("load")
        .1
}

async fn account(r: &Runner, id: &str) -> AccountState {
    r.executor()
        .load::<Account>(&stream("Account", id))
        .await
        .expect("load")
        .1
}

fn types(events: &[EventEnvelope]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// Delivers every event of `streams` (each once, in order, full or thin), and again as long
/// as new events appear.
async fn deliver_all(r: &Runner, streams: &[String], thin: bool) {
    loop {
        let mut moved = false;
        for s in streams {
            for e in events_of(r, s).await {
                let n = if thin { note(&e).thin() } else { note(&e) };
                let handled = r.handle(&n).await.expect("handled");
                moved |= !handled.duplicate;
            }
        }
        if !moved {
            return;
        }
    }
}

fn all_streams(request: &str, accounts: &[&str]) -> Vec<String> {
    let mut out = vec![stream(toy::REQUEST, request).to_string()];
    out.extend(accounts.iter().map(|a| account_stream(a)));
    out
}

async fn due_entries(r: &Runner) -> Vec<(String, Deadline)> {
    r.models()
        .due(
            &checkpoint_name::<Transfer>(),
            Utc::now() + TimeDelta::days(1),
            100,
        )
        .await
        .expect("due")
        .into_iter()
        .map(|d| (d.stream_id, d.deadline))
        .collect()
}

#[tokio::test]
async fn a_transfer_runs_to_its_end_under_one_correlation_id() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 30, true);
    write(&r, &request).await;

    // Submitted (v3) arrives first: versions 1..=3 are read, the draft is its history.
    let handled = r.handle(&note(&request[2])).await.expect("handled");
    assert_eq!(
        (
            handled.events_read,
            handled.inputs,
            handled.saga_events,
            handled.commands_sent
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(saga(&r, "t1").await.phase, Phase::Debiting);
    assert_eq!(account(&r, "a").await.balance, 70);

    let debited = event_at(&r, &account_stream("a"), 2).await;
    r.handle(&note(&debited)).await.expect("debit seen");
    let waiting = saga(&r, "t1").await;
    assert_eq!(
        waiting.phase,
        Phase::AwaitingApproval {
            since: debited.occurred_at
        }
    );
    assert_eq!(
        due_entries(&r).await,
        [(
            saga_stream("t1"),
            Deadline {
                due_at: debited.occurred_at + TimeDelta::from_std(TIMEOUT).expect("fits"),
                correlation_id: "corr-t1".into()
            }
        )],
        "the waiting instance is indexed with its deadline"
    );

    r.handle(&note(&request[3])).await.expect("approval");
    assert_eq!(saga(&r, "t1").await.phase, Phase::Crediting);
    assert!(due_entries(&r).await.is_empty(), "no longer waiting");
    assert_eq!(account(&r, "b").await.balance, 30);
    let credited = event_at(&r, &account_stream("b"), 2).await;
    r.handle(&note(&credited)).await.expect("credit seen");
    assert_eq!(saga(&r, "t1").await.phase, Phase::Done);

    // One story: every commit the saga caused carries the request's correlation id; inputs
    // are caused by (and named after) their event, sent commands by the saga event that
    // recorded their step, and named after the step.
    let log = events_of(&r, &saga_stream("t1")).await;
    assert_eq!(
        types(&log),
        [
            "Started",
            "DebitRecorded",
            "ApprovalRecorded",
            "CreditRecorded"
        ]
    );
    for (e, cause) in log
        .iter()
        .zip([&request[2], &debited, &request[3], &credited])
    {
        assert_eq!(e.metadata.correlation_id, "corr-t1");
        assert_eq!(e.metadata.causation_id, cause.event_id.to_string());
        assert_eq!(e.metadata.command_id, cause.event_id.to_string());
        assert_eq!(e.metadata.actor, "saga:Transfer");
        assert_eq!(e.metadata.tenant, TENANT);
    }
    for (sent, step, recorded) in [(&debited, "debit", &log[0]), (&credited, "credit", &log[2])] {
        assert_eq!(sent.metadata.correlation_id, "corr-t1");
        assert_eq!(sent.metadata.causation_id, recorded.event_id.to_string());
        assert_eq!(
            sent.metadata.command_id,
            format!("{}:{step}", saga_stream("t1"))
        );
    }
}

#[tokio::test]
async fn duplicates_are_acknowledged_without_effect() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    write(&r, &toy::request(TENANT, "t1", "a", "b", 30, true)).await;
    let streams = all_streams("t1", &["a", "b"]);
    deliver_all(&r, &streams, false).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Done);
    let mut before = Vec::new();
    for s in streams.iter().chain([&saga_stream("t1")]) {
        before.push(events_of(&r, s).await);
    }
    for s in &streams {
        for e in events_of(&r, s).await {
            let again = r.handle(&note(&e)).await.expect("handled");
            assert!(again.duplicate, "{}@{} again", e.stream_id, e.version);
            assert_eq!(again.commands_sent, 0);
        }
    }
    let mut after = Vec::new();
    for s in streams.iter().chain([&saga_stream("t1")]) {
        after.push(events_of(&r, s).await);
    }
    assert_eq!(before, after, "a duplicate wrote nothing anywhere");
}

#[tokio::test]
async fn a_later_version_first_fills_the_gap_in_order_and_the_earlier_one_is_then_a_duplicate() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 30, true);
    write(&r, &request).await;

    let handled = r.handle(&note(&request[3])).await.expect("approval first");
    assert_eq!(handled.events_read, 4, "versions 1..=4 read");
    assert_eq!(handled.inputs, 2, "Submitted, then Approved");
    let s = saga(&r, "t1").await;
    assert_eq!((s.phase, s.approved), (Phase::Debiting, true));
    assert!(r.handle(&note(&request[2])).await.expect("ack").duplicate);

    // The debit is seen with the approval already recorded: straight to the credit.
    deliver_all(&r, &all_streams("t1", &["a", "b"]), false).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Done);
    assert_eq!(
        types(&events_of(&r, &account_stream("a")).await),
        ["Opened", "Debited"],
        "debited once although the debit was sent for both inputs"
    );
    assert_eq!(
        types(&events_of(&r, &saga_stream("t1")).await),
        [
            "Started",
            "ApprovalRecorded",
            "DebitRecorded",
            "CreditRecorded"
        ]
    );
}

#[tokio::test]
async fn thin_notifications_are_read_from_the_store() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 30, true);
    write(&r, &request).await;
    let first = r
        .handle(&note(&request[0]).thin())
        .await
        .expect("thin draft");
    assert_eq!((first.events_read, first.inputs), (1, 0));
    deliver_all(&r, &all_streams("t1", &["a", "b"]), true).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Done);
    assert_eq!(account(&r, "b").await.balance, 30);
}

#[tokio::test]
async fn an_input_past_the_stream_start_reads_its_history() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 30, false);
    write(&r, &request).await;
    for e in &request[..2] {
        let h = r.handle(&note(e)).await.expect("ignored event");
        assert_eq!((h.inputs, h.events_read), (0, 0), "carried, ignored");
    }
    // The checkpoint is at 2: the submission arrives alone and asks for versions 1..=3.
    let h = r.handle(&note(&request[2])).await.expect("submitted");
    assert_eq!((h.inputs, h.events_read), (1, 3));
    let s = saga(&r, "t1").await;
    assert_eq!((s.from.as_str(), s.to.as_str(), s.amount), ("a", "b", 30));
}

#[tokio::test]
async fn a_crash_between_recording_a_step_and_sending_it_is_repaired_by_the_next_delivery() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 30, true);
    write(&r, &request).await;

    r.executor().store().fail_next_append_to("Account");
    let crashed = r.handle(&note(&request[2])).await;
    assert!(
        matches!(&crashed, Err(SagaError::Command { stream_id, .. }) if stream_id == &account_stream("a")),
        "{crashed:?}"
    );
    assert_eq!(
        types(&events_of(&r, &saga_stream("t1")).await),
        ["Started"],
        "the step was recorded"
    );
    assert_eq!(
        types(&events_of(&r, &account_stream("a")).await),
        ["Opened"]
    );
    let checkpoint = r
        .models()
        .checkpoint(&checkpoint_name::<Transfer>(), &request[2].stream_id)
        .await
        .expect("checkpoint");
    assert_eq!(checkpoint, 0, "not acknowledged");

    let again = r.handle(&note(&request[2])).await.expect("redelivered");
    assert_eq!((again.saga_events, again.commands_sent), (0, 1));
    assert_eq!(
        types(&events_of(&r, &saga_stream("t1")).await),
        ["Started"],
        "nothing recorded twice"
    );
    let a = events_of(&r, &account_stream("a")).await;
    assert_eq!(types(&a), ["Opened", "Debited"]);
    assert_eq!(
        a[1].metadata.command_id,
        format!("{}:debit", saga_stream("t1"))
    );
    deliver_all(&r, &all_streams("t1", &["a", "b"]), false).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Done);
}

#[tokio::test]
async fn a_refused_debit_fails_the_transfer() {
    let r = runner();
    open(&r, "a", 10).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 50, true);
    write(&r, &request).await;
    let h = r.handle(&note(&request[2])).await.expect("handled");
    assert_eq!((h.refusals, h.commands_sent, h.saga_events), (1, 0, 2));
    let s = saga(&r, "t1").await;
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Failed, Some("insufficient-funds"))
    );
    let log = events_of(&r, &saga_stream("t1")).await;
    assert_eq!(types(&log), ["Started", "StepRefused"]);
    let debit_id = format!("{}:debit", saga_stream("t1"));
    assert_eq!(log[1].metadata.causation_id, debit_id);
    assert_eq!(log[1].metadata.command_id, format!("{debit_id}:refused"));
    assert_eq!(log[1].metadata.correlation_id, "corr-t1");
    assert_eq!(account(&r, "a").await.balance, 10);
    deliver_all(&r, &all_streams("t1", &["a", "b"]), false).await;
    assert_eq!(
        types(&events_of(&r, &account_stream("a")).await),
        ["Opened"]
    );
}

#[tokio::test]
async fn a_refused_credit_is_compensated_by_a_refund() {
    let r = runner();
    open(&r, "a", 100).await;
    let request = toy::request(TENANT, "t1", "a", "ghost", 40, true);
    write(&r, &request).await;
    deliver_all(&r, &all_streams("t1", &["a"]), false).await;
    let s = saga(&r, "t1").await;
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Compensated, Some("account-not-open"))
    );
    assert_eq!(
        types(&events_of(&r, &account_stream("a")).await),
        ["Opened", "Debited", "Refunded"]
    );
    assert_eq!(account(&r, "a").await.balance, 100);
}

#[tokio::test]
async fn a_passed_deadline_compensates_once_and_a_late_approval_changes_nothing() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    write(&r, &toy::request(TENANT, "t1", "a", "b", 30, false)).await;
    let streams = all_streams("t1", &["a", "b"]);
    deliver_all(&r, &streams, false).await;
    let Phase::AwaitingApproval { since } = saga(&r, "t1").await.phase else {
        panic!("waits for the approval");
    };
    let timeout = TimeDelta::from_std(TIMEOUT).expect("fits");

    let early = r
        .tick(since + timeout - TimeDelta::seconds(1))
        .await
        .expect("tick");
    assert_eq!((early.due, early.timed_out), (0, 0));
    assert!(matches!(
        saga(&r, "t1").await.phase,
        Phase::AwaitingApproval { .. }
    ));

    let now = since + timeout;
    let ticked = r.tick(now).await.expect("tick");
    assert_eq!((ticked.due, ticked.timed_out, ticked.stale), (1, 1, 0));
    assert_eq!(
        (ticked.handled.saga_events, ticked.handled.commands_sent),
        (1, 1)
    );
    assert!(ticked.failed.is_empty());
    let s = saga(&r, "t1").await;
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Refunding, Some("timeout"))
    );
    assert!(due_entries(&r).await.is_empty(), "no longer waiting");
    let log = events_of(&r, &saga_stream("t1")).await;
    let passed = log.last().expect("an event");
    assert_eq!(
        TransferEvent::decode(&passed.event_type, &passed.data).expect("decodes"),
        TransferEvent::DeadlinePassed { at: now }
    );
    assert_eq!(passed.metadata.correlation_id, "corr-t1");
    let refund = events_of(&r, &account_stream("a")).await;
    assert_eq!(types(&refund), ["Opened", "Debited", "Refunded"]);
    assert_eq!(
        refund[2].metadata.causation_id,
        passed.event_id.to_string(),
        "the refund was caused by the timeout"
    );

    let again = r.tick(now + TimeDelta::hours(1)).await.expect("tick");
    assert_eq!(again.due, 0, "a deadline fires once");
    deliver_all(&r, &streams, false).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Compensated);

    let late = toy::approval(TENANT, "t1", 4);
    write(&r, std::slice::from_ref(&late)).await;
    r.handle(&note(&late)).await.expect("late approval");
    deliver_all(&r, &streams, false).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Compensated);
    assert_eq!(account(&r, "b").await.balance, 0, "never credited");
    assert_eq!(account(&r, "a").await.balance, 100);
}

#[tokio::test]
async fn the_tick_corrects_index_entries_their_instances_disagree_with() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    write(&r, &toy::request(TENANT, "done", "a", "b", 10, true)).await;
    write(&r, &toy::request(TENANT, "waits", "a", "b", 10, false)).await;
    deliver_all(&r, &all_streams("done", &["a", "b"]), false).await;
    deliver_all(&r, &all_streams("waits", &["a", "b"]), false).await;
    let Phase::AwaitingApproval { since } = saga(&r, "waits").await.phase else {
        panic!("waits");
    };
    let real_due = since + TimeDelta::from_std(TIMEOUT).expect("fits");
    let name = checkpoint_name::<Transfer>();
    let early = Deadline {
        due_at: since,
        correlation_id: "corr-waits".into(),
    };
    // Entries as another timeout setting left them, at the instances' current versions: one
    // for an instance that does not wait (any more), one too early.
    for id in ["done", "waits"] {
        let (version, _) = r
            .executor()
            .load::<Transfer>(&stream("Transfer", id))
            .await
            .expect("load");
        r.models()
            .set_deadline(&name, &saga_stream(id), version, Some(&early))
            .await
            .expect("set");
    }
    let ticked = r.tick(since + TimeDelta::seconds(1)).await.expect("tick");
    assert_eq!((ticked.due, ticked.timed_out, ticked.stale), (2, 0, 2));
    assert_eq!(
        due_entries(&r).await,
        [(
            saga_stream("waits"),
            Deadline {
                due_at: real_due,
                correlation_id: "corr-waits".into()
            }
        )]
    );
    assert_eq!(saga(&r, "done").await.phase, Phase::Done);
    assert!(matches!(
        saga(&r, "waits").await.phase,
        Phase::AwaitingApproval { .. }
    ));
}

#[tokio::test]
async fn a_timeout_never_lands_on_a_state_newer_than_the_one_found_due() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    write(&r, &toy::request(TENANT, "t1", "a", "b", 30, false)).await;
    deliver_all(&r, &all_streams("t1", &["a", "b"]), false).await;
    let (version, state) = r
        .executor()
        .load::<Transfer>(&stream("Transfer", "t1"))
        .await
        .expect("load");
    let Phase::AwaitingApproval { since } = state.phase else {
        panic!("waits");
    };
    let timeout = TimeDelta::from_std(TIMEOUT).expect("fits");
    let now = since + timeout;
    // While the tick decides, the instance starts waiting anew (a later start of the wait).
    let later = now + TimeDelta::seconds(5);
    let competitor = TransferEvent::DebitRecorded { at: later }
        .encode()
        .expect("encodes")
        .into_envelope(
            &stream("Transfer", "t1"),
            version + 1,
            Utc::now(),
            Metadata::root(TENANT, "tester", "competitor"),
        );
    r.executor().store().race_next_append_with(competitor);
    let ticked = r.tick(now).await.expect("tick");
    assert_eq!(
        (ticked.due, ticked.timed_out, ticked.stale),
        (1, 0, 1),
        "{ticked:?}"
    );
    assert_eq!(
        types(&events_of(&r, &saga_stream("t1")).await),
        ["Started", "DebitRecorded", "DebitRecorded"],
        "no timeout recorded on the newer wait"
    );
    assert_eq!(
        due_entries(&r).await,
        [(
            saga_stream("t1"),
            Deadline {
                due_at: later + timeout,
                correlation_id: "corr-t1".into()
            }
        )],
        "the newer wait's deadline is indexed"
    );
    assert_eq!(
        types(&events_of(&r, &account_stream("a")).await),
        ["Opened", "Debited"]
    );
}

#[tokio::test]
async fn refusals_that_never_settle_are_reported_after_the_bound() {
    let r = runner_with(RunnerConfig {
        timeout: TIMEOUT,
        max_rounds: 3,
        ..RunnerConfig::default()
    });
    open(&r, "c", 0).await;
    // A log in which a refund of an account never debited is due: the account refuses it
    // and the toy refuses to hear that, so the refund stays pending.
    let saga_id = stream("Transfer", "t9");
    let now = Utc::now();
    let log: Vec<EventEnvelope> = [
        TransferEvent::Started {
            id: "t9".into(),
            from: "c".into(),
            to: "d".into(),
            amount: 5,
        },
        TransferEvent::DebitRecorded { at: now },
        TransferEvent::DeadlinePassed { at: now },
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| {
        e.encode().expect("encodes").into_envelope(
            &saga_id,
            i as u64 + 1,
            now,
            Metadata::root(TENANT, "tester", format!("seed-{i}")),
        )
    })
    .collect();
    write(&r, &log).await;
    let approval = toy::approval(TENANT, "t9", 1);
    write(&r, std::slice::from_ref(&approval)).await;
    let result = r.handle(&note(&approval)).await;
    assert!(
        matches!(&result, Err(SagaError::Unsettled { rounds: 3, stream_id }) if stream_id == &saga_stream("t9")),
        "{result:?}"
    );
    assert_eq!(
        types(&events_of(&r, &account_stream("c")).await),
        ["Opened"]
    );
    let checkpoint = r
        .models()
        .checkpoint(&checkpoint_name::<Transfer>(), &approval.stream_id)
        .await
        .expect("checkpoint");
    assert_eq!(checkpoint, 0, "not acknowledged");
}

#[tokio::test]
async fn an_event_the_saga_cannot_read_is_not_acknowledged() {
    let r = runner();
    let mut request = toy::request(TENANT, "t1", "a", "b", 30, false);
    request.remove(0); // the draft
    for (i, e) in request.iter_mut().enumerate() {
        e.version = i as u64 + 1;
    }
    write(&r, &request).await;
    for _ in 0..2 {
        let result = r.handle(&note(&request[1])).await;
        assert!(
            matches!(&result, Err(SagaError::Input { event_type, version: 2, .. }) if event_type == "Submitted"),
            "{result:?}"
        );
    }
    let bad = Notification {
        stream_id: "not a stream".into(),
        ..note(&request[0])
    };
    assert!(matches!(
        r.handle(&bad).await,
        Err(SagaError::BadNotification(_))
    ));
    let mismatched = Notification {
        version: 9,
        ..note(&request[0])
    };
    assert!(matches!(
        r.handle(&mismatched).await,
        Err(SagaError::BadNotification(_))
    ));
    let announced = Notification {
        version: 9,
        ..note(&request[0]).thin()
    };
    assert!(matches!(
        r.handle(&announced).await,
        Err(SagaError::Missing { from: 1, to: 9, .. })
    ));
}

#[tokio::test]
async fn redelivered_shuffled_and_dropped_notifications_have_exactly_one_effect_per_step() {
    for seed in 0..12 {
        let r = runner();
        let report = toy::redelivery_chaos(&r, TENANT, seed).await;
        assert!(report.duplicates > 0 && report.dropped > 0, "{report:?}");
        assert_eq!(report.ticks, 1);
    }
}

#[tokio::test]
async fn redelivered_notifications_handed_over_in_groups_have_exactly_one_effect_per_step() {
    for seed in 0..12 {
        let r = runner();
        let report = toy::redelivery_chaos_in_groups(&r, TENANT, seed).await;
        assert!(report.duplicates > 0 && report.dropped > 0, "{report:?}");
        assert_eq!(report.ticks, 1);
    }
}

#[tokio::test]
async fn the_memory_store_passes_the_deadline_index_contract() {
    eventfold_testkit::deadline_index::run_all(&MemoryReadModelStore::new(), "mem").await;
    eventfold_testkit::deadline_index::writes_together_all_or_nothing(
        &MemoryReadModelStore::new(),
        "mem",
    )
    .await;
}

#[tokio::test]
async fn a_long_gap_is_read_a_page_at_a_time_and_each_page_moves_the_checkpoint() {
    use eventfold_consumers::projection::CATCH_UP_PAGE;
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let mut request = toy::request(TENANT, "t1", "a", "b", 30, false);
    let stream = StreamId::new(TENANT, "Request", "t1").expect("valid");
    // 250 notes the saga ignores, then the approval: a gap of 254 versions.
    for v in 4..254 {
        request.push(
            eventfold::NewEvent {
                event_type: "Noted".into(),
                schema_version: 1,
                data: serde_json::json!({"text": format!("note {v}")}),
            }
            .into_envelope(&stream, v, Utc::now(), request[1].metadata.clone()),
        );
    }
    request.push(toy::approval(TENANT, "t1", 254));
    write(&r, &request).await;
    let name = checkpoint_name::<Transfer>();
    let source = stream.to_string();

    // The submission is seen; then the approval, 251 versions later, cannot be recorded on
    // the last page: the pages before it are kept.
    r.handle(&note(&request[2])).await.expect("submitted");
    r.executor().store().fail_next_append_to("Transfer");
    let failed = r.handle(&note(&request[253])).await;
    assert!(failed.is_err(), "recording the approval failed");
    let kept = r.models().checkpoint(&name, &source).await.expect("cp");
    assert_eq!(
        kept,
        3 + 2 * CATCH_UP_PAGE,
        "two full pages applied and checkpointed"
    );
    assert!(!saga(&r, "t1").await.approved);

    let done = r.handle(&note(&request[253])).await.expect("redelivered");
    assert_eq!(done.inputs, 1, "only the approval is new");
    assert_eq!(
        r.models().checkpoint(&name, &source).await.expect("cp"),
        254
    );
    deliver_all(&r, &all_streams("t1", &["a", "b"]), false).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Done);
    assert_eq!(account(&r, "b").await.balance, 30, "credited once");
}

/// The notifications of one invocation as a batch: checkpoints read once, the moves and the
/// deadline entries left to the commit. A batch whose commit never happened (the process died
/// after its steps) changed no checkpoint and wrote no entry, and handled again in full it
/// has exactly one effect per step; its commit then writes the entry of the waiting instance
/// and every checkpoint at once, after which the same notifications are duplicates.
#[tokio::test]
async fn a_batch_whose_commit_was_lost_is_handled_again_with_one_effect_per_step() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 30, true);
    write(&r, &request).await;
    let name = checkpoint_name::<Transfer>();
    let submitted = note(&request[2]);

    // First invocation: the submission, then (a second message group) the debit it caused.
    let lost = r
        .begin(std::slice::from_ref(&submitted))
        .await
        .expect("begin");
    r.handle_in(&lost, &submitted).await.expect("submitted");
    let debited = note(&event_at(&r, &account_stream("a"), 2).await);
    r.handle_in(&lost, &debited).await.expect("debit seen");
    assert!(matches!(
        saga(&r, "t1").await.phase,
        Phase::AwaitingApproval { .. }
    ));
    // ... and no commit: the process died.
    for source in [&submitted.stream_id, &debited.stream_id] {
        let at = r.models().checkpoint(&name, source).await.expect("read");
        assert_eq!(at, 0, "{source} moved without a commit");
    }
    assert!(
        due_entries(&r).await.is_empty(),
        "an entry without a commit"
    );

    // Redelivered together: nothing recorded or sent twice.
    let batch = [submitted.clone(), debited.clone()];
    let again = r.begin(&batch).await.expect("begin");
    let mut handled = Vec::new();
    for n in &batch {
        handled.push(r.handle_in(&again, n).await.expect("redelivered"));
    }
    assert!(handled.iter().all(|h| !h.duplicate && h.saga_events == 0));
    r.commit(&again).await.expect("commit");
    assert_eq!(
        types(&events_of(&r, &saga_stream("t1")).await),
        ["Started", "DebitRecorded"]
    );
    assert_eq!(
        types(&events_of(&r, &account_stream("a")).await),
        ["Opened", "Debited"]
    );
    assert_eq!(account(&r, "a").await.balance, 70);
    assert_eq!(
        due_entries(&r)
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        [saga_stream("t1")],
        "the commit wrote the waiting instance's entry"
    );
    for (source, version) in [(&submitted.stream_id, 3), (&debited.stream_id, 2)] {
        let at = r.models().checkpoint(&name, source).await.expect("read");
        assert_eq!(at, version, "{source}");
    }
    let third = r.begin(&batch).await.expect("begin");
    for n in &batch {
        assert!(r.handle_in(&third, n).await.expect("ack").duplicate);
    }
    r.commit(&third).await.expect("nothing to write");

    deliver_all(&r, &all_streams("t1", &["a", "b"]), false).await;
    assert_eq!(saga(&r, "t1").await.phase, Phase::Done);
    assert_eq!(account(&r, "b").await.balance, 30);
}

/// A checkpoint another consumer moved past the batch's makes the combined write fail as a
/// whole; the commit then writes one at a time and takes the newer checkpoint, and the
/// batch's deadline entry is written all the same.
#[tokio::test]
async fn a_batch_commit_after_another_consumer_moved_on_takes_its_checkpoint() {
    let r = runner();
    open(&r, "a", 100).await;
    open(&r, "b", 0).await;
    let request = toy::request(TENANT, "t1", "a", "b", 30, true);
    write(&r, &request).await;
    let name = checkpoint_name::<Transfer>();
    let submitted = note(&request[2]);
    let debited_event = {
        r.handle(&submitted).await.expect("submitted");
        event_at(&r, &account_stream("a"), 2).await
    };
    let debited = note(&debited_event);
    let batch = r
        .begin(std::slice::from_ref(&debited))
        .await
        .expect("begin");
    r.handle_in(&batch, &debited).await.expect("debit seen");
    // Meanwhile a redelivery elsewhere handled the same and moved the checkpoint on.
    r.models()
        .add(TENANT, &name, &debited.stream_id, 0, 2, Vec::new())
        .await
        .expect("the other consumer's move");
    r.commit(&batch)
        .await
        .expect("the newer checkpoint is taken");
    assert_eq!(
        r.models()
            .checkpoint(&name, &debited.stream_id)
            .await
            .expect("read"),
        2
    );
    assert_eq!(due_entries(&r).await.len(), 1, "the entry was written");
}

#[tokio::test]
async fn a_target_read_from_its_start_is_warmed_at_its_head() {
    use eventfold::cache::CacheFor;
    let r = runner();
    // Account a, written behind the runner's back: nothing of it is cached.
    let a = stream("Account", "a");
    let opened = account_event(&a, 1, AccountEvent::Opened { balance: 100 });
    write(&r, &[opened]).await;
    let cached = || {
        CacheFor::<Account>::states(r.executor().caches())
            .expect("accounts are cached")
            .get(&a.to_string())
    };
    assert!(cached().is_none());
    // A transfer debits it; the runner's first notification of the account (its debit, v2)
    // is read from v1, and the read goes on to the head: a third commit made meanwhile.
    let request = toy::request(TENANT, "t1", "a", "b", 30, true);
    open(&r, "b", 0).await;
    write(&r, &request).await;
    for e in &request {
        r.handle(&note(e)).await.expect("request");
    }
    let debited = event_at(&r, &a.to_string(), 2).await;
    let third = account_event(&a, 3, AccountEvent::Opened { balance: 5 });
    write(&r, &[third]).await;
    // Forget what the debit left in the cache: only the read may warm it.
    CacheFor::<Account>::states(r.executor().caches())
        .expect("cached")
        .forget(&a.to_string());
    let h = r.handle(&note(&debited)).await.expect("debit seen");
    assert_eq!(h.events_read, 3, "v1..=v3 in one read");
    let (version, state) = cached().expect("warmed");
    assert_eq!(version.get(), 3);
    assert_eq!(state, account(&r, "a").await);
}

/// `event` as the envelope at `version` of account stream `a`.
fn account_event(a: &StreamId, version: u64, event: AccountEvent) -> EventEnvelope {
    event.encode().expect("encodes").into_envelope(
        a,
        version,
        Utc::now(),
        Metadata::root(TENANT, "tester", format!("{a}-{version}")),
    )
}

/// Opens a hot account `a` and `n` transfers out of it, each submitted and handled: the
/// notifications of `a`'s debits (v2..), each for another transfer.
async fn hot_account_debits(r: &Runner, n: usize) -> Vec<Notification> {
    open(r, "a", 1000).await;
    open(r, "b", 0).await;
    for t in 1..=n {
        let request = toy::request(TENANT, &format!("t{t}"), "a", "b", 10, true);
        write(r, &request).await;
        r.handle(&note(&request[2])).await.expect("submitted");
    }
    let debits: Vec<Notification> = events_of(r, &account_stream("a"))
        .await
        .iter()
        .skip(1)
        .map(note)
        .collect();
    assert_eq!(debits.len(), n);
    debits
}

/// A hot source stream (one account every transfer debits) feeds another instance with each
/// event: as one group, the instances run at once and the checkpoint moves past them all.
#[tokio::test]
async fn a_hot_streams_group_runs_its_instances_at_once() {
    let r = runner();
    let debits = hot_account_debits(&r, 5).await;
    let name = checkpoint_name::<Transfer>();
    r.executor().store().most_appends_at_once();

    let batch = r.begin(&debits).await.expect("begin");
    let (handled, failed) = r.handle_group_in(&batch, &debits).await;
    assert!(failed.is_none(), "{failed:?}");
    assert_eq!(handled.len(), 5);
    assert!(handled.iter().all(|h| h.inputs == 1 && h.saga_events == 1));
    assert!(
        r.executor().store().most_appends_at_once() >= 2,
        "the instances ran one after another"
    );
    r.commit(&batch).await.expect("commit");
    for t in 1..=5 {
        let phase = saga(&r, &format!("t{t}")).await.phase;
        assert!(
            matches!(phase, Phase::AwaitingApproval { .. }),
            "t{t}: {phase:?}"
        );
    }
    let at = r.models().checkpoint(&name, &account_stream("a")).await;
    assert_eq!(at.expect("read"), 6);
    assert_eq!(
        due_entries(&r).await.len(),
        5,
        "every waiting instance indexed"
    );

    // Delivered again, the whole group is duplicates.
    let again = r.begin(&debits).await.expect("begin");
    let (handled, failed) = r.handle_group_in(&again, &debits).await;
    assert!(failed.is_none());
    assert!(handled.iter().all(|h| h.duplicate));
}

/// A failed input holds the checkpoint just before its notification and fails the rest of
/// the group; the inputs after it that went through find their steps done when the queue
/// delivers them again.
#[tokio::test]
async fn a_failed_input_holds_the_checkpoint_before_it_and_redelivery_has_one_effect_per_step() {
    let r = runner();
    let debits = hot_account_debits(&r, 5).await;
    let name = checkpoint_name::<Transfer>();
    r.executor()
        .store()
        .fail_next_append_to_stream(&saga_stream("t3"));

    let batch = r.begin(&debits).await.expect("begin");
    let (handled, failed) = r.handle_group_in(&batch, &debits).await;
    let (index, error) = failed.expect("t3's input failed");
    assert_eq!(index, 2, "t3's debit is the group's third notification");
    assert!(matches!(error, SagaError::Command { .. }), "{error}");
    assert_eq!(handled.len(), 2);
    r.commit(&batch).await.expect("commit");
    let at = r.models().checkpoint(&name, &account_stream("a")).await;
    assert_eq!(at.expect("read"), 3, "held before t3's debit (v4)");
    assert_eq!(saga(&r, "t3").await.phase, Phase::Debiting);
    for t in ["t4", "t5"] {
        let phase = saga(&r, t).await.phase;
        assert!(
            matches!(phase, Phase::AwaitingApproval { .. }),
            "{t}: {phase:?}"
        );
    }

    // The queue delivers the failed one and the rest of its group again.
    let rest = &debits[2..];
    let again = r.begin(rest).await.expect("begin");
    let (handled, failed) = r.handle_group_in(&again, rest).await;
    assert!(failed.is_none(), "{failed:?}");
    let recorded: Vec<usize> = handled.iter().map(|h| h.saga_events).collect();
    assert_eq!(recorded, [1, 0, 0], "t4 and t5 were recorded already");
    r.commit(&again).await.expect("commit");
    let at = r.models().checkpoint(&name, &account_stream("a")).await;
    assert_eq!(at.expect("read"), 6);
    for t in 1..=5 {
        let log = events_of(&r, &saga_stream(&format!("t{t}"))).await;
        assert_eq!(types(&log), ["Started", "DebitRecorded"], "t{t}");
    }
    assert_eq!(
        events_of(&r, &account_stream("a")).await.len(),
        6,
        "one debit each"
    );
    assert_eq!(account(&r, "a").await.balance, 950);
}

/// Past the batch's answer-by time no input starts: the group's first notification fails
/// with [`SagaError::Deadline`], and nothing moves.
#[tokio::test]
async fn a_group_past_its_answer_by_time_starts_nothing() {
    let r = runner();
    let debits = hot_account_debits(&r, 3).await;
    let batch = r
        .begin(&debits)
        .await
        .expect("begin")
        .until(Some(std::time::Instant::now()));
    let (handled, failed) = r.handle_group_in(&batch, &debits).await;
    assert!(handled.is_empty());
    assert!(
        matches!(failed, Some((0, SagaError::Deadline))),
        "{failed:?}"
    );
    r.commit(&batch).await.expect("commit");
    for t in 1..=3 {
        assert_eq!(saga(&r, &format!("t{t}")).await.phase, Phase::Debiting);
    }
}
