//! The DLQ processor over in-memory stores and fake queues, topic and stream: letters with the
//! consumers' errors, "blocked behind", redrive in order, discard, automatic republish of
//! failed stream batches with bounded backoff, and the HTTP API's scope and tenant rules.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use dlq_processor::redrive::{
    BatchInfo, CommitKey, QueueSender, RangeError, SendError, StreamRange,
};
use dlq_processor::{Backoff, DlqProcessor, Sources};
use eventfold::{EventStore, MemoryEventStore, StreamId};
use eventfold_aws::sns::{NotificationSink, Outgoing, PublishError};
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::{
    DeadLetterStore, FailureNote, Filter, MemoryDeadLetterStore, STREAM_CONSUMER, Status,
};
use eventfold_testkit::event_store::sample_events;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PROJECTOR_DLQ: &str = "arn:aws:sqs:us-east-1:1:it-projector-dlq.fifo";
const FAILURES: &str = "arn:aws:sqs:us-east-1:1:it-StreamFailureQueue";

#[derive(Default)]
struct Queues {
    sent: Mutex<Vec<(String, String, Option<String>)>>,
}

#[async_trait]
impl QueueSender for Queues {
    async fn send(
        &self,
        queue_url: &str,
        body: &str,
        group: Option<&str>,
        _dedup: &str,
    ) -> Result<(), SendError> {
        self.sent.lock().expect("lock").push((
            queue_url.to_owned(),
            body.to_owned(),
            group.map(str::to_owned),
        ));
        Ok(())
    }
}

/// Publishes everything, except the entries of streams ending in `-down` while `down` holds.
#[derive(Default)]
struct Topic {
    down: AtomicBool,
    published: Mutex<Vec<String>>,
}

#[async_trait]
impl NotificationSink for Topic {
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        batch
            .iter()
            .map(|m| {
                let n = &m.notification;
                if self.down.load(Ordering::SeqCst) && n.stream_id.ends_with("-down") {
                    Err(PublishError::Failed {
                        code: "InternalError".into(),
                        message: "injected".into(),
                    })
                } else {
                    self.published
                        .lock()
                        .expect("lock")
                        .push(format!("{}@{}", n.stream_id, n.version));
                    Ok(())
                }
            })
            .collect()
    }
}

struct Range(Vec<CommitKey>);

#[async_trait]
impl StreamRange for Range {
    async fn commits(&self, _: &BatchInfo) -> Result<Vec<CommitKey>, RangeError> {
        Ok(self.0.clone())
    }
}

struct Fixture {
    processor: DlqProcessor,
    letters: Arc<MemoryDeadLetterStore>,
    queues: Arc<Queues>,
    topic: Arc<Topic>,
    events: Arc<MemoryEventStore>,
}

fn sources() -> Sources {
    Sources {
        projector_dlq_arn: PROJECTOR_DLQ.into(),
        saga_dlq_arn: "arn:aws:sqs:us-east-1:1:it-saga-dlq.fifo".into(),
        stream_failure_arn: FAILURES.into(),
        projector_queue_url: "http://sqs/it-projector.fifo".into(),
        saga_queue_url: "http://sqs/it-saga.fifo".into(),
    }
}

fn fixture(keys: Vec<CommitKey>) -> Fixture {
    let letters = Arc::new(MemoryDeadLetterStore::new());
    let queues = Arc::new(Queues::default());
    let topic = Arc::new(Topic::default());
    let events = Arc::new(MemoryEventStore::new());
    let processor = DlqProcessor::new(
        letters.clone(),
        events.clone(),
        topic.clone(),
        queues.clone(),
        Arc::new(Range(keys)),
        sources(),
    )
    .with_backoff(Backoff {
        attempts: 3,
        first: Duration::from_millis(1),
    })
    .with_stream_retry_receives(3);
    Fixture {
        processor,
        letters,
        queues,
        topic,
        events,
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new("acme", "Order", id).expect("valid")
}

fn notification(id: &str, version: u64) -> String {
    let e = sample_events(&stream(id), version - 1, 1).remove(0);
    serde_json::to_string(&Notification::of(&e).expect("valid")).expect("json")
}

fn message(source: &str, id: &str, body: String, receives: u32, group: Option<&str>) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.into());
    m.body = Some(body);
    m.event_source_arn = Some(source.into());
    m.attributes = HashMap::from([
        ("ApproximateReceiveCount".to_owned(), receives.to_string()),
        (
            "ApproximateFirstReceiveTimestamp".to_owned(),
            "1768473000200".to_owned(),
        ),
    ]);
    if let Some(g) = group {
        m.attributes.insert("MessageGroupId".into(), g.into());
    }
    m
}

