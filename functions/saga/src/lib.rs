//! The saga function: SQS FIFO notifications -> a saga's steps and the commands they send,
//! and the schedule's tick -> the deadlines that passed.
//!
//! Owns the Lambda-facing shape of a saga, for any [`Saga`]: each SQS record is a
//! notification (SNS raw delivery through the queue's `event_type` filter policy) handed to an
//! [`eventfold_consumers::saga::SagaRunner`], with FIFO partial-failure semantics from
//! `eventfold_aws::sqs` (a failure stops its message group; other groups go on); a scheduled
//! event (EventBridge's `Scheduled Event`) runs the runner's tick at the event's time. Which
//! payload is which is told by its shape ([`Invocation`]), in the one handler
//! ([`SagaFunction::handle`]). Checkpoints, gaps, refusals and deadlines are the runner's
//! business; the saga itself is the domain's: the mechanics take it as a type parameter, and
//! [`Deployed`] names, once, the one this function deploys. [`build`] is the function's one
//! constructor; `main.rs` and the local stack both run what it builds.
//!
//! Must not import: business rules (beyond naming the deployed saga).
#![forbid(unsafe_code)]

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use eventfold::{CacheFor, CommandExecutor, EventStore, ExecutorConfig, Upcasters};
use eventfold_aws::config::ConfigError;
use eventfold_aws::sqs::{Notes, process_fifo_batch_noting};
use eventfold_aws::telemetry;
use eventfold_aws::warmup::Warmed;
use eventfold_aws::{
    DynamoDbTable, DynamoDeadLetterStore, DynamoEventStore, DynamoReadModelStore, SdkConfig,
    StoreConfig,
};
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::DeadLetterStore;
use eventfold_consumers::projection::ReadModelStore;
use eventfold_consumers::saga::{DeadlineIndex, RunnerConfig, Saga, SagaCaches, SagaRunner};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod invocation;
pub use invocation::{Invocation, InvocationError, TickResponse};

/// The saga this function deploys (`main.rs` and the local stack both run it through
/// [`build`]).
pub type Deployed = shop::fulfilment::OrderFulfilment;

/// The consumer name in failure notes and dead letters.
pub const CONSUMER: &str = "saga";

/// The `detail-type` of EventBridge's scheduled events.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// How long a command the saga sends keeps retrying lost races when the invocation's
/// deadline is not known (outside Lambda); in Lambda the deadline stops it sooner.
pub const RETRY_BUDGET: Duration = Duration::from_secs(5);

/// Default of `SAGA_TIMEOUT_SECONDS`: how long an instance may wait.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 900;

/// Settings of the saga function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaConfig {
    /// The events table (`EVENTS_TABLE`, `SNAPSHOT_EVERY`): saga streams, targets, sources.
    pub store: StoreConfig,
    /// The read-models table (`READ_MODELS_TABLE`): checkpoints and the deadline index.
    pub read_models_table: String,
    /// How long an instance may wait before its deadline passes (`SAGA_TIMEOUT_SECONDS`,
    /// default 900; the template passes its `PaymentTimeoutSeconds` parameter).
    pub timeout: Duration,
    /// The dead-letters table (`DEAD_LETTERS_TABLE`, optional): where failure notes go.
    pub dead_letters_table: Option<String>,
}

impl SagaConfig {
    /// Reads the settings through `lookup` (the process environment in Lambda).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let store = StoreConfig::from_lookup(&lookup)?;
        let read_models_table = lookup("READ_MODELS_TABLE")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing("READ_MODELS_TABLE"))?;
        let timeout = match lookup("SAGA_TIMEOUT_SECONDS") {
            None => DEFAULT_TIMEOUT_SECONDS,
            Some(v) => match v.parse::<u64>() {
                Ok(s) if s > 0 => s,
                Ok(_) => {
                    return Err(ConfigError::Invalid {
                        name: "SAGA_TIMEOUT_SECONDS",
                        value: v,
                        reason: "must be at least 1".into(),
                    });
                }
                Err(e) => {
                    return Err(ConfigError::Invalid {
                        name: "SAGA_TIMEOUT_SECONDS",
                        value: v.clone(),
                        reason: e.to_string(),
                    });
                }
            },
        };
        Ok(Self {
            store,
            read_models_table,
            timeout: Duration::from_secs(timeout),
            dead_letters_table: lookup("DEAD_LETTERS_TABLE").filter(|v| !v.is_empty()),
        })
    }
}

