//! The command API as API Gateway calls it: payload 2.0 events (through
//! `lambda_http::request::from_str`, as the Lambda runtime builds the request), routed on the
//! `routeKey` and `pathParameters` the gateway matched, never on the raw path.

use command_api::{CommandApi, GET_AGGREGATE, LIST_AGGREGATE_EVENTS, ROUTE_KEYS, SUBMIT_COMMAND};
use eventfold::{CommandExecutor, ExecutorConfig, MemoryEventStore};
use lambda_http::{Body, Request, Response};
use serde_json::{Map, Value, json};
use shop::registry::{self, AggregateVisitor, RegisteredAggregate};

/// One HTTP API request as API Gateway (payload format 2.0) hands it to the function.
struct Call<'a> {
    route_key: &'a str,
    raw_path: &'a str,
    path_parameters: Value,
    raw_query: &'a str,
    body: Option<Value>,
    scope: &'a str,
}

impl<'a> Call<'a> {
    fn new(route_key: &'a str, raw_path: &'a str) -> Self {
        Self {
            route_key,
            raw_path,
            path_parameters: Value::Null,
            raw_query: "",
            body: None,
            scope: "events:read events:write",
        }
    }

    fn aggregate(mut self, aggregate_type: &str, aggregate_id: &str) -> Self {
        self.path_parameters =
            json!({"aggregate_type": aggregate_type, "aggregate_id": aggregate_id});
        self
    }

    fn query(mut self, raw_query: &'a str) -> Self {
        self.raw_query = raw_query;
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn scope(mut self, scope: &'a str) -> Self {
        self.scope = scope;
        self
    }

    fn request(&self) -> Request {
        let method = self.route_key.split(' ').next().unwrap_or("GET");
        let mut query = Map::new();
        for pair in self.raw_query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            query.insert(k.to_owned(), Value::String(v.to_owned()));
        }
        let event = json!({
            "version": "2.0",
            "routeKey": self.route_key,
            "rawPath": self.raw_path,
            "rawQueryString": self.raw_query,
            "headers": {"content-type": "application/json", "host": "api.example.com"},
            "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
            "pathParameters": self.path_parameters,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "api",
                "authorizer": {"jwt": {
                    "claims": {"sub": "tester", "tenant": "acme", "scope": self.scope},
                    "scopes": null,
                }},
                "domainName": "api.example.com",
                "domainPrefix": "api",
                "http": {
                    "method": method,
                    "path": self.raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "192.0.2.1",
                    "userAgent": "routes-test",
                },
                "requestId": "req-1",
                "routeKey": self.route_key,
                "stage": "$default",
                "time": "01/Mar/2024:09:30:00 +0000",
                "timeEpoch": 1_709_285_400_000_i64,
            },
            "body": self.body.as_ref().map(Value::to_string),
            "isBase64Encoded": false,
        });
        lambda_http::request::from_str(&event.to_string()).expect("a payload 2.0 event")
    }
}

fn api() -> CommandApi<MemoryEventStore> {
    CommandApi::new(
        CommandExecutor::new(MemoryEventStore::new(), ExecutorConfig::default()).caching(),
    )
}

async fn send(api: &CommandApi<MemoryEventStore>, call: Call<'_>) -> (u16, Value) {
    let resp: Response<Body> = api.handle(call.request()).await;
    let status = resp.status().as_u16();
    let body = match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("JSON body"),
        Body::Binary(b) => serde_json::from_slice(b).expect("JSON body"),
        _ => Value::Null,
    };
    (status, body)
}

#[track_caller]
fn assert_problem(reply: &(u16, Value), status: u16, slug: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(
        reply.1["type"],
        format!("https://eventfold.dev/problems/{slug}"),
        "{}",
        reply.1
    );
}

const COMMANDS: &str = "/api/v1/events/commands";

fn command(aggregate_type: &str, id: &str, command_type: &str, data: Value) -> Value {
    json!({"aggregate_type": aggregate_type, "aggregate_id": id, "type": command_type, "data": data})
}

async fn create_order(api: &CommandApi<MemoryEventStore>, id: &str) {
    let created = send(
        api,
        Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
            "Order",
            id,
            "CreateOrder",
            json!({"customer_id": "c-1"}),
        )),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
}

