//! The saga's dead-letter path: a message the saga refuses every time goes through
//! `saga-dlq.fifo` to the DLQ processor, becomes a letter of consumer `saga` with the saga's
//! own error, holds up only its order (which goes on once the message is dead-lettered), and
//! redriven it is refused again (a new letter) with nothing of the order done twice.

use super::*;

const COMMANDS: &str = "/api/v1/events/commands";

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

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_saga_refuses_is_a_saga_dead_letter_and_redriven_is_refused_again_applying_nothing()
 {
    let stack = stack_with(fast()).await;
    let tenant = unique_tenant("sagadlq");
    let http = Http::new(&stack.api_url());
    let tok = token(&tenant, "events:read events:write");
    send(
        &http,
        &tok,
        "Inventory",
        "book",
        "ReceiveStock",
        json!({"quantity": 10}),
    )
    .await;
    send(
        &http,
        &tok,
        "Order",
        "o-1",
        "CreateOrder",
        json!({"customer_id": "c-1"}),
    )
    .await;
    let line = json!({"sku": "book", "quantity": 2, "unit_price": 1250});
    send(&http, &tok, "Order", "o-1", "AddItem", line).await;

    // A notification of the order's third commit (the placing) that carries a different
    // version: the saga refuses it on every receive. It is first in the order's FIFO group.
    let order = StreamId::new(&tenant, "Order", "o-1").expect("valid");
    let mut placed = received(&order, 3, 0);
    placed.event_type = "OrderPlaced".into();
    let mut bad = Notification::of(&placed).expect("valid");
    if let Some(e) = bad.event.as_mut() {
        e.version = 7;
    }
    aws_sdk_sqs::Client::new(&stack.sdk)
        .send_message()
        .queue_url(stack.queue_url("SagaQueue"))
        .message_body(serde_json::to_string(&bad).expect("json"))
        .message_group_id(order.to_string())
        .message_deduplication_id("saga-poison-1")
        .send()
        .await
        .expect("send");
    send(
        &http,
        &tok,
        "Order",
        "o-1",
        "PlaceOrder",
        json!({"payment_method": "card"}),
    )
    .await;

    let letters = letters(&stack);
    let dead = first_letter(
        &letters,
        &tenant,
        Duration::from_secs(90),
        "the refused saga message",
    )
    .await;
    assert_eq!(dead.consumer, "saga");
    assert_eq!(dead.status, Status::Open);
    assert_eq!(dead.stream_id.as_deref(), Some(order.to_string().as_str()));
    assert_eq!(dead.first_version, Some(3));
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not match")),
        "the saga's own error, from its failure note: {dead:?}"
    );

    // Behind it in the group, the real notification of the placing goes through: the saga
    // reserves, authorizes and confirms.
    let saga = "/api/v1/events/aggregates/OrderFulfilment/o-1";
    wait_for(Duration::from_secs(60), "the order confirmed", || {
        let (http, tok) = (&http, &tok);
        async move {
            let r = http.get(saga, Some(tok)).await.expect("get");
            r.status == 200 && r.json["state"]["outcome"] == "Confirmed"
        }
    })
    .await;
    let effects = |inventory: Vec<String>, order: Vec<String>| {
        (
            count(&inventory, "StockReserved"),
            count(&order, "OrderConfirmed"),
        )
    };
    let before = effects(
        tests::event_types(&http, &tok, "Inventory", "book").await,
        tests::event_types(&http, &tok, "Order", "o-1").await,
    );
    assert_eq!(before, (1, 1), "reserved once, confirmed once");

    // The operator redrives the letter before anything is fixed: the processor sends the
    // same message back to the saga queue; the saga refuses it again (the message itself is
    // bad), so it comes back as a new letter, and nothing of the order happens twice. A bad
    // message is the operator's to discard.
    let processor = cli::dlq::processor(&stack.sdk, &stack.template).expect("processor");
    let redriven = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::Redrive {
            id: Some(dead.id.clone()),
            all: false,
            consumer: None,
        },
    )
    .await
    .expect("redrive");
    assert_eq!(
        redriven,
        [format!("sent {0}; redriven: {0}", dead.id)],
        "the one letter, sent back"
    );
    assert_eq!(
        letters
            .get(None, &dead.id)
            .await
            .expect("get")
            .map(|l| l.status),
        Some(Status::Redriven)
    );
    let open = Filter {
        consumer: Some("saga".into()),
        status: Some(Status::Open),
        stream_id: Some(order.to_string()),
    };
    let again = first_letter_of(
        &letters,
        &tenant,
        &open,
        Duration::from_secs(60),
        "the redriven message, refused again",
    )
    .await;
    assert_ne!(again.id, dead.id, "a new message, a new letter");
    assert_eq!(
        again.last_error, dead.last_error,
        "refused for the same reason"
    );
    let after = effects(
        tests::event_types(&http, &tok, "Inventory", "book").await,
        tests::event_types(&http, &tok, "Order", "o-1").await,
    );
    assert_eq!(after, before, "the redriven message applied nothing");
    let discarded = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::Discard {
            id: again.id.clone(),
            reason: "a hand-made bad notification".into(),
        },
    )
    .await
    .expect("discard");
    assert!(discarded[0].starts_with("discarded"), "{discarded:?}");
    assert!(
        letters
            .list(Some(&tenant), &open, 10)
            .await
            .expect("list")
            .is_empty(),
        "no open saga letter is left"
    );
}
