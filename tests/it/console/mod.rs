//! The operator console against the local stack: its screens over HTTP (data and HTML), the
//! read-only mode's refusals, and a real headless Chromium (chromium + chromedriver from
//! `scripts/setup`; missing ones fail the test, never skip it) driving it with axe-core on
//! every screen.

mod browser;
mod browser_projections;
mod first_render;
mod projections;

use eventfold::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use eventfold_aws::DynamoEventStore;
use eventfold_local::LocalStack;
use eventfold_local::esm::EsmOptions;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tests::{events_table, rw_token, stack_with, unique_tenant};

const COMMANDS: &str = "/api/v1/events/commands";

/// Failed messages come back after a second; schedules tick fast.
fn fast() -> EsmOptions {
    EsmOptions {
        idle_poll: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        sqs_visibility_timeout: Some(Duration::from_secs(1)),
        schedule_period: Some(Duration::from_millis(500)),
        report_every: None,
        ..EsmOptions::default()
    }
}

async fn send(http: &Http, token: &str, aggregate: &str, id: &str, kind: &str, data: Value) {
    let body = json!({"aggregate_type": aggregate, "aggregate_id": id, "type": kind, "data": data});
    let r = http.post(COMMANDS, Some(token), &body).await.expect("post");
    assert!(
        r.status == 200 || r.status == 201,
        "{body}: {} {}",
        r.status,
        r.json
    );
}

/// Stock for `sku`, then order `id` of 2 units, placed and paid by card.
async fn place_order(http: &Http, token: &str, id: &str) {
    send(
        http,
        token,
        "Inventory",
        "book",
        "ReceiveStock",
        json!({"quantity": 10}),
    )
    .await;
    send(
        http,
        token,
        "Order",
        id,
        "CreateOrder",
        json!({"customer_id": "c-1"}),
    )
    .await;
    let line = json!({"sku": "book", "quantity": 2, "unit_price": 1250});
    send(http, token, "Order", id, "AddItem", line).await;
    send(
        http,
        token,
        "Order",
        id,
        "PlaceOrder",
        json!({"payment_method": "card"}),
    )
    .await;
}

/// A commit the projector cannot apply (a `StockReceived` whose quantity is not a number),
/// written straight to the events table as a buggy writer would.
async fn poison(stack: &LocalStack, tenant: &str) -> String {
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(stack));
    let stream = StreamId::new(tenant, "Inventory", "poisoned").expect("valid");
    let event = NewEvent {
        event_type: "StockReceived".into(),
        schema_version: 1,
        data: json!({"quantity": "lots"}),
    }
    .into_envelope(
        &stream,
        1,
        chrono::Utc::now(),
        Metadata::root(tenant, "buggy-writer", "poison-1"),
    );
    store
        .append(&stream.to_string(), ExpectedVersion::NEW, vec![event], None)
        .await
        .expect("appended");
    stream.to_string()
}

