//! A zero-downtime rebuild on the local stack with IAM enforced: `order-summary` is rebuilt
//! into a new version and promoted while a writer keeps placing orders through the command
//! API and readers keep listing and looking them up through the query API. No reader sees an
//! error or loses an order it saw, every order written during the rebuild is in the promoted
//! version, the switch is one write of the pointer, and the old version is gone after its
//! retirement.

use eventfold_aws::read_models::DynamoReadModelStore;
use eventfold_consumers::projection::{ListQuery, ReadModelStore};
use eventfold_local::httpc::Http;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tests::{assert_no_denials, events_table, rw_token, stack, table, unique_tenant};

const COMMANDS: &str = "/api/v1/events/commands";
const LIST: &str = "/api/v1/events/queries/order-summary?limit=100";

pub(crate) async fn create(http: &Http, token: &str, id: &str) {
    let body = json!({"aggregate_type": "Order", "aggregate_id": id, "type": "CreateOrder",
        "data": {"customer_id": "c-1"}});
    let r = http.post(COMMANDS, Some(token), &body).await.expect("post");
    assert_eq!(r.status, 201, "{id}: {}", r.json);
}

/// One answer a reader got: when it was asked and answered, and by which version.
pub(crate) struct Seen {
    start: Instant,
    end: Instant,
    pub(crate) version: u32,
}

/// Every order of the tenant, following the list's cursors: the orders, and each page's
/// answer (every page must be a 200 naming the version that answered).
pub(crate) async fn list_all(http: &Http, token: &str) -> (BTreeSet<String>, Vec<Seen>) {
    let (mut orders, mut pages) = (BTreeSet::new(), Vec::new());
    let mut path = LIST.to_owned();
    loop {
        let start = Instant::now();
        let r = http.get(&path, Some(token)).await.expect("get");
        let end = Instant::now();
        assert_eq!(r.status, 200, "a reader got {}: {}", r.status, r.json);
        let version: u32 = r
            .header(query_api::VERSION_HEADER)
            .and_then(|v| v.parse().ok())
            .expect("the answering version");
        pages.push(Seen {
            start,
            end,
            version,
        });
        orders.extend(
            r.json["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter_map(|o| o["order_id"].as_str().map(str::to_owned)),
        );
        match r.json["next"].as_str() {
            Some(c) => path = format!("{LIST}&cursor={c}"),
            None => return (orders, pages),
        }
    }
}

/// Lists the tenant's orders until `stop`, and looks the newest one up: every answer must
/// be a 200 and every listing hold every order seen before (no order goes missing).
pub(crate) async fn read(http: Http, token: String, stop: Arc<AtomicBool>) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    let mut known = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let (orders, pages) = list_all(&http, &token).await;
        let lost: Vec<_> = known.difference(&orders).collect();
        assert!(
            lost.is_empty(),
            "a listing lost orders a reader had seen: {lost:?}"
        );
        if let Some(id) = orders.iter().next_back() {
            let one = http
                .get(
                    &format!("/api/v1/events/queries/order-summary?order_id={id}"),
                    Some(&token),
                )
                .await
                .expect("get");
            assert_eq!(one.status, 200, "lookup of {id}: {}", one.json);
        }
        known = orders;
        seen.extend(pages);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_summary_is_promoted_under_writes_and_reads_without_a_gap() {
    let stack = stack().await;
    let tenant = unique_tenant("promote");
    let token = rw_token(&tenant);
    let http = Http::new(&stack.api_url());
    for i in 0..5 {
        create(&http, &token, &format!("o-{i:03}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http.get(LIST, Some(&token)).await.expect("get");
        if r.json["items"].as_array().is_some_and(|a| a.len() == 5) {
            break;
        }
        assert!(Instant::now() < deadline, "seed orders never projected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let stop_reading = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (http, token) = (Http::new(&stack.api_url()), token.clone());
            tokio::spawn(read(http, token, stop_reading.clone()))
        })
        .collect();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (http, token, stop) = (
            Http::new(&stack.api_url()),
            token.clone(),
            stop_writing.clone(),
        );
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut i = 100;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("o-{i:03}");
                create(&http, &token, &id).await;
                written.push(id);
                i += 1;
            }
            written
        })
    };

    let models_table = table(&stack, "ReadModelsTable");
    let target = cli::rebuild::RebuildTarget {
        sdk: stack.sdk.clone(),
        events_table: events_table(&stack),
        read_models_table: models_table.clone(),
        keys: None,
    };
    let flow = cli::rebuild::versions::Flow::new(target, "order-summary", "it").expect("flow");
    let models = DynamoReadModelStore::from_sdk(&stack.sdk, &models_table);
    let built = flow.build(|_| {}).await.expect("build");
    assert_eq!((built.live, built.version), (1, 2));
    assert!(built.diffs.is_empty(), "{:#?}", built.diffs);
    let before = models.pointer("order-summary").await.expect("pointer");
    let flip = flow
        .promote(2, Duration::from_secs(2))
        .await
        .expect("promote");
    assert_eq!(
        flip.pointer.rev,
        before.rev + 1,
        "the promote is one write of the pointer"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_writing.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(!written.is_empty(), "the writer wrote during the rebuild");

    // Every order written during the rebuild reaches the promoted version (and the readers).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (listed, _) = list_all(&http, &token).await;
        if written.iter().all(|id| listed.contains(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "written orders never listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_reading.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for r in readers {
        let seen = r.await.expect("reader saw no error and lost no order");
        // A reader never goes back: after its first answer by v2, every answer is by v2.
        assert!(
            seen.windows(2).all(|w| w[0].version <= w[1].version),
            "a reader went back to the old version"
        );
        answers.extend(seen);
    }
    let in_v2: BTreeSet<String> = cli::rebuild::all_docs(&models, &tenant, "order-summary@v2")
        .await
        .expect("list v2")
        .into_keys()
        .collect();
    for id in &written {
        assert!(in_v2.contains(id), "{id} missing from the promoted version");
    }

    // Which versions the readers saw, and for how long both were answered.
    let old: Vec<&Seen> = answers.iter().filter(|s| s.version == 1).collect();
    let new: Vec<&Seen> = answers.iter().filter(|s| s.version == 2).collect();
    assert!(!old.is_empty() && !new.is_empty(), "readers saw both sides");
    assert!(
        answers.iter().all(|s| s.version == 1 || s.version == 2),
        "only the two versions answered"
    );
    let last_old = old.iter().map(|s| s.end).max().expect("some");
    let first_new = new.iter().map(|s| s.start).min().expect("some");
    let both = last_old.saturating_duration_since(first_new);
    eprintln!(
        "promote: {} answers ({} by v1, {} by v2), {} orders written from the rebuild's start to 2 s after the promote; \
         the flip was one PutItem of {} ms; both versions answered for {} ms",
        answers.len(),
        old.len(),
        new.len(),
        written.len(),
        flip.took.as_millis(),
        both.as_millis()
    );
    assert!(
        both <= Duration::from_secs(2),
        "both versions answered for {both:?}, longer than requests in flight take"
    );

    let deleted = flow.retire(1).await.expect("retire after the grace");
    assert!(deleted >= 5 + written.len(), "v1's documents: {deleted}");
    let left = models
        .list(&tenant, "order-summary", ListQuery::default())
        .await
        .expect("list v1");
    assert!(left.docs.is_empty(), "v1 was dropped");
    let after = http.get(LIST, Some(&token)).await.expect("get");
    assert_eq!(after.status, 200);
    assert_eq!(after.header(query_api::VERSION_HEADER), Some("2"));
    assert_no_denials(&stack);
}
