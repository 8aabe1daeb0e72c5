//! The projector: SQS FIFO notifications -> read models, exactly once.
//!
//! Owns the Lambda-facing shape of projection: each SQS record is a notification (SNS raw
//! delivery), and the batch goes to an [`eventfold_consumers::projection::Projector`] whole, grouped by
//! message group (one batched checkpoint read, one write per view and stream), with FIFO
//! partial-failure semantics from `eventfold_aws::sqs` (a failure stops its message group;
//! other groups go on).
//! Duplicates, gaps and thin notifications are the projector's business (checkpoints and
//! catch-up from the events table); the views are the shop's. [`build`] is the function's one
//! constructor; `main.rs` and the local stack both run what it builds.
//!
//! **Personal data.** A notification carries its event as stored: personal fields sealed
//! (`eventfold::personal`). The projector reads such an event from the events table instead,
//! through a [`eventfold::SealingStore`] that opens it with the subject's cached key (the one
//! view that copies personal data needs the plaintext); a subject whose key is gone reads as
//! redacted. Events without personal fields are applied from the notification as before.
#![forbid(unsafe_code)]

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use eventfold::{EventStore, SealingStore};
use eventfold_aws::config::ConfigError;
use eventfold_aws::keys::{SealedEventStore, key_ring_from_lookup};
use eventfold_aws::sqs::{Notes, process_fifo_groups_noting};
use eventfold_aws::telemetry;
use eventfold_aws::warmup::Warmed;
use eventfold_aws::{
    DynamoDbTable, DynamoDeadLetterStore, DynamoEventStore, DynamoReadModelStore, SdkConfig,
};
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::DeadLetterStore;
use eventfold_consumers::projection::{Projector, ReadModelStore};
use std::sync::Arc;

/// The consumer name in failure notes and dead letters.
pub const CONSUMER: &str = "projector";

/// Settings of the projector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorConfig {
    /// The events table (`EVENTS_TABLE`): gaps and thin notifications are read from it.
    pub events_table: String,
    /// The read-models table (`READ_MODELS_TABLE`).
    pub read_models_table: String,
    /// The dead-letters table (`DEAD_LETTERS_TABLE`, optional): where failure notes go.
    pub dead_letters_table: Option<String>,
}

impl ProjectorConfig {
    /// Reads the settings through `lookup` (the process environment in Lambda).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        Ok(Self {
            events_table: required("EVENTS_TABLE")?,
            read_models_table: required("READ_MODELS_TABLE")?,
            dead_letters_table: lookup("DEAD_LETTERS_TABLE").filter(|v| !v.is_empty()),
        })
    }
}

/// Applies SQS batches of notifications through a [`Projector`].
pub struct ProjectorFunction<E, R> {
    projector: Projector<E, R>,
    notes: Option<Arc<dyn DeadLetterStore>>,
}

impl<E, R> std::fmt::Debug for ProjectorFunction<E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectorFunction")
            .field("projector", &self.projector)
            .field("notes", &self.notes.is_some())
            .finish()
    }
}

/// The function as its `main.rs` and the local stack run it: every shop view's projector
/// on the DynamoDB tables, and the endpoint it warms at init. Built by [`build`].
#[derive(Debug)]
pub struct Function {
    handler: ProjectorFunction<SealedEventStore, DynamoReadModelStore>,
}

/// The function's one constructor: reads its settings through `env` once (`EVENTS_TABLE`,
/// `READ_MODELS_TABLE`, `DEAD_LETTERS_TABLE`: the process environment in Lambda, the
/// template's resolved environment locally) and builds its clients from `sdk`.
pub fn build(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Function, ConfigError> {
    let config = ProjectorConfig::from_lookup(&env)?;
    let keys = key_ring_from_lookup(sdk, &env)?;
    let events = SealingStore::new(DynamoEventStore::from_sdk(sdk, config.events_table), keys);
    let models = DynamoReadModelStore::from_sdk(sdk, config.read_models_table);
    let handler = ProjectorFunction::new(shop::views::projector(events, models));
    let handler = match config.dead_letters_table {
        Some(table) => handler.with_notes(Arc::new(DynamoDeadLetterStore::from_sdk(sdk, table))),
        None => handler,
    };
    Ok(Function { handler })
}

impl Function {
    /// Applies an SQS batch (see [`ProjectorFunction::handle`]).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handler.handle(event).await
    }

    /// The handler.
    pub fn handler(&self) -> &ProjectorFunction<SealedEventStore, DynamoReadModelStore> {
        &self.handler
    }

    /// Warms the endpoint the batches use (the events table) at init.
    pub async fn warm_up(&self, sdk: &SdkConfig) -> Vec<Warmed> {
        let events = self.handler.projector().events().inner().table();
        eventfold_aws::warm_up(sdk, &[&DynamoDbTable::events(events)]).await
    }
}

impl<E: EventStore, R: ReadModelStore> ProjectorFunction<E, R> {
    /// A function around `projector`.
    pub fn new(projector: Projector<E, R>) -> Self {
        Self {
            projector,
            notes: None,
        }
    }

    /// Leaves a failure note in `store` for each message it fails.
    pub fn with_notes(mut self, store: Arc<dyn DeadLetterStore>) -> Self {
        self.notes = Some(store);
        self
    }

    /// The projector.
    pub fn projector(&self) -> &Projector<E, R> {
        &self.projector
    }