/// Runs saga `G` on SQS batches and scheduled ticks.
pub struct SagaFunction<G: Saga, E, R> {
    runner: SagaRunner<G, E, R>,
    notes: Option<Arc<dyn DeadLetterStore>>,
}

impl<G: Saga, E, R> std::fmt::Debug for SagaFunction<G, E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaFunction")
            .field("runner", &self.runner)
            .finish()
    }
}

/// The function as its `main.rs` and the local stack run it: the [`Deployed`] saga on the
/// DynamoDB tables, and the endpoint it warms at init. Built by [`build`].
#[derive(Debug)]
pub struct Function {
    saga: SagaFunction<Deployed, DynamoEventStore, DynamoReadModelStore>,
}

/// The function's one constructor: reads its settings through `env` once ([`SagaConfig`]:
/// the process environment in Lambda, the template's resolved environment locally) and builds
/// its clients from `sdk`, for the [`Deployed`] saga with the domain's upcasters.
pub fn build(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Function, ConfigError> {
    let config = SagaConfig::from_lookup(env)?;
    Ok(Function {
        saga: SagaFunction::on_dynamo(sdk, &config, shop::registry::upcasters()),
    })
}

impl Function {
    /// Handles an SQS batch or a scheduled event (see [`SagaFunction::handle`]), a batch's
    /// records started no later than `deadline`.
    pub async fn handle(
        &self,
        payload: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, InvocationError> {
        self.saga.handle(payload, deadline).await
    }

    /// The saga's function.
    pub fn saga(&self) -> &SagaFunction<Deployed, DynamoEventStore, DynamoReadModelStore> {
        &self.saga
    }

    /// Warms the endpoint the invocations use first (the events table) at init.
    pub async fn warm_up(&self, sdk: &SdkConfig) -> Vec<Warmed> {
        let events = self.saga.runner().executor().store().table();
        eventfold_aws::warm_up(sdk, &[&DynamoDbTable::events(events)]).await
    }
}

impl<G: Saga> SagaFunction<G, DynamoEventStore, DynamoReadModelStore>
where
    SagaCaches<G>: CacheFor<G>,
{
    /// Saga `G` on the DynamoDB tables of `config`, reading old event schemas through
    /// `upcasters` (the domain's: source events, the saga's and its targets' streams). What
    /// [`build`] runs for the [`Deployed`] saga; reads no setting itself.
    pub fn on_dynamo(sdk: &SdkConfig, config: &SagaConfig, upcasters: Upcasters) -> Self {
        let events = DynamoEventStore::from_sdk(sdk, &config.store.events_table);
        let models = DynamoReadModelStore::from_sdk(sdk, &config.read_models_table);
        let executor = CommandExecutor::new(
            events,
            ExecutorConfig {
                snapshot_every: config.store.snapshot_every,
                backoff: Some(eventfold_aws::tokio_backoff()),
                // A step's command to a hot stream (a SKU every order holds) keeps retrying
                // lost races, with backoff, until the batch's deadline or this long, instead of
                // failing after a fixed number of attempts and waiting out the visibility
                // timeout.
                retry_budget: Some(RETRY_BUDGET),
                ..ExecutorConfig::default()
            },
        )
        .caching()
        .with_upcasters(upcasters.clone());
        let function = SagaFunction::new(
            SagaRunner::new(
                executor,
                models,
                RunnerConfig {
                    timeout: config.timeout,
                    ..RunnerConfig::default()
                },
            )
            .with_upcasters(upcasters),
        );
        match &config.dead_letters_table {
            Some(table) => {
                function.with_notes(Arc::new(DynamoDeadLetterStore::from_sdk(sdk, table)))
            }
            None => function,
        }
    }
}

impl<G, E, R> SagaFunction<G, E, R>
where
    G: Saga,
    SagaCaches<G>: CacheFor<G>,
    E: EventStore,
    R: ReadModelStore + DeadlineIndex,
{
    /// A function around `runner`.
    pub fn new(runner: SagaRunner<G, E, R>) -> Self {
        Self {
            runner,
            notes: None,
        }
    }

    /// Leaves a failure note in `store` for each message it fails.
    pub fn with_notes(mut self, store: Arc<dyn DeadLetterStore>) -> Self {
        self.notes = Some(store);
        self
    }

    /// The runner.
    pub fn runner(&self) -> &SagaRunner<G, E, R> {
        &self.runner
    }

    /// Handles every record of `event`; returns the records to redeliver.
    ///
    /// The records are one batch of the runner ([`SagaRunner::begin`]): their checkpoints are
    /// read in one request before the first and their checkpoint moves and deadline entries
    /// written in one after the last. When that write fails, every record is redelivered
    /// (handling them again is idempotent; their checkpoints did not move).
    ///
    /// No record is started past `deadline` (the invocation's, less the time the commit and
    /// the answer need, [`eventfold_aws::deadline::answer_by`]): those left are answered as
    /// failures, with a note, instead of the invocation timing out with the whole batch.
    pub async fn handle_batch(
        &self,
        event: SqsEvent,
        deadline: Option<Instant>,
    ) -> SqsBatchResponse {
        let notes = self.notes.as_deref().map(|store| Notes {
            consumer: CONSUMER,
            store,
        });
        // Bodies that do not parse are the batch processing's to report; the rest are read.
        let notifications: Vec<Notification> = event
            .records
            .iter()
            .filter_map(|r| serde_json::from_str(r.body.as_deref()?).ok())
            .collect();
        let ids: Vec<String> = event
            .records
            .iter()
            .map(|r| r.message_id.clone().unwrap_or_default())
            .collect();
        let batch = match self.runner.begin(&notifications).await {
            Ok(batch) => batch.until(deadline),
            Err(error) => {
                tracing::error!(%error, "checkpoints not read: the whole batch is redelivered");
                return redeliver_all(ids);
            }
        };
        let batch = &batch;
        let response = process_fifo_batch_noting(event, notes, |n| async move {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(StepError::Deadline);
            }
            let handled = self.runner.handle_in(batch, &n).await?;
            if !handled.duplicate {
                telemetry::event_consumed(telemetry::SAGA, n.event.as_ref(), handled.behind);
            }
            Ok::<_, StepError>(())
        })
        .await;
        match self.runner.commit(batch).await {
            Ok(()) => response,
            Err(error) => {
                tracing::error!(%error, "checkpoints not moved: the whole batch is redelivered");
                redeliver_all(ids)
            }
        }
    }

    /// Runs the deadlines due at the scheduled event's time. Instances that failed make the
    /// invocation fail (after every other due instance was handled), so the failure shows in
    /// the function's errors; the next tick tries them again.
    pub async fn tick(&self, event: CloudWatchEvent) -> Result<TickResponse, InvocationError> {
        let ticked = self
            .runner
            .tick(event.time)
            .await
            .map_err(InvocationError::Tick)?;
        if let Some((stream, error)) = ticked.failed.first() {
            return Err(InvocationError::DueInstances {
                failed: ticked.failed.len(),
                due: ticked.due,
                stream: stream.clone(),
                error: error.clone(),
            });
        }
        Ok(TickResponse::from(&ticked))
    }

    /// The function's handler: an SQS batch or a scheduled event, told apart by its shape
    /// ([`Invocation::from_json`]); the response as the Lambda runtime returns it.
    pub async fn handle(
        &self,
        payload: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, InvocationError> {
        let response = match Invocation::from_json(payload)? {
            Invocation::Batch(batch) => {
                serde_json::to_value(self.handle_batch(batch, deadline).await)
            }
            Invocation::Tick(event) => serde_json::to_value(self.tick(event).await?),
        };
        response.map_err(InvocationError::Response)
    }
}

/// Why a record of a batch was not handled.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The runner failed on it.
    #[error(transparent)]
    Saga(#[from] eventfold_consumers::saga::SagaError),
    /// The invocation's deadline came first: it is delivered again.
    #[error("not handled: the invocation's deadline was near")]
    Deadline,
}

/// The answer that redelivers every record of a batch (`ids`, their message ids).
fn redeliver_all(ids: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = ids
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// A saga that reacts to nothing, for the tests of the function's own mechanics (dispatch,
/// batch responses) apart from any domain.
#[cfg(test)]
pub mod stub {
    use chrono::{DateTime, Utc};
    use eventfold::{Aggregate, DomainEvent, EventEnvelope, NoCache, Rejection};
    use eventfold_consumers::saga::{Pending, Saga, SagaCommand, SagaCommandVisitor};
    use serde::{Deserialize, Serialize};

    /// Takes no event as input, so it never has an instance, a command or a deadline.
    #[derive(Debug)]
    pub struct ReactsToNothing;

    /// It records nothing.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    pub enum Nothing {}

    impl DomainEvent for Nothing {}

    /// It sends nothing.
    #[derive(Debug, Clone, PartialEq)]
    pub enum NoCommand {}

    impl SagaCommand for NoCommand {
        /// No target, and the saga's own instances never exist: nothing to cache.
        type Targets = NoCache;

        fn visit<V: SagaCommandVisitor<NoCache>>(&self, _visitor: V) -> V::Output {
            match *self {}
        }
    }

    impl Aggregate for ReactsToNothing {
        const CATEGORY: &'static str = "ReactsToNothing";
        type Event = Nothing;
        type State = ();
        type Command = ();

        fn initial() {}

        fn evolve(_state: (), event: &Nothing) {
            match *event {}
        }

        fn decide(_state: &(), _input: &()) -> Result<Vec<Nothing>, Rejection> {
            Ok(Vec::new())
        }
    }

    impl Saga for ReactsToNothing {
        type Send = NoCommand;

        fn input(
            _event: &EventEnvelope,
            _history: &[EventEnvelope],
        ) -> Result<Option<(String, ())>, eventfold_consumers::InputError> {
            Ok(None)
        }

        fn pending(_state: &()) -> Vec<Pending<NoCommand>> {
            Vec::new()
        }

        fn refused(_command: &Pending<NoCommand>, _rejection: &Rejection) {}

        fn waiting_since(_state: &()) -> Option<DateTime<Utc>> {
            None
        }

        fn timed_out(_now: DateTime<Utc>) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;
    use chrono::{TimeDelta, Utc};
    use eventfold::{EventEnvelope, MemoryEventStore, Metadata, StreamId};
    use eventfold_consumers::Notification;
    use eventfold_consumers::projection::MemoryReadModelStore;
    use eventfold_testkit::toy::{self, Account, AccountCommand, Phase, Transfer};
    use std::collections::HashMap;

    type Toy = SagaFunction<Transfer, MemoryEventStore, MemoryReadModelStore>;

    fn toy_function() -> Toy {
        SagaFunction::new(SagaRunner::new(
            CommandExecutor::new(MemoryEventStore::new(), ExecutorConfig::default()).caching(),
            MemoryReadModelStore::new(),
            RunnerConfig {
                timeout: Duration::from_secs(60),
                ..RunnerConfig::default()
            },
        ))
    }

    fn record(id: &str, group: &str, body: String) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body);
        m.attributes = HashMap::from([("MessageGroupId".to_owned(), group.to_owned())]);
        m
    }

    fn body(e: &EventEnvelope) -> String {
        serde_json::to_string(&Notification::of(e).expect("valid")).expect("json")
    }

    async fn setup(f: &Toy, requests: &[(&str, bool)]) -> Vec<Vec<EventEnvelope>> {
        let exec = f.runner().executor();
        for (account, balance) in [("a", 100), ("b", 0)] {
            exec.execute::<Account>(
                &StreamId::new("acme", "Account", account).expect("valid"),
                None,
                &AccountCommand::Open { balance },
                &Metadata::root("acme", "tester", account),
            )
            .await
            .expect("open");
        }
        let mut out = Vec::new();
        for (id, approved) in requests {
            let events = toy::request("acme", id, "a", "b", 10, *approved);
            for e in &events {
                exec.store()
                    .append(
                        &e.stream_id,
                        eventfold::ExpectedVersion::assumed(e.version - 1),
                        vec![e.clone()],
                        None,
                    )
                    .await
                    .expect("append");
            }
            out.push(events);
        }
        out
    }

    fn batch(records: Vec<SqsMessage>) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    fn failed(response: &SqsBatchResponse) -> Vec<&str> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    async fn phase(f: &Toy, id: &str) -> Phase {
        f.runner()
            .executor()
            .load::<Transfer>(&StreamId::new("acme", "Transfer", id).expect("valid"))
            .await
            .expect("load")
            .1
            .phase
    }

    #[tokio::test]
    async fn batches_run_the_saga_and_a_failure_stops_its_group_only() {
        let f = toy_function();
        let requests = setup(&f, &[("t1", true), ("t2", true)]).await;
        let (g1, g2) = (&requests[0][0].stream_id, &requests[1][0].stream_id);
        let response = f
            .handle_batch(
                batch(vec![
                    record("t1-submitted", g1, body(&requests[0][2])),
                    record("poison", g2, "{\"stream_id\":".into()),
                    record("t2-submitted", g2, body(&requests[1][2])),
                    record("t1-approved", g1, body(&requests[0][3])),
                ]),
                None,
            )
            .await;
        assert_eq!(failed(&response), ["poison", "t2-submitted"]);
        assert_eq!(phase(&f, "t1").await, Phase::Debiting);
        assert_eq!(
            phase(&f, "t2").await,
            Phase::New,
            "later in the failed group"
        );

        let retry = f
            .handle_batch(
                batch(vec![record("t2-submitted", g2, body(&requests[1][2]))]),
                None,
            )
            .await;
        assert!(failed(&retry).is_empty());
        assert_eq!(phase(&f, "t2").await, Phase::Debiting);
    }

    #[tokio::test]
    async fn records_past_the_invocation_deadline_are_answered_as_failures_not_handled() {
        let f = toy_function();
        let requests = setup(&f, &[("t1", true), ("t2", true)]).await;
        let (g1, g2) = (&requests[0][0].stream_id, &requests[1][0].stream_id);
        let records = || {
            batch(vec![
                record("t1-submitted", g1, body(&requests[0][2])),
                record("t2-submitted", g2, body(&requests[1][2])),
            ])
        };
        let late = f.handle_batch(records(), Some(Instant::now())).await;
        assert_eq!(failed(&late), ["t1-submitted", "t2-submitted"]);
        assert_eq!(phase(&f, "t1").await, Phase::New);
        assert_eq!(phase(&f, "t2").await, Phase::New);
        // Delivered again with time to spare, they are handled as if for the first time.
        let soon = Instant::now() + Duration::from_secs(30);
        let again = f.handle_batch(records(), Some(soon)).await;
        assert!(failed(&again).is_empty());
        assert_eq!(phase(&f, "t1").await, Phase::Debiting);
        assert_eq!(phase(&f, "t2").await, Phase::Debiting);
    }

    #[tokio::test]
    async fn a_scheduled_event_runs_the_deadlines_due_at_its_time() {
        let f = toy_function();
        let requests = setup(&f, &[("t1", false)]).await;
        let group = requests[0][0].stream_id.clone();
        let response = f
            .handle_batch(
                batch(vec![record("s", &group, body(&requests[0][2]))]),
                None,
            )
            .await;
        assert!(failed(&response).is_empty());
        let debited = f
            .runner()
            .executor()
            .store()
            .load_range("acme/Account-a", 2, Some(2), None)
            .await
            .expect("read")
            .remove(0);
        let response = f
            .handle_batch(
                batch(vec![record("d", "acme/Account-a", body(&debited))]),
                None,
            )
            .await;
        assert!(failed(&response).is_empty());
        assert!(matches!(
            phase(&f, "t1").await,
            Phase::AwaitingApproval { .. }
        ));

        let mut schedule: CloudWatchEvent =
            serde_json::from_str(include_str!("../events/schedule.json")).expect("sample");
        schedule.time = Utc::now();
        let early = f.tick(schedule.clone()).await.expect("tick");
        assert_eq!((early.due, early.timed_out), (0, 0));
        schedule.time = Utc::now() + TimeDelta::seconds(61);
        let payload = serde_json::to_value(&schedule).expect("json");
        let response = f.handle(payload, None).await.expect("tick");
        assert_eq!(
            response,
            serde_json::json!({"due": 1, "timed_out": 1, "stale": 0, "commands_sent": 1})
        );
        assert_eq!(phase(&f, "t1").await, Phase::Refunding);
    }

    #[tokio::test]
    async fn the_stub_takes_every_event_and_does_nothing() {
        let f = SagaFunction::new(SagaRunner::<stub::ReactsToNothing, _, _>::new(
            CommandExecutor::new(MemoryEventStore::new(), ExecutorConfig::default()),
            MemoryReadModelStore::new(),
            RunnerConfig::default(),
        ));
        let payload: Value =
            serde_json::from_str(include_str!("../events/sqs.json")).expect("json");
        let sample = Invocation::from_json(payload.clone()).expect("a batch");
        // The table holds the sample's stream up to its event.
        let Invocation::Batch(batch) = &sample else {
            panic!("a batch");
        };
        let n: Notification = serde_json::from_str(batch.records[0].body.as_deref().expect("body"))
            .expect("a notification");
        let stream = StreamId::parse(&n.stream_id).expect("valid");
        let store = f.runner().executor().store();
        let before = n.version - 1;
        let earlier = eventfold_testkit::event_store::sample_events(&stream, 0, before);
        store
            .append(
                &n.stream_id,
                eventfold::ExpectedVersion::assumed(0),
                earlier,
                None,
            )
            .await
            .expect("append");
        let carried = n.event.clone().expect("carried");
        store
            .append(
                &n.stream_id,
                eventfold::ExpectedVersion::assumed(before),
                vec![carried],
                None,
            )
            .await
            .expect("append");
        let response = f.handle(payload, None).await.expect("handled");
        assert_eq!(response["batchItemFailures"], serde_json::json!([]));
        let tick: Value =
            serde_json::from_str(include_str!("../events/schedule.json")).expect("json");
        let response = f.handle(tick, None).await.expect("ticked");
        assert_eq!(response["due"], 0);
    }

    #[test]
    fn invocations_are_told_apart_by_their_shape() {
        let sqs: Value = serde_json::from_str(include_str!("../events/sqs.json")).expect("json");
        let Ok(Invocation::Batch(batch)) = Invocation::from_json(sqs) else {
            panic!("the SQS sample is a batch");
        };
        for r in &batch.records {
            let n: Notification =
                serde_json::from_str(r.body.as_deref().expect("body")).expect("a notification");
            assert_eq!(r.attributes.get("MessageGroupId"), Some(&n.stream_id));
        }
        let schedule: Value =
            serde_json::from_str(include_str!("../events/schedule.json")).expect("json");
        let Ok(Invocation::Tick(tick)) = Invocation::from_json(schedule) else {
            panic!("the schedule sample is a tick");
        };
        assert_eq!(tick.source.as_deref(), Some("aws.events"));
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"Records": 5}),
            serde_json::json!({"detail-type": "Scheduled Event"}),
            serde_json::json!({"detail-type": "Other", "time": "2026-01-01T00:00:00Z"}),
        ] {
            assert!(Invocation::from_json(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn lambda_reports_a_failed_invocation_with_its_cause() {
        let error = Invocation::from_json(serde_json::json!({"Records": 5})).expect_err("refused");
        let report = lambda_runtime::Diagnostic::from(error);
        assert_eq!(report.error_type, "saga.NotSqsEvent");
        assert!(
            report
                .error_message
                .starts_with("not an SQS event: invalid type"),
            "{}",
            report.error_message
        );
    }

    #[test]
    fn configuration_reads_tables_and_the_timeout() {
        let env = |timeout: Option<&'static str>| {
            move |k: &str| match k {
                "EVENTS_TABLE" => Some("events".to_owned()),
                "READ_MODELS_TABLE" => Some("models".to_owned()),
                "SAGA_TIMEOUT_SECONDS" => timeout.map(str::to_owned),
                _ => None,
            }
        };
        let config = SagaConfig::from_lookup(env(None)).expect("configured");
        assert_eq!(config.store.events_table, "events");
        assert_eq!(config.read_models_table, "models");
        assert_eq!(config.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECONDS));
        let short = SagaConfig::from_lookup(env(Some("5"))).expect("configured");
        assert_eq!(short.timeout, Duration::from_secs(5));
        for bad in ["0", "-1", "soon"] {
            assert!(
                matches!(
                    SagaConfig::from_lookup(env(Some(bad))),
                    Err(ConfigError::Invalid {
                        name: "SAGA_TIMEOUT_SECONDS",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let partial = SagaConfig::from_lookup(|k| (k == "EVENTS_TABLE").then(|| "e".to_owned()));
        assert!(matches!(
            partial,
            Err(ConfigError::Missing("READ_MODELS_TABLE"))
        ));
    }
}
