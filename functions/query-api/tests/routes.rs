//! The query API as API Gateway calls it: payload 2.0 events (through
//! `lambda_http::request::from_str`, as the Lambda runtime builds the request), routed on the
//! `routeKey` and the `view` path parameter the gateway matched, never on the raw path.

use eventfold_consumers::projection::{
    Doc, ListQuery, MemoryReadModelStore, Page, ReadModelError, ReadModelStore,
};
use lambda_http::{Body, Request};
use query_api::{GET_QUERY, QueryService, ROUTE_KEYS};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One HTTP API request as API Gateway (payload format 2.0) hands it to the function.
struct Call<'a> {
    route_key: &'a str,
    raw_path: &'a str,
    view: Option<&'a str>,
    raw_query: &'a str,
    scope: &'a str,
}

impl<'a> Call<'a> {
    /// `GET /queries/{view}` as the gateway matches it for `view`.
    fn view(view: &'a str, raw_query: &'a str) -> Self {
        Self {
            route_key: GET_QUERY,
            raw_path: "/api/v1/events/queries/routed-by-parameter",
            view: Some(view),
            raw_query,
            scope: "events:read",
        }
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
            "headers": {"host": "api.example.com"},
            "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
            "pathParameters": self.view.map(|v| json!({"view": v})),
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
            "body": null,
            "isBase64Encoded": false,
        });
        lambda_http::request::from_str(&event.to_string()).expect("a payload 2.0 event")
    }
}

fn doc(key: &str, data: Value, index: Option<(&str, &str)>) -> Doc {
    Doc {
        key: key.to_owned(),
        data,
        checkpoint: 1,
        index: index.map(|(p, s)| (p.to_owned(), s.to_owned())),
    }
}

/// A query API over read models holding one document of each view for tenant `acme`.
async fn api() -> QueryService<MemoryReadModelStore> {
    let models = MemoryReadModelStore::new();
    let put = |view: &'static str, d: Doc| {
        let models = &models;
        async move { models.put("acme", view, d, 0).await.expect("put") }
    };
    put(
        "order-summary",
        doc(
            "o-1",
            json!({"order_id": "o-1", "customer_id": "c-1", "status": "Draft"}),
            Some(("c-1", "2024-03-01T09:30:00.000000Z#o-1")),
        ),
    )
    .await;
    put("stock-levels", doc("sku-1", json!({"on_hand": 5}), None)).await;
    put(
        "daily-sales",
        doc("2024-02-29", json!({"orders": 1, "revenue": 300}), None),
    )
    .await;
    QueryService::new(models)
}