#[tokio::test]
async fn each_route_key_reaches_its_handler() {
    let api = api();
    create_order(&api, "o-1").await;
    let state = send(
        &api,
        Call::new(GET_AGGREGATE, "/api/v1/events/aggregates/Order/o-1").aggregate("Order", "o-1"),
    )
    .await;
    assert_eq!(state.0, 200, "{}", state.1);
    assert_eq!(state.1["stream_id"], "acme/Order-o-1");
    assert_eq!(state.1["state"]["customer_id"], "c-1");
    let events = send(
        &api,
        Call::new(
            LIST_AGGREGATE_EVENTS,
            "/api/v1/events/aggregates/Order/o-1/events",
        )
        .aggregate("Order", "o-1"),
    )
    .await;
    assert_eq!(events.0, 200, "{}", events.1);
    assert_eq!(events.1["events"][0]["type"], "OrderCreated");
    let at = send(
        &api,
        Call::new(GET_AGGREGATE, "/api/v1/events/aggregates/Order/o-1")
            .aggregate("Order", "o-1")
            .query("version=1"),
    )
    .await;
    assert_eq!((at.0, at.1["version"].clone()), (200, json!(1)));
}

#[tokio::test]
async fn routing_follows_the_route_key_and_path_parameters_not_the_raw_path() {
    let api = api();
    create_order(&api, "o-1").await;
    // The raw path names the history of another stream; the gateway matched the state route
    // with these parameters, and that is what is served.
    let state = send(
        &api,
        Call::new(
            GET_AGGREGATE,
            "/api/v1/events/aggregates/Inventory/x/events",
        )
        .aggregate("Order", "o-1"),
    )
    .await;
    assert_eq!(state.0, 200, "{}", state.1);
    assert_eq!(state.1["stream_id"], "acme/Order-o-1");
    assert!(state.1.get("events").is_none(), "{}", state.1);
    // A raw path no route would match still reaches the command handler by its route key.
    let created = send(
        &api,
        Call::new(SUBMIT_COMMAND, "/stage-prefix/elsewhere").body(command(
            "Order",
            "o-2",
            "CreateOrder",
            json!({"customer_id": "c-2"}),
        )),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    // Path parameters arrive decoded: an id is taken as it is, never split or decoded again.
    let odd = send(
        &api,
        Call::new(GET_AGGREGATE, "/api/v1/events/aggregates/Order/o%2F1").aggregate("Order", "o/1"),
    )
    .await;
    assert_problem(&odd, 400, "invalid-id");
}

#[tokio::test]
async fn an_unknown_route_key_is_not_found_whatever_the_raw_path() {
    let api = api();
    create_order(&api, "o-1").await;
    for route_key in [
        "GET /api/v1/events/commands",
        "POST /api/v1/events/aggregates/{aggregate_type}/{aggregate_id}",
        "GET /api/v1/events/queries/{view}",
        "$default",
        "",
    ] {
        let reply = send(
            &api,
            Call::new(route_key, "/api/v1/events/aggregates/Order/o-1").aggregate("Order", "o-1"),
        )
        .await;
        assert_problem(&reply, 404, "not-found");
        assert_eq!(reply.1["instance"], "/api/v1/events/aggregates/Order/o-1");
    }
    // A known route key without the parameters its path declares was not matched by it.
    let bare = send(
        &api,
        Call::new(GET_AGGREGATE, "/api/v1/events/aggregates/Order/o-1"),
    )
    .await;
    assert_problem(&bare, 404, "not-found");
}

#[tokio::test]
async fn unknown_aggregate_types_are_refused_on_every_route_with_the_known_list() {
    let api = api();
    let known = "unknown aggregate type 'Nope'; known: Order, Inventory, Payment, OrderFulfilment, Customer";
    let replies = [
        send(
            &api,
            Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
                "Nope",
                "o-1",
                "CreateOrder",
                json!({}),
            )),
        )
        .await,
        send(
            &api,
            Call::new(GET_AGGREGATE, "/api/v1/events/aggregates/Nope/o-1").aggregate("Nope", "o-1"),
        )
        .await,
        send(
            &api,
            Call::new(
                LIST_AGGREGATE_EVENTS,
                "/api/v1/events/aggregates/Nope/o-1/events",
            )
            .aggregate("Nope", "o-1"),
        )
        .await,
    ];
    for reply in &replies {
        assert_problem(reply, 400, "unknown-aggregate-type");
        assert_eq!(reply.1["detail"], known);
    }
}

