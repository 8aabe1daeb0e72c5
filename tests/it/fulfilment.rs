//! Order fulfilment end to end through HTTP on the local stack: the real stream publisher,
//! SNS filter policy, `saga.fifo`, the saga function with the shop's `OrderFulfilment`, the
//! schedule for deadlines (`PaymentTimeoutSeconds` overridden to 6 s: every order's
//! reservations must be answered within it, through the fan-out and the IAM proxy, on a
//! loaded 2-core machine; 2 s was missed under load) and the projector.
//! Five orders: confirmed by card, cancelled for short stock, declined, timed out waiting
//! for a bank transfer, and paid by bank transfer in time.

use eventfold_local::esm::EsmOptions;
use eventfold_local::httpc::Http;
use eventfold_local::{JwtConfig, LocalOptions, LocalStack};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tests::{assert_problem, endpoint, root, rw_token, unique_tenant};

const COMMANDS: &str = "/api/v1/events/commands";

async fn stack() -> LocalStack {
    let id = uuid::Uuid::now_v7().simple().to_string();
    cli::local::start_with(
        LocalOptions {
            root: root(),
            api_addr: "127.0.0.1:0".parse().expect("valid address"),
            emulator_port: 0,
            endpoint: Some(endpoint()),
            stack: format!("{}-{}", tests::STACK, &id[id.len() - 10..]),
            auth: JwtConfig::dev(),
            parameter_overrides: vec![("PaymentTimeoutSeconds".into(), "6".into())],
            iam: true,
            iam_port: 0,
        },
        EsmOptions {
            idle_poll: Duration::from_millis(50),
            retry_backoff: Duration::from_millis(20),
            sqs_visibility_timeout: Some(Duration::from_secs(2)),
            schedule_period: Some(Duration::from_millis(500)),
            report_every: None,
            ..EsmOptions::default()
        },
    )
    .await
    .expect("local stack starts")
}

fn command(aggregate: &str, id: &str, kind: &str, data: Value) -> Value {
    json!({"aggregate_type": aggregate, "aggregate_id": id, "type": kind, "data": data})
}

async fn send(http: &Http, token: &str, body: Value) {
    let r = http.post(COMMANDS, Some(token), &body).await.expect("post");
    assert!(
        r.status == 200 || r.status == 201,
        "{body}: {} {}",
        r.status,
        r.json
    );
}

/// Creates order `id` with `lines` (sku, quantity, unit price) and places it.
async fn place(http: &Http, token: &str, id: &str, lines: &[(&str, i64, i64)], method: &str) {
    send(
        http,
        token,
        command("Order", id, "CreateOrder", json!({"customer_id": "c-1"})),
    )
    .await;
    for (sku, quantity, unit_price) in lines {
        let data = json!({"sku": sku, "quantity": quantity, "unit_price": unit_price});
        send(http, token, command("Order", id, "AddItem", data)).await;
    }
    let data = json!({"payment_method": method});
    send(http, token, command("Order", id, "PlaceOrder", data)).await;
}

