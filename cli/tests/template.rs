//! The project's own template, read by the local runtime: the fan-out wiring the shop's
//! functions rely on (names, redrive, visibility timeout, event sources, subscriptions).

use eventfold_local::template::{EventSourceSpec, Template};
use std::path::Path;

#[test]
fn the_project_template_wires_the_fan_out() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let t = Template::load(&path, "st", "us-east-1").expect("loads");
    let topic = t
        .topics()
        .into_iter()
        .find(|t| t.logical_id == "EventsTopic")
        .expect("EventsTopic");
    assert!(topic.fifo && !topic.content_based_deduplication);
    assert_eq!(topic.name, "st-events.fifo");
    let queues = t.queues();
    let projector = queues
        .iter()
        .find(|q| q.logical_id == "ProjectorQueue")
        .expect("ProjectorQueue");
    assert_eq!(projector.name, "st-projector.fifo");
    let redrive = projector.redrive.as_ref().expect("redrive");
    assert_eq!(redrive.dead_letter_queue, "ProjectorDeadLetterQueue");
    assert_eq!(redrive.max_receive_count, 5);
    let functions = t.functions();
    let function = |id: &str| {
        functions
            .iter()
            .find(|f| f.logical_id == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    // Visibility timeout >= 6 x the projector's timeout.
    let projector_fn = function("ProjectorFunction");
    assert!(u64::from(projector.visibility_timeout.expect("set")) >= 6 * projector_fn.timeout);
    assert_eq!(projector_fn.binary, "projector");
    assert!(matches!(
        &projector_fn.event_sources[..],
        [EventSourceSpec::Sqs(s)] if s.queue == "ProjectorQueue" && s.batch_size == 10
    ));
    let publisher = function("StreamPublisherFunction");
    assert_eq!(
        publisher.environment["EVENTS_TOPIC_ARN"],
        "arn:aws:sns:us-east-1:123456789012:st-events.fifo"
    );
    assert!(matches!(
        &publisher.event_sources[..],
        [EventSourceSpec::DynamoDb(s)] if s.table == "EventsTable"
            && s.on_failure.as_ref().is_some_and(|d| d.target == "StreamFailureQueue")
    ));
    let subs = t.subscriptions();
    assert!(subs.iter().any(|s| s.topic == "EventsTopic"
        && s.queue.as_deref() == Some("ProjectorQueue")
        && s.raw_message_delivery));
    let query = function("QueryApiFunction");
    assert_eq!(query.environment["READ_MODELS_TABLE"], "st-ReadModelsTable");
    assert!(
        query
            .routes
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/events/queries/{view}")
    );
}

/// The event types the saga's queue receives (the saga's inputs).

#[test]
fn the_project_template_wires_the_saga() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let mut t = Template::load(&path, "st", "us-east-1").expect("loads");
    let queues = t.queues();
    let queue = queues
        .iter()
        .find(|q| q.logical_id == "SagaQueue")
        .expect("SagaQueue");
    assert_eq!(queue.name, "st-saga.fifo");
    assert!(queue.fifo);
    let redrive = queue.redrive.as_ref().expect("redrive");
    assert_eq!(redrive.dead_letter_queue, "SagaDeadLetterQueue");
    assert_eq!(redrive.max_receive_count, 5);
    let dlq = queues
        .iter()
        .find(|q| q.logical_id == "SagaDeadLetterQueue")
        .expect("SagaDeadLetterQueue");
    assert_eq!(dlq.name, "st-saga-dlq.fifo");

    let subs = t.subscriptions();
    let sub = subs
        .iter()
        .find(|s| s.queue.as_deref() == Some("SagaQueue"))
        .expect("the saga queue is subscribed");
    assert_eq!(sub.topic, "EventsTopic");
    assert!(sub.raw_message_delivery);
    assert_eq!(
        sub.filter_policy_scope.as_deref(),
        Some("MessageAttributes")
    );
    let policy: serde_json::Value =
        serde_json::from_str(sub.filter_policy.as_deref().expect("a filter policy")).expect("json");
    assert_eq!(
        policy,
        // A streaming record (category Topic) of an input's type never reaches it.
        serde_json::json!({
            "category": [{"anything-but": ["Topic"]}],
            "event_type": shop::fulfilment::INPUT_EVENT_TYPES,
        })
    );

    // The projector takes exactly the categories the shop's views are built from.
    let projector = subs
        .iter()
        .find(|s| s.queue.as_deref() == Some("ProjectorQueue"))
        .expect("the projector queue is subscribed");
    assert_eq!(
        projector.filter_policy_scope.as_deref(),
        Some("MessageAttributes")
    );
    let policy: serde_json::Value =
        serde_json::from_str(projector.filter_policy.as_deref().expect("a filter policy"))
            .expect("json");
    let categories: std::collections::BTreeSet<&str> =
        shop::views::stored_views().map(|v| v.category()).collect();
    assert_eq!(
        policy,
        serde_json::json!({ "category": categories }),
        "infra/template.yaml's ProjectorSubscription lists the categories of shop::views"
    );

    let functions = t.functions();
    let saga = functions
        .iter()
        .find(|f| f.logical_id == "SagaFunction")
        .expect("SagaFunction");
    assert_eq!(saga.binary, "saga");
    assert!(u64::from(queue.visibility_timeout.expect("set")) >= 6 * saga.timeout);
    assert_eq!(saga.environment["EVENTS_TABLE"], "st-EventsTable");
    assert_eq!(saga.environment["READ_MODELS_TABLE"], "st-ReadModelsTable");
    assert_eq!(saga.environment["SAGA_TIMEOUT_SECONDS"], "900");
    let sqs = saga.event_sources.iter().find_map(|e| match e {
        EventSourceSpec::Sqs(s) => Some(s),
        _ => None,
    });
    assert!(
        sqs.is_some_and(|s| s.queue == "SagaQueue" && s.batch_size == 10),
        "{:?}",
        saga.event_sources
    );
    assert!(
        saga.event_sources
            .iter()
            .any(|e| matches!(e, EventSourceSpec::Sqs(_)) && e.reports_batch_item_failures())
    );
    let schedule = saga.event_sources.iter().find_map(|e| match e {
        EventSourceSpec::Schedule(s) => Some(s),
        _ => None,
    });
    assert!(
        schedule.is_some_and(|s| s.expression == "rate(1 minute)"
            && s.period == Some(std::time::Duration::from_secs(60))
            && s.enabled),
        "{:?}",
        saga.event_sources
    );

    t.override_parameter("PaymentTimeoutSeconds", "5")
        .expect("a valid override");
    let saga = t
        .functions()
        .into_iter()
        .find(|f| f.logical_id == "SagaFunction")
        .expect("SagaFunction");
    assert_eq!(saga.environment["SAGA_TIMEOUT_SECONDS"], "5");
    assert!(t.override_parameter("PaymentTimeoutSeconds", "0").is_err());
}