#[tokio::test]
async fn commands_parse_through_the_registry() {
    let api = api();
    let unknown = send(
        &api,
        Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
            "Inventory",
            "sku-1",
            "CreateOrder",
            json!({}),
        )),
    )
    .await;
    assert_problem(&unknown, 400, "unknown-command-type");
    let detail = unknown.1["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("ReceiveStock, ReserveStock, ReleaseStock"),
        "{detail}"
    );
    let invalid = send(
        &api,
        Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
            "Inventory",
            "sku-1",
            "ReceiveStock",
            json!({"quantity": "many"}),
        )),
    )
    .await;
    assert_problem(&invalid, 400, "invalid-command-data");
    for (aggregate, id, command_type, data) in [
        ("Inventory", "sku-1", "ReceiveStock", json!({"quantity": 5})),
        (
            "Payment",
            "o-1",
            "AuthorizePayment",
            json!({"order_id": "o-1", "amount": 100, "method": "card"}),
        ),
    ] {
        let ok = send(
            &api,
            Call::new(SUBMIT_COMMAND, COMMANDS).body(command(aggregate, id, command_type, data)),
        )
        .await;
        assert_eq!(ok.0, 201, "{}", ok.1);
        assert_eq!(ok.1["stream_id"], format!("acme/{aggregate}-{id}"));
    }
}

#[tokio::test]
async fn scopes_are_checked_per_route() {
    let api = api();
    let write = send(
        &api,
        Call::new(SUBMIT_COMMAND, COMMANDS)
            .body(command(
                "Order",
                "o-1",
                "CreateOrder",
                json!({"customer_id": "c"}),
            ))
            .scope("events:read"),
    )
    .await;
    assert_problem(&write, 403, "forbidden");
    let read = send(
        &api,
        Call::new(GET_AGGREGATE, "/api/v1/events/aggregates/Order/o-1")
            .aggregate("Order", "o-1")
            .scope("events:write"),
    )
    .await;
    assert_problem(&read, 403, "forbidden");
}

/// The routes of `binary`'s function in `infra/template.yaml`, as `METHOD /path` route keys,
/// read the way the local runtime reads the template.
fn template_route_keys(binary: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    eventfold_local::Template::load(std::path::Path::new(path), "test", "us-east-1")
        .expect("template loads")
        .route_keys(binary)
}

#[test]
fn the_route_keys_are_the_templates_routes() {
    let mut served: Vec<String> = ROUTE_KEYS.iter().map(|k| (*k).to_owned()).collect();
    served.sort();
    assert_eq!(template_route_keys("command-api"), served);
}

/// The saga's streams are served like any aggregate's, but its inputs are the system's:
/// a client cannot submit one.
#[tokio::test]
async fn the_saga_log_is_readable_but_takes_no_commands() {
    let api = api();
    let stream = eventfold::StreamId::new("acme", "OrderFulfilment", "o-1").expect("valid");
    let placed = shop::fulfilment::parse_input(
        "OrderPlaced",
        json!({
            "order_id": "o-1", "customer_id": "c-1",
            "lines": [{"sku": "apple", "quantity": 2}], "total": 300,
            "payment_method": "card", "placed_at": "2024-03-01T09:30:00Z",
        }),
    )
    .expect("an input");
    api.executor()
        .execute::<shop::OrderFulfilment>(
            &stream,
            None,
            &placed,
            &eventfold::Metadata::root("acme", "saga", "cmd-1"),
        )
        .await
        .expect("the runner records the start");
    for (input_type, data) in [
        ("TimedOut", json!({"at": "2024-03-01T10:00:00Z"})),
        ("OrderPlaced", json!({})),
    ] {
        let refused = send(
            &api,
            Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
                "OrderFulfilment",
                "o-1",
                input_type,
                data,
            )),
        )
        .await;
        assert_problem(&refused, 400, "unknown-command-type");
        let detail = refused.1["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("accepts no commands over HTTP"), "{detail}");
    }
    let state = send(
        &api,
        Call::new(
            GET_AGGREGATE,
            "/api/v1/events/aggregates/OrderFulfilment/o-1",
        )
        .aggregate("OrderFulfilment", "o-1"),
    )
    .await;
    assert_eq!(state.0, 200, "{}", state.1);
    assert_eq!(state.1["state"]["order_id"], "o-1");
    assert_eq!(state.1["state"]["lines"]["apple"]["quantity"], 2);
    let log = send(
        &api,
        Call::new(
            LIST_AGGREGATE_EVENTS,
            "/api/v1/events/aggregates/OrderFulfilment/o-1/events",
        )
        .aggregate("OrderFulfilment", "o-1"),
    )
    .await;
    assert_eq!(log.0, 200, "{}", log.1);
    assert_eq!(log.1["events"][0]["type"], "FulfilmentStarted");
    assert_eq!(log.1["events"].as_array().map(Vec::len), Some(1));
}

