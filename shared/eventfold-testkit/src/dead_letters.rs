//! The contract every [`DeadLetterStore`] adapter must pass: run it from each adapter's tests.
//!
//! Every check works under tenants derived from `tenant_prefix`, so suites can share one
//! table; failures panic with the broken rule.

use chrono::{DateTime, Utc};
use eventfold_consumers::deadletter::{
    Change, DeadLetter, DeadLetterError, DeadLetterStore, FailureNote, Filter, MAX_NOTE_ERROR,
    Status, letter_id, record_blocking, redrive_plan,
};
use std::collections::BTreeMap;

/// Runs every check against `store`. `tenant_prefix` must be unique to this run.
pub async fn run_all(store: &dyn DeadLetterStore, tenant_prefix: &str) {
    a_letter_round_trips_and_a_repeat_keeps_its_first_failure(store, tenant_prefix).await;
    only_open_letters_change_and_who_changed_them_is_kept(store, tenant_prefix).await;
    lists_filter_by_consumer_status_and_tenant(store, tenant_prefix).await;
    later_letters_of_a_stream_are_blocked_behind_the_first(store, tenant_prefix).await;
    notes_are_kept_per_consumer_and_message(store, tenant_prefix).await;
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
}

/// A letter of `tenant`'s stream `stream` at `version`, failed at `seconds`.
pub fn letter(
    tenant: &str,
    consumer: &str,
    stream: &str,
    version: u64,
    seconds: i64,
) -> DeadLetter {
    let stream_id = format!("{tenant}/Order-{stream}");
    let message_id = format!("m-{stream}-{version}-{consumer}");
    DeadLetter {
        id: letter_id(&[consumer, &message_id]),
        tenant: tenant.to_owned(),
        status: Status::Open,
        source_queue: format!("{consumer}-dlq"),
        consumer: consumer.to_owned(),
        stream_id: Some(stream_id.clone()),
        first_version: Some(version),
        last_version: Some(version),
        event_type: Some("OrderCreated".to_owned()),
        message_id: Some(message_id),
        body: format!(r#"{{"stream_id":"{stream_id}","version":{version}}}"#),
        attributes: BTreeMap::from([("MessageGroupId".to_owned(), stream_id)]),
        receive_count: 5,
        first_failure_at: at(seconds),
        last_failure_at: at(seconds + 10),
        last_error: Some("view refused".to_owned()),
        blocked_behind: None,
        changed_by: None,
        changed_at: None,
        reason: None,
    }
}

async fn record(store: &dyn DeadLetterStore, l: DeadLetter) -> DeadLetter {
    store
        .record(l.clone())
        .await
        .unwrap_or_else(|e| panic!("record {}: {e}", l.id))
}

async fn a_letter_round_trips_and_a_repeat_keeps_its_first_failure(
    store: &dyn DeadLetterStore,
    prefix: &str,
) {
    let tenant = format!("{prefix}-rt");
    let mut l = letter(&tenant, "projector", "a", 3, 0);
    l.attributes.insert("tenant".into(), tenant.clone());
    l.event_type = None;
    assert_eq!(record(store, l.clone()).await, l);
    let got = store.get(Some(&tenant), &l.id).await.expect("get");
    assert_eq!(got.as_ref(), Some(&l), "a letter reads back exactly");
    assert_eq!(
        store.get(None, &l.id).await.expect("get").as_ref(),
        Some(&l)
    );
    assert_eq!(
        store
            .get(Some(&format!("{prefix}-other")), &l.id)
            .await
            .expect("get"),
        None,
        "another tenant does not see it"
    );

    let mut again = l.clone();
    again.first_failure_at = at(100);
    again.last_failure_at = at(200);
    again.receive_count = 6;
    again.last_error = Some("still refused".into());
    let stored = record(store, again).await;
    assert_eq!(stored.first_failure_at, l.first_failure_at);
    assert_eq!(stored.last_failure_at, at(200));
    assert_eq!(stored.receive_count, 6);
    assert_eq!(stored.last_error.as_deref(), Some("still refused"));
    let listed = store
        .list(Some(&tenant), &Filter::default(), 10)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "the same failure twice is one letter");
}

async fn only_open_letters_change_and_who_changed_them_is_kept(
    store: &dyn DeadLetterStore,
    prefix: &str,
) {
    let tenant = format!("{prefix}-ch");
    let l = record(store, letter(&tenant, "saga", "b", 1, 0)).await;
    let discard = Change {
        to: Status::Discarded,
        by: "ops".into(),
        reason: Some("known bad".into()),
        at: at(50),
    };
    let changed = store
        .change(&tenant, &l.id, &discard)
        .await
        .expect("change");
    assert_eq!(changed.status, Status::Discarded);
    assert_eq!(changed.changed_by.as_deref(), Some("ops"));
    assert_eq!(changed.changed_at, Some(at(50)));
    assert_eq!(changed.reason.as_deref(), Some("known bad"));
    let redrive = Change {
        to: Status::Redriven,
        by: "ops".into(),
        reason: None,
        at: at(60),
    };
    assert!(matches!(
        store.change(&tenant, &l.id, &redrive).await,
        Err(DeadLetterError::NotOpen {
            status: Status::Discarded,
            ..
        })
    ));
    assert!(matches!(
        store
            .change(&format!("{prefix}-nobody"), &l.id, &redrive)
            .await,
        Err(DeadLetterError::NotFound(_))
    ));
    let kept = store.get(Some(&tenant), &l.id).await.expect("get");
    assert_eq!(kept.map(|k| k.status), Some(Status::Discarded));
    // The same failure seen again opens it again.
    let reopened = record(store, letter(&tenant, "saga", "b", 1, 70)).await;
    assert_eq!(reopened.status, Status::Open);
    assert_eq!(reopened.first_failure_at, at(0));
}

