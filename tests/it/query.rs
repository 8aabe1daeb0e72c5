//! The query API through the local gateway: lookups, lists with cursors, isolation, errors.

use eventfold_aws::read_models::DynamoReadModelStore;
use eventfold_consumers::projection::{Doc, ReadModelStore};
use eventfold_local::httpc::Http;
use serde_json::json;
use std::collections::BTreeMap;
use tests::{assert_gateway, assert_problem, quiet_stack, rw_token, token, unique_tenant};

const Q: &str = "/api/v1/events/queries";

async fn seed(models: &DynamoReadModelStore, tenant: &str, orders: usize) {
    for i in 0..orders {
        let id = format!("o-{i:02}");
        let customer = if i % 2 == 0 { "c-even" } else { "c-odd" };
        let created = format!("2026-01-01T00:00:{i:02}Z");
        let doc = Doc {
            key: id.clone(),
            data: json!({"order_id": id, "customer_id": customer, "status": "Placed", "total": 100 * i, "created_at": created}),
            checkpoint: 3,
            index: Some((customer.to_owned(), format!("{created}#{id}"))),
        };
        models
            .put(tenant, shop::views::ORDER_SUMMARY, doc, 0)
            .await
            .expect("seed order");
    }
    let deltas = vec![(
        "2026-01-01".to_owned(),
        BTreeMap::from([("orders".to_owned(), 2), ("revenue".to_owned(), 700)]),
    )];
    models
        .add(
            tenant,
            shop::views::DAILY_SALES,
            &format!("{tenant}/Order-x"),
            0,
            1,
            deltas,
        )
        .await
        .expect("seed sales");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_answer_lookups_and_page_lists_per_tenant() {
    let stack = quiet_stack().await;
    let table = tests::table(&stack, "ReadModelsTable");
    let models = DynamoReadModelStore::from_sdk(&stack.sdk, &table);
    let (a, b) = (unique_tenant("qa"), unique_tenant("qb"));
    seed(&models, &a, 7).await;
    seed(&models, &b, 2).await;
    let http = Http::new(&stack.api_url());
    let ta = rw_token(&a);

    let one = http
        .get(&format!("{Q}/order-summary?order_id=o-03"), Some(&ta))
        .await
        .expect("get");
    assert_eq!(one.status, 200, "{}", one.json);
    assert_eq!(one.json["item"]["total"], 300);

    // Every order of the tenant exactly once across pages of 3, by key.
    let mut seen = Vec::new();
    let mut path = format!("{Q}/order-summary?limit=3");
    loop {
        let page = http.get(&path, Some(&ta)).await.expect("get");
        assert_eq!(page.status, 200, "{}", page.json);
        let items = page.json["items"].as_array().expect("items").clone();
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .filter_map(|o| o["order_id"].as_str().map(str::to_owned)),
        );
        match page.json["next"].as_str() {
            Some(c) => path = format!("{Q}/order-summary?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("o-{i:02}")).collect::<Vec<_>>()
    );

    // orders-by-customer: newest first, paged.
    let first = http
        .get(
            &format!("{Q}/orders-by-customer?customer_id=c-even&limit=2"),
            Some(&ta),
        )
        .await
        .expect("get");
    assert_eq!(first.status, 200, "{}", first.json);
    let ids: Vec<&str> = first.json["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["o-06", "o-04"]);
    let cursor = first.json["next"].as_str().expect("more pages").to_owned();
    let second = http
        .get(
            &format!("{Q}/orders-by-customer?customer_id=c-even&limit=2&cursor={cursor}"),
            Some(&ta),
        )
        .await
        .expect("get");
    let ids: Vec<&str> = second.json["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["o-02", "o-00"]);

    let sales = http
        .get(&format!("{Q}/daily-sales?day=2026-01-01"), Some(&ta))
        .await
        .expect("get");
    assert_eq!(
        (
            sales.json["item"]["orders"].clone(),
            sales.json["item"]["revenue"].clone()
        ),
        (json!(2), json!(700))
    );
    assert_eq!(sales.json["item"]["day"], "2026-01-01");

    // Tenant isolation: B sees only its own two orders, never A's.
    let tb = rw_token(&b);
    let list_b = http
        .get(&format!("{Q}/order-summary?limit=100"), Some(&tb))
        .await
        .expect("get");
    assert_eq!(list_b.json["items"].as_array().map(Vec::len), Some(2));
    assert_problem(
        &http
            .get(&format!("{Q}/order-summary?order_id=o-05"), Some(&tb))
            .await
            .expect("get"),
        404,
        "not-found",
    );

    // Errors.
    assert_gateway(
        &http
            .get(&format!("{Q}/order-summary"), None)
            .await
            .expect("get"),
        401,
        "Unauthorized",
    );
    assert_problem(
        &http
            .get(
                &format!("{Q}/order-summary"),
                Some(&token(&a, "events:write")),
            )
            .await
            .expect("get"),
        403,
        "forbidden",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/no-such-view"), Some(&ta))
            .await
            .expect("get"),
        404,
        "not-found",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/order-summary?order_id=o-99"), Some(&ta))
            .await
            .expect("get"),
        404,
        "not-found",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/orders-by-customer"), Some(&ta))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/order-summary?limit=0"), Some(&ta))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/order-summary?limit=1000"), Some(&ta))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/order-summary?cursor=bogus"), Some(&ta))
            .await
            .expect("get"),
        400,
        "invalid-cursor",
    );
    // A lookup ignores limit and cursor but still refuses bad ones.
    for bad in ["limit=0", "cursor=not%20base64"] {
        let reply = http
            .get(&format!("{Q}/order-summary?order_id=o-01&{bad}"), Some(&ta))
            .await
            .expect("get");
        assert_eq!(reply.status, 400, "{bad}: {}", reply.json);
    }
    assert_problem(
        &http
            .get(&format!("{Q}/order-summary?colour=red"), Some(&ta))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/daily-sales?day=yesterday"), Some(&ta))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
    assert_problem(
        &http
            .get(&format!("{Q}/stock-levels?sku=bad%20sku"), Some(&ta))
            .await
            .expect("get"),
        400,
        "invalid-request",
    );
}
