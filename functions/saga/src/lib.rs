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
use eventfold_aws::sqs::{Notes, process_fifo_groups_noting};
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
    /// The records come to the runner by message group (one source stream each), a group
    /// at a time: within a group the inputs for distinct instances run at once
    /// ([`SagaRunner::handle_group_in`]), so a hot stream's backlog does not drain one step
    /// after another.
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
        let response = process_fifo_groups_noting(event, notes, |groups| async move {
            let mut outcomes = Vec::with_capacity(groups.len());
            for group in &groups {
                let (handled, failed) = self.runner.handle_group_in(batch, group).await;
                for (n, handled) in group.iter().zip(&handled) {
                    if !handled.duplicate {
                        telemetry::event_consumed(
                            telemetry::SAGA,
                            n.event.as_ref(),
                            handled.behind,
                        );
                    }
                }
                outcomes.push(failed);
            }
            outcomes
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
pub mod stub;

#[cfg(test)]
mod tests;