async fn lists_filter_by_consumer_status_and_tenant(store: &dyn DeadLetterStore, prefix: &str) {
    let tenant = format!("{prefix}-ls");
    let other = format!("{prefix}-ls2");
    let a = record(store, letter(&tenant, "projector", "c", 1, 30)).await;
    let b = record(store, letter(&tenant, "saga", "c", 1, 10)).await;
    let c = record(store, letter(&tenant, "projector", "d", 1, 20)).await;
    record(store, letter(&other, "projector", "c", 1, 0)).await;
    let change = Change {
        to: Status::Redriven,
        by: "ops".into(),
        reason: None,
        at: at(40),
    };
    store.change(&tenant, &c.id, &change).await.expect("change");
    let ids = |ls: Vec<DeadLetter>| ls.into_iter().map(|l| l.id).collect::<Vec<_>>();
    let all = store
        .list(Some(&tenant), &Filter::default(), 10)
        .await
        .expect("list");
    assert_eq!(
        ids(all),
        [b.id.clone(), c.id.clone(), a.id.clone()],
        "oldest failure first"
    );
    let projector = Filter {
        consumer: Some("projector".into()),
        ..Filter::default()
    };
    let listed = store
        .list(Some(&tenant), &projector, 10)
        .await
        .expect("list");
    assert_eq!(ids(listed), [c.id.clone(), a.id.clone()]);
    let open_projector = Filter {
        status: Some(Status::Open),
        ..projector.clone()
    };
    let listed = store
        .list(Some(&tenant), &open_projector, 10)
        .await
        .expect("list");
    assert_eq!(ids(listed), vec![a.id.clone()]);
    let limited = store
        .list(Some(&tenant), &Filter::default(), 2)
        .await
        .expect("list");
    assert_eq!(ids(limited), [b.id.clone(), c.id.clone()]);
    let everyone = store
        .list(None, &projector, usize::MAX)
        .await
        .expect("list");
    assert!(everyone.iter().any(|l| l.tenant == other));
    assert!(everyone.iter().any(|l| l.tenant == tenant));
}

async fn later_letters_of_a_stream_are_blocked_behind_the_first(
    store: &dyn DeadLetterStore,
    prefix: &str,
) {
    let tenant = format!("{prefix}-bl");
    let first = record_blocking(store, letter(&tenant, "projector", "p", 4, 0))
        .await
        .expect("record");
    assert_eq!(first.blocked_behind, None);
    let second = record_blocking(store, letter(&tenant, "projector", "p", 5, 1))
        .await
        .expect("record");
    let third = record_blocking(store, letter(&tenant, "projector", "p", 6, 2))
        .await
        .expect("record");
    assert_eq!(second.blocked_behind.as_deref(), Some(first.id.as_str()));
    assert_eq!(third.blocked_behind.as_deref(), Some(first.id.as_str()));
    // Out of order: a lower version arriving later becomes the blocker of the others.
    let earlier = record_blocking(store, letter(&tenant, "projector", "p", 3, 4))
        .await
        .expect("record");
    assert_eq!(earlier.blocked_behind, None);
    for l in [&first, &second, &third] {
        let now = store
            .get(Some(&tenant), &l.id)
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(
            now.blocked_behind.as_deref(),
            Some(earlier.id.as_str()),
            "{}",
            l.id
        );
    }
    let elsewhere = record_blocking(store, letter(&tenant, "saga", "p", 5, 3))
        .await
        .expect("record");
    assert_eq!(
        elsewhere.blocked_behind, None,
        "another consumer is not blocked"
    );

    let plan = redrive_plan(store, &tenant, &first.id).await.expect("plan");
    assert_eq!(
        plan.send.id, third.id,
        "the highest version catches the stream up"
    );
    let covered: Vec<&str> = plan.covers.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(covered, [&earlier.id, &first.id, &second.id, &third.id]);
    let from_blocked = redrive_plan(store, &tenant, &second.id)
        .await
        .expect("plan");
    assert_eq!(from_blocked.covers.len(), 4);
    let change = Change {
        to: Status::Discarded,
        by: "ops".into(),
        reason: Some("gone".into()),
        at: at(9),
    };
    store
        .change(&tenant, &elsewhere.id, &change)
        .await
        .expect("discard");
    assert!(matches!(
        redrive_plan(store, &tenant, &elsewhere.id).await,
        Err(DeadLetterError::NotOpen { .. })
    ));
}

async fn notes_are_kept_per_consumer_and_message(store: &dyn DeadLetterStore, prefix: &str) {
    let message = format!("{prefix}-msg");
    let long = "x".repeat(MAX_NOTE_ERROR * 3);
    let stream = format!("{prefix}/Order-n");
    let note = FailureNote::new("projector", &message, Some((&stream, 7)), &long, at(5));
    store.note(&note).await.expect("note");
    let got = store.note_of("projector", &message).await.expect("note");
    assert_eq!(got.as_ref(), Some(&note));
    assert!(got.is_some_and(|n| n.error.chars().count() <= MAX_NOTE_ERROR + 1));
    assert_eq!(store.note_of("saga", &message).await.expect("note"), None);
    let later = FailureNote::new("projector", &message, Some((&stream, 7)), "later", at(6));
    store.note(&later).await.expect("note");
    assert_eq!(
        store.note_of("projector", &message).await.expect("note"),
        Some(later),
        "the last failure's note wins"
    );
}
