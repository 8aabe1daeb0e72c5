//! Poison: a bad message or event becomes a dead letter with the consumer's error, blocks
//! only its own stream (visibly), and one redrive after the fix applies the rest in order.

use super::*;
use eventfold_consumers::deadletter::UNKNOWN_TENANT;
use std::collections::BTreeSet;

/// A notification of `stream`@1 carrying another version's event: the projector refuses it
/// (it cannot be the event it announces), every time.
fn poison(stream: &StreamId) -> String {
    let mut n = Notification::of(&received(stream, 1, 5)).expect("valid");
    if let Some(e) = n.event.as_mut() {
        e.version = 7;
    }
    serde_json::to_string(&n).expect("json")
}

/// Streams x commits of the poison test: 1,000 commits besides the poison message.
const POISON_STREAMS: usize = 50;
const POISON_COMMITS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_among_1000_commits_is_a_dead_letter_with_the_consumers_error() {
    let started = Instant::now();
    let stack = stack_with(fast()).await;
    let tenant = unique_tenant("dlq");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let bad = StreamId::new(&tenant, "Inventory", "poisoned").expect("valid");
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    sqs.send_message()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .message_body(poison(&bad))
        .message_group_id(bad.to_string())
        .message_deduplication_id("poison-1")
        .send()
        .await
        .expect("send");
    write_stock(&store, &tenant, POISON_STREAMS, POISON_COMMITS).await;
    println!(
        "poison test: commits written after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let letters = letters(&stack);
    let dead = first_letter(
        &letters,
        &tenant,
        Duration::from_secs(120),
        "the poison message",
    )
    .await;
    println!(
        "poison test: dead letter after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(dead.consumer, "projector");
    assert_eq!(dead.status, Status::Open);
    assert_eq!(dead.stream_id.as_deref(), Some(bad.to_string().as_str()));
    assert_eq!(dead.first_version, Some(1));
    assert!(dead.receive_count >= 5, "{dead:?}");
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not match")),
        "the consumer's own error: {dead:?}"
    );

    let models = models(&stack);
    wait_for(
        Duration::from_secs(90),
        "every other commit applied",
        || {
            let models = &models;
            let tenant = &tenant;
            async move {
                for s in 0..POISON_STREAMS {
                    if on_hand(models, tenant, &format!("sku-{s}")).await
                        != Some(total(POISON_COMMITS))
                    {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    assert_eq!(on_hand(&models, &tenant, "poisoned").await, None);
    println!(
        "poison among {} commits: dead letter and every view in {:.1} s",
        POISON_STREAMS as u64 * POISON_COMMITS,
        started.elapsed().as_secs_f64()
    );

    // The operator's CLI sees it (every tenant), shows and discards it.
    let processor = cli::dlq::processor(&stack.sdk, &stack.template).expect("processor");
    let listed = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::List {
            consumer: Some("projector".into()),
            status: Some("open".into()),
        },
    )
    .await
    .expect("list");
    assert!(listed.iter().any(|l| l.contains(&dead.id)), "{listed:?}");
    let shown = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::Show {
            id: dead.id.clone(),
        },
    )
    .await
    .expect("show");
    let shown: Value = serde_json::from_str(&shown[0]).expect("json");
    assert_eq!(shown["last_error"], json!(dead.last_error));

    // The API: events:admin only, the caller's tenant only; a refused request changes nothing.
    let http = Http::new(&stack.api_url());
    let admin = token(&tenant, "events:admin");
    let path = format!("/api/v1/events/dead-letters/{}", dead.id);
    let r = http
        .get("/api/v1/events/dead-letters?status=open", Some(&admin))
        .await
        .expect("list");
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["items"][0]["id"], dead.id.as_str());
    let r = http
        .get(
            "/api/v1/events/dead-letters",
            Some(&token(&tenant, "events:read events:write")),
        )
        .await
        .expect("list");
    tests::assert_problem(&r, 403, "forbidden");
    let r = http
        .get(&path, Some(&token(&unique_tenant("other"), "events:admin")))
        .await
        .expect("show");
    tests::assert_problem(&r, 404, "not-found");
    let r = http
        .get("/api/v1/events/dead-letters?status=lost", Some(&admin))
        .await
        .expect("list");
    tests::assert_problem(&r, 400, "invalid-request");
    let before = letters.get(None, &dead.id).await.expect("get");
    for (body, slug, status) in [
        (json!({}), "invalid-request", 400),
        (json!({"reason": "x".repeat(501)}), "invalid-request", 400),
    ] {
        let r = http
            .post(&format!("{path}/discard"), Some(&admin), &body)
            .await
            .expect("discard");
        tests::assert_problem(&r, status, slug);
    }
    let r = http
        .post(
            &format!("{path}/discard"),
            Some(&token(&tenant, "events:read events:write")),
            &json!({"reason": "x"}),
        )
        .await
        .expect("discard");
    tests::assert_problem(&r, 403, "forbidden");
    assert_eq!(
        letters.get(None, &dead.id).await.expect("get"),
        before,
        "unchanged"
    );

    let discarded = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::Discard {
            id: dead.id.clone(),
            reason: "a hand-made bad notification".into(),
        },
    )
    .await
    .expect("discard");
    assert!(discarded[0].starts_with("discarded"));
    let r = http.get(&path, Some(&admin)).await.expect("show");
    assert_eq!(r.json["status"], "discarded");
    let r = http
        .post(&format!("{path}/redrive"), Some(&admin), &json!({}))
        .await
        .expect("redrive");
    tests::assert_problem(&r, 409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_blocks_only_its_stream_and_one_redrive_after_the_fix_unblocks_it() {
    let (name, sdk, template) = planned().await;
    let function = template
        .functions()
        .into_iter()
        .find(|f| f.binary == "projector")
        .expect("projector");
    let config = projector::ProjectorConfig::from_lookup(|k| function.env(k)).expect("config");
    let notes: Arc<dyn DeadLetterStore> = Arc::new(DynamoDeadLetterStore::from_sdk(
        &sdk,
        config.dead_letters_table.clone().expect("notes table"),
    ));
    let build = |fixed: bool| {
        let events = DynamoEventStore::from_sdk(&sdk, &config.events_table);
        let models = DynamoReadModelStore::from_sdk(&sdk, &config.read_models_table);
        let mut p = shop::views::projector(events, models);
        if fixed {
            // The fix: a reader for the schema a bad deployment wrote.
            p = p.with_upcasters(shop::registry::upcasters().register(
                "StockReceived",
                7,
                |d| json!({ "quantity": d["qty"] }),
            ));
        }
        Arc::new(projector::ProjectorFunction::new(p).with_notes(notes.clone()))
    };
    let (broken, fixed) = (build(false), build(true));
    let deployed = Arc::new(AtomicBool::new(false));
    let mut options = fast();
    let d = deployed.clone();
    options.handler_overrides.insert(
        "ProjectorFunction".into(),
        typed_handler(move |event: aws_lambda_events::event::sqs::SqsEvent| {
            let f = if d.load(Ordering::SeqCst) {
                fixed.clone()
            } else {
                broken.clone()
            };
            async move { f.handle(event).await }
        }),
    );
    let stack = tests::stack_named(&name, options).await;
    let tenant = unique_tenant("block");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    write_stock(&store, &tenant, 3, 3).await;
    let blocked = StreamId::new(&tenant, "Inventory", "blocked").expect("valid");
    let mut poison = received(&blocked, 2, 0);
    poison.schema_version = 7;
    poison.data = json!({ "qty": 3 });
    for e in [
        received(&blocked, 1, 1),
        poison,
        received(&blocked, 3, 1),
        received(&blocked, 4, 1),
    ] {
        let after = eventfold::ExpectedVersion::assumed(e.version - 1);
        store
            .append(&blocked.to_string(), after, vec![e], None)
            .await
            .expect("append");
    }

    let letters = letters(&stack);
    // The letters arrive in any order; the processor points the later ones at the lowest
    // as it learns of it (a reader may see the state in between for a moment).
    let settled = |found: &[eventfold_consumers::deadletter::DeadLetter]| {
        found.len() == 3
            && found[1..]
                .iter()
                .all(|l| l.blocked_behind.as_deref() == Some(found[0].id.as_str()))
    };
    let mut found = Vec::new();
    let start = Instant::now();
    while !settled(&found) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "three letters, the later two blocked behind the first: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        found = letters
            .list(Some(&tenant), &Filter::default(), 10)
            .await
            .expect("list");
        found.sort_by_key(|l| l.first_version);
    }
    let versions: Vec<Option<u64>> = found.iter().map(|l| l.first_version).collect();
    assert_eq!(versions, [Some(2), Some(3), Some(4)]);
    let first = &found[0];
    assert!(
        first
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("StockReceived v2")),
        "{first:?}"
    );
    for later in &found[1..] {
        assert_eq!(
            later.blocked_behind.as_deref(),
            Some(first.id.as_str()),
            "{later:?}"
        );
    }
    // The other streams flowed; the blocked one stopped before its poison event.
    let models = models(&stack);
    for s in 0..3 {
        assert_eq!(
            on_hand(&models, &tenant, &format!("sku-{s}")).await,
            Some(total(3))
        );
    }
    assert_eq!(on_hand(&models, &tenant, "blocked").await, Some(1));

    // After the fix, one redrive (of the first letter, through the API) applies 2, 3 and 4
    // once each, in order.
    deployed.store(true, Ordering::SeqCst);
    let http = Http::new(&stack.api_url());
    let r = http
        .post(
            &format!("/api/v1/events/dead-letters/{}/redrive", first.id),
            Some(&token(&tenant, "events:admin")),
            &json!({}),
        )
        .await
        .expect("redrive");
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["sent"],
        found[2].id.as_str(),
        "the newest message goes back"
    );
    assert_eq!(r.json["redriven"].as_array().map(Vec::len), Some(3));
    wait_for(
        Duration::from_secs(30),
        "the blocked stream caught up",
        || {
            let models = &models;
            let tenant = &tenant;
            async move { on_hand(models, tenant, "blocked").await == Some(1 + 3 + 1 + 1) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        on_hand(&models, &tenant, "blocked").await,
        Some(6),
        "once each"
    );
    let open = Filter {
        status: Some(Status::Open),
        ..Filter::default()
    };
    assert!(
        letters
            .list(Some(&tenant), &open, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

/// A body the projector cannot read, on its queue with `group` and an optional `tenant`
/// message attribute; returns the message id.
async fn send_unreadable(
    sqs: &aws_sdk_sqs::Client,
    stack: &LocalStack,
    group: &str,
    tenant: Option<&str>,
) -> String {
    let mut send = sqs
        .send_message()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .message_body("{\"not\": \"a notification\"}")
        .message_group_id(group)
        .message_deduplication_id(uuid::Uuid::now_v7().simple().to_string());
    if let Some(t) = tenant {
        send = send.message_attributes(
            "tenant",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(t)
                .build()
                .expect("attribute"),
        );
    }
    send.send()
        .await
        .expect("send")
        .message_id
        .expect("message id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_messages_letter_is_its_carried_tenants_and_unknown_only_without_one() {
    let stack = stack_with(fast()).await;
    let tenant = unique_tenant("mal");
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    // Attributed by its `tenant` attribute and group id; by its group id alone; and nothing
    // usable: a reserved tenant, a group id that names none.
    let both = send_unreadable(&sqs, &stack, &format!("{tenant}/Order-o-1"), Some(&tenant)).await;
    let group_only = send_unreadable(&sqs, &stack, &format!("{tenant}/Order-o-2"), None).await;
    let nothing = send_unreadable(&sqs, &stack, "no-tenant-here", Some("_system")).await;

    // The tenant's admin lists its two letters through the API.
    let http = Http::new(&stack.api_url());
    let admin = token(&tenant, "events:admin");
    let started = Instant::now();
    let listed = loop {
        let r = http
            .get("/api/v1/events/dead-letters?status=open", Some(&admin))
            .await
            .expect("get");
        assert_eq!(r.status, 200, "{}", r.json);
        let items = r.json["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= 2 {
            break items;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the tenant's two letters: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ids: BTreeSet<&str> = listed
        .iter()
        .filter_map(|l| l["message_id"].as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from([both.as_str(), group_only.as_str()]));
    for l in &listed {
        assert_eq!(l["tenant"], json!(tenant));
        assert_eq!(l["consumer"], "projector");
        assert_eq!(
            l["stream_id"],
            Value::Null,
            "no stream: the body names none"
        );
        assert!(l["receive_count"].as_u64() >= Some(5), "{l}");
    }

    // The message that carries nothing usable stays with the operators, under `_unknown`.
    let letters = letters(&stack);
    let unknown = loop {
        let all = letters
            .list(Some(UNKNOWN_TENANT), &Filter::default(), 100)
            .await
            .expect("list");
        if let Some(l) = all
            .into_iter()
            .find(|l| l.message_id.as_deref() == Some(nothing.as_str()))
        {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the unattributable letter"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        unknown.attributes.get("tenant").map(String::as_str),
        Some("_system")
    );
    assert!(
        unknown.last_error.as_deref().is_some_and(|e| !e.is_empty()),
        "{unknown:?}"
    );
}
