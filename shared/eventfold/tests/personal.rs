//! Crypto-shredding at the storage boundary: personal values are sealed before any write
//! (events and snapshots), open for readers with the key, read as redacted once the key is
//! gone, and the key ring obeys its contract (memory and cached).

use eventfold::keyring::{CachedKeyRing, KeyRing, MemoryKeyRing};
use eventfold::personal::{self, Personal};
use eventfold::{
    Aggregate, CommandContext, CommandExecutor, DomainEvent, EventStore, ExecutorConfig,
    LoadOptions, MemoryEventStore, Rejection, SealingStore, StreamId,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A person with a personal name, as an aggregate (state keeps the name: snapshots hold it).
struct Person;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum PersonEvent {
    Named { name: Personal<String>, visits: u64 },
}
impl DomainEvent for PersonEvent {}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct PersonState {
    name: Option<Personal<String>>,
    visits: u64,
}

impl Aggregate for Person {
    const CATEGORY: &'static str = "Person";
    type Event = PersonEvent;
    type State = PersonState;
    type Command = (String, String);
    fn initial() -> PersonState {
        PersonState::default()
    }
    fn evolve(mut state: PersonState, event: &PersonEvent) -> PersonState {
        let PersonEvent::Named { name, visits } = event;
        state.name = Some(name.clone());
        state.visits += visits;
        state
    }
    fn decide(
        _: &PersonState,
        (subject, name): &(String, String),
    ) -> Result<Vec<PersonEvent>, Rejection> {
        Ok(vec![PersonEvent::Named {
            name: Personal::new(subject, name.clone()),
            visits: 1,
        }])
    }
}

fn ctx(id: &str) -> CommandContext {
    CommandContext::root("acme", "tester", id)
}

/// Everything the inner store holds for `stream`, as text.
async fn stored_text(store: &MemoryEventStore, stream: &str) -> String {
    let options = LoadOptions {
        state_schema: Some(1),
        snapshot_every: 1,
    };
    let loaded = store.load(stream, options).await.expect("load");
    let all = store
        .load_range(stream, 1, None, None)
        .await
        .expect("range");
    format!(
        "{:?} {}",
        loaded.snapshot,
        serde_json::to_string(&all).expect("json")
    )
}

#[test]
fn personal_values_have_stable_shapes() {
    let known = Personal::new("c-1", "Ada".to_owned());
    let shape = serde_json::to_value(&known).expect("json");
    assert_eq!(
        shape,
        json!({"$personal": {"subject": "c-1", "value": "Ada"}})
    );
    assert_eq!(
        serde_json::from_value::<Personal<String>>(shape).expect("back"),
        known
    );
    let redacted: Personal<String> =
        serde_json::from_value(json!({"$redacted": true})).expect("marker");
    assert_eq!(redacted, Personal::Redacted);
    assert_eq!(redacted.shown(), "[forgotten]");
    assert_eq!(
        serde_json::to_value(&redacted).expect("json"),
        json!({"$redacted": true})
    );
    let sealed: Personal<String> = serde_json::from_value(
        json!({"$sealed": {"subject": "c-1", "kid": "k", "nonce": "", "ct": ""}}),
    )
    .expect("a reader that opens nothing");
    assert!(
        sealed.is_redacted(),
        "a sealed value reads as redacted to a keyless reader"
    );
    assert!(
        serde_json::from_value::<Personal<String>>(json!("Ada")).is_err(),
        "a bare value is not personal"
    );
}

#[tokio::test]
async fn events_and_snapshots_are_sealed_and_open_until_forgotten() {
    let inner = Arc::new(MemoryEventStore::new());
    let keys = Arc::new(MemoryKeyRing::new());
    let store = SealingStore::new(inner.clone(), keys.clone());
    let config = ExecutorConfig {
        snapshot_every: 1,
        ..ExecutorConfig::default()
    };
    let executor = CommandExecutor::new(store, config);
    let stream = StreamId::new("acme", "Person", "p-1").expect("id");
    let other = StreamId::new("acme", "Person", "p-2").expect("id");
    let cmd = ("c-1".to_owned(), "Ada Lovelace".to_owned());
    executor
        .execute::<Person>(&stream, None, &cmd, &ctx("1"))
        .await
        .expect("first");
    executor
        .execute::<Person>(&stream, None, &cmd, &ctx("2"))
        .await
        .expect("second");
    let bob = ("c-2".to_owned(), "Bob Bobson".to_owned());
    executor
        .execute::<Person>(&other, None, &bob, &ctx("3"))
        .await
        .expect("bob");

    let held = stored_text(&inner, &stream.to_string()).await;
    assert!(
        !held.contains("Ada"),
        "the inner store holds no plaintext: {held}"
    );
    assert!(held.contains("$sealed"), "it holds sealed values: {held}");
    assert!(
        held.contains("snapshot") || held.contains("Snapshot"),
        "a snapshot was taken: {held}"
    );

    let (version, state) = executor.load::<Person>(&stream).await.expect("load");
    assert_eq!(version, 2);
    assert_eq!(
        state.name,
        Some(Personal::new("c-1", "Ada Lovelace".to_owned())),
        "opens with the key"
    );

    keys.forget("acme", "c-1").await.expect("forget");
    let (_, state) = executor.load::<Person>(&stream).await.expect("still loads");
    assert_eq!(
        state.name,
        Some(Personal::Redacted),
        "the name reads as redacted"
    );
    assert_eq!(state.visits, 2, "business facts stay");
    let events = executor
        .store()
        .load_range(&stream.to_string(), 1, None, None)
        .await
        .expect("range");
    assert!(
        events
            .iter()
            .all(|e| e.data["name"] == json!({"$redacted": true})),
        "{events:?}"
    );
    let (_, bob_state) = executor.load::<Person>(&other).await.expect("bob loads");
    assert_eq!(
        bob_state.name,
        Some(Personal::new("c-2", "Bob Bobson".to_owned())),
        "another subject untouched"
    );

    let refused = executor
        .execute::<Person>(&stream, None, &cmd, &ctx("4"))
        .await;
    assert!(
        refused.is_err(),
        "no new personal data of a forgotten subject: {refused:?}"
    );
    assert_eq!(
        executor
            .store()
            .head(&stream.to_string())
            .await
            .expect("head"),
        2,
        "nothing written"
    );
}

#[test]
fn a_sealed_value_opens_only_in_its_tenant_and_subject() {
    let key = eventfold::keyring::random_key();
    let keys = std::collections::BTreeMap::from([("c-1".to_owned(), key.clone())]);
    let mut value = json!({"name": Personal::new("c-1", "Ada")});
    personal::seal(&mut value, "acme", &keys).expect("seal");
    assert!(!value.to_string().contains("Ada"));
    let opening = std::collections::BTreeMap::from([(("c-1".to_owned(), key.id.clone()), key)]);
    let mut moved = value.clone();
    let done = personal::open(&mut moved, "evil", &opening);
    assert_eq!(
        (done.opened, done.redacted),
        (0, 1),
        "another tenant's key scope does not open it"
    );
    assert_eq!(moved["name"], json!({"$redacted": true}));
    let done = personal::open(&mut value, "acme", &opening);
    assert_eq!(done.opened, 1);
    assert_eq!(
        value["name"],
        json!({"$personal": {"subject": "c-1", "value": "Ada"}})
    );
    let mut tampered =
        json!({"name": {"$sealed": {"subject": "c-1", "kid": "x", "nonce": "!!", "ct": "??"}}});
    personal::open(&mut tampered, "acme", &opening);
    assert_eq!(
        tampered["name"],
        json!({"$redacted": true}),
        "garbage reads as redacted, no panic"
    );
}

#[test]
fn withholding_replaces_plaintext_with_the_marker() {
    let mut answer =
        json!({"events": [{"data": {"email": Personal::new("c-1", "a@b.c"), "n": 1}}]});
    personal::withhold(&mut answer);
    assert_eq!(
        answer,
        json!({"events": [{"data": {"email": {"$redacted": true}, "n": 1}}]})
    );
    assert!(!personal::has_plaintext(&answer));
}

#[tokio::test]
async fn key_rings_pass_the_contract() {
    eventfold_testkit::key_ring::run_all(&MemoryKeyRing::new(), "mem").await;
    eventfold_testkit::key_ring::run_all(&CachedKeyRing::new(MemoryKeyRing::new()), "cached").await;
}

#[tokio::test]
async fn a_warm_cache_asks_nothing_and_forgets_at_once() {
    let ring = CachedKeyRing::with_limits(MemoryKeyRing::new(), 2, Duration::from_secs(60));
    let key = ring.key_for_sealing("acme", "c-1").await.expect("key");
    let asked = ring.inner().requests();
    for _ in 0..10 {
        assert_eq!(
            ring.key_for_sealing("acme", "c-1").await.expect("cached"),
            key
        );
        assert!(
            ring.key_for_opening("acme", "c-1", &key.id)
                .await
                .expect("open")
                .is_some()
        );
    }
    assert_eq!(
        ring.inner().requests(),
        asked,
        "a warm subject costs no key request"
    );
    ring.key_for_sealing("acme", "c-2").await.expect("key");
    ring.key_for_sealing("acme", "c-3").await.expect("key");
    assert_eq!(
        ring.len(),
        2,
        "bounded: the least recently used subject left"
    );
    ring.forget("acme", "c-2").await.expect("forget");
    assert!(
        ring.key_for_opening("acme", "c-2", "any")
            .await
            .expect("open")
            .is_none()
    );
    assert!(
        ring.key_for_sealing("acme", "c-2").await.is_err(),
        "the forgetting instance knows at once"
    );
}

#[tokio::test]
async fn another_instance_learns_of_a_forget_within_the_ttl() {
    let shared = Arc::new(MemoryKeyRing::new());
    let ttl = Duration::from_millis(50);
    let warm = CachedKeyRing::with_limits(shared.clone(), 8, ttl);
    let key = warm.key_for_sealing("acme", "c-1").await.expect("key");
    shared
        .forget("acme", "c-1")
        .await
        .expect("forgotten elsewhere");
    assert!(
        warm.key_for_opening("acme", "c-1", &key.id)
            .await
            .expect("open")
            .is_some(),
        "within the ttl the warm instance still holds the key (the stated window)"
    );
    tokio::time::sleep(ttl * 2).await;
    assert!(
        warm.key_for_opening("acme", "c-1", &key.id)
            .await
            .expect("open")
            .is_none(),
        "after it, gone"
    );
    assert!(warm.key_for_sealing("acme", "c-1").await.is_err());
}

#[test]
fn a_personal_value_without_a_subject_is_refused_not_stored() {
    let mut value = json!({"name": {"$personal": {"subject": "", "value": "Ada"}}});
    let mut subjects = std::collections::BTreeSet::new();
    personal::plaintext_subjects(&value, &mut subjects);
    assert!(subjects.is_empty(), "no key is made for an empty subject");
    let sealed = personal::seal(&mut value, "acme", &std::collections::BTreeMap::new());
    assert!(sealed.is_err(), "malformed: {sealed:?}");
}