fn batch(records: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records;
    e
}

#[tokio::test]
async fn dlq_messages_become_letters_with_the_consumers_error_blocked_behind_the_first() {
    let f = fixture(Vec::new());
    let group = "acme/Order-o-1";
    let note = FailureNote::new(
        "projector",
        "m-2",
        Some((group, 2)),
        "view order-summary cannot apply ItemAdded v2: boom",
        Utc::now(),
    );
    f.letters.note(&note).await.expect("note");
    let done = f
        .processor
        .process(batch(vec![
            message(PROJECTOR_DLQ, "m-2", notification("o-1", 2), 6, Some(group)),
            message(PROJECTOR_DLQ, "m-3", notification("o-1", 3), 6, Some(group)),
            message(PROJECTOR_DLQ, "m-4", notification("o-1", 4), 6, Some(group)),
            message(PROJECTOR_DLQ, "m-x", "{not json".into(), 6, None),
        ]))
        .await;
    assert!(done.response.batch_item_failures.is_empty());
    let [poison, second, third, junk] = &done.recorded[..] else {
        panic!("four letters: {:?}", done.recorded);
    };
    assert_eq!(poison.consumer, "projector");
    assert_eq!(poison.tenant, "acme");
    assert_eq!(poison.source_queue, "it-projector-dlq.fifo");
    assert_eq!(poison.stream_id.as_deref(), Some(group));
    assert_eq!(poison.first_version, Some(2));
    assert_eq!(poison.receive_count, 6);
    assert_eq!(poison.last_error.as_deref(), Some(note.error.as_str()));
    assert_eq!(poison.blocked_behind, None);
    assert_eq!(second.blocked_behind.as_deref(), Some(poison.id.as_str()));
    assert_eq!(third.blocked_behind.as_deref(), Some(poison.id.as_str()));
    assert_eq!(
        second.last_error, None,
        "held back, not failed by the consumer"
    );
    assert_eq!(junk.tenant, "_unknown");
    assert_eq!(
        junk.last_error.as_deref(),
        Some("body is not a notification")
    );
    assert!(dlq_processor::describe(second).contains(&format!("blocked behind {}", poison.id)));

    // One redrive sends the highest version back to the projector's queue, in the stream's
    // group, and closes the three.
    let r = f
        .processor
        .redrive(Some("acme"), &poison.id, "ops")
        .await
        .expect("redrive");
    assert_eq!(r.sent, third.id);
    assert_eq!(
        r.redriven,
        [poison.id.clone(), second.id.clone(), third.id.clone()]
    );
    let sent = f.queues.sent.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "http://sqs/it-projector.fifo");
    assert_eq!(sent[0].1, third.body);
    assert_eq!(sent[0].2.as_deref(), Some(group));
    let open = Filter {
        status: Some(Status::Open),
        ..Filter::default()
    };
    let still_open = f.processor.list(None, &open, 10).await.expect("list");
    assert_eq!(still_open.len(), 1, "only the junk letter");
    let closed = f
        .processor
        .get(Some("acme"), &second.id)
        .await
        .expect("get");
    assert_eq!(closed.changed_by.as_deref(), Some("ops"));
    assert!(
        f.processor
            .redrive(Some("acme"), &poison.id, "ops")
            .await
            .is_err()
    );
    assert!(
        f.processor.get(Some("other"), &poison.id).await.is_err(),
        "another tenant does not see it"
    );

    let discarded = f
        .processor
        .discard(None, &junk.id, "cli:ops", "garbage")
        .await
        .expect("discard");
    assert_eq!(discarded.status, Status::Discarded);
    assert_eq!(discarded.reason.as_deref(), Some("garbage"));
}

