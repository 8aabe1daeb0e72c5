//! The streaming API through the local gateway, over real HTTP, on the emulator: ordered
//! concurrent publishing, consumer groups, auto-commit, seek, history, bad input, tenant
//! isolation, and topic records through the fan-out.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use eventfold_consumers::Notification;
use eventfold_local::LocalStack;
use eventfold_local::esm::EsmOptions;
use eventfold_local::httpc::{Http, Reply};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tests::{assert_problem, events_table, quiet_stack, stack_with, token, unique_tenant};

const BASE: &str = "/api/v1/events";
const ALL: &str = "events:read events:write events:admin";

fn path(p: &str) -> String {
    format!("{BASE}{p}")
}

async fn post(http: &Http, t: &str, p: &str, body: Value) -> Reply {
    http.post(&path(p), Some(t), &body).await.expect("post")
}

async fn get(http: &Http, t: &str, p: &str) -> Reply {
    http.get(&path(p), Some(t)).await.expect("get")
}

/// Items of the events table and the groups table stored for `tenant`.
async fn items_of(stack: &LocalStack, tenant: &str) -> usize {
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let mut count = 0;
    for (table, key) in [
        (events_table(stack), "stream_id"),
        (tests::table(stack, "ConsumerGroupsTable"), "pk"),
    ] {
        let out = client
            .scan()
            .table_name(table)
            .filter_expression("begins_with(#k, :t)")
            .expression_attribute_names("#k", key)
            .expression_attribute_values(":t", AttributeValue::S(format!("{tenant}/")))
            .send()
            .await
            .expect("scan");
        count += out.items().len();
    }
    count
}