/// A console on `stack` (its own port), writes allowed or not, stalls after 3 s.
async fn console(stack: &LocalStack, allow_writes: bool) -> console::Running {
    let options = console::Options {
        allow_writes,
        stall: Duration::from_secs(3),
        refresh: Duration::from_millis(500),
        operator: "console:it".into(),
        grace: Duration::from_secs(1),
        keys: None,
    };
    let c = cli::console::build(&stack.sdk, &stack.template, options).expect("console");
    console::start(c, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serves")
}

/// Polls `path` of `http` until its body passes `check` (at most `limit`).
async fn until_page(
    http: &Http,
    path: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let r = http.get(path, None).await.expect("get");
        let body = String::from_utf8_lossy(&r.body).into_owned();
        if r.status == 200 && check(&body) {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "{path} never passed; last {}: {}",
            r.status,
            &body[..body.len().min(3000)]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A form POST to the console.
async fn post_form(http: &Http, path: &str, form: &str) -> eventfold_local::httpc::Reply {
    http.send_with(
        "POST",
        path,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes().to_vec()),
    )
    .await
    .expect("post")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_an_orders_path_and_refuses_writes_when_read_only() {
    let stack = stack_with(fast()).await;
    let tenant = unique_tenant("console");
    let api = Http::new(&stack.api_url());
    let token = rw_token(&tenant);
    place_order(&api, &token, "o-1").await;
    let rw = console(&stack, true).await;
    let ro = console(&stack, false).await;
    let rw_http = Http::new(&rw.url());
    let ro_http = Http::new(&ro.url());

    // Trace: the order, its saga, the stock and payment it touched, the views applied.
    let order = format!("{tenant}/Order-o-1");
    let saga = format!("{tenant}/OrderFulfilment-o-1");
    let trace = until_page(&ro_http, "/trace?q=o-1", Duration::from_secs(90), |b| {
        b.contains(&format!("data-stream=\"{saga}\""))
            && b.contains("OrderConfirmed")
            && !b.contains("data-applied=\"false\"")
    })
    .await;
    for stream in [&order, &saga, &format!("{tenant}/Inventory-book")] {
        assert!(
            trace.contains(&format!("data-stream=\"{stream}\"")),
            "{stream} missing"
        );
    }
    assert!(trace.contains("ms after its cause"));
    assert!(trace.contains("data-view=\"order-summary\" data-applied=\"true\""));

    // Overview: every consumer caught up.
    let overview = until_page(&ro_http, "/", Duration::from_secs(30), |b| {
        b.contains("Every consumer is keeping up.")
    })
    .await;
    assert!(overview.contains("data-consumer=\"order-summary\""));
    // The stream publisher's lag is the IteratorAge its mapping reported to CloudWatch for
    // the order's batches (the local poller reports it as Lambda does), read back.
    let publisher = overview
        .split("data-consumer=\"stream-publisher\"")
        .nth(1)
        .and_then(|row| row.split("</tr>").next())
        .expect("a stream-publisher row");
    assert!(publisher.contains("iterator age "), "{publisher}");

    // Time travel: version 1 is the created order, without the line added later.
    let path = format!("/streams/view?id={}&v=1", console_q(&order));
    let at1 = until_page(&ro_http, &path, Duration::from_secs(5), |_| true).await;
    let head = until_page(
        &ro_http,
        &format!("/streams/view?id={}", console_q(&order)),
        Duration::from_secs(5),
        |_| true,
    )
    .await;
    let state = |page: &str| {
        page.split("data-testid=\"state\"")
            .nth(1)
            .map(|s| s[..s.find("</pre>").unwrap_or(0)].to_owned())
            .unwrap_or_default()
    };
    assert!(
        state(&at1).contains("c-1") && !state(&at1).contains("book"),
        "{}",
        state(&at1)
    );
    assert!(state(&head).contains("book"), "{}", state(&head));

    // Saga: its log and the commands it sent (stock reserved, payment, order confirmed).
    let saga_page = until_page(
        &ro_http,
        &format!("/sagas/view?id={}", console_q(&saga)),
        Duration::from_secs(5),
        |_| true,
    )
    .await;
    assert!(
        saga_page.contains(&format!("{tenant}/Inventory-book")),
        "commands sent"
    );
    assert!(saga_page.contains("StockReserved"));

    // Read-only: no write controls, and the endpoints answer 403 problem+json.
    let letters = until_page(&ro_http, "/dead-letters", Duration::from_secs(5), |_| true).await;
    assert!(!letters.contains("Discard selected") && !letters.contains("name=\"id\""));
    let refused = post_form(&ro_http, "/dead-letters/discard", "id=ab&reason=x").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.content_type, "application/problem+json");
    assert_eq!(
        refused.json["type"],
        "https://eventfold.dev/problems/writes-disabled"
    );
    // Writable, but without the page's token: a forged form is refused too.
    let forged = post_form(&rw_http, "/dead-letters/redrive", "id=ab").await;
    assert_eq!(forged.status, 403);
    assert_eq!(forged.json["type"], "https://eventfold.dev/problems/csrf");
    let rw_page = until_page(&rw_http, "/dead-letters", Duration::from_secs(5), |_| true).await;
    let csrf = rw_page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the form carries the token");
    let empty = post_form(
        &rw_http,
        "/dead-letters/discard",
        &format!("csrf={csrf}&reason=x"),
    )
    .await;
    assert_eq!(empty.status, 400);
    assert_eq!(
        empty.json["type"],
        "https://eventfold.dev/problems/invalid-request"
    );
    let topics = until_page(&ro_http, "/topics", Duration::from_secs(5), |_| true).await;
    assert!(topics.contains("Topics and consumer groups"));

    rw.stop();
    ro.stop();
    stack.stop().await;
}

/// `value` for a query string.
fn console_q(value: &str) -> String {
    value.replace('/', "%2F")
}