async fn commit(events: &MemoryEventStore, id: &str, after: u64, count: u64) -> CommitKey {
    let s = stream(id);
    events
        .append(
            &s.to_string(),
            eventfold::ExpectedVersion::assumed(after),
            sample_events(&s, after, count),
            None,
        )
        .await
        .expect("append");
    CommitKey {
        stream_id: s.to_string(),
        version: after + 1,
        count,
    }
}

#[tokio::test]
async fn a_failed_stream_batch_is_republished_and_only_what_still_fails_is_a_letter() {
    let mut f = fixture(Vec::new());
    let keys = vec![
        commit(&f.events, "up", 0, 2).await,
        commit(&f.events, "o-down", 0, 1).await,
        commit(&f.events, "up", 2, 1).await,
    ];
    f.processor = DlqProcessor::new(
        f.letters.clone(),
        f.events.clone(),
        f.topic.clone(),
        f.queues.clone(),
        Arc::new(Range(keys)),
        sources(),
    )
    .with_backoff(Backoff {
        attempts: 3,
        first: Duration::from_millis(1),
    })
    .with_stream_retry_receives(3);
    let description = json!({
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "DDBStreamBatchInfo": {"shardId": "s-1", "startSequenceNumber": "1",
            "endSequenceNumber": "3", "streamArn": "arn:aws:dynamodb:x", "batchSize": 3}
    })
    .to_string();
    f.topic.down.store(true, Ordering::SeqCst);
    let first = f
        .processor
        .process(batch(vec![message(
            FAILURES,
            "f-1",
            description.clone(),
            1,
            None,
        )]))
        .await;
    assert_eq!(
        first.response.batch_item_failures.len(),
        1,
        "retried while deliveries remain"
    );
    let [letter] = &first.recorded[..] else {
        panic!("one letter: {:?}", first.recorded);
    };
    assert_eq!(letter.consumer, STREAM_CONSUMER);
    assert_eq!(letter.stream_id.as_deref(), Some("acme/Order-o-down"));
    assert_eq!(
        (letter.first_version, letter.last_version),
        (Some(1), Some(1))
    );
    assert!(
        letter
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("retrying automatically")),
        "{letter:?}"
    );
    let published = f.topic.published.lock().expect("lock").clone();
    assert_eq!(
        published,
        ["acme/Order-up@1", "acme/Order-up@2", "acme/Order-up@3"],
        "the other commits went out in stream order"
    );

    // The topic is back: the next delivery publishes the rest and closes the letter.
    f.topic.down.store(false, Ordering::SeqCst);
    let second = f
        .processor
        .process(batch(vec![message(
            FAILURES,
            "f-1",
            description.clone(),
            2,
            None,
        )]))
        .await;
    assert!(second.response.batch_item_failures.is_empty());
    assert!(second.recorded.is_empty());
    let closed = f
        .processor
        .get(Some("acme"), &letter.id)
        .await
        .expect("get");
    assert_eq!(closed.status, Status::Redriven);
    assert_eq!(closed.changed_by.as_deref(), Some("dlq-processor"));
    let stats = f.processor.stats();
    assert_eq!(stats.commits_recovered.load(Ordering::Relaxed), 2 + 3);

    // Down for good: after the last delivery the letter stays open for an operator, whose
    // redrive re-reads the commit from the table.
    f.topic.down.store(true, Ordering::SeqCst);
    let last = f
        .processor
        .process(batch(vec![message(FAILURES, "f-2", description, 3, None)]))
        .await;
    assert!(
        last.response.batch_item_failures.is_empty(),
        "given up: acknowledged"
    );
    let open = f
        .processor
        .get(Some("acme"), &letter.id)
        .await
        .expect("get");
    assert_eq!(open.status, Status::Open);
    assert!(
        open.last_error
            .as_deref()
            .is_some_and(|e| e.contains("exhausted"))
    );
    assert!(
        f.processor.redrive(None, &letter.id, "ops").await.is_err(),
        "still down"
    );
    f.topic.down.store(false, Ordering::SeqCst);
    let r = f
        .processor
        .redrive(None, &letter.id, "ops")
        .await
        .expect("redrive");
    assert_eq!(r.redriven, vec![letter.id.clone()]);
    let published = f.topic.published.lock().expect("lock").clone();
    assert_eq!(
        published.last().map(String::as_str),
        Some("acme/Order-o-down@1")
    );
}

