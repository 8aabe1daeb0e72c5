//! The function's mechanics: batches, deadlines, ticks, dispatch, configuration.

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
    let payload: Value = serde_json::from_str(include_str!("../events/sqs.json")).expect("json");
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
    let tick: Value = serde_json::from_str(include_str!("../events/schedule.json")).expect("json");
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