    /// Applies every record of `event` as one batch (one batched checkpoint read, one write
    /// per view and stream, see [`Projector::handle_batch`]); returns the records to
    /// redeliver: from the first failure of each message group on.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let notes = self.notes.as_deref().map(|store| Notes {
            consumer: CONSUMER,
            store,
        });
        process_fifo_groups_noting(event, notes, |groups| async move {
            let groups = open_sealed(groups);
            let outcomes = self.projector.handle_batch(&groups).await;
            groups
                .iter()
                .zip(outcomes)
                .map(|(group, outcome)| {
                    for (n, applied) in group.iter().zip(&outcome.applied) {
                        // A notification every view had seen already is a redelivery, not
                        // consumption.
                        if applied.views_changed > 0 {
                            telemetry::event_consumed(
                                telemetry::PROJECTOR,
                                n.event.as_ref(),
                                applied.behind,
                            );
                        }
                    }
                    outcome.failure.map(|e| (outcome.applied.len(), e))
                })
                .collect()
        })
        .await
    }
}

/// The notifications whose events carry sealed personal fields, made thin: the projector
/// then reads those events through its store, which opens them (module docs).
fn open_sealed(groups: Vec<Vec<Notification>>) -> Vec<Vec<Notification>> {
    groups
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|n| match &n.event {
                    Some(e) if eventfold::personal::has_sealed(&e.data) => n.thin(),
                    _ => n,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;
    use eventfold::{EventEnvelope, MemoryEventStore, Metadata, NewEvent, StreamId};
    use eventfold_consumers::Notification;
    use eventfold_consumers::projection::MemoryReadModelStore;
    use serde_json::json;
    use std::collections::HashMap;

    fn received(stream: &StreamId, version: u64, quantity: i64) -> EventEnvelope {
        NewEvent {
            event_type: "StockReceived".into(),
            schema_version: 1,
            data: json!({ "quantity": quantity }),
        }
        .into_envelope(
            stream,
            version,
            chrono::Utc::now(),
            Metadata {
                tenant: stream.tenant().into(),
                actor: "tester".into(),
                correlation_id: "c".into(),
                causation_id: "c".into(),
                command_id: format!("cmd-{version}"),
                trace: None,
            },
        )
    }

    fn record(id: &str, body: String, group: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body);
        m.attributes = HashMap::from([("MessageGroupId".to_owned(), group.to_owned())]);
        m
    }

    #[tokio::test]
    async fn applies_batches_and_stops_a_group_at_its_poison_message() {
        let events = MemoryEventStore::new();
        let a = StreamId::new("acme", "Inventory", "sku-a").expect("valid");
        let b = StreamId::new("acme", "Inventory", "sku-b").expect("valid");
        let mut notes = HashMap::new();
        for (stream, quantities) in [(&a, [5, 7]), (&b, [1, 2])] {
            for (i, q) in quantities.into_iter().enumerate() {
                let v = i as u64 + 1;
                let e = received(stream, v, q);
                events
                    .append(
                        &stream.to_string(),
                        eventfold::ExpectedVersion::assumed(v - 1),
                        vec![e.clone()],
                        None,
                    )
                    .await
                    .expect("append");
                let body =
                    serde_json::to_string(&Notification::of(&e).expect("valid")).expect("json");
                notes.insert(format!("{}{v}", stream.id()), body);
            }
        }
        let function =
            ProjectorFunction::new(shop::views::projector(events, MemoryReadModelStore::new()));
        let mut event = SqsEvent::default();
        event.records = vec![
            record("1", notes["sku-a1"].clone(), "acme/Inventory-sku-a"),
            record("2", notes["sku-b2"].clone(), "acme/Inventory-sku-b"),
            record("3", "{}".into(), "acme/Inventory-sku-a"),
            record("4", notes["sku-b1"].clone(), "acme/Inventory-sku-b"),
            record("5", notes["sku-a2"].clone(), "acme/Inventory-sku-a"),
        ];
        let response = function.handle(event).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["3", "5"]);
        let levels = function
            .projector()
            .models()
            .snapshot("acme", shop::views::STOCK_LEVELS);
        assert_eq!(levels["sku-a"]["on_hand"], 5);
        assert_eq!(
            levels["sku-b"]["on_hand"], 3,
            "the gap was filled from the store, the duplicate ignored"
        );
    }

    #[test]
    fn configuration_needs_both_tables() {
        let env = |k: &str| match k {
            "EVENTS_TABLE" => Some("events".to_owned()),
            "READ_MODELS_TABLE" => Some("models".to_owned()),
            _ => None,
        };
        assert_eq!(
            ProjectorConfig::from_lookup(env).expect("configured"),
            ProjectorConfig {
                events_table: "events".into(),
                read_models_table: "models".into(),
                dead_letters_table: None,
            }
        );
        let partial =
            ProjectorConfig::from_lookup(|k| (k == "EVENTS_TABLE").then(|| "e".to_owned()));
        assert!(matches!(
            partial,
            Err(ConfigError::Missing("READ_MODELS_TABLE"))
        ));
    }

    #[test]
    fn the_sample_event_holds_notifications() {
        let raw = include_str!("../events/sqs.json");
        let e: SqsEvent = serde_json::from_str(raw).expect("sample is an SQS event");
        assert!(!e.records.is_empty());
        for r in &e.records {
            let body = r.body.as_deref().expect("body");
            let n: Notification = serde_json::from_str(body).expect("a notification");
            assert_eq!(r.attributes.get("MessageGroupId"), Some(&n.stream_id));
        }
    }
}