/// An id that breaks the id rule never makes a command: it is the 422 rejection of its
/// field's rule, as `decide` gave it before ids had types, and nothing is written.
#[tokio::test]
async fn ids_that_break_the_id_rule_are_rejected_by_their_rule_and_write_nothing() {
    let api = api();
    for (command_type, data, rule) in [
        (
            "CreateOrder",
            json!({"customer_id": "c".repeat(3 * 1024)}),
            "customer-id-invalid",
        ),
        (
            "CreateOrder",
            json!({"customer_id": " "}),
            "customer-id-required",
        ),
        (
            "AddItem",
            json!({"sku": "a b", "quantity": 1, "unit_price": 1}),
            "sku-invalid",
        ),
        (
            "ShipOrder",
            json!({"tracking_id": ""}),
            "tracking-id-required",
        ),
    ] {
        let reply = send(
            &api,
            Call::new(SUBMIT_COMMAND, COMMANDS).body(command("Order", "o-1", command_type, data)),
        )
        .await;
        assert_problem(&reply, 422, "rejected");
        assert_eq!(reply.1["rule"], rule, "{}", reply.1);
    }
    let state = send(
        &api,
        Call::new(GET_AGGREGATE, "/api/v1/events/aggregates/Order/o-1").aggregate("Order", "o-1"),
    )
    .await;
    assert_problem(&state, 404, "not-found");
    // The wrong JSON type is still invalid data, not a rule.
    let typed = send(
        &api,
        Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
            "Order",
            "o-1",
            "CreateOrder",
            json!({"customer_id": 7}),
        )),
    )
    .await;
    assert_problem(&typed, 400, "invalid-command-data");
}

/// Parses a command as `POST /commands` does, reporting whether the aggregate takes commands
/// from clients.
struct ClientProbe<'a> {
    command_type: &'a str,
    data: Value,
}

impl AggregateVisitor for ClientProbe<'_> {
    type Output = (bool, Result<String, shop::CommandParseError>);

    fn visit<A: RegisteredAggregate>(self) -> Self::Output {
        let parsed = command_api::parse_client_command::<A>(self.command_type, self.data)
            .map(|c| format!("{c:?}"));
        (A::ACCEPTS_EXTERNAL_COMMANDS, parsed)
    }
}

/// Parses a command as the system does.
struct InsideProbe<'a> {
    command_type: &'a str,
    data: Value,
}

impl AggregateVisitor for InsideProbe<'_> {
    type Output = Result<String, shop::CommandParseError>;

    fn visit<A: RegisteredAggregate>(self) -> Self::Output {
        A::parse_command(self.command_type, self.data).map(|c| format!("{c:?}"))
    }
}

#[test]
fn clients_command_every_aggregate_but_the_saga() {
    let timed_out = json!({"at": "2024-03-01T09:30:00Z"});
    // Clients cannot build the saga's inputs, whatever the type.
    for command_type in ["TimedOut", "OrderPlaced", "Nope"] {
        let client = ClientProbe {
            command_type,
            data: timed_out.clone(),
        };
        let (accepts, parsed) = registry::visit("OrderFulfilment", client).expect("registered");
        assert!(!accepts);
        match parsed {
            Err(shop::CommandParseError::UnknownType(m)) => {
                assert!(
                    m.contains("OrderFulfilment accepts no commands over HTTP"),
                    "{m}"
                );
                assert!(m.contains(command_type), "{m}");
            }
            other => panic!("expected an unknown type, got {other:?}"),
        }
    }
    // Every other aggregate parses for a client exactly as it does inside.
    for category in registry::EXTERNAL_CATEGORIES {
        let client = ClientProbe {
            command_type: "ReceiveStock",
            data: json!({"quantity": 3}),
        };
        let (accepts, parsed) = registry::visit(category, client).expect("registered");
        let inside = InsideProbe {
            command_type: "ReceiveStock",
            data: json!({"quantity": 3}),
        };
        let inside = registry::visit(category, inside).expect("registered");
        assert!(accepts);
        assert_eq!(parsed, inside);
    }
}

