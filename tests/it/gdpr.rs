//! The right to erasure by crypto-shredding, on the local stack (moto's DynamoDB, KMS, SNS
//! and SQS, every function through the IAM proxy): a customer with three orders that went
//! through the saga and were viewed is forgotten over HTTP; then no table, queue or
//! dead-letter queue holds any of their plaintext, their orders still load with their
//! totals, every view and a rebuild of every view agree and show `[forgotten]`; another
//! customer is untouched; another tenant can neither forget nor read the subject.

use aws_sdk_dynamodb::types::AttributeValue;
use eventfold_local::LocalStack;
use eventfold_local::esm::EsmOptions;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tests::{assert_no_denials, assert_problem, root, rw_token, token, unique_tenant};

const COMMANDS: &str = "/api/v1/events/commands";
/// Ada's personal values: none may be found anywhere after the forget.
const ADA: [&str; 3] = [
    "Ada Lovelace",
    "ada@analytical.example",
    "12 St James's Square",
];
/// Bob's: sealed at rest like Ada's, readable through the API after Ada's forget.
const BOB: [&str; 3] = ["Bob Babbage", "bob@engine.example", "1 Dorset Street"];

/// A unique stack name.
fn stack_name() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{}-{}", tests::STACK, &id[id.len() - 10..])
}

async fn stack(name: &str) -> LocalStack {
    tests::stack_named(
        name,
        EsmOptions {
            idle_poll: Duration::from_millis(50),
            retry_backoff: Duration::from_millis(20),
            sqs_visibility_timeout: Some(Duration::from_secs(2)),
            schedule_period: Some(Duration::from_millis(500)),
            report_every: None,
            ..EsmOptions::default()
        },
    )
    .await
}

fn command(aggregate: &str, id: &str, kind: &str, data: Value) -> Value {
    json!({"aggregate_type": aggregate, "aggregate_id": id, "type": kind, "data": data})
}

async fn send(http: &Http, token: &str, body: Value) -> Value {
    let r = http.post(COMMANDS, Some(token), &body).await.expect("post");
    assert!(
        r.status == 200 || r.status == 201,
        "{body}: {} {}",
        r.status,
        r.json
    );
    r.json
}

async fn register(http: &Http, token: &str, id: &str, [name, email, address]: [&str; 3]) {
    let data =
        json!({"customer_id": id, "name": name, "email": email, "shipping_address": address});
    let body =
        serde_json::to_vec(&command("Customer", id, "RegisterCustomer", data)).expect("json");
    // With an Idempotency-Key: the stored answer must not keep the plaintext either.
    let key = format!("register-{id}");
    let r = http
        .send_with(
            "POST",
            COMMANDS,
            Some(token),
            &[("idempotency-key", &key)],
            Some(body),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 201, "{}", r.json);
    assert!(
        !r.json.to_string().contains(name),
        "the answer withholds: {}",
        r.json
    );
}

async fn order(http: &Http, token: &str, id: &str, customer: &str, quantity: i64) {
    send(
        http,
        token,
        command("Order", id, "CreateOrder", json!({"customer_id": customer})),
    )
    .await;
    let line = json!({"sku": "book", "quantity": quantity, "unit_price": 1250});
    send(http, token, command("Order", id, "AddItem", line)).await;
    send(
        http,
        token,
        command("Order", id, "PlaceOrder", json!({"payment_method": "card"})),
    )
    .await;
}

