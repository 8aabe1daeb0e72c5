//! TTLs of the items only useful for a while, on DynamoDB (moto), with the tables as the
//! template provisions them: a saga instance's deadline entry once it no longer waits, a
//! redriven or discarded dead letter, a failure note. What the items carry is what DynamoDB's
//! TTL acts on (`expires_at_epoch`, the tables' TTL attribute).

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use eventfold_aws::dead_letters::{NOTE_TTL_DAYS, RESOLVED_RETENTION_DAYS};
use eventfold_aws::read_models::{EXPIRES_AT_EPOCH, IDLE_ENTRY_RETENTION_DAYS};
use eventfold_aws::{DynamoDeadLetterStore, DynamoReadModelStore};
use eventfold_consumers::deadletter::{Change, DeadLetterStore, FailureNote, Status};
use eventfold_consumers::saga::{Deadline, DeadlineIndex};
use std::collections::HashMap;
use tests::{quiet_stack, table, unique_tenant};

type Item = HashMap<String, AttributeValue>;

async fn item(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str, sk: &str) -> Item {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .expect("an item")
}

fn expires(item: &Item) -> Option<i64> {
    match item.get(EXPIRES_AT_EPOCH) {
        Some(AttributeValue::N(n)) => Some(n.parse().expect("a number")),
        _ => None,
    }
}

async fn ttl_attribute(client: &aws_sdk_dynamodb::Client, table: &str) -> Option<String> {
    let out = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .expect("describe");
    out.time_to_live_description.and_then(|d| d.attribute_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_entry_expires_once_its_instance_no_longer_waits() {
    let stack = quiet_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let models = table(&stack, "ReadModelsTable");
    assert_eq!(
        ttl_attribute(&client, &models).await.as_deref(),
        Some(EXPIRES_AT_EPOCH)
    );
    let store = DynamoReadModelStore::from_sdk(&stack.sdk, &models);
    let saga_stream = format!("{}/OrderFulfilment-o-1", unique_tenant("ttl"));
    let deadline = Deadline {
        due_at: "2031-01-01T00:00:00Z".parse().expect("a time"),
        correlation_id: "c-1".into(),
    };
    store
        .set_deadline("OrderFulfilment", &saga_stream, 3, Some(&deadline))
        .await
        .expect("set");
    let pk = "_saga#OrderFulfilment";
    let waiting = item(&client, &models, pk, &saga_stream).await;
    assert_eq!(expires(&waiting), None, "a waiting entry never expires");
    let before = Utc::now().timestamp();
    store
        .set_deadline("OrderFulfilment", &saga_stream, 5, None)
        .await
        .expect("cleared");
    let idle = item(&client, &models, pk, &saga_stream).await;
    let after = Utc::now().timestamp();
    let ttl = expires(&idle).expect("an idle entry expires");
    let retention = IDLE_ENTRY_RETENTION_DAYS * 86_400;
    assert!(
        (before + retention..=after + retention).contains(&ttl),
        "{ttl}"
    );
    assert!(!idle.contains_key("gsi1pk"), "out of the due index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolved_letters_and_failure_notes_expire_open_letters_do_not() {
    let stack = quiet_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let letters_table = table(&stack, "DeadLettersTable");
    assert_eq!(
        ttl_attribute(&client, &letters_table).await.as_deref(),
        Some(EXPIRES_AT_EPOCH)
    );
    let letters = DynamoDeadLetterStore::from_sdk(&stack.sdk, &letters_table);
    let tenant = unique_tenant("ttl");
    let letter = eventfold_testkit::dead_letters::letter(&tenant, "projector", "o-1", 2, 0);
    let sk = format!("dl#{}", letter.id);
    letters.record(letter.clone()).await.expect("recorded");
    let open = item(&client, &letters_table, &tenant, &sk).await;
    assert_eq!(expires(&open), None, "an open letter waits for an operator");
    let at: DateTime<Utc> = "2026-05-01T12:00:00Z".parse().expect("a time");
    let change = Change {
        to: Status::Discarded,
        by: "cli:ops".into(),
        reason: Some("replayed by hand".into()),
        at,
    };
    letters
        .change(&tenant, &letter.id, &change)
        .await
        .expect("discarded");
    let resolved = item(&client, &letters_table, &tenant, &sk).await;
    assert_eq!(
        expires(&resolved),
        Some(at.timestamp() + RESOLVED_RETENTION_DAYS * 86_400)
    );
    let note = FailureNote {
        consumer: "projector".into(),
        message_id: format!("m-{tenant}"),
        tenant: Some(tenant.clone()),
        stream_id: None,
        version: None,
        error: "boom".into(),
        at,
    };
    letters.note(&note).await.expect("noted");
    let noted = item(&client, &letters_table, "_note#projector", &note.message_id).await;
    assert_eq!(
        expires(&noted),
        Some(at.timestamp() + NOTE_TTL_DAYS * 86_400)
    );
}
