//! The data-subject routes and personal data on the command path, in process: a customer's
//! personal fields are sealed in the store and withheld from command answers; a forget
//! shreds them (the stream still loads, redacted), is tenant-scoped and admin-only; an
//! export says what is still held.

use command_api::{CommandApi, EXPORT_SUBJECT, FORGET_SUBJECT, SUBMIT_COMMAND};
use eventfold::{
    CommandExecutor, EventStore, ExecutorConfig, KeyRing, MemoryEventStore, MemoryKeyRing,
    SealingStore,
};
use lambda_http::{Body, Request};
use serde_json::{Value, json};
use std::sync::Arc;

type Store = SealingStore<Arc<MemoryEventStore>, Arc<dyn KeyRing>>;

struct Fixture {
    api: CommandApi<Store>,
    raw: Arc<MemoryEventStore>,
}

fn fixture() -> Fixture {
    let raw = Arc::new(MemoryEventStore::new());
    let keys: Arc<dyn KeyRing> = Arc::new(MemoryKeyRing::new());
    let store = SealingStore::new(raw.clone(), keys.clone());
    let config = ExecutorConfig {
        snapshot_every: 2,
        ..ExecutorConfig::default()
    };
    let api = CommandApi::new(CommandExecutor::new(store, config).caching()).with_keys(keys);
    Fixture { api, raw }
}

fn request(
    route_key: &str,
    path: &str,
    params: Value,
    tenant: &str,
    scope: &str,
    body: Option<Value>,
) -> Request {
    let method = route_key.split(' ').next().unwrap_or("GET");
    let event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "pathParameters": params,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api",
            "authorizer": {"jwt": {"claims": {"sub": "tester", "tenant": tenant, "scope": scope}, "scopes": null}},
            "domainName": "api.example.com", "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "t"},
            "requestId": "r", "routeKey": route_key, "stage": "$default",
            "time": "01/Mar/2024:09:30:00 +0000", "timeEpoch": 1_709_285_400_000_i64,
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false,
    });
    lambda_http::request::from_str(&event.to_string()).expect("a payload 2.0 event")
}

async fn call(api: &CommandApi<Store>, req: Request) -> (u16, Value) {
    let resp = api.handle(req).await;
    let status = resp.status().as_u16();
    let body = match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("JSON"),
        _ => Value::Null,
    };
    (status, body)
}

async fn command(
    f: &Fixture,
    tenant: &str,
    aggregate: &str,
    id: &str,
    kind: &str,
    data: Value,
) -> (u16, Value) {
    let body = json!({"aggregate_type": aggregate, "aggregate_id": id, "type": kind, "data": data});
    let req = request(
        SUBMIT_COMMAND,
        "/api/v1/events/commands",
        Value::Null,
        tenant,
        "events:write",
        Some(body),
    );
    call(&f.api, req).await
}

async fn forget(f: &Fixture, tenant: &str, id: &str, scope: &str) -> (u16, Value) {
    let path = format!("/api/v1/events/subjects/{id}/forget");
    call(
        &f.api,
        request(
            FORGET_SUBJECT,
            &path,
            json!({"subject_id": id}),
            tenant,
            scope,
            None,
        ),
    )
    .await
}

async fn export(f: &Fixture, tenant: &str, id: &str) -> (u16, Value) {
    let path = format!("/api/v1/events/subjects/{id}");
    call(
        &f.api,
        request(
            EXPORT_SUBJECT,
            &path,
            json!({"subject_id": id}),
            tenant,
            "events:admin",
            None,
        ),
    )
    .await
}

fn ada() -> Value {
    json!({"customer_id": "c-1", "name": "Ada Lovelace", "email": "ada@example.com", "shipping_address": "12 St James's Square"})
}

/// Everything the raw store holds for `stream`, events and snapshots, as text.
async fn held(f: &Fixture, stream: &str) -> String {
    let options = eventfold::LoadOptions {
        state_schema: Some(1),
        snapshot_every: 2,
    };
    let loaded = f.raw.load(stream, options).await.expect("load");
    let all = f
        .raw
        .load_range(stream, 1, None, None)
        .await
        .expect("range");
    format!(
        "{:?} {}",
        loaded.snapshot,
        serde_json::to_string(&all).expect("json")
    )
}