fn request(
    route: &str,
    path: &str,
    id: Option<&str>,
    tenant: &str,
    scope: &str,
    body: Option<&str>,
) -> lambda_http::Request {
    let mut v: Value = serde_json::from_str(include_str!("../events/http.json")).expect("sample");
    let method = route.split(' ').next().unwrap_or("GET");
    v["routeKey"] = json!(route);
    v["rawPath"] = json!(path);
    v["rawQueryString"] = json!("");
    v["queryStringParameters"] = json!({});
    v["requestContext"]["routeKey"] = json!(route);
    v["requestContext"]["http"]["method"] = json!(method);
    v["requestContext"]["http"]["path"] = json!(path);
    v["requestContext"]["authorizer"]["jwt"]["claims"] =
        json!({"sub": "ops-1", "tenant": tenant, "scope": scope});
    if let Some(id) = id {
        v["pathParameters"] = json!({"id": id});
    }
    if let Some(b) = body {
        v["body"] = json!(b);
    }
    lambda_http::request::from_str(&v.to_string()).expect("a request")
}

async fn call(f: &Fixture, req: lambda_http::Request) -> (u16, Value) {
    let resp = f.processor.handle_http(req).await;
    let status = resp.status().as_u16();
    let body = match resp.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, body)
}

#[tokio::test]
async fn the_api_needs_the_admin_scope_and_shows_a_tenant_only_its_own() {
    let f = fixture(Vec::new());
    let done = f
        .processor
        .process(batch(vec![message(
            PROJECTOR_DLQ,
            "m-9",
            notification("o-9", 1),
            5,
            Some("acme/Order-o-9"),
        )]))
        .await;
    let id = done.recorded[0].id.clone();
    let list = "GET /api/v1/events/dead-letters";
    let show = "GET /api/v1/events/dead-letters/{id}";
    let discard = "POST /api/v1/events/dead-letters/{id}/discard";
    let path = format!("/api/v1/events/dead-letters/{id}");

    let (status, body) = call(
        &f,
        request(
            list,
            "/api/v1/events/dead-letters",
            None,
            "acme",
            "events:read",
            None,
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "https://eventfold.dev/problems/forbidden");
    let (status, body) = call(
        &f,
        request(
            list,
            "/api/v1/events/dead-letters",
            None,
            "acme",
            "events:admin",
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["id"], id.as_str());
    let (status, body) = call(
        &f,
        request(
            list,
            "/api/v1/events/dead-letters",
            None,
            "globex",
            "events:admin",
            None,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!([]), "another tenant sees none");
    let (status, _) = call(
        &f,
        request(show, &path, Some(&id), "globex", "events:admin", None),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = call(
        &f,
        request(show, &path, Some(&id), "acme", "events:admin", None),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "open");
    let (status, body) = call(
        &f,
        request(show, "/x", Some("not-hex!"), "acme", "events:admin", None),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "https://eventfold.dev/problems/invalid-id");

    let before = f.letters.get(None, &id).await.expect("get");
    for (bad, slug) in [
        ("{", "malformed-json"),
        ("{}", "invalid-request"),
        (r#"{"reason":""}"#, "invalid-request"),
    ] {
        let (status, body) = call(
            &f,
            request(discard, &path, Some(&id), "acme", "events:admin", Some(bad)),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(
            body["type"],
            format!("https://eventfold.dev/problems/{slug}")
        );
    }
    let (status, _) = call(
        &f,
        request(
            discard,
            &path,
            Some(&id),
            "globex",
            "events:admin",
            Some(r#"{"reason":"x"}"#),
        ),
    )
    .await;
    assert_eq!(status, 404, "another tenant cannot discard it");
    assert_eq!(
        f.letters.get(None, &id).await.expect("get"),
        before,
        "unchanged"
    );
    let (status, body) = call(
        &f,
        request(
            discard,
            &path,
            Some(&id),
            "acme",
            "events:admin",
            Some(r#"{"reason":"known bad"}"#),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "discarded");
    assert_eq!(body["changed_by"], "ops-1");
    let (status, body) = call(
        &f,
        request(
            discard,
            &path,
            Some(&id),
            "acme",
            "events:admin",
            Some(r#"{"reason":"again"}"#),
        ),
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn every_recorded_letter_reaches_the_letter_hook_once_the_batch_is_done() {
    let f = fixture(Vec::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = seen.clone();
    let processor = f
        .processor
        .on_letter(move |l| hook.lock().expect("lock").push(dlq_processor::describe(l)));
    let done = processor
        .process(batch(vec![
            message(PROJECTOR_DLQ, "m-1", notification("o-1", 1), 6, None),
            message(PROJECTOR_DLQ, "m-x", "{not json".into(), 6, None),
        ]))
        .await;
    let described: Vec<String> = done.recorded.iter().map(dlq_processor::describe).collect();
    assert_eq!(described.len(), 2);
    assert_eq!(*seen.lock().expect("lock"), described);
}

/// `GET /dead-letters` for `acme` with `query` as its parameters.
fn list_request(query: &[(&str, &str)]) -> lambda_http::Request {
    let route = "GET /api/v1/events/dead-letters";
    let path = "/api/v1/events/dead-letters";
    let mut v: Value = serde_json::from_str(include_str!("../events/http.json")).expect("sample");
    let raw: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let params: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    v["routeKey"] = json!(route);
    v["rawPath"] = json!(path);
    v["rawQueryString"] = json!(raw.join("&"));
    v["queryStringParameters"] = Value::Object(params);
    v["requestContext"]["routeKey"] = json!(route);
    v["requestContext"]["http"]["method"] = json!("GET");
    v["requestContext"]["http"]["path"] = json!(path);
    v["requestContext"]["authorizer"]["jwt"]["claims"] =
        json!({"sub": "ops-1", "tenant": "acme", "scope": "events:admin"});
    lambda_http::request::from_str(&v.to_string()).expect("a request")
}

#[tokio::test]
async fn the_letter_list_pages_by_cursor_and_stops_at_its_byte_budget() {
    // 12 letters whose messages carry 2,000 quotes (escaped twice in a letter's body, about
    // 16 KB each on the wire). `one` is measured on the list read at once.
    let letters = || async {
        let f = fixture(Vec::new());
        for i in 0..12 {
            let mut e = sample_events(&stream(&format!("o-{i}")), 0, 1).remove(0);
            e.data = json!({"q": "\"".repeat(2000)});
            let body = serde_json::to_string(&Notification::of(&e).expect("valid")).expect("json");
            let group = format!("acme/Order-o-{i}");
            let done = f
                .processor
                .process(batch(vec![message(
                    PROJECTOR_DLQ,
                    &format!("m-{i}"),
                    body,
                    5,
                    Some(&group),
                )]))
                .await;
            assert_eq!(done.recorded.len(), 1);
        }
        let (status, whole) = call(&f, list_request(&[("limit", "100")])).await;
        assert_eq!(status, 200, "{whole}");
        let all = whole["items"].as_array().expect("items").clone();
        assert_eq!(all.len(), 12);
        (f, all)
    };
    let (_, all) = letters().await;
    let one = all
        .iter()
        .map(|l| eventfold::wire_len(l) + 1)
        .max()
        .expect("letters");
    assert!(one > 16_000, "{one}");
    for (budget, expected_pages) in [(one * 5 / 2, 6), (1, 12), (usize::MAX, 3)] {
        let (mut f, all) = letters().await;
        f.processor = f.processor.with_page_bytes(budget);
        let mut ids = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "5")];
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let (status, body) = call(&f, list_request(&query)).await;
            assert_eq!(status, 200, "{body}");
            let items = body["items"].as_array().expect("items").clone();
            let used: usize = items.iter().map(|i| eventfold::wire_len(i) + 1).sum();
            assert!(!items.is_empty() && items.len() <= 5, "{body}");
            assert!(items.len() == 1 || used <= budget, "{used} bytes");
            ids.extend(items.iter().map(|i| i["id"].clone()));
            pages += 1;
            match body["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let all: Vec<Value> = all.iter().map(|i| i["id"].clone()).collect();
        assert_eq!(
            ids, all,
            "budget {budget}: every letter once, in the list's order"
        );
        // Two letters a page at 2.5 letters' budget, one at 1 byte, the count (5, 5, 2) else.
        assert_eq!(pages, expected_pages, "budget {budget}");
    }
    let f = fixture(Vec::new());
    for bad in ["not-ours", "12.xyz", ".abc", "1."] {
        let (status, body) = call(&f, list_request(&[("cursor", bad)])).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["type"],
            "https://eventfold.dev/problems/invalid-cursor"
        );
    }
}

/// SNS down for the whole invocation, a backoff that would take ~40 s per record, three
/// failed stream batches: the processor answers before the context's deadline, every record
/// as a batch item failure, each letter saying the deadline cut it short.
#[tokio::test]
async fn republishing_stops_before_the_invocations_deadline_and_reports_what_did_not_go_out() {
    let f = fixture(Vec::new());
    let keys = vec![commit(&f.events, "o-down", 0, 1).await];
    let processor = DlqProcessor::new(
        f.letters.clone(),
        f.events.clone(),
        f.topic.clone(),
        f.queues.clone(),
        Arc::new(Range(keys)),
        sources(),
    )
    .with_backoff(Backoff {
        attempts: 30,
        first: Duration::from_millis(200),
    })
    // The last delivery: without the deadline it would not be retried at all.
    .with_stream_retry_receives(1);
    f.topic.down.store(true, Ordering::SeqCst);
    let description = json!({
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "DDBStreamBatchInfo": {"shardId": "s-1", "startSequenceNumber": "1",
            "endSequenceNumber": "3", "streamArn": "arn:aws:dynamodb:x", "batchSize": 3}
    })
    .to_string();
    let records: Vec<SqsMessage> = (0..3)
        .map(|i| message(FAILURES, &format!("f-{i}"), description.clone(), 1, None))
        .collect();
    let payload = serde_json::to_value(batch(records)).expect("json");
    let mut context = lambda_runtime::Context::default();
    let timeout = Duration::from_secs(3);
    context.deadline = (Utc::now() + timeout).timestamp_millis() as u64;
    let started = std::time::Instant::now();
    let answer = processor.handle(payload, context).await.expect("answer");
    let took = started.elapsed();
    assert!(
        took <= timeout - dlq_processor::DEADLINE_MARGIN + Duration::from_millis(300),
        "answered after {took:?}, past the deadline less its margin"
    );
    let failed: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    assert_eq!(failed, ["f-0", "f-1", "f-2"], "{answer}");
    let letters = f
        .letters
        .list(Some("acme"), &Filter::default(), 10)
        .await
        .expect("list");
    let [letter] = &letters[..] else {
        panic!("one letter for the one commit: {letters:?}");
    };
    let error = letter.last_error.as_deref().unwrap_or("");
    assert!(
        error.contains("before the invocation's deadline") && error.contains("InternalError"),
        "{error}"
    );
    // Without a deadline (outside Lambda) the backoff runs its course.
    assert!(dlq_processor::answer_by(&lambda_runtime::Context::default()).is_none());
}