/// JSON does not tell `3.0` from `3` (JSON Schema's `integer` takes both): an integral float
/// is the integer, anywhere in the body; a fraction is still refused.
#[tokio::test]
async fn integral_floats_are_integers() {
    let api = api();
    let mut body = command(
        "Inventory",
        "sku-1",
        "ReceiveStock",
        json!({"quantity": 3.0}),
    );
    body["expected_version"] = json!(0.0);
    let received = send(&api, Call::new(SUBMIT_COMMAND, COMMANDS).body(body)).await;
    assert_eq!(received.0, 201, "{}", received.1);
    assert_eq!(received.1["events"][0]["data"]["quantity"], json!(3));
    let half = send(
        &api,
        Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
            "Inventory",
            "sku-1",
            "ReceiveStock",
            json!({"quantity": 2.5}),
        )),
    )
    .await;
    assert_problem(&half, 400, "invalid-command-data");
    let huge = send(
        &api,
        Call::new(SUBMIT_COMMAND, COMMANDS).body(command(
            "Inventory",
            "sku-1",
            "ReceiveStock",
            json!({"quantity": 1e19}),
        )),
    )
    .await;
    assert_problem(&huge, 400, "invalid-command-data");
}

/// Reads the whole history of `acme/Order-{id}` with `limit`, page by page, checking each
/// page against `budget`: within it in wire bytes (or a single event), and full (the next
/// page's first event would not have fitted, unless the page holds `limit` events).
async fn page_through(
    api: &CommandApi<MemoryEventStore>,
    id: &str,
    limit: usize,
    budget: usize,
) -> (Vec<u64>, usize) {
    let path = format!("/api/v1/events/aggregates/Order/{id}/events");
    let (mut versions, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    let mut previous: Option<Vec<usize>> = None;
    loop {
        let query = match &cursor {
            None => format!("limit={limit}"),
            Some(c) => format!("limit={limit}&cursor={c}"),
        };
        let page = send(
            api,
            Call::new(LIST_AGGREGATE_EVENTS, &path)
                .aggregate("Order", id)
                .query(&query),
        )
        .await;
        assert_eq!(page.0, 200, "{}", page.1);
        let events = page.1["events"].as_array().expect("events").clone();
        assert!(!events.is_empty(), "a page always carries an event");
        let costs: Vec<usize> = events.iter().map(|e| eventfold::wire_len(e) + 1).collect();
        let used: usize = costs.iter().sum();
        assert!(
            events.len() <= limit && (events.len() == 1 || used <= budget),
            "{} events, {used} bytes, budget {budget}",
            events.len()
        );
        if let Some(before) = previous.take() {
            let prior: usize = before.iter().sum();
            assert!(
                before.len() == limit || prior + costs[0] > budget,
                "the previous page ({prior} bytes) had room for this page's first event"
            );
        }
        previous = Some(costs);
        versions.extend(
            events
                .iter()
                .map(|e| e["version"].as_u64().expect("version")),
        );
        pages += 1;
        match page.1["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (versions, pages),
        }
    }
}

#[tokio::test]
async fn history_pages_stop_at_their_byte_budget_and_the_cursor_loses_nothing() {
    // About 300-400 wire bytes an event: a budget of 1500 holds a few, 1 holds none (but a
    // page still carries one), the default holds all 41 of them.
    for (budget, limit) in [
        (1500, 1000),
        (1, 1000),
        (1500, 2),
        (eventfold_aws::http::PAGE_BYTES, 1000),
    ] {
        let api = api().with_page_bytes(budget);
        create_order(&api, "o-1").await;
        for i in 0..40 {
            let add = command(
                "Order",
                "o-1",
                "AddItem",
                json!({"sku": format!("sku-{i:03}"), "quantity": 1, "unit_price": 100}),
            );
            let added = send(&api, Call::new(SUBMIT_COMMAND, COMMANDS).body(add)).await;
            assert_eq!(added.0, 200, "{}", added.1);
        }
        let (versions, pages) = page_through(&api, "o-1", limit, budget).await;
        assert_eq!(versions, (1..=41).collect::<Vec<u64>>(), "budget {budget}");
        match (budget, limit) {
            (1, _) => assert_eq!(pages, 41),
            (_, 2) => assert_eq!(pages, 21, "the count cuts first"),
            (1500, _) => assert!((3..41).contains(&pages), "{pages} pages"),
            _ => assert_eq!(pages, 1),
        }
    }
}
