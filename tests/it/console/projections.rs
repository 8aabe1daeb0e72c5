//! The projections page's zero-downtime rebuild over HTTP: refused read-only, without the
//! page's token or for an unknown view; started, watched until verified, promoted, refused
//! a retirement within the grace period, retired after it; every step in the audit trail;
//! the progress endpoint the page's script polls says how the rebuild ended.

use super::{fast, post_form, send, until_page};
use eventfold_local::httpc::Http;
use serde_json::json;
use std::time::Duration;
use tests::{rw_token, stack_with, unique_tenant};

const ORDERS: &str = "/api/v1/events/queries/order-summary";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projections_page_rebuilds_promotes_and_retires_a_view() {
    let stack = stack_with(fast()).await;
    let tenant = unique_tenant("console-rebuild");
    let api = Http::new(&stack.api_url());
    let token = rw_token(&tenant);
    for id in ["o-1", "o-2"] {
        let data = json!({"customer_id": "c-1"});
        send(&api, &token, "Order", id, "CreateOrder", data).await;
    }
    let options = |allow_writes| console::Options {
        allow_writes,
        stall: Duration::from_secs(60),
        refresh: Duration::from_millis(500),
        operator: "console:it".into(),
        grace: Duration::from_secs(4),
        keys: None,
    };
    let start = |allow_writes| {
        let c = cli::console::build(&stack.sdk, &stack.template, options(allow_writes))
            .expect("console");
        console::start(c, "127.0.0.1:0".parse().expect("addr"))
    };
    let (ro, rw) = (
        start(false).await.expect("ro"),
        start(true).await.expect("rw"),
    );
    let (ro_http, rw_http) = (Http::new(&ro.url()), Http::new(&rw.url()));

    let read_only = until_page(&ro_http, "/projections", Duration::from_secs(30), |b| {
        b.contains("v1 live")
    })
    .await;
    assert!(
        !read_only.contains("Rebuild order-summary"),
        "no write controls"
    );
    let refused = post_form(&ro_http, "/projections/rebuild", "view=order-summary").await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json["type"],
        "https://eventfold.dev/problems/writes-disabled"
    );
    let forged = post_form(&rw_http, "/projections/rebuild", "view=order-summary").await;
    assert_eq!(forged.json["type"], "https://eventfold.dev/problems/csrf");
    let page = until_page(&rw_http, "/projections", Duration::from_secs(30), |b| {
        b.contains("Rebuild order-summary")
    })
    .await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the forms carry the token")
        .to_owned();
    let unknown = post_form(
        &rw_http,
        "/projections/rebuild",
        &format!("csrf={csrf}&view=nope"),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.json["type"].as_str()),
        (400, Some("https://eventfold.dev/problems/invalid-request"))
    );

    let form = |version: &str| format!("csrf={csrf}&view=order-summary&version={version}");
    let started = post_form(&rw_http, "/projections/rebuild", &form("")).await;
    assert_eq!(started.status, 303, "{}", started.json);
    until_page(&rw_http, "/projections", Duration::from_secs(60), |b| {
        b.contains("ready to promote") && b.contains("Promote v2")
    })
    .await;
    // The page's script reads the same from the progress endpoint: done, all streams replayed.
    let progress = rw_http
        .get("/projections/progress", None)
        .await
        .expect("get");
    let job = &progress.json["order-summary"];
    assert_eq!(
        (job["running"].as_bool(), job["ready"].as_u64()),
        (Some(false), Some(2)),
        "{}",
        progress.json
    );
    assert!(
        job["total"].as_u64() >= Some(2) && job["done"] == job["total"],
        "{job}"
    );
    let promoted = post_form(&rw_http, "/projections/promote", &form("2")).await;
    assert_eq!(promoted.status, 303, "{}", promoted.json);
    let q = api
        .get(&format!("{ORDERS}?order_id=o-1"), Some(&token))
        .await
        .expect("get");
    assert_eq!(
        (q.status, q.header("eventfold-view-version")),
        (200, Some("2"))
    );
    let early = post_form(&rw_http, "/projections/retire", &form("1")).await;
    assert_eq!(early.status, 409, "{}", early.json);
    assert_eq!(
        early.json["type"],
        "https://eventfold.dev/problems/conflict"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let retired = post_form(&rw_http, "/projections/retire", &form("1")).await;
    assert_eq!(retired.status, 303, "{}", retired.json);
    let after = until_page(&rw_http, "/projections", Duration::from_secs(10), |b| {
        b.contains("v1 retired")
    })
    .await;
    assert!(after.contains("v2 live") && !after.contains("retiring"));
    let list = api.get(ORDERS, Some(&token)).await.expect("get");
    assert_eq!(list.json["items"].as_array().map(Vec::len), Some(2));

    // The trail is stored with the stack: another console over it (the read-only one, its
    // own process state) shows the same entries, newest first.
    let (stored, error) = ro.console.audit().await;
    assert_eq!(error, None);
    assert_eq!(stored, rw.console.audit().await.0);
    assert!(
        stored.iter().all(|e| e.operator == "console:it"),
        "{stored:?}"
    );
    let audit: Vec<(String, String)> = stored
        .into_iter()
        .rev()
        .map(|e| (e.action, e.outcome))
        .collect();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["rebuild", "promote", "retire", "retire"],
        "{audit:?}"
    );
    assert!(audit[2].1.starts_with("refused"), "{audit:?}");
    rw.stop();
    ro.stop();
    stack.stop().await;
}