#[tokio::test]
async fn personal_data_is_sealed_withheld_and_forgotten() {
    let f = fixture();
    let (status, answer) = command(&f, "acme", "Customer", "c-1", "RegisterCustomer", ada()).await;
    assert_eq!(status, 201, "{answer}");
    assert!(
        !answer.to_string().contains("Ada"),
        "the answer (kept for Idempotency-Key) withholds: {answer}"
    );
    assert_eq!(
        answer["events"][0]["data"]["name"],
        json!({"$redacted": true})
    );
    let (status, _) = command(
        &f,
        "acme",
        "Customer",
        "c-1",
        "ChangeCustomerDetails",
        json!({"email": "ada@analytical.org"}),
    )
    .await;
    assert_eq!(status, 200);
    let text = held(&f, "acme/Customer-c-1").await;
    for plain in ["Ada", "ada@", "St James"] {
        assert!(!text.contains(plain), "the store holds no {plain}: {text}");
    }
    assert!(
        text.contains("snapshot") || text.contains("Snapshot"),
        "a snapshot was written (and sealed): {text}"
    );

    let (status, held_now) = export(&f, "acme", "c-1").await;
    assert_eq!(status, 200, "{held_now}");
    assert_eq!(held_now["key"], "active");
    assert_eq!(
        held_now["state"]["email"]["$personal"]["value"],
        "ada@analytical.org"
    );

    // Another tenant sees no such subject: neither forget nor export.
    assert_eq!(forget(&f, "other", "c-1", "events:admin").await.0, 404);
    assert_eq!(export(&f, "other", "c-1").await.0, 404);
    // Writers cannot forget; nor can they send the forget command themselves.
    assert_eq!(
        forget(&f, "acme", "c-1", "events:read events:write")
            .await
            .0,
        403
    );
    let (status, refused) =
        command(&f, "acme", "Customer", "c-1", "ForgetCustomer", Value::Null).await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (
            400,
            Some("https://eventfold.dev/problems/unknown-command-type")
        ),
        "{refused}"
    );

    let (status, done) = forget(&f, "acme", "c-1", "events:admin").await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["forgotten"].clone(), done["key_before"].clone()),
        (json!(true), json!("active"))
    );
    let (status, again) = forget(&f, "acme", "c-1", "events:admin").await;
    assert_eq!(
        (status, again["key_before"].clone()),
        (200, json!("forgotten")),
        "idempotent: {again}"
    );

    let (status, after) = export(&f, "acme", "c-1").await;
    assert_eq!(status, 200);
    assert_eq!(after["key"], "forgotten");
    assert_eq!(after["state"]["forgotten"], true);
    assert!(
        !after.to_string().contains("Ada") && !after.to_string().contains("ada@"),
        "{after}"
    );
    let events = after["events"].as_array().expect("events");
    assert_eq!(
        events.len(),
        3,
        "the stream stays whole: registered, changed, forgotten"
    );
    assert_eq!(events[0]["data"]["name"], json!({"$redacted": true}));
    assert_eq!(events[2]["type"], "SubjectForgotten");
    let (status, refused) = command(
        &f,
        "acme",
        "Customer",
        "c-1",
        "ChangeCustomerDetails",
        json!({"name": "Ada"}),
    )
    .await;
    assert_eq!(
        (status, refused["rule"].as_str()),
        (422, Some("customer-forgotten"))
    );
    assert_eq!(
        f.raw.head("acme/Customer-c-1").await.expect("head"),
        3,
        "nothing written"
    );
}

#[tokio::test]
async fn a_customer_id_must_be_its_streams_and_unknown_subjects_are_404() {
    let f = fixture();
    let (status, refused) = command(&f, "acme", "Customer", "c-2", "RegisterCustomer", ada()).await;
    assert_eq!(
        (status, refused["rule"].as_str()),
        (422, Some("customer-id-mismatch")),
        "{refused}"
    );
    assert_eq!(
        f.raw.head("acme/Customer-c-2").await.expect("head"),
        0,
        "nothing written"
    );
    assert_eq!(forget(&f, "acme", "c-9", "events:admin").await.0, 404);
    assert_eq!(forget(&f, "acme", "bad id", "events:admin").await.0, 400);
}
