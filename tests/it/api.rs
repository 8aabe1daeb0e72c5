//! The command API through the local gateway, over real HTTP, on the emulator.

use aws_sdk_dynamodb::types::AttributeValue;
use eventfold_local::LocalStack;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};
use tests::{
    assert_gateway, assert_problem, events_table, quiet_stack, rw_token, token, unique_tenant,
};

const COMMANDS: &str = "/api/v1/events/commands";

fn cmd(aggregate: &str, id: &str, kind: &str, data: Value) -> Value {
    json!({"aggregate_type": aggregate, "aggregate_id": id, "type": kind, "data": data})
}

/// Items stored for `tenant` (every commit of every stream of that tenant).
async fn items_of(stack: &LocalStack, tenant: &str) -> usize {
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let mut count = 0;
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(events_table(stack))
            .filter_expression("begins_with(stream_id, :t)")
            .expression_attribute_values(":t", AttributeValue::S(format!("{tenant}/")))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        count += out.items().len();
        match out.last_evaluated_key {
            Some(k) => start = Some(k),
            None => return count,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_create_and_extend_streams_with_envelopes() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("api");
    let t = rw_token(&tenant);
    let created = http
        .post(
            COMMANDS,
            Some(&t),
            &cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c-1"})),
        )
        .await
        .expect("post");
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["stream_id"], format!("{tenant}/Order-o-1"));
    assert_eq!(created.json["version"], 1);
    let env = &created.json["events"][0];
    assert_eq!(env["type"], "OrderCreated");
    assert_eq!(env["version"], 1);
    assert_eq!(env["schema_version"], 1);
    assert_eq!(env["data"]["customer_id"], "c-1");
    assert_eq!(env["metadata"]["tenant"], tenant);
    assert_eq!(env["metadata"]["actor"], "tester");
    assert!(
        env["event_id"]
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .is_some_and(|u| u.get_version_num() == 7)
    );
    assert!(env["occurred_at"].as_str().is_some());
    let added = http
        .post(COMMANDS, Some(&t), &json!({"aggregate_type": "Order", "aggregate_id": "o-1", "type": "AddItem", "data": {"sku": "a", "quantity": 2, "unit_price": 300}, "expected_version": 1}))
        .await
        .expect("post");
    assert_eq!(added.status, 200, "{}", added.json);
    assert_eq!(added.json["version"], 2);
    // Redelivered idempotent command: 200, no events, version unchanged.
    let again = http
        .post(
            COMMANDS,
            Some(&t),
            &cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c-1"})),
        )
        .await
        .expect("post");
    assert_eq!(
        (
            again.status,
            again.json["version"].clone(),
            again.json["events"].clone()
        ),
        (200, json!(2), json!([]))
    );
    let state = http
        .get("/api/v1/events/aggregates/Order/o-1", Some(&t))
        .await
        .expect("get");
    assert_eq!(state.status, 200);
    assert_eq!(state.json["version"], 2);
    assert_eq!(state.json["state"]["status"], "Draft");
    assert_eq!(state.json["state"]["lines"]["a"]["quantity"], 2);
    let past = http
        .get("/api/v1/events/aggregates/Order/o-1?version=1", Some(&t))
        .await
        .expect("get");
    assert_eq!(past.status, 200);
    assert_eq!(past.json["version"], 1);
    assert_eq!(past.json["state"]["lines"], json!({}));
    let future = http
        .get("/api/v1/events/aggregates/Order/o-1?version=9", Some(&t))
        .await
        .expect("get");
    assert_problem(&future, 404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_with_cursors() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("pages");
    let t = rw_token(&tenant);
    for _ in 0..7 {
        let r = http
            .post(
                COMMANDS,
                Some(&t),
                &cmd("Inventory", "sku-1", "ReceiveStock", json!({"quantity": 1})),
            )
            .await
            .expect("post");
        assert!(r.status == 200 || r.status == 201);
    }
    let base = "/api/v1/events/aggregates/Inventory/sku-1/events";
    let mut seen = Vec::new();
    let mut path = format!("{base}?limit=3");
    loop {
        let page = http.get(&path, Some(&t)).await.expect("get");
        assert_eq!(page.status, 200, "{}", page.json);
        let events = page.json["events"].as_array().expect("events").clone();
        assert!(events.len() <= 3);
        seen.extend(
            events
                .iter()
                .map(|e| e["version"].as_u64().expect("version")),
        );
        match page.json["next"].as_str() {
            Some(c) => path = format!("{base}?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
    let from = http
        .get(&format!("{base}?from_version=6"), Some(&t))
        .await
        .expect("get");
    assert_eq!(from.json["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(from.json["next"], Value::Null);
    assert_problem(
        &http
            .get(&format!("{base}?cursor=garbage"), Some(&t))
            .await
            .expect("get"),
        400,
        "invalid-cursor",
    );
    assert_problem(
        &http
            .get(&format!("{base}?from_version=0"), Some(&t))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get(&format!("{base}?limit=0"), Some(&t))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get(&format!("{base}?limit=abc"), Some(&t))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get("/api/v1/events/aggregates/Inventory/nope/events", Some(&t))
            .await
            .expect("get"),
        404,
        "not-found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_scopes_are_enforced() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("auth");
    let body = cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c"}));
    assert_gateway(
        &http.post(COMMANDS, None, &body).await.expect("post"),
        401,
        "Unauthorized",
    );
    assert_gateway(
        &http
            .post(COMMANDS, Some("not.a.jwt"), &body)
            .await
            .expect("post"),
        401,
        "Unauthorized",
    );
    let forged =
        eventfold_local::jwt::issue("another-secret", &tenant, "mallory", "events:write", 600);
    assert_gateway(
        &http
            .post(COMMANDS, Some(&forged), &body)
            .await
            .expect("post"),
        401,
        "Unauthorized",
    );
    // Past the authorizer's clock-skew leeway.
    let expired = eventfold_local::jwt::issue(
        eventfold_local::jwt::DEV_SECRET,
        &tenant,
        "x",
        "events:write",
        -(eventfold_local::jwt::LEEWAY_SECS as i64) - 60,
    );
    assert_gateway(
        &http
            .post(COMMANDS, Some(&expired), &body)
            .await
            .expect("post"),
        401,
        "Unauthorized",
    );
    assert_gateway(
        &http
            .get("/api/v1/events/aggregates/Order/o-1", None)
            .await
            .expect("get"),
        401,
        "Unauthorized",
    );
    let read_only = token(&tenant, "events:read");
    assert_problem(
        &http
            .post(COMMANDS, Some(&read_only), &body)
            .await
            .expect("post"),
        403,
        "forbidden",
    );
    let write_only = token(&tenant, "events:write");
    assert_problem(
        &http
            .get("/api/v1/events/aggregates/Order/o-1", Some(&write_only))
            .await
            .expect("get"),
        403,
        "forbidden",
    );
    assert_eq!(
        items_of(&stack, &tenant).await,
        0,
        "refused requests write nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_or_change_each_other() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let (a, b) = (unique_tenant("ta"), unique_tenant("tb"));
    let (ta, tb) = (rw_token(&a), rw_token(&b));
    let r = http
        .post(
            COMMANDS,
            Some(&ta),
            &cmd(
                "Order",
                "shared-id",
                "CreateOrder",
                json!({"customer_id": "alice"}),
            ),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 201);
    assert_problem(
        &http
            .get("/api/v1/events/aggregates/Order/shared-id", Some(&tb))
            .await
            .expect("get"),
        404,
        "not-found",
    );
    assert_problem(
        &http
            .get(
                "/api/v1/events/aggregates/Order/shared-id/events",
                Some(&tb),
            )
            .await
            .expect("get"),
        404,
        "not-found",
    );
    // B acting on the same id works on B's own stream; A's stream is untouched.
    let add = http
        .post(
            COMMANDS,
            Some(&tb),
            &cmd(
                "Order",
                "shared-id",
                "AddItem",
                json!({"sku": "x", "quantity": 1, "unit_price": 1}),
            ),
        )
        .await
        .expect("post");
    assert_problem(&add, 422, "rejected");
    assert_eq!(add.json["rule"], "order-not-created");
    let other = http
        .post(
            COMMANDS,
            Some(&tb),
            &cmd(
                "Order",
                "shared-id",
                "CreateOrder",
                json!({"customer_id": "bob"}),
            ),
        )
        .await
        .expect("post");
    assert_eq!(other.status, 201);
    assert_eq!(other.json["stream_id"], format!("{b}/Order-shared-id"));
    let a_state = http
        .get("/api/v1/events/aggregates/Order/shared-id", Some(&ta))
        .await
        .expect("get");
    assert_eq!(
        (
            a_state.json["version"].clone(),
            a_state.json["state"]["customer_id"].clone()
        ),
        (json!(1), json!("alice"))
    );
    // A tenant in the body is not a thing: unknown fields are refused.
    let smuggle = http
        .post(COMMANDS, Some(&tb), &json!({"aggregate_type": "Order", "aggregate_id": "x", "type": "CreateOrder", "data": {"customer_id": "c"}, "tenant": a}))
        .await
        .expect("post");
    assert_problem(&smuggle, 400, "invalid-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_and_write_nothing() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("bad");
    let t = rw_token(&tenant);
    let ok = http
        .post(
            COMMANDS,
            Some(&t),
            &cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c"})),
        )
        .await
        .expect("post");
    assert_eq!(ok.status, 201);
    let before = items_of(&stack, &tenant).await;
    assert_eq!(before, 1);

    let raw = |body: &str| http.send("POST", COMMANDS, Some(&t), Some(body.as_bytes().to_vec()));
    assert_problem(
        &raw("{not json").await.expect("post"),
        400,
        "malformed-json",
    );
    assert_problem(&raw("").await.expect("post"), 400, "malformed-json");
    assert_problem(
        &raw(r#"{"aggregate_type":"Order"}"#).await.expect("post"),
        400,
        "invalid-request",
    );
    assert_problem(
        &raw(r#"[1,2]"#).await.expect("post"),
        400,
        "invalid-request",
    );
    let cases = [
        (
            cmd("Nope", "o-1", "CreateOrder", json!({})),
            400,
            "unknown-aggregate-type",
        ),
        (
            cmd("Order", "o-1", "Explode", json!({})),
            400,
            "unknown-command-type",
        ),
        (
            cmd(
                "Order",
                "o-1",
                "AddItem",
                json!({"sku": "a", "quantity": "many", "unit_price": 1}),
            ),
            400,
            "invalid-command-data",
        ),
        (
            cmd("Order", "o-1", "AddItem", json!({"sku": "a"})),
            400,
            "invalid-command-data",
        ),
        (
            cmd(
                "Order",
                "bad id!",
                "CreateOrder",
                json!({"customer_id": "c"}),
            ),
            400,
            "invalid-id",
        ),
        (
            cmd(
                "Order",
                &"x".repeat(200),
                "CreateOrder",
                json!({"customer_id": "c"}),
            ),
            400,
            "invalid-id",
        ),
        (
            cmd("Order", "", "CreateOrder", json!({"customer_id": "c"})),
            400,
            "invalid-id",
        ),
        (
            cmd(
                "Order",
                "o-1",
                "AddItem",
                json!({"sku": "a", "quantity": 0, "unit_price": 1}),
            ),
            422,
            "rejected",
        ),
        (
            cmd(
                "Order",
                "o-1",
                "AddItem",
                json!({"sku": "a", "quantity": 1, "unit_price": -1}),
            ),
            422,
            "rejected",
        ),
        (
            cmd("Order", "o-1", "PlaceOrder", json!({})),
            422,
            "rejected",
        ),
        (
            cmd("Order", "o-1", "ShipOrder", json!({"tracking_id": "t"})),
            422,
            "rejected",
        ),
        (
            cmd(
                "Inventory",
                "sku",
                "ReserveStock",
                json!({"order_id": "o-1", "quantity": 5}),
            ),
            422,
            "rejected",
        ),
    ];
    for (body, status, slug) in cases {
        let reply = http.post(COMMANDS, Some(&t), &body).await.expect("post");
        assert_problem(&reply, status, slug);
        if status == 422 {
            assert!(
                reply.json["rule"].as_str().is_some_and(|r| !r.is_empty()),
                "{}",
                reply.json
            );
        }
    }
    let empty_place = http
        .post(
            COMMANDS,
            Some(&t),
            &cmd("Order", "o-1", "PlaceOrder", json!({})),
        )
        .await
        .expect("post");
    assert_eq!(empty_place.json["rule"], "order-not-empty");
    let stale = http
        .post(COMMANDS, Some(&t), &json!({"aggregate_type": "Order", "aggregate_id": "o-1", "type": "AddItem", "data": {"sku": "a", "quantity": 1, "unit_price": 1}, "expected_version": 0}))
        .await
        .expect("post");
    assert_problem(&stale, 409, "conflict");
    assert_eq!(
        (
            stale.json["expected_version"].clone(),
            stale.json["actual_version"].clone()
        ),
        (json!(0), json!(1))
    );
    let huge = cmd(
        "Order",
        "o-1",
        "AddItem",
        json!({"sku": "a".repeat(300 * 1024), "quantity": 1, "unit_price": 1}),
    );
    assert_problem(
        &http.post(COMMANDS, Some(&t), &huge).await.expect("post"),
        413,
        "payload-too-large",
    );
    assert_problem(
        &http
            .get("/api/v1/events/aggregates/Order/o-1?version=zero", Some(&t))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get("/api/v1/events/aggregates/Nope/o-1", Some(&t))
            .await
            .expect("get"),
        400,
        "unknown-aggregate-type",
    );
    assert_problem(
        &http
            .get("/api/v1/events/aggregates/Order/missing", Some(&t))
            .await
            .expect("get"),
        404,
        "not-found",
    );
    // No route: API Gateway's own 404, before any function.
    assert_gateway(
        &http
            .get("/api/v1/events/nowhere", Some(&t))
            .await
            .expect("get"),
        404,
        "Not Found",
    );
    assert_eq!(
        items_of(&stack, &tenant).await,
        before,
        "rejected requests leave the table unchanged"
    );
    let state = http
        .get("/api/v1/events/aggregates/Order/o-1", Some(&t))
        .await
        .expect("get");
    assert_eq!(state.json["version"], 1);
}

/// `POST /commands` with an `Idempotency-Key`.
async fn keyed(http: &Http, token: &str, key: &str, body: &Value) -> eventfold_local::httpc::Reply {
    http.send_with(
        "POST",
        COMMANDS,
        Some(token),
        &[("idempotency-key", key)],
        Some(serde_json::to_vec(body).expect("json")),
    )
    .await
    .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_answer_and_writes_once() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("idem");
    let tok = rw_token(&tenant);
    let create = cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c-1"}));

    let first = keyed(&http, &tok, "create-o-1", &create).await;
    assert_eq!(first.status, 201, "{:?}", first.json);
    assert_eq!(first.header("idempotent-replayed"), None);
    // Same key, same payload (other whitespace and key order): the stored answer.
    let reordered = json!({"type": "CreateOrder", "data": {"customer_id": "c-1"},
                           "aggregate_id": "o-1", "aggregate_type": "Order"});
    let again = keyed(&http, &tok, "create-o-1", &reordered).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json, "the same body, event ids included");
    assert_eq!(items_of(&stack, &tenant).await, 1, "one commit");

    // Same key, other payload: refused, nothing written.
    let other = cmd("Order", "o-2", "CreateOrder", json!({"customer_id": "c-1"}));
    let reused = keyed(&http, &tok, "create-o-1", &other).await;
    assert_problem(&reused, 422, "idempotency-key-reused");
    assert_eq!(items_of(&stack, &tenant).await, 1);

    // A caller mistake is stored and replayed like a success.
    let early = cmd("Order", "o-3", "PlaceOrder", json!({}));
    let rejected = keyed(&http, &tok, "place-o-3", &early).await;
    assert_problem(&rejected, 422, "rejected");
    let replayed = keyed(&http, &tok, "place-o-3", &early).await;
    assert_problem(&replayed, 422, "rejected");
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));

    // Keys are per caller: another actor of the tenant runs its own request.
    let bob = eventfold_local::jwt::issue(
        eventfold_local::jwt::DEV_SECRET,
        &tenant,
        "bob",
        "events:read events:write",
        600,
    );
    let second = cmd("Order", "o-4", "CreateOrder", json!({"customer_id": "c-2"}));
    let by_bob = keyed(&http, &bob, "create-o-1", &second).await;
    assert_eq!(by_bob.status, 201, "{:?}", by_bob.json);
    assert_eq!(by_bob.header("idempotent-replayed"), None);
    assert_eq!(items_of(&stack, &tenant).await, 2);

    // Without the header nothing changes; a malformed key is a 400 that writes nothing.
    let plain = http
        .post(
            COMMANDS,
            Some(&tok),
            &cmd("Order", "o-5", "CreateOrder", json!({"customer_id": "c"})),
        )
        .await
        .expect("request");
    assert_eq!(plain.status, 201);
    for bad in ["", "with space", &"k".repeat(256), "caf\u{e9}"] {
        let reply = keyed(
            &http,
            &tok,
            bad,
            &cmd("Order", "o-6", "CreateOrder", json!({"customer_id": "c"})),
        )
        .await;
        assert_problem(&reply, 400, "invalid-idempotency-key");
    }
    assert_eq!(items_of(&stack, &tenant).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_run_once() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("idemrace");
    let tok = rw_token(&tenant);
    let create = cmd("Inventory", "sku-1", "ReceiveStock", json!({"quantity": 5}));
    let replies = futures_join(
        (0..4)
            .map(|_| {
                let (http, tok, create) = (http.clone(), tok.clone(), create.clone());
                tokio::spawn(async move { keyed(&http, &tok, "receive-1", &create).await })
            })
            .collect(),
    )
    .await;
    let ran: Vec<_> = replies
        .iter()
        .filter(|r| r.status == 201 && r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(ran.len(), 1, "exactly one request ran: {replies:#?}");
    for r in &replies {
        match r.status {
            201 => {}
            409 => {
                assert_problem(r, 409, "idempotency-in-progress");
                assert!(r.header("retry-after").is_some(), "{r:?}");
            }
            other => panic!("unexpected {other}: {:?}", r.json),
        }
    }
    assert_eq!(items_of(&stack, &tenant).await, 1, "one commit");
}

async fn futures_join(
    handles: Vec<tokio::task::JoinHandle<eventfold_local::httpc::Reply>>,
) -> Vec<eventfold_local::httpc::Reply> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_tenant_cannot_own_streams_is_unauthorized_and_writes_nothing() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let create = cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c-1"}));
    // `_cp` names the read models' checkpoint rows; the others are not tenant names at all.
    for tenant in ["_cp", "_due", "a b", "acme/x", &"t".repeat(65)] {
        let reply = http
            .post(COMMANDS, Some(&rw_token(tenant)), &create)
            .await
            .expect("request");
        assert_problem(&reply, 401, "unauthorized");
        let read = http
            .get(
                "/api/v1/events/aggregates/Order/o-1",
                Some(&token(tenant, "events:read")),
            )
            .await
            .expect("request");
        assert_problem(&read, 401, "unauthorized");
    }
    for tenant in ["_cp", "_due"] {
        assert_eq!(
            items_of(&stack, tenant).await,
            0,
            "nothing written for {tenant}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_past_the_head_is_an_empty_page() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("far");
    let tok = rw_token(&tenant);
    let created = http
        .post(
            COMMANDS,
            Some(&tok),
            &cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c"})),
        )
        .await
        .expect("request");
    assert_eq!(created.status, 201);
    for from in [
        "2",
        "1000",
        "9223372036854775807",
        "18446744073709551614",
        "18446744073709551615",
    ] {
        let page = http
            .get(
                &format!("/api/v1/events/aggregates/Order/o-1/events?from_version={from}"),
                Some(&tok),
            )
            .await
            .expect("request");
        assert_eq!(page.status, 200, "from {from}: {:?}", page.json);
        assert_eq!(page.json["events"], json!([]), "from {from}");
        assert_eq!(page.json["next"], Value::Null);
    }
    let missing = http
        .get(
            "/api/v1/events/aggregates/Order/o-2/events?from_version=18446744073709551615",
            Some(&tok),
        )
        .await
        .expect("request");
    assert_problem(&missing, 404, "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_would_poison_a_view_are_refused_at_the_door() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("door");
    let tok = rw_token(&tenant);
    // A 3 KB customer id used to be accepted and then broke the orders-by-customer index.
    let huge = "c".repeat(3 * 1024);
    let reply = http
        .post(
            COMMANDS,
            Some(&tok),
            &cmd("Order", "o-1", "CreateOrder", json!({"customer_id": huge})),
        )
        .await
        .expect("request");
    assert_problem(&reply, 422, "rejected");
    assert_eq!(reply.json["rule"], "customer-id-invalid");
    assert_eq!(items_of(&stack, &tenant).await, 0, "nothing written");
    let created = http
        .post(
            COMMANDS,
            Some(&tok),
            &cmd("Order", "o-1", "CreateOrder", json!({"customer_id": "c-1"})),
        )
        .await
        .expect("request");
    assert_eq!(created.status, 201);
    let sku = http
        .post(
            COMMANDS,
            Some(&tok),
            &cmd(
                "Order",
                "o-1",
                "AddItem",
                json!({"sku": "a b", "quantity": 1, "unit_price": 1}),
            ),
        )
        .await
        .expect("request");
    assert_problem(&sku, 422, "rejected");
    assert_eq!(sku.json["rule"], "sku-invalid");
    let reason = http
        .post(
            COMMANDS,
            Some(&tok),
            &cmd(
                "Order",
                "o-1",
                "CancelOrder",
                json!({"reason": "r".repeat(501)}),
            ),
        )
        .await
        .expect("request");
    assert_eq!(reason.json["rule"], "reason-too-long");
    assert_eq!(
        items_of(&stack, &tenant).await,
        1,
        "only the valid CreateOrder"
    );
}
