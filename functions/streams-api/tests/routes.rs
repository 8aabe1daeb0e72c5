//! The streaming API as API Gateway calls it (payload 2.0 events through
//! `lambda_http::request::from_str`), over the memory adapters: routes, scopes, shapes, and
//! the refusals that must write nothing.

use eventfold::{EventStore, MemoryEventStore};
use eventfold_streaming::{MemoryGroupStore, MemoryTopicCatalogue, Streams, StreamsConfig};
use lambda_http::{Body, Request};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use streams_api::*;

type Api = StreamsApi<Arc<MemoryEventStore>, MemoryTopicCatalogue, MemoryGroupStore>;

fn api() -> Api {
    StreamsApi::new(Streams::new(
        Arc::new(MemoryEventStore::new()),
        MemoryTopicCatalogue::new(),
        MemoryGroupStore::new(),
        StreamsConfig::default(),
    ))
}

fn request(
    route_key: &str,
    query: &str,
    path_parameters: Value,
    body: Option<Value>,
    tenant: &str,
    scope: &str,
) -> Request {
    let (method, path) = route_key.split_once(' ').unwrap_or(("GET", route_key));
    let mut params = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"content-type": "application/json"},
        "queryStringParameters": if params.is_empty() { Value::Null } else { Value::Object(params) },
        "pathParameters": path_parameters,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "authorizer": {"jwt": {"claims": {"sub": "tester", "tenant": tenant, "scope": scope}, "scopes": null}},
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "t"},
            "requestId": "req-1",
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Mar/2024:09:30:00 +0000",
            "timeEpoch": 1_709_285_400_000_i64,
        },
        "body": body.as_ref().map(Value::to_string),
        "isBase64Encoded": false,
    });
    lambda_http::request::from_str(&event.to_string()).expect("a payload 2.0 event")
}

const ALL: &str = "events:read events:write events:admin";

async fn call(api: &Api, req: Request) -> (u16, Value) {
    let resp = api.handle(req).await;
    let status = resp.status().as_u16();
    let body = match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("JSON body"),
        _ => Value::Null,
    };
    (status, body)
}

async fn post(api: &Api, route: &str, body: Value, scope: &str) -> (u16, Value) {
    call(
        api,
        request(route, "", Value::Null, Some(body), "acme", scope),
    )
    .await
}

async fn get(api: &Api, route: &str, query: &str) -> (u16, Value) {
    call(api, request(route, query, Value::Null, None, "acme", ALL)).await
}

fn slug(body: &Value) -> &str {
    body["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or("")
}

async fn heads(api: &Api) -> u64 {
    let mut total = 0;
    for p in 0..4 {
        total += api
            .streams()
            .store()
            .head(&format!("acme/Topic-user-events.{p}"))
            .await
            .expect("head");
    }
    total
}

#[test]
fn the_route_keys_are_the_templates_routes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let template = eventfold_local::Template::load(std::path::Path::new(path), "test", "us-east-1")
        .expect("template loads");
    let mut served: Vec<String> = ROUTE_KEYS.iter().map(|k| (*k).to_owned()).collect();
    served.sort();
    assert_eq!(template.route_keys("streams-api"), served);
    let function = template
        .functions()
        .into_iter()
        .find(|f| f.binary == "streams-api")
        .expect("the function");
    assert!(
        function.timeout > eventfold_streaming::MAX_WAIT_MS / 1000 && function.timeout < 30,
        "a 20 s long poll fits, inside API Gateway's 30 s: {}",
        function.timeout
    );
}

#[test]
fn the_contract_lists_every_route() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("contract readable");
    let contract: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("contract parses");
    for key in ROUTE_KEYS {
        let (method, path) = key.split_once(' ').expect("METHOD path");
        let op = &contract["paths"][path][method.to_lowercase().as_str()];
        assert!(op.is_mapping(), "{key} is in the contract");
        assert!(op["responses"]["401"].is_mapping(), "{key} documents 401");
    }
}

#[tokio::test]
async fn the_original_surface_works_as_written() {
    let api = api();
    let (status, list) = get(&api, LIST_TOPICS, "").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["topics"].as_array().map(Vec::len), Some(5));
    let (status, created) = post(
        &api,
        CREATE_TOPIC,
        json!({"name": "orders", "partitions": 2}),
        ALL,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["partitions"], 2);
    let (status, again) = post(
        &api,
        CREATE_TOPIC,
        json!({"name": "orders", "partitions": 2}),
        ALL,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    let (status, clash) = post(
        &api,
        CREATE_TOPIC,
        json!({"name": "orders", "partitions": 3}),
        ALL,
    )
    .await;
    assert_eq!((status, slug(&clash)), (409, "topic-exists"), "{clash}");
    let (status, published) = post(
        &api,
        PUBLISH,
        json!({"topic": "user-events", "event_type": "user.created", "data": {"user_id": "u-1"}}),
        ALL,
    )
    .await;
    assert_eq!(status, 201, "{published}");
    assert_eq!(published["offset"], 1);
    let (status, consumed) = get(&api, CONSUME, "topic=user-events&group_id=g").await;
    assert_eq!(status, 200, "{consumed}");
    assert_eq!(consumed["records"][0]["data"]["user_id"], "u-1");
    assert_eq!(consumed["records"][0]["event_type"], "user.created");
    let (status, history) = get(&api, HISTORY, "topic=user-events").await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["records"].as_array().map(Vec::len), Some(1));
    let info = call(
        &api,
        request(
            GET_TOPIC,
            "",
            json!({"topic": "user-events"}),
            None,
            "acme",
            ALL,
        ),
    )
    .await;
    assert_eq!(info.0, 200, "{}", info.1);
    let total: u64 = info.1["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .filter_map(|h| h["head"].as_u64())
        .sum();
    assert_eq!(total, 1);
}