/// Polls `path` until `check` accepts the JSON, for at most 90 s.
async fn eventually(http: &Http, token: &str, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let r = http.get(path, Some(token)).await.expect("get");
        if r.status == 200 && check(&r.json) {
            return r.json;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{path} did not converge: {} {}",
            r.status,
            r.json
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The lines of a table dump but those of the read models (the `customers` view copies a
/// live customer's name and email by design: it is what a forget scrubs).
fn outside_views(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("ReadModelsTable:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn plaintext_in(text: &str, values: &[&str]) -> Vec<String> {
    values
        .iter()
        .filter(|v| text.contains(*v))
        .map(|v| (*v).to_owned())
        .collect()
}

/// The template as a tool loads it for stack `name` (no runtime values of a provisioning).
fn fresh_template(name: &str) -> eventfold_local::Template {
    eventfold_local::Template::load(
        &root().join(eventfold_local::stack::TEMPLATE_PATH),
        name,
        "us-east-1",
    )
    .expect("template loads")
}

/// Every item of every table of the stack, as text (strings as stored; binaries as bytes).
async fn scan_all_tables(stack: &LocalStack) -> String {
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let mut all = String::new();
    for table in stack.template.tables() {
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = client
                .scan()
                .table_name(&table.name)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .unwrap_or_else(|e| panic!("scan {}: {e:?}", table.name));
            for item in page.items() {
                all.push_str(&format!("{}: {item:?}\n", table.logical_id));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
    }
    all
}

/// Every message still in any queue of the stack (dead-letter queues included), as text.
async fn drain_all_queues(stack: &LocalStack) -> String {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let mut all = String::new();
    for queue in stack.template.queues() {
        let url = stack.template.queue_url(&queue.logical_id);
        loop {
            let got = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .send()
                .await
                .unwrap_or_else(|e| panic!("receive {url}: {e:?}"));
            if got.messages().is_empty() {
                break;
            }
            for m in got.messages() {
                all.push_str(&format!(
                    "{}: {}\n",
                    queue.logical_id,
                    m.body().unwrap_or_default()
                ));
            }
        }
    }
    all
}

/// Every view, as the query API answers it for `tenant`.
async fn all_views(http: &Http, token: &str) -> String {
    let mut all = String::new();
    for path in [
        "/api/v1/events/queries/order-summary?limit=100",
        "/api/v1/events/queries/orders-by-customer?customer_id=c-ada",
        "/api/v1/events/queries/orders-by-customer?customer_id=c-bob",
        "/api/v1/events/queries/stock-levels",
        "/api/v1/events/queries/daily-sales",
        "/api/v1/events/queries/customers",
    ] {
        let r = http.get(path, Some(token)).await.expect("get");
        assert_eq!(r.status, 200, "{path}: {}", r.json);
        all.push_str(&r.json.to_string());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_customer_leaves_no_plaintext_and_the_business_facts_stay() {
    let name = stack_name();
    let stack = stack(&name).await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("gdpr");
    let tok = rw_token(&tenant);
    let admin = token(&tenant, "events:read events:write events:admin");
    send(
        &http,
        &tok,
        command(
            "Inventory",
            "book",
            "ReceiveStock",
            json!({"quantity": 100}),
        ),
    )
    .await;
    register(&http, &tok, "c-ada", ADA).await;
    register(&http, &tok, "c-bob", BOB).await;
    for (id, quantity) in [("o-ada-1", 1), ("o-ada-2", 2), ("o-ada-3", 3)] {
        order(&http, &tok, id, "c-ada", quantity).await;
    }
    order(&http, &tok, "o-bob-1", "c-bob", 4).await;

    // Through the saga, and viewed with the customer's name and email.
    for id in ["o-ada-1", "o-ada-2", "o-ada-3", "o-bob-1"] {
        let path = format!("/api/v1/events/aggregates/OrderFulfilment/{id}");
        let done = eventually(&http, &tok, &path, |j| j["state"]["outcome"].is_string()).await;
        assert_eq!(done["state"]["outcome"], "Confirmed", "{id}: {done}");
    }
    let viewed = eventually(
        &http,
        &tok,
        "/api/v1/events/queries/orders-by-customer?customer_id=c-ada",
        |j| {
            j["items"].as_array().is_some_and(|items| {
                items.len() == 3
                    && items
                        .iter()
                        .all(|i| i["status"] == "Confirmed" && i["customer"]["name"] == ADA[0])
            })
        },
    )
    .await;
    assert_eq!(viewed["items"][0]["customer"]["email"], ADA[1]);
    let at_rest = outside_views(&scan_all_tables(&stack).await);
    assert!(
        plaintext_in(&at_rest, &ADA).is_empty() && plaintext_in(&at_rest, &BOB).is_empty(),
        "sealed at rest before any forget"
    );

    // Another tenant cannot forget or read the subject.
    let stranger = token(
        &unique_tenant("other"),
        "events:read events:write events:admin",
    );
    let r = http
        .post(
            "/api/v1/events/subjects/c-ada/forget",
            Some(&stranger),
            &json!({}),
        )
        .await
        .expect("post");
    assert_problem(&r, 404, "not-found");
    let r = http
        .get("/api/v1/events/subjects/c-ada", Some(&stranger))
        .await
        .expect("get");
    assert_problem(&r, 404, "not-found");
    let r = http
        .post(
            "/api/v1/events/subjects/c-ada/forget",
            Some(&tok),
            &json!({}),
        )
        .await
        .expect("post");
    assert_problem(&r, 403, "forbidden");

    let r = http
        .post(
            "/api/v1/events/subjects/c-ada/forget",
            Some(&admin),
            &json!({}),
        )
        .await
        .expect("post");
    assert_eq!(
        (r.status, r.json["key_before"].as_str()),
        (200, Some("active")),
        "{}",
        r.json
    );
    eventually(
        &http,
        &tok,
        "/api/v1/events/queries/customers?customer_id=c-ada",
        |j| j["item"]["forgotten"] == true,
    )
    .await;

    // The orders still load with their totals; the saga's facts stay.
    for (id, quantity) in [("o-ada-1", 1), ("o-ada-2", 2), ("o-ada-3", 3)] {
        let path = format!("/api/v1/events/queries/order-summary?order_id={id}");
        let doc = eventually(&http, &tok, &path, |j| {
            j["item"]["customer"]["name"] == "[forgotten]"
        })
        .await;
        assert_eq!(doc["item"]["total"], 1250 * quantity, "{doc}");
        assert_eq!(doc["item"]["status"], "Confirmed");
        let r = http
            .get(&format!("/api/v1/events/aggregates/Order/{id}"), Some(&tok))
            .await
            .expect("get");
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(r.json["state"]["status"], "Confirmed");
    }
    let r = http
        .get("/api/v1/events/aggregates/Customer/c-ada", Some(&tok))
        .await
        .expect("get");
    assert_eq!(
        (r.status, r.json["state"]["forgotten"].clone()),
        (200, json!(true)),
        "{}",
        r.json
    );
    assert_eq!(r.json["state"]["name"], json!({"$redacted": true}));
    let r = http
        .get(
            "/api/v1/events/aggregates/Customer/c-ada/events",
            Some(&tok),
        )
        .await
        .expect("get");
    assert_eq!(
        r.json["events"][0]["data"]["email"],
        json!({"$redacted": true}),
        "{}",
        r.json
    );

    // Nowhere: tables (events, snapshots, idempotency, read models, dead letters, keys ...),
    // queues and their dead-letter queues, the views.
    let views = all_views(&http, &tok).await;
    assert!(plaintext_in(&views, &ADA).is_empty(), "views: {views}");
    assert!(
        views.contains(BOB[0]) && views.contains(BOB[1]),
        "Bob is untouched: {views}"
    );
    let tables = scan_all_tables(&stack).await;
    assert!(
        plaintext_in(&tables, &ADA).is_empty(),
        "tables hold {:?}",
        plaintext_in(&tables, &ADA)
    );
    assert!(
        plaintext_in(&outside_views(&tables), &BOB).is_empty(),
        "Bob's data is sealed at rest too"
    );
    assert!(
        tables.contains("IdempotencyTable"),
        "the idempotency records were scanned too"
    );
    let queues = drain_all_queues(&stack).await;
    assert!(
        plaintext_in(&queues, &ADA).is_empty(),
        "queues hold {:?}",
        plaintext_in(&queues, &ADA)
    );

    // A rebuild of every view equals the live one and holds no plaintext either.
    let target = cli::rebuild::RebuildTarget {
        sdk: stack.sdk.clone(),
        events_table: tests::events_table(&stack),
        read_models_table: tests::table(&stack, "ReadModelsTable"),
        // As `eventfold projections rebuild` builds it: from the template as loaded, not as
        // this stack provisioned it (the KMS key reached by its alias).
        keys: Some(cli::gdpr::key_ring(&stack.sdk, &fresh_template(&name)).expect("key ring")),
    };
    for view in ["order-summary", "stock-levels", "daily-sales", "customers"] {
        let same = cli::rebuild::run(&target, view, true)
            .await
            .expect("rebuild");
        assert!(same, "the rebuilt {view} equals the live one");
    }
    let tables = scan_all_tables(&stack).await;
    assert!(
        plaintext_in(&tables, &ADA).is_empty(),
        "after the rebuilds: {:?}",
        plaintext_in(&tables, &ADA)
    );

    // The export says what is held; Bob's, through the operator CLI, still has his data.
    let r = http
        .get("/api/v1/events/subjects/c-ada", Some(&admin))
        .await
        .expect("get");
    assert_eq!(
        (r.status, r.json["key"].as_str()),
        (200, Some("forgotten")),
        "{}",
        r.json
    );
    assert!(
        plaintext_in(&r.json.to_string(), &ADA).is_empty(),
        "{}",
        r.json
    );
    let bob = cli::gdpr::run(
        &stack.sdk,
        &stack.template,
        cli::gdpr::GdprCommand::Export {
            id: "c-bob".into(),
            tenant: tenant.clone(),
        },
        "cli:it",
    )
    .await
    .expect("export");
    assert!(
        bob.contains(BOB[0]) && bob.contains(r#""key":"active""#),
        "{bob}"
    );
    // A warm command asks for no key: no keys-table or KMS request for it.
    let key_requests = || {
        let iam = stack.iam.as_ref().expect("IAM");
        iam.requests()
            .iter()
            .filter(|(r, _)| {
                r.function == "CommandApiFunction"
                    && (r.resources.contains("KeysTable") || r.operation.starts_with("kms:"))
            })
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let before = key_requests();
    assert!(
        before > 0,
        "the keys were made through the keys table and KMS"
    );
    let r = send(
        &http,
        &tok,
        command(
            "Customer",
            "c-bob",
            "ChangeCustomerDetails",
            json!({"name": "Bob B."}),
        ),
    )
    .await;
    assert_eq!(r["version"], 2, "Bob's stream goes on");
    assert_eq!(
        key_requests(),
        before,
        "the warm command sealed with its cached key"
    );
    assert_no_denials(&stack);
    stack.stop().await;

    // A cold instance (the same stack started again: fresh processes, empty key caches)
    // unwraps Bob's key from the keys table and opens his data; Ada's stays redacted.
    let cold = tests::stack_named(
        &name,
        EsmOptions {
            enabled: false,
            ..EsmOptions::default()
        },
    )
    .await;
    let http = Http::new(&cold.api_url());
    let r = http
        .get("/api/v1/events/aggregates/Customer/c-bob", Some(&tok))
        .await
        .expect("get");
    assert_eq!(
        r.json["state"]["name"]["$personal"]["value"], "Bob B.",
        "{}",
        r.json
    );
    let r = http
        .get("/api/v1/events/aggregates/Customer/c-ada", Some(&tok))
        .await
        .expect("get");
    assert_eq!(
        r.json["state"]["email"],
        json!({"$redacted": true}),
        "{}",
        r.json
    );
    assert_no_denials(&cold);
    cold.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kms_key_ring_keeps_its_contract_and_only_wrapped_keys() {
    let stack = tests::quiet_stack().await;
    let arn = stack
        .template
        .resolve(&json!({"Fn::GetAtt": ["PersonalDataKey", "Arn"]}))
        .expect("the provisioned key's ARN");
    let table = tests::table(&stack, "KeysTable");
    let ring = eventfold_aws::KmsKeyRing::from_sdk(&stack.sdk, &table, arn);
    eventfold_testkit::key_ring::run_all(&ring, "kms").await;

    // The table holds the key only as KMS wrapped it.
    use eventfold::KeyRing;
    let key = ring.key_for_sealing("t1", "wrapped").await.expect("a key");
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let item = client
        .get_item()
        .table_name(&table)
        .key("subject", AttributeValue::S("t1/wrapped".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("the subject's item");
    let Some(AttributeValue::B(wrapped)) = item.get("wrapped") else {
        panic!("a wrapped key: {item:?}")
    };
    let stored = wrapped.as_ref();
    assert!(
        !stored.windows(32).any(|w| w == key.material()),
        "the data key is not stored in the clear"
    );
    stack.stop().await;
}