/// Polls `path` until `check` accepts the JSON, for at most a minute.
async fn eventually(http: &Http, token: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let r = http.get(path, Some(token)).await.expect("get");
        if r.status == 200 && check(&r.json) {
            return r.json;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{path} did not converge; last: {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn state(http: &Http, token: &str, aggregate: &str, id: &str) -> Value {
    let r = http
        .get(
            &format!("/api/v1/events/aggregates/{aggregate}/{id}"),
            Some(token),
        )
        .await
        .expect("get");
    assert_eq!(r.status, 200, "{aggregate}/{id}: {}", r.json);
    r.json["state"].clone()
}

/// The saga's outcome once it has one.
async fn outcome(http: &Http, token: &str, id: &str) -> String {
    let path = format!("/api/v1/events/aggregates/OrderFulfilment/{id}");
    let done = eventually(http, token, &path, |j| j["state"]["outcome"].is_string()).await;
    done["state"]["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The saga log: its event types, oldest first.
async fn log(http: &Http, token: &str, id: &str) -> Vec<String> {
    tests::event_types(http, token, "OrderFulfilment", id).await
}

/// Position of the first `kind` in `log` (panics naming the log when absent).
fn at(log: &[String], kind: &str) -> usize {
    log.iter()
        .position(|k| k == kind)
        .unwrap_or_else(|| panic!("{kind} missing from the saga log {log:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_confirmed_or_compensated_by_the_saga() {
    let stack = stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("saga");
    let tok = rw_token(&tenant);
    for (sku, quantity) in [("book", 10), ("pen", 1)] {
        send(
            &http,
            &tok,
            command(
                "Inventory",
                sku,
                "ReceiveStock",
                json!({"quantity": quantity}),
            ),
        )
        .await;
    }

    place(&http, &tok, "o-ok", &[("book", 2, 1250)], "card").await;
    place(
        &http,
        &tok,
        "o-short",
        &[("book", 1, 1250), ("pen", 5, 100)],
        "card",
    )
    .await;
    place(
        &http,
        &tok,
        "o-declined",
        &[("book", 1, 1250)],
        "card_declined",
    )
    .await;
    place(&http, &tok, "o-late", &[("book", 1, 1250)], "bank_transfer").await;
    place(&http, &tok, "o-bank", &[("book", 1, 1250)], "bank_transfer").await;
    // The bank pays o-bank in time (once the saga asked for the payment).
    let payment = "/api/v1/events/aggregates/Payment/o-bank";
    eventually(&http, &tok, payment, |j| j["state"]["status"] == "Pending").await;
    let wrong = http
        .post(
            COMMANDS,
            Some(&tok),
            &command("Payment", "o-bank", "ReceivePayment", json!({"amount": 1})),
        )
        .await
        .expect("post");
    assert_problem(&wrong, 422, "rejected");
    send(
        &http,
        &tok,
        command(
            "Payment",
            "o-bank",
            "ReceivePayment",
            json!({"amount": 1250}),
        ),
    )
    .await;

    // Confirmed by card.
    assert_eq!(outcome(&http, &tok, "o-ok").await, "Confirmed");
    assert_eq!(
        state(&http, &tok, "Order", "o-ok").await["status"],
        "Confirmed"
    );
    assert_eq!(
        state(&http, &tok, "Payment", "o-ok").await["status"],
        "Authorized"
    );
    let steps = log(&http, &tok, "o-ok").await;
    assert!(
        at(&steps, "FulfilmentStarted") < at(&steps, "PaymentRequested"),
        "{steps:?}"
    );
    assert!(
        at(&steps, "PaymentRequested") < at(&steps, "ConfirmationRequested"),
        "{steps:?}"
    );
    assert_eq!(
        steps.last().map(String::as_str),
        Some("FulfilmentCompleted")
    );

    // Short stock: the reserved line is released, then the order is cancelled.
    assert_eq!(outcome(&http, &tok, "o-short").await, "Cancelled");
    assert_eq!(
        state(&http, &tok, "Order", "o-short").await["status"],
        "Cancelled"
    );
    let steps = log(&http, &tok, "o-short").await;
    assert!(
        at(&steps, "ReservationRefused") < at(&steps, "ReleaseRequested"),
        "{steps:?}"
    );
    assert!(
        at(&steps, "ReleaseRequested") < at(&steps, "CancellationRequested"),
        "{steps:?}"
    );
    assert!(
        !steps.contains(&"PaymentRequested".to_owned()),
        "never paid: {steps:?}"
    );

    // Declined: every line released, then cancelled.
    assert_eq!(outcome(&http, &tok, "o-declined").await, "Cancelled");
    assert_eq!(
        state(&http, &tok, "Payment", "o-declined").await["status"],
        "Declined"
    );
    let steps = log(&http, &tok, "o-declined").await;
    assert!(
        at(&steps, "PaymentRequested") < at(&steps, "ReleaseRequested"),
        "{steps:?}"
    );
    assert!(
        at(&steps, "ReleaseRequested") < at(&steps, "CancellationRequested"),
        "{steps:?}"
    );

    // The bank transfer that never came: voided, released, cancelled; a late payment is 422.
    assert_eq!(outcome(&http, &tok, "o-late").await, "Cancelled");
    let order = state(&http, &tok, "Order", "o-late").await;
    assert_eq!(order["status"], "Cancelled");
    assert_eq!(order["cancel_reason"], "payment timed out");
    assert_eq!(
        state(&http, &tok, "Payment", "o-late").await["status"],
        "Voided"
    );
    let steps = log(&http, &tok, "o-late").await;
    assert!(
        at(&steps, "FulfilmentTimedOut") < at(&steps, "PaymentUndoRequested"),
        "{steps:?}"
    );
    assert!(
        at(&steps, "PaymentUndoRequested") < at(&steps, "ReleaseRequested"),
        "{steps:?}"
    );
    assert!(
        at(&steps, "ReleaseRequested") < at(&steps, "CancellationRequested"),
        "{steps:?}"
    );
    let late = http
        .post(
            COMMANDS,
            Some(&tok),
            &command(
                "Payment",
                "o-late",
                "ReceivePayment",
                json!({"amount": 1250}),
            ),
        )
        .await
        .expect("post");
    assert_problem(&late, 422, "rejected");
    assert_eq!(late.json["rule"], "payment-voided");

    // Paid by bank transfer in time.
    assert_eq!(outcome(&http, &tok, "o-bank").await, "Confirmed");
    assert_eq!(
        state(&http, &tok, "Payment", "o-bank").await["status"],
        "Received"
    );
    assert_eq!(
        state(&http, &tok, "Order", "o-bank").await["status"],
        "Confirmed"
    );

    // An order placed before PlaceOrder took a payment method (an OrderPlaced of schema 1 in
    // the table) is read through the upcasters everywhere and goes through with `card`.
    let store = eventfold_aws::DynamoEventStore::from_sdk(&stack.sdk, tests::events_table(&stack));
    let old = eventfold::StreamId::new(&tenant, "Order", "o-v1").expect("valid");
    let now = chrono::Utc::now();
    let legacy = [
        ("OrderCreated", json!({"customer_id": "c-1"})),
        (
            "ItemAdded",
            json!({"sku": "book", "quantity": 1, "unit_price": 1250}),
        ),
        ("OrderPlaced", json!({"total": 1250})),
    ];
    for (i, (kind, data)) in legacy.into_iter().enumerate() {
        let event = eventfold::NewEvent {
            event_type: kind.into(),
            schema_version: 1,
            data,
        }
        .into_envelope(
            &old,
            i as u64 + 1,
            now,
            tests::ctx(&tenant, &format!("v1-{i}")),
        );
        eventfold::EventStore::append(
            &store,
            &old.to_string(),
            eventfold::ExpectedVersion::assumed(i as u64),
            vec![event],
            None,
        )
        .await
        .expect("legacy append");
    }
    assert_eq!(outcome(&http, &tok, "o-v1").await, "Confirmed");
    assert_eq!(
        state(&http, &tok, "Order", "o-v1").await["payment_method"],
        "card"
    );
    assert_eq!(
        state(&http, &tok, "Payment", "o-v1").await["method"],
        "card"
    );

    // Nothing is left reserved by the compensated orders: book holds o-ok's 2, o-bank's 1
    // and o-v1's 1.
    let book = eventually(
        &http,
        &tok,
        "/api/v1/events/queries/stock-levels?sku=book",
        |j| j["item"]["reserved"] == 4,
    )
    .await;
    assert_eq!(book["item"]["on_hand"], 10);
    let pen = eventually(
        &http,
        &tok,
        "/api/v1/events/queries/stock-levels?sku=pen",
        |j| j["item"]["reserved"] == 0,
    )
    .await;
    assert_eq!(pen["item"]["available"], 1);
    // Each saga's whole story shares one correlation id: the PlaceOrder request's.
    let placed = http
        .get("/api/v1/events/aggregates/Order/o-ok/events", Some(&tok))
        .await
        .expect("get");
    let correlation = placed.json["events"][2]["metadata"]["correlation_id"].clone();
    let saga_events = http
        .get(
            "/api/v1/events/aggregates/OrderFulfilment/o-ok/events",
            Some(&tok),
        )
        .await
        .expect("get");
    for e in saga_events.json["events"].as_array().expect("events") {
        assert_eq!(e["metadata"]["correlation_id"], correlation, "{e}");
    }
    // Every function of the order's path ran within its role.
    tests::assert_no_denials(&stack);
}