/// The highest offset per partition of `records`.
fn last_offsets(records: &[Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        let p = r["partition"].as_u64().expect("partition").to_string();
        let o = r["offset"].as_u64().expect("offset");
        let at = out.entry(p).or_insert(0);
        *at = o.max(*at);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_keep_order_per_key_and_partitions_contiguous() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("pub");
    let t = token(&tenant, ALL);
    let created = post(
        &http,
        &t,
        "/topics",
        json!({"name": "orders", "partitions": 8}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.json);
    const PUBLISHERS: u64 = 8;
    const PER_PUBLISHER: u64 = 125;
    const BATCH: u64 = 5;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let http = http.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            // (key, publisher, seq) -> (partition, offset), in publish order.
            let mut placed = Vec::new();
            for start in (0..PER_PUBLISHER).step_by(BATCH as usize) {
                let records: Vec<Value> = (start..start + BATCH)
                    .map(|seq| {
                        let key = format!("k{}", (publisher * PER_PUBLISHER + seq) % 50);
                        json!({"event_type": "order.placed", "key": key,
                               "data": {"publisher": publisher, "seq": seq}})
                    })
                    .collect();
                let reply = post(
                    &http,
                    &t,
                    "/publish",
                    json!({"topic": "orders", "records": records}),
                )
                .await;
                assert_eq!(reply.status, 201, "{}", reply.json);
                for (r, out) in records
                    .iter()
                    .zip(reply.json["records"].as_array().expect("records"))
                {
                    placed.push((
                        r["key"].as_str().expect("key").to_owned(),
                        out["partition"].as_u64().expect("partition"),
                        out["offset"].as_u64().expect("offset"),
                    ));
                }
            }
            placed
        }));
    }
    let mut by_key: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for task in tasks {
        for (key, p, o) in task.await.expect("publisher") {
            by_key.entry(key).or_default().push((p, o));
        }
    }
    let took = started.elapsed();
    eprintln!(
        "published {} records from {PUBLISHERS} publishers in {took:?}",
        PUBLISHERS * PER_PUBLISHER
    );
    assert_eq!(by_key.len(), 50);
    // Per key: one partition, and (per publisher, in its publish order) increasing offsets;
    // across publishers a key's offsets are distinct.
    for (key, placed) in &by_key {
        let partitions: BTreeSet<u64> = placed.iter().map(|(p, _)| *p).collect();
        assert_eq!(partitions.len(), 1, "{key} stays in one partition");
        let offsets: BTreeSet<u64> = placed.iter().map(|(_, o)| *o).collect();
        assert_eq!(offsets.len(), placed.len(), "{key}: no offset twice");
    }
    // Read every partition back through history: contiguous from 1, each record once.
    let mut seen = BTreeSet::new();
    let mut per_partition: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut order: BTreeMap<(u64, String), Vec<u64>> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/history?topic=orders&limit=1000&cursor={c}"),
            None => "/history?topic=orders&limit=1000".to_owned(),
        };
        let page = get(&http, &t, &q).await;
        assert_eq!(page.status, 200, "{}", page.json);
        for r in page.json["records"].as_array().expect("records") {
            let publisher = r["data"]["publisher"].as_u64().expect("publisher");
            let seq = r["data"]["seq"].as_u64().expect("seq");
            assert!(seen.insert((publisher, seq)), "({publisher}, {seq}) once");
            let p = r["partition"].as_u64().expect("partition");
            let o = r["offset"].as_u64().expect("offset");
            per_partition.entry(p).or_default().push(o);
            let key = r["key"].as_str().expect("key").to_owned();
            order.entry((publisher, key)).or_default().push(seq);
        }
        match page.json["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen.len() as u64,
        PUBLISHERS * PER_PUBLISHER,
        "nothing lost"
    );
    for (p, mut offsets) in per_partition {
        offsets.sort_unstable();
        let n = offsets.len() as u64;
        assert_eq!(
            offsets,
            (1..=n).collect::<Vec<_>>(),
            "partition {p} contiguous from 1"
        );
    }
    // Within a partition offsets follow publish order; history is in time order, so each
    // publisher's records of a key come back in the order it published them.
    for ((publisher, key), seqs) in order {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{publisher}/{key}: {seqs:?}"
        );
    }
    let info = http
        .get(&path("/topics/orders"), Some(&t))
        .await
        .expect("get");
    let heads: u64 = info.json["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .filter_map(|h| h["head"].as_u64())
        .sum();
    assert_eq!(heads, PUBLISHERS * PER_PUBLISHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_of_one_group_see_everything_and_commits_never_go_back() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("grp");
    let t = token(&tenant, ALL);
    let mut published = BTreeSet::new();
    for batch in 0..4u64 {
        let records: Vec<Value> = (0..50u64)
            .map(|i| json!({"event_type": "user.created", "key": format!("u{}", i % 13), "data": {"n": batch * 50 + i}}))
            .collect();
        let reply = post(
            &http,
            &t,
            "/publish",
            json!({"topic": "user-events", "records": records}),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.json);
        for r in reply.json["records"].as_array().expect("records") {
            published.insert((r["partition"].as_u64(), r["offset"].as_u64()));
        }
    }
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let http = http.clone();
        let t = t.clone();
        consumers.push(tokio::spawn(async move {
            let mut delivered = BTreeSet::new();
            let mut committed_seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut empty = 0;
            while empty < 2 {
                let got = get(
                    &http,
                    &t,
                    "/consume?topic=user-events&group_id=workers&max=25",
                )
                .await;
                assert_eq!(got.status, 200, "{}", got.json);
                let records = got.json["records"].as_array().expect("records").clone();
                if records.is_empty() {
                    empty += 1;
                    continue;
                }
                for r in &records {
                    delivered.insert((r["partition"].as_u64(), r["offset"].as_u64()));
                }
                let offsets = last_offsets(&records);
                let done = post(
                    &http,
                    &t,
                    "/consume/commit",
                    json!({"topic": "user-events", "group_id": "workers", "offsets": offsets}),
                )
                .await;
                assert_eq!(done.status, 200, "{}", done.json);
                for (p, o) in done.json["committed"].as_object().expect("committed") {
                    let o = o.as_u64().expect("offset");
                    let before = committed_seen.insert(p.clone(), o).unwrap_or(0);
                    assert!(o >= before, "partition {p} went back from {before} to {o}");
                    assert!(
                        o >= offsets.get(p).copied().unwrap_or(0),
                        "a commit takes effect"
                    );
                }
            }
            delivered
        }));
    }
    let mut all = BTreeSet::new();
    for c in consumers {
        all.extend(c.await.expect("consumer"));
    }
    assert_eq!(all, published, "every record delivered at least once");
    let lag = get(&http, &t, "/consume/lag?topic=user-events&group_id=workers").await;
    assert_eq!(lag.status, 200, "{}", lag.json);
    assert_eq!(lag.json["total"], 0, "{}", lag.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_auto_commit_seek_and_history_filters() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("cons");
    let t = token(&tenant, ALL);
    let created = post(
        &http,
        &t,
        "/topics",
        json!({"name": "audit", "partitions": 2, "retention_days": 1}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let publish = |kind: &'static str, key: &'static str, n: u64| {
        let http = http.clone();
        let t = t.clone();
        async move {
            let r = post(&http, &t, "/publish", json!({"topic": "audit", "event_type": kind, "key": key, "data": {"n": n}, "headers": {"source": "it"}})).await;
            assert_eq!(r.status, 201, "{}", r.json);
            r.json
        }
    };
    for n in 0..4 {
        publish("login", if n % 2 == 0 { "alice" } else { "bob" }, n).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 4..8 {
        publish(if n % 2 == 0 { "logout" } else { "login" }, "alice", n).await;
    }
    let ns = |reply: &Reply| -> Vec<u64> {
        reply.json["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter_map(|r| r["data"]["n"].as_u64())
            .collect()
    };
    // No commit: the same records again.
    let first = get(&http, &t, "/consume?topic=audit&group_id=plain&max=3").await;
    let again = get(&http, &t, "/consume?topic=audit&group_id=plain&max=3").await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(ns(&first).len(), 3);
    assert_eq!(ns(&first), ns(&again));
    assert_eq!(first.json["records"][0]["headers"]["source"], "it");
    // auto_commit: the next call commits what the previous one returned.
    let mut got = Vec::new();
    for _ in 0..6 {
        let r = get(
            &http,
            &t,
            "/consume?topic=audit&group_id=auto&max=3&auto_commit=true",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.json);
        got.extend(ns(&r));
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..8).collect::<Vec<_>>(),
        "each record once, none lost"
    );
    let lag = get(&http, &t, "/consume/lag?topic=audit&group_id=auto").await;
    assert_eq!(lag.json["total"], 0, "{}", lag.json);
    // Seek: by time, to the end, to the start.
    let seek = |to: Value| post(&http, &t, "/consume/seek", to);
    let r =
        seek(json!({"topic": "audit", "group_id": "auto", "to": "timestamp", "timestamp": middle}))
            .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let after = get(&http, &t, "/consume?topic=audit&group_id=auto&max=100").await;
    let mut after_ns = ns(&after);
    after_ns.sort_unstable();
    assert_eq!(after_ns, [4, 5, 6, 7]);
    assert_eq!(
        seek(json!({"topic": "audit", "group_id": "auto", "to": "latest"}))
            .await
            .status,
        200
    );
    assert!(ns(&get(&http, &t, "/consume?topic=audit&group_id=auto&max=100").await).is_empty());
    assert_eq!(
        seek(json!({"topic": "audit", "group_id": "auto", "to": "earliest"}))
            .await
            .status,
        200
    );
    assert_eq!(
        ns(&get(&http, &t, "/consume?topic=audit&group_id=auto&max=100").await).len(),
        8
    );
    let reader = token(&tenant, "events:read");
    let refused = http
        .post(
            &path("/consume/seek"),
            Some(&reader),
            &json!({"topic": "audit", "group_id": "auto", "to": "latest"}),
        )
        .await
        .expect("post");
    assert_problem(&refused, 403, "forbidden");
    // History: everything in time order, filters, a time range, paging.
    let all = get(&http, &t, "/history?topic=audit").await;
    assert_eq!(ns(&all), (0..8).collect::<Vec<_>>());
    assert_eq!(
        ns(&get(&http, &t, "/history?topic=audit&event_type=logout").await),
        [4, 6]
    );
    assert_eq!(
        ns(&get(&http, &t, "/history?topic=audit&key=bob").await),
        [1, 3]
    );
    let since = middle.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let ranged = get(
        &http,
        &t,
        &format!("/history?topic=audit&since={since}&key=alice"),
    )
    .await;
    assert_eq!(ranged.status, 200, "{}", ranged.json);
    assert_eq!(ns(&ranged), [4, 5, 6, 7]);
    let until = get(&http, &t, &format!("/history?topic=audit&until={since}")).await;
    assert_eq!(ns(&until), [0, 1, 2, 3]);
    let mut paged = Vec::new();
    let mut q = "/history?topic=audit&limit=3".to_owned();
    loop {
        let page = get(&http, &t, &q).await;
        paged.extend(ns(&page));
        match page.json["next"].as_str() {
            Some(c) => q = format!("/history?topic=audit&limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, (0..8).collect::<Vec<_>>());
    // History touched no group.
    let untouched = get(&http, &t, "/consume/lag?topic=audit&group_id=never").await;
    assert_eq!(untouched.json["total"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_writes_nothing_and_tenants_are_isolated() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("bad");
    let t = token(&tenant, ALL);
    let publishes = [
        (
            json!({"topic": "no-such-topic", "event_type": "t", "data": 1}),
            404,
            "not-found",
        ),
        (
            json!({"topic": "Not A Name", "event_type": "t", "data": 1}),
            400,
            "invalid-request",
        ),
        (
            json!({"topic": "user-events", "event_type": "no spaces", "data": 1}),
            400,
            "invalid-request",
        ),
        (
            json!({"topic": "user-events", "event_type": "t", "data": {"blob": "x".repeat(66_000)}}),
            413,
            "payload-too-large",
        ),
        (
            json!({"topic": "user-events", "records": [{"event_type": "ok", "data": 1}, {"event_type": "bad!", "data": 2}]}),
            400,
            "invalid-request",
        ),
        (
            json!({"topic": "user-events", "event_type": "t", "data": {"n": 1e300}}),
            400,
            "invalid-request",
        ),
    ];
    for (body, status, slug) in publishes {
        let reply = post(&http, &t, "/publish", body.clone()).await;
        assert_problem(&reply, status, slug);
    }
    let malformed = http
        .send(
            "POST",
            &path("/publish"),
            Some(&t),
            Some(b"{not json".to_vec()),
        )
        .await
        .expect("send");
    assert_problem(&malformed, 400, "malformed-json");
    for q in [
        "/consume?topic=user-events&group_id=g&max=-1",
        "/consume?topic=user-events&group_id=g&max=100000",
        "/consume?topic=user-events&group_id=g&wait_ms=-1",
        "/consume?topic=user-events&group_id=g&wait_ms=999999999999999999999",
        "/consume?topic=user-events&group_id=g&wait_ms=20001",
    ] {
        let reply = get(&http, &t, q).await;
        assert_problem(&reply, 400, "invalid-request");
    }
    assert_problem(
        &get(&http, &t, "/consume?topic=nope&group_id=g").await,
        404,
        "not-found",
    );
    for offsets in [json!({"4": 1}), json!({"0": 1})] {
        let reply = post(
            &http,
            &t,
            "/consume/commit",
            json!({"topic": "user-events", "group_id": "g", "offsets": offsets}),
        )
        .await;
        assert_problem(&reply, 400, "out-of-range");
    }
    let topic = post(&http, &t, "/topics", json!({"name": "x", "partitions": 65})).await;
    assert_problem(&topic, 400, "invalid-request");
    assert_eq!(items_of(&stack, &tenant).await, 0, "nothing was written");

    // Tenant isolation: another tenant's topic is 404 everywhere.
    let created = post(&http, &t, "/topics", json!({"name": "private"})).await;
    assert_eq!(created.status, 201, "{}", created.json);
    let ok = post(
        &http,
        &t,
        "/publish",
        json!({"topic": "private", "event_type": "t", "data": 1}),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    let other = token(&unique_tenant("other"), ALL);
    for q in [
        "/topics/private",
        "/consume?topic=private&group_id=g",
        "/history?topic=private",
        "/consume/lag?topic=private&group_id=g",
    ] {
        assert_problem(&get(&http, &other, q).await, 404, "not-found");
    }
    let theirs = post(
        &http,
        &other,
        "/publish",
        json!({"topic": "private", "event_type": "t", "data": 1}),
    )
    .await;
    assert_problem(&theirs, 404, "not-found");
    let list = get(&http, &other, "/topics").await;
    let names: Vec<&str> = list.json["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "data-lake-events",
            "mlops-events",
            "security-events",
            "system-events",
            "user-events"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_records_fan_out_with_attributes_and_skip_the_saga() {
    // The real stream-publisher only: the notifications stay in the queues to be looked at.
    let stack = stack_with(EsmOptions {
        functions: Some(["StreamPublisherFunction".to_owned()].into()),
        idle_poll: Duration::from_millis(50),
        report_every: None,
        ..EsmOptions::default()
    })
    .await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("fan");
    let t = token(&tenant, ALL);
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    // An unfiltered queue on the events topic shows what the publisher sent.
    let queue = tap(&stack, &sqs).await;
    // A saga input's type on a topic, and a record at the size limit.
    let small = post(&http, &t, "/publish", json!({"topic": "system-events", "event_type": "OrderPlaced", "key": "o-1", "data": {"n": 1}})).await;
    assert_eq!(small.status, 201, "{}", small.json);
    let big = post(&http, &t, "/publish", json!({"topic": "system-events", "event_type": "blob", "key": "o-1", "data": "x".repeat(65_000)})).await;
    assert_eq!(big.status, 201, "{}", big.json);

    let mut received = Vec::new();
    let start = Instant::now();
    while received.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "2 notifications within 30 s, got {}: {:?}",
            received.len(),
            stack.esm_stats()
        );
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        // FIFO: the next message of a group comes only once this one is gone.
        for m in got.messages.unwrap_or_default() {
            sqs.delete_message()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle().expect("receipt"))
                .send()
                .await
                .expect("delete");
            received.push(m);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let projector = projector::build(&stack.sdk, |k| match k {
        "EVENTS_TABLE" => Some(events_table(&stack)),
        "READ_MODELS_TABLE" => Some(tests::table(&stack, "ReadModelsTable")),
        _ => None,
    })
    .expect("projector");
    for m in &received {
        let attrs = m.message_attributes.clone().unwrap_or_default();
        let attr = |k: &str| attrs.get(k).and_then(|a| a.string_value.clone());
        assert_eq!(attr("category").as_deref(), Some("Topic"));
        assert_eq!(attr("tenant"), Some(tenant.clone()));
        let n: Notification =
            serde_json::from_str(m.body().expect("body")).expect("a notification");
        assert_eq!(
            n.stream_id,
            format!(
                "{tenant}/Topic-system-events.{}",
                eventfold_streaming::partition_for("o-1", 4)
            )
        );
        assert!(attr("event_type").is_some());
        // The projector acknowledges topic records without touching a view.
        let applied = projector
            .handler()
            .projector()
            .handle(&n)
            .await
            .expect("acknowledged");
        assert_eq!((applied.views_changed, applied.events_read), (0, 0));
    }
    let types: BTreeSet<String> = received
        .iter()
        .filter_map(|m| {
            m.message_attributes
                .as_ref()?
                .get("event_type")?
                .string_value
                .clone()
        })
        .collect();
    assert_eq!(types, ["OrderPlaced".to_owned(), "blob".to_owned()].into());
    // The saga's filter policy keeps topic records out, whatever their type.
    let saga = sqs
        .receive_message()
        .queue_url(stack.queue_url("SagaQueue"))
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    assert!(
        saga.messages.unwrap_or_default().is_empty(),
        "no topic record reaches the saga"
    );
    // Nor the projector's: no view is built from topics.
    let projected = sqs
        .receive_message()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    assert!(
        projected.messages.unwrap_or_default().is_empty(),
        "no topic record reaches the projector"
    );
    let stats = stack.esm_stats()["StreamPublisherFunction"];
    assert_eq!((stats.ok, stats.failed), (2, 0));
}

/// A FIFO queue subscribed to the stack's events topic without a filter (raw delivery, as
/// the template's subscriptions): its URL.
async fn tap(stack: &LocalStack, sqs: &aws_sdk_sqs::Client) -> String {
    let topic = stack
        .template
        .resolve(&json!({"Ref": "EventsTopic"}))
        .expect("topic ARN");
    let name = format!("tap-{}.fifo", uuid::Uuid::now_v7().simple());
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn");
    aws_sdk_sns::Client::new(&stack.sdk)
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .expect("subscribe");
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamo_catalogue_and_group_store_pass_the_contract() {
    let stack = quiet_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let topics = eventfold_aws::DynamoTopicCatalogue::new(
        client.clone(),
        tests::table(&stack, "TopicsTable"),
    );
    let groups =
        eventfold_aws::DynamoGroupStore::new(client, tests::table(&stack, "ConsumerGroupsTable"));
    let prefix = unique_tenant("contract");
    eventfold_testkit::streaming::run_catalogue(&topics, &prefix).await;
    eventfold_testkit::streaming::run_groups(&groups, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_with_an_idempotency_key_is_written_once() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("idem");
    let t = token(&tenant, ALL);
    let body = json!({"topic": "user-events", "event_type": "user.created", "key": "u-1", "data": {"n": 1}})
        .to_string()
        .into_bytes();
    let send = |body: Vec<u8>| {
        let http = http.clone();
        let t = t.clone();
        async move {
            http.send_with(
                "POST",
                &path("/publish"),
                Some(&t),
                &[("idempotency-key", "pub-1")],
                Some(body),
            )
            .await
            .expect("send")
        }
    };
    let first = send(body.clone()).await;
    let again = send(body).await;
    assert_eq!((first.status, again.status), (201, 201), "{}", again.json);
    assert_eq!(first.json, again.json, "the stored answer");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = send(br#"{"topic": "user-events", "event_type": "t", "data": 2}"#.to_vec()).await;
    assert_problem(&other, 422, "idempotency-key-reused");
    let history = get(&http, &t, "/history?topic=user-events").await;
    assert_eq!(history.json["records"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_records_all_expired_never_reuses_an_offset() {
    use eventfold::Metadata;
    use eventfold_streaming::{NewRecord, Streams, StreamsConfig, TopicSettings};
    let stack = quiet_stack().await;
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let events = events_table(&stack);
    let streams = Streams::new(
        eventfold_aws::DynamoEventStore::new(client.clone(), &events),
        eventfold_aws::DynamoTopicCatalogue::new(
            client.clone(),
            tests::table(&stack, "TopicsTable"),
        ),
        eventfold_aws::DynamoGroupStore::new(
            client.clone(),
            tests::table(&stack, "ConsumerGroupsTable"),
        ),
        StreamsConfig {
            floor_block: 3,
            ..StreamsConfig::default()
        },
    );
    let tenant = unique_tenant("ttl");
    let one = TopicSettings {
        partitions: 1,
        ..TopicSettings::default()
    };
    streams
        .create_topic(&tenant, "tester", "short", one)
        .await
        .expect("create");
    let record = |n: u64| NewRecord {
        event_type: "t".into(),
        data: json!({"n": n}),
        key: None,
        headers: BTreeMap::new(),
    };
    let context = Metadata::root(&tenant, "tester", "c-1");
    let placed = streams
        .publish(&context, "short", (0..5).map(record).collect(), None)
        .await
        .expect("publish");
    assert_eq!(placed.last().map(|p| p.offset), Some(5));
    // Every commit carries its expiry (the table's TTL attribute).
    let stream = format!("{tenant}/Topic-short.0");
    let items = client
        .query()
        .table_name(&events)
        .key_condition_expression("stream_id = :s")
        .expression_attribute_values(":s", AttributeValue::S(stream.clone()))
        .send()
        .await
        .expect("query")
        .items
        .unwrap_or_default();
    assert!(!items.is_empty());
    for item in &items {
        let Some(AttributeValue::N(at)) = item.get(eventfold_aws::event_store::EXPIRES_AT) else {
            panic!("a topic commit without expiry: {item:?}");
        };
        let at: i64 = at.parse().expect("epoch seconds");
        let days = (at - chrono::Utc::now().timestamp()) / 86_400;
        assert!((6..=7).contains(&days), "7 days of retention: {days}");
    }
    // TTL removes them all (here by hand); a fresh process publishes again.
    for item in items {
        client
            .delete_item()
            .table_name(&events)
            .key("stream_id", item["stream_id"].clone())
            .key("version", item["version"].clone())
            .send()
            .await
            .expect("delete");
    }
    let fresh = Streams::new(
        eventfold_aws::DynamoEventStore::new(client.clone(), &events),
        eventfold_aws::DynamoTopicCatalogue::new(
            client.clone(),
            tests::table(&stack, "TopicsTable"),
        ),
        eventfold_aws::DynamoGroupStore::new(client, tests::table(&stack, "ConsumerGroupsTable")),
        StreamsConfig {
            floor_block: 3,
            ..StreamsConfig::default()
        },
    );
    let again = fresh
        .publish(&context, "short", vec![record(9)], None)
        .await
        .expect("publish");
    assert!(again[0].offset > 5, "offset {} reused", again[0].offset);
}