async fn send<R: ReadModelStore>(api: &QueryService<R>, call: Call<'_>) -> (u16, Value) {
    let resp = api.handle(call.request()).await;
    let status = resp.status().as_u16();
    let body = match resp.body() {
        Body::Text(t) => serde_json::from_str(t).expect("JSON body"),
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

#[tokio::test]
async fn every_registered_view_is_served_by_its_path_parameter() {
    let api = api().await;
    let stock = send(&api, Call::view("stock-levels", "sku=sku-1")).await;
    assert_eq!(stock.0, 200, "{}", stock.1);
    assert_eq!(
        stock.1,
        json!({"view": "stock-levels", "item": {"on_hand": 5, "sku": "sku-1"}})
    );
    let order = send(&api, Call::view("order-summary", "order_id=o-1")).await;
    assert_eq!(order.1["item"]["customer_id"], "c-1");
    let by_customer = send(&api, Call::view("orders-by-customer", "customer_id=c-1")).await;
    assert_eq!(by_customer.0, 200, "{}", by_customer.1);
    assert_eq!(by_customer.1["view"], "orders-by-customer");
    assert_eq!(by_customer.1["items"][0]["order_id"], "o-1");
    let sales = send(&api, Call::view("daily-sales", "day=2024-02-29")).await;
    assert_eq!(
        sales.1["item"],
        json!({"orders": 1, "revenue": 300, "day": "2024-02-29"})
    );
    let all = send(&api, Call::view("daily-sales", "")).await;
    assert_eq!(all.1["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn routing_follows_the_route_key_and_path_parameter_not_the_raw_path() {
    let api = api().await;
    // The raw path names another view; the gateway matched `{view}` = stock-levels.
    let mut call = Call::view("stock-levels", "sku=sku-1");
    call.raw_path = "/api/v1/events/queries/daily-sales";
    let reply = send(&api, call).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(reply.1["view"], "stock-levels");
    assert_eq!(reply.1["item"]["sku"], "sku-1");
    // A raw path outside the API's prefix is served all the same.
    let mut elsewhere = Call::view("stock-levels", "sku=sku-1");
    elsewhere.raw_path = "/somewhere/else";
    assert_eq!(send(&api, elsewhere).await.0, 200);
}

#[tokio::test]
async fn an_unknown_route_key_is_not_found_whatever_the_raw_path() {
    let api = api().await;
    for route_key in [
        "POST /api/v1/events/queries/{view}",
        "GET /api/v1/events/queries/{name}",
        "GET /api/v1/events/commands",
        "$default",
    ] {
        let mut call = Call::view("stock-levels", "sku=sku-1");
        call.route_key = route_key;
        call.raw_path = "/api/v1/events/queries/stock-levels";
        let reply = send(&api, call).await;
        assert_problem(&reply, 404, "not-found");
        assert_eq!(reply.1["instance"], "/api/v1/events/queries/stock-levels");
    }
    let mut no_parameter = Call::view("stock-levels", "sku=sku-1");
    no_parameter.view = None;
    assert_problem(&send(&api, no_parameter).await, 404, "not-found");
}

#[tokio::test]
async fn unknown_views_and_parameters_are_refused() {
    let api = api().await;
    let unknown = send(&api, Call::view("order_summary", "")).await;
    assert_problem(&unknown, 404, "not-found");
    assert_eq!(unknown.1["detail"], "unknown view 'order_summary'");
    assert_problem(
        &send(&api, Call::view("stock-levels", "day=2024-01-01")).await,
        400,
        "invalid-request",
    );
    assert_problem(
        &send(&api, Call::view("orders-by-customer", "")).await,
        400,
        "invalid-request",
    );
    assert_problem(
        &send(&api, Call::view("stock-levels", "sku=bad%20sku")).await,
        400,
        "invalid-request",
    );
    let mut unscoped = Call::view("stock-levels", "sku=sku-1");
    unscoped.scope = "events:write";
    assert_problem(&send(&api, unscoped).await, 403, "forbidden");
}

#[tokio::test]
async fn days_must_be_calendar_dates() {
    let api = api().await;
    for not_a_day in [
        "2024-02-31",
        "2023-02-29",
        "2024-04-31",
        "2024-13-01",
        "2024-1-05",
        "02024-1-01",
        "yesterday",
    ] {
        let query = format!("day={not_a_day}");
        let reply = send(&api, Call::view("daily-sales", &query)).await;
        assert_problem(&reply, 400, "invalid-request");
        assert_eq!(reply.1["detail"], "parameter 'day' has an invalid value");
    }
    // A real day without sales is a lookup that finds nothing, not a bad request.
    let leap = send(&api, Call::view("daily-sales", "day=2028-02-29")).await;
    assert_problem(&leap, 404, "not-found");
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
    assert_eq!(template_route_keys("query-api"), served);
}

/// The memory store with cursors as the API takes them (URL-safe: hex of the memory store's
/// own, which have a `:`), counting list reads.
struct HexCursors(MemoryReadModelStore, AtomicUsize);

#[async_trait::async_trait]
impl ReadModelStore for HexCursors {
    async fn get(&self, t: &str, v: &str, k: &str) -> Result<Option<Doc>, ReadModelError> {
        self.0.get(t, v, k).await
    }
    async fn put(&self, t: &str, v: &str, d: Doc, e: u64) -> Result<(), ReadModelError> {
        self.0.put(t, v, d, e).await
    }
    async fn checkpoint(&self, v: &str, s: &str) -> Result<u64, ReadModelError> {
        self.0.checkpoint(v, s).await
    }
    async fn add(
        &self,
        t: &str,
        v: &str,
        s: &str,
        e: u64,
        n: u64,
        d: Vec<(String, BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError> {
        self.0.add(t, v, s, e, n, d).await
    }
    async fn list(&self, t: &str, v: &str, mut q: ListQuery) -> Result<Page, ReadModelError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        q.cursor = q.cursor.map(|hex| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            String::from_utf8(bytes).expect("utf-8")
        });
        let mut page = self.0.list(t, v, q).await?;
        page.next = page
            .next
            .map(|c| c.bytes().map(|b| format!("{b:02x}")).collect());
        Ok(page)
    }
    async fn pointer(
        &self,
        view: &str,
    ) -> Result<eventfold_consumers::projection::ViewPointer, ReadModelError> {
        self.0.pointer(view).await
    }
    async fn set_pointer(
        &self,
        view: &str,
        pointer: &eventfold_consumers::projection::ViewPointer,
    ) -> Result<(), ReadModelError> {
        self.0.set_pointer(view, pointer).await
    }
}

#[tokio::test]
async fn a_list_page_stops_at_its_byte_budget_and_the_cursor_loses_nothing() {
    // 30 stock levels of about 2 KB on the wire each (a note of quotes): a budget of 10 KB
    // holds four of them, a budget of 1 byte one (a page is never empty).
    let note = "\"".repeat(500);
    let one = eventfold::wire_len(&json!({"note": note, "sku": "sku-00"})) + 1;
    for budget in [10 * 1024, 1, usize::MAX] {
        let models = HexCursors(MemoryReadModelStore::new(), AtomicUsize::new(0));
        for i in 0..30 {
            let d = doc(&format!("sku-{i:02}"), json!({"note": note}), None);
            models.put("acme", "stock-levels", d, 0).await.expect("put");
        }
        let api = QueryService::new(models).with_page_bytes(budget);
        let (mut skus, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let query = match &cursor {
                None => "limit=100".to_owned(),
                Some(c) => format!("limit=100&cursor={c}"),
            };
            let page = send(&api, Call::view("stock-levels", &query)).await;
            assert_eq!(page.0, 200, "{}", page.1);
            let items = page.1["items"].as_array().expect("items").clone();
            let used: usize = items.iter().map(|i| eventfold::wire_len(i) + 1).sum();
            assert!(items.len() <= 1 || used <= budget, "{used} bytes");
            skus.extend(
                items
                    .iter()
                    .map(|i| i["sku"].as_str().expect("sku").to_owned()),
            );
            pages += 1;
            match page.1["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let expected: Vec<String> = (0..30).map(|i| format!("sku-{i:02}")).collect();
        assert_eq!(
            skus, expected,
            "budget {budget}: each document once, in order"
        );
        let per_page = match budget {
            1 => 1,
            usize::MAX => 30,
            b => b / one,
        };
        assert_eq!(pages, 30_usize.div_ceil(per_page), "budget {budget}");
        // A page over the budget is read twice (once whole, once with the count that fits);
        // the last, whose read holds only what is left, fits at once.
        let reads = api.models().1.load(Ordering::Relaxed);
        let expected_reads = 2 * pages - 1;
        assert_eq!(reads, expected_reads, "budget {budget}");
    }
}

#[tokio::test]
async fn queries_read_the_version_the_pointer_names_lookups_and_lists_alike() {
    use eventfold_consumers::projection::ViewPointer;
    let api = api().await;
    let models = api.models();
    let v2 = doc(
        "o-1",
        json!({"order_id": "o-1", "customer_id": "c-1", "status": "Placed"}),
        Some(("c-1", "2024-03-01T09:30:00.000000Z#o-1")),
    );
    models
        .put("acme", "order-summary@v2", v2, 0)
        .await
        .expect("put");
    let version = |resp: &lambda_http::Response<Body>| {
        resp.headers()
            .get(query_api::VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let lookup = || Call::view("order-summary", "order_id=o-1");
    let before = api.handle(lookup().request()).await;
    assert_eq!(version(&before).as_deref(), Some("1"));
    let building = ViewPointer::initial().register_build("t").expect("ok");
    models
        .set_pointer("order-summary", &building)
        .await
        .expect("register");
    let (_, still) = send(&api, lookup()).await;
    assert_eq!(
        still["item"]["status"], "Draft",
        "a building version is not read"
    );
    let promoted = building
        .promote(2, chrono::Utc::now(), chrono::Duration::zero(), "t")
        .expect("ok");
    models
        .set_pointer("order-summary", &promoted)
        .await
        .expect("flip");
    let after = api.handle(lookup().request()).await;
    assert_eq!(version(&after).as_deref(), Some("2"));
    let (_, item) = send(&api, lookup()).await;
    assert_eq!(item["item"]["status"], "Placed");
    let (_, list) = send(&api, Call::view("orders-by-customer", "customer_id=c-1")).await;
    assert_eq!(list["items"][0]["status"], "Placed", "the index of v2");
    // Other views keep their own pointer (version 1).
    let stock = api
        .handle(Call::view("stock-levels", "sku=sku-1").request())
        .await;
    assert_eq!(version(&stock).as_deref(), Some("1"));
}

/// A listing that pages across a promote goes on in the version it started in while that
/// version is kept current (retiring), with no error and nothing skipped; once it is
/// retired, its cursors are refused (`invalid-cursor`), and a new listing reads the new one.
#[tokio::test]
async fn a_listing_across_a_promote_continues_in_its_version_until_it_is_retired() {
    use eventfold_consumers::projection::ViewPointer;
    let models = MemoryReadModelStore::new();
    for i in 0..6 {
        let d = doc(&format!("sku-{i}"), json!({"on_hand": i}), None);
        models
            .put("acme", "stock-levels", d, 0)
            .await
            .expect("put v1");
        let d = doc(&format!("sku-{i}"), json!({"on_hand": i}), None);
        models
            .put("acme", "stock-levels@v2", d, 0)
            .await
            .expect("put v2");
    }
    // Cursors in the URL-safe alphabet the API accepts (the memory store's have a colon).
    let api = QueryService::new(HexCursors(models, AtomicUsize::new(0)));
    let skus = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["sku"].as_str().expect("sku").to_owned())
            .collect()
    };
    let (status, first) = send(&api, Call::view("stock-levels", "limit=2")).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    assert!(cursor.starts_with("v1_"), "{cursor}");

    let building = ViewPointer::initial().register_build("t").expect("ok");
    api.models()
        .set_pointer("stock-levels", &building)
        .await
        .expect("register");
    let promoted = building
        .promote(2, chrono::Utc::now(), chrono::Duration::zero(), "t")
        .expect("ok");
    api.models()
        .set_pointer("stock-levels", &promoted)
        .await
        .expect("flip");
    let (status, second) = send(
        &api,
        Call::view("stock-levels", &format!("limit=2&cursor={cursor}")),
    )
    .await;
    assert_eq!(status, 200, "v1 is retiring, still current: {second}");
    let mut seen = skus(&first);
    seen.extend(skus(&second));
    assert_eq!(
        seen,
        ["sku-0", "sku-1", "sku-2", "sku-3"],
        "nothing skipped"
    );
    let after = second["next"].as_str().expect("more").to_owned();
    assert!(after.starts_with("v1_"), "the listing stays in v1: {after}");
    let (_, fresh) = send(&api, Call::view("stock-levels", "limit=2")).await;
    assert!(
        fresh["next"].as_str().is_some_and(|n| n.starts_with("v2_")),
        "a new listing reads the live v2: {fresh}"
    );

    let retired = promoted
        .retire(1, chrono::Utc::now(), "t")
        .expect("grace over");
    api.models()
        .set_pointer("stock-levels", &retired)
        .await
        .expect("retire");
    let (status, refused) = send(
        &api,
        Call::view("stock-levels", &format!("limit=2&cursor={after}")),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["type"]
            .as_str()
            .map(|t| t.ends_with("invalid-cursor")),
        Some(true),
        "{refused}"
    );
}
