//! `customers`: the one view that copies personal data, its scrub on `SubjectForgotten`,
//! and the join through which order documents show a customer's name and email.

use chrono::{TimeZone, Utc};
use eventfold::{DomainEvent, EventEnvelope, Metadata, Personal, StreamId};
use eventfold_consumers::projection::StreamView;
use serde_json::{Value, json};
use shop::CustomerId;
use shop::customer::CustomerEvent;
use shop::views::{CUSTOMER_JOIN, Customers};

fn envelope(version: u64, event: &CustomerEvent) -> EventEnvelope {
    let stream = StreamId::new("acme", "Customer", "c-1").expect("id");
    let at = Utc
        .with_ymd_and_hms(2024, 3, 1, 9, 0, version as u32)
        .single()
        .expect("time");
    event.encode().expect("encodes").into_envelope(
        &stream,
        version,
        at,
        Metadata::root("acme", "t", "cmd"),
    )
}

fn fold(events: &[CustomerEvent]) -> Value {
    let mut doc = None;
    for (i, e) in events.iter().enumerate() {
        doc = Customers
            .apply(doc, &envelope(i as u64 + 1, e))
            .expect("applies");
    }
    doc.expect("a document")
}

fn history(name: Personal<String>, email: Personal<String>) -> Vec<CustomerEvent> {
    vec![
        CustomerEvent::CustomerRegistered {
            customer_id: CustomerId::new("c-1").expect("id"),
            name,
            email,
            shipping_address: Personal::new("c-1", "1 Main St".to_owned()),
        },
        CustomerEvent::SubjectForgotten {
            subject: CustomerId::new("c-1").expect("id"),
        },
    ]
}

#[test]
fn the_scrubbed_document_equals_a_rebuild_from_the_shredded_events() {
    let known = |v: &str| Personal::new("c-1", v.to_owned());
    let live = history(known("Ada"), known("ada@example.com"));
    let before = fold(&live[..1]);
    assert_eq!(
        (before["name"].as_str(), before["email"].as_str()),
        (Some("Ada"), Some("ada@example.com"))
    );
    let scrubbed = fold(&live);
    assert_eq!(scrubbed["name"], "[forgotten]");
    assert_eq!(scrubbed["email"], "[forgotten]");
    assert_eq!(scrubbed["forgotten"], true);
    assert!(!scrubbed.to_string().contains("Ada"));
    // After the forget the key is gone: a rebuild reads every personal field as redacted.
    let rebuilt = fold(&history(Personal::Redacted, Personal::Redacted));
    assert_eq!(rebuilt, scrubbed, "live and rebuild agree");
}

#[test]
fn a_late_opened_event_never_writes_plaintext_back() {
    let scrubbed = fold(&history(
        Personal::new("c-1", "Ada".into()),
        Personal::Redacted,
    ));
    let late = CustomerEvent::CustomerDetailsChanged {
        name: Some(Personal::new("c-1", "Ada".into())),
        email: None,
        shipping_address: None,
    };
    let doc = Customers
        .apply(Some(scrubbed), &envelope(3, &late))
        .expect("applies")
        .expect("doc");
    assert_eq!(doc["name"], "[forgotten]");
}

#[test]
fn the_join_copies_name_and_email_or_null() {
    let customer = json!({"customer_id": "c-1", "name": "Ada", "email": "a@b", "forgotten": false});
    let mut order = json!({"order_id": "o-1", "customer_id": "c-1"});
    assert_eq!(CUSTOMER_JOIN.key_of(&order), Some("c-1"));
    CUSTOMER_JOIN.apply(&mut order, Some(&customer));
    assert_eq!(order["customer"], json!({"name": "Ada", "email": "a@b"}));
    let mut unknown = json!({"order_id": "o-2", "customer_id": "c-9"});
    CUSTOMER_JOIN.apply(&mut unknown, None);
    assert_eq!(unknown["customer"], Value::Null);
}