#[tokio::test]
async fn scopes_guard_admin_and_write_routes() {
    let api = api();
    let read = "events:read";
    let (status, body) = post(
        &api,
        CREATE_TOPIC,
        json!({"name": "x"}),
        "events:read events:write",
    )
    .await;
    assert_eq!((status, slug(&body)), (403, "forbidden"));
    let (status, _) = post(
        &api,
        PUBLISH,
        json!({"topic": "user-events", "event_type": "t", "data": 1}),
        read,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &api,
        SEEK,
        json!({"topic": "user-events", "group_id": "g", "to": "earliest"}),
        "events:read events:write",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &api,
        SEEK,
        json!({"topic": "user-events", "group_id": "g", "to": "earliest"}),
        ALL,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(heads(&api).await, 0);
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let api = api();
    let cases = [
        (
            json!({"topic": "nope", "event_type": "t", "data": 1}),
            404,
            "not-found",
        ),
        (
            json!({"topic": "user-events", "event_type": "bad type", "data": 1}),
            400,
            "invalid-request",
        ),
        (
            json!({"topic": "user-events", "event_type": "t", "data": "x".repeat(70_000)}),
            413,
            "payload-too-large",
        ),
        (
            json!({"topic": "user-events", "event_type": "t"}),
            400,
            "invalid-request",
        ),
        (
            json!({"topic": "user-events", "records": []}),
            400,
            "invalid-request",
        ),
        (
            json!({"topic": "user-events", "records": [{"event_type": "t", "data": 1, "extra": 2}]}),
            400,
            "invalid-request",
        ),
        (
            json!({"topic": "Bad/Name", "event_type": "t", "data": 1}),
            400,
            "invalid-request",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, problem) = post(&api, PUBLISH, body.clone(), ALL).await;
        assert_eq!(
            (got, slug(&problem)),
            (status, expected),
            "{body}: {problem}"
        );
    }
    for query in [
        "topic=user-events&group_id=g&max=-1",
        "topic=user-events&group_id=g&max=0",
        "topic=user-events&group_id=g&max=99999999999999999999999",
        "topic=user-events&group_id=g&wait_ms=-5",
        "topic=user-events&group_id=g&wait_ms=20001",
        "topic=user-events&group_id=bad%20group",
        "topic=user-events&group_id=g&auto_commit=yes",
        "topic=user-events",
    ] {
        let (status, problem) = get(&api, CONSUME, query).await;
        assert_eq!(status, 400, "{query}: {problem}");
    }
    let (status, _) = get(&api, CONSUME, "topic=nope&group_id=g").await;
    assert_eq!(status, 404);
    for body in [
        json!({"topic": "user-events", "group_id": "g", "offsets": {"9": 1}}),
        json!({"topic": "user-events", "group_id": "g", "offsets": {"0": 5}}),
        json!({"topic": "user-events", "group_id": "g", "offsets": {"x": 5}}),
    ] {
        let (status, problem) = post(&api, COMMIT, body.clone(), ALL).await;
        assert_eq!(
            (status, slug(&problem)),
            (400, "out-of-range"),
            "{body}: {problem}"
        );
    }
    let (status, _) = post(
        &api,
        COMMIT,
        json!({"topic": "user-events", "group_id": "g", "offsets": {"0": -1}}),
        ALL,
    )
    .await;
    assert_eq!(status, 400);
    for query in [
        "topic=user-events&limit=0",
        "topic=user-events&since=yesterday",
        "topic=user-events&cursor=zzz",
    ] {
        let (status, problem) = get(&api, HISTORY, query).await;
        assert_eq!(status, 400, "{query}: {problem}");
    }
    assert_eq!(heads(&api).await, 0, "nothing was written");
    let lag = get(&api, LAG, "topic=user-events&group_id=g").await;
    assert_eq!(lag.0, 200);
    assert_eq!(lag.1["total"], 0);
}

#[tokio::test]
async fn tenants_never_see_each_others_topics() {
    let api = api();
    let (status, _) = post(&api, CREATE_TOPIC, json!({"name": "private"}), ALL).await;
    assert_eq!(status, 201);
    let other = |route: &str, query: &str, params: Value| {
        request(route, query, params, None, "globex", ALL)
    };
    let (status, _) = call(&api, other(GET_TOPIC, "", json!({"topic": "private"}))).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &api,
        other(CONSUME, "topic=private&group_id=g", Value::Null),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(&api, other(HISTORY, "topic=private", Value::Null)).await;
    assert_eq!(status, 404);
    let (status, list) = call(&api, other(LIST_TOPICS, "", Value::Null)).await;
    assert_eq!(status, 200);
    assert!(
        list["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .all(|t| t["name"] != "private")
    );
}
