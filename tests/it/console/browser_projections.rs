//! The console's write flows in a real headless Chromium, by clicking: `order-summary` is
//! rebuilt from the Projections screen (its progress updating on the page by itself), promoted
//! while a writer keeps placing orders through the command API and readers keep querying the
//! query API (no reader error, no order missing: `crate::promote`'s readers), the live
//! version seen changing on the page, the old version retired after its grace; then a dead
//! letter (an event schema the projector cannot read) redriven from the Dead letters screen
//! once the fix is deployed, and seen resolved (no open letter, the projector caught up). axe-core on the Projections screen during the rebuild and after the promote, with
//! screenshots of both.

use super::browser::{browser, check, until_text};
use super::*;
use crate::promote::{create, list_all, read};
use eventfold_aws::{DynamoDeadLetterStore, DynamoReadModelStore};
use fantoccini::{Client, Locator};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The grace an old version keeps after the promote (short: the test waits it out).
const GRACE: Duration = Duration::from_secs(2);
/// Orders placed before the rebuild.
const SEEDS: usize = 30;
/// Most orders the writer places (one a second), so that every listing is one page.
const WRITES: usize = 65;

async fn main_text(c: &Client) -> String {
    c.find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text")
}

/// Clicks the button whose text is `text`.
async fn click(c: &Client, text: &str) {
    c.find(Locator::XPath(&format!("//button[text()='{text}']")))
        .await
        .unwrap_or_else(|e| panic!("no button {text:?}: {e}"))
        .click()
        .await
        .expect("clicked");
}

/// The `order-summary` row's text.
async fn row(c: &Client) -> String {
    c.find(Locator::XPath("//tr[th[text()='order-summary']]"))
        .await
        .expect("the order-summary row")
        .text()
        .await
        .expect("text")
}

/// A stack whose projector is the function's own (built from its SDK configuration and
/// environment, as `projector::build` does) until `deployed` holds, then the same with the
/// fix: a reader for the `StockReceived` schema 7 that [`poison_v7`] writes.
async fn stack_with_fixable_projector(deployed: Arc<AtomicBool>) -> LocalStack {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("{}-{}", tests::STACK, &id[id.len() - 10..]);
    let template = eventfold_local::Template::load(
        &tests::root().join(eventfold_local::stack::TEMPLATE_PATH),
        &name,
        "us-east-1",
    )
    .expect("template");
    let function = template
        .functions()
        .into_iter()
        .find(|f| f.binary == "projector")
        .expect("projector");
    let config = projector::ProjectorConfig::from_lookup(|k| function.env(k)).expect("config");
    let mut options = fast();
    let factory = move |sdk: &aws_config::SdkConfig| {
        let build = |fixed: bool| {
            let events = DynamoEventStore::from_sdk(sdk, &config.events_table);
            let models = DynamoReadModelStore::from_sdk(sdk, &config.read_models_table);
            let mut p = shop::views::projector(events, models);
            if fixed {
                p = p.with_upcasters(shop::registry::upcasters().register(
                    "StockReceived",
                    7,
                    |d| json!({ "quantity": d["qty"] }),
                ));
            }
            let f = projector::ProjectorFunction::new(p);
            Arc::new(match &config.dead_letters_table {
                Some(t) => f.with_notes(Arc::new(DynamoDeadLetterStore::from_sdk(sdk, t))),
                None => f,
            })
        };
        let (broken, fixed) = (build(false), build(true));
        let deployed = deployed.clone();
        eventfold_local::typed_handler(move |event: aws_lambda_events::event::sqs::SqsEvent| {
            let f = if deployed.load(Ordering::SeqCst) {
                fixed.clone()
            } else {
                broken.clone()
            };
            async move { f.handle(event).await }
        })
    };
    options
        .handler_factories
        .insert("ProjectorFunction".into(), Arc::new(factory));
    tests::stack_named(&name, options).await
}

/// A `StockReceived` in a schema no deployed reader knows (7, `{"qty": 3}`), written straight
/// to the events table as a writer deployed ahead of the projector would.
async fn poison_v7(stack: &LocalStack, tenant: &str) -> String {
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(stack));
    let stream = StreamId::new(tenant, "Inventory", "poisoned").expect("valid");
    let event = NewEvent {
        event_type: "StockReceived".into(),
        schema_version: 7,
        data: json!({ "qty": 3 }),
    }
    .into_envelope(
        &stream,
        1,
        chrono::Utc::now(),
        Metadata::root(tenant, "new-writer", "poison-7"),
    );
    store
        .append(&stream.to_string(), ExpectedVersion::NEW, vec![event], None)
        .await
        .expect("appended");
    stream.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_rebuilds_promotes_retires_and_redrives_by_clicking_in_chromium() {
    let deployed = Arc::new(AtomicBool::new(false));
    let stack = stack_with_fixable_projector(deployed.clone()).await;
    let tenant = unique_tenant("browser-promote");
    let token = rw_token(&tenant);
    let api = Http::new(&stack.api_url());
    // Enough streams that the rebuild is still replaying when its page first shows, and
    // few enough, with the writer's, that every listing is one page (under the list's 100):
    // a listing that pages across the promote is refused today (its cursor names v1's
    // partition, see the report), which this test does not exercise.
    for i in 0..SEEDS {
        create(&api, &token, &format!("o-{i:03}")).await;
    }
    let start = Instant::now();
    while list_all(&api, &token).await.0.len() < SEEDS {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "seed orders never projected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let options = console::Options {
        allow_writes: true,
        stall: Duration::from_secs(60),
        refresh: Duration::from_secs(2),
        operator: "console:it".into(),
        grace: GRACE,
        keys: None,
    };
    let running = console::start(
        cli::console::build(&stack.sdk, &stack.template, options).expect("console"),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("serves");
    let base = running.url();
    let (_driver, c) = browser().await;

    // Readers and a writer through the API, all along the rebuild, promote and retirement.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (http, token) = (Http::new(&stack.api_url()), token.clone());
            tokio::spawn(read(http, token, stop_reading.clone()))
        })
        .collect();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(100));
    let writer = {
        let next = next.clone();
        let (http, token, stop) = (
            Http::new(&stack.api_url()),
            token.clone(),
            stop_writing.clone(),
        );
        tokio::spawn(async move {
            let mut written = Vec::new();
            while !stop.load(Ordering::Relaxed) && written.len() < WRITES {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let id = format!("o-{i:03}");
                create(&http, &token, &id).await;
                written.push(id);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            written
        })
    };

    // Rebuild by clicking; the progress updates in place until the page offers the promote.
    let projections = format!("{base}/projections");
    until_text(&c, &projections, "v1 live", Duration::from_secs(30)).await;
    click(&c, "Rebuild order-summary").await;
    let progress = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(
            "[data-rebuild=order-summary] [aria-live=polite]",
        ))
        .await
        .expect("the running rebuild's live region");
    let mut seen = vec![progress.text().await.expect("text")];
    let mut shot = false;
    let start = Instant::now();
    // The test never reloads from here: only the page's own script can make the button appear.
    while c
        .find(Locator::XPath("//button[text()='Promote v2']"))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the page never offered the promote; progress seen: {seen:?}"
        );
        if let Ok(text) = progress.text().await
            && seen.last() != Some(&text)
        {
            // The screenshot (and axe) once the page shows streams replayed, by itself.
            if !shot && !text.starts_with("0 of") {
                check(&c, "projections-rebuilding").await;
                shot = true;
            }
            seen.push(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("rebuild progress seen on the page: {seen:?}");
    assert!(
        shot,
        "the page never showed replayed streams while running: {seen:?}"
    );
    assert!(
        main_text(&c).await.contains("ready to promote"),
        "{}",
        main_text(&c).await
    );
    assert!(row(&c).await.contains("v2 building"), "{}", row(&c).await);

    // Promote by clicking: the live version on the page changes.
    let at_promote = next.load(Ordering::Relaxed);
    click(&c, "Promote v2").await;
    let banner = c
        .wait()
        .for_element(Locator::Css("p.banner[role=status]"))
        .await
        .expect("banner")
        .text()
        .await
        .expect("text");
    assert!(banner.contains("v2 live (one pointer write"), "{banner}");
    let promoted = row(&c).await;
    assert!(
        promoted.contains("v2 live, v1 retiring") && promoted.contains("retirable from"),
        "{promoted}"
    );
    check(&c, "projections-promoted").await;

    // Retire after the grace, by clicking.
    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    c.goto(&projections).await.expect("reloaded");
    let at_retire = next.load(Ordering::Relaxed);
    click(&c, "Retire v1").await;
    let banner = c
        .wait()
        .for_element(Locator::Css("p.banner[role=status]"))
        .await
        .expect("banner")
        .text()
        .await
        .expect("text");
    assert!(banner.contains("v1 retired"), "{banner}");
    let retired = row(&c).await;
    assert!(
        retired.contains("v2 live") && !retired.contains("retiring"),
        "{retired}"
    );

    // The writer stops; it wrote between the promote and the retirement; every order it
    // wrote reaches the query API; no reader failed.
    stop_writing.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(
        at_retire > at_promote,
        "the writer kept writing through the promote ({at_promote} -> {at_retire})"
    );
    let start = Instant::now();
    loop {
        let (listed, _) = list_all(&api, &token).await;
        if written.iter().all(|id| listed.contains(id)) {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let missing: Vec<_> = written.iter().filter(|id| !listed.contains(*id)).collect();
            let models =
                DynamoReadModelStore::from_sdk(&stack.sdk, tests::table(&stack, "ReadModelsTable"));
            let v2 = cli::rebuild::all_docs(&models, &tenant, "order-summary@v2")
                .await
                .expect("v2");
            let in_v2: Vec<_> = missing.iter().filter(|id| v2.contains_key(**id)).collect();
            c.goto(&format!("{base}/dead-letters?status=any"))
                .await
                .expect("letters");
            let letters = main_text(&c).await;
            c.goto(&format!("{base}/")).await.expect("overview");
            let overview = main_text(&c).await;
            panic!(
                "letters: {letters}\noverview: {overview}\nnext at promote {at_promote}, at retire {at_retire}; {} written, {} listed, missing {missing:?}; of those in v2's items: {in_v2:?}",
                written.len(),
                listed.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_reading.store(true, Ordering::Relaxed);
    let mut versions = BTreeSet::new();
    for r in readers {
        let seen = r.await.expect("a reader saw no error and lost no order");
        assert!(
            seen.windows(2).all(|w| w[0].version <= w[1].version),
            "a reader went back to the old version"
        );
        versions.extend(seen.iter().map(|s| s.version));
    }
    assert_eq!(
        versions,
        BTreeSet::from([1, 2]),
        "the readers saw the switch"
    );
    println!(
        "promote from the browser: {} orders written during rebuild, promote and retirement",
        written.len()
    );

    // Redrive: a letter of an event the projector cannot read, redriven from the page once
    // the fix is deployed.
    let poisoned = poison_v7(&stack, &tenant).await;
    let letters = format!("{base}/dead-letters?consumer=projector&tenant={tenant}");
    until_text(&c, &letters, &poisoned, Duration::from_secs(120)).await;
    deployed.store(true, Ordering::SeqCst);
    c.find(Locator::Id("select-all"))
        .await
        .expect("select all")
        .click()
        .await
        .expect("checked");
    click(&c, "Redrive selected").await;
    let banner = c
        .wait()
        .for_element(Locator::Css("p.banner[role=status]"))
        .await
        .expect("banner")
        .text()
        .await
        .expect("text");
    assert_eq!(banner, "1 done, 0 failed");
    let main = main_text(&c).await;
    assert!(
        main.contains("redriven") && main.contains("console:it"),
        "{main}"
    );
    // Resolved: no open letter, and the repaired commit applied (the projector caught up).
    until_text(
        &c,
        &format!("{base}/dead-letters?status=open&tenant={tenant}"),
        "0 dead letter(s).",
        Duration::from_secs(10),
    )
    .await;
    let start = Instant::now();
    loop {
        c.goto(&format!("{base}/")).await.expect("overview");
        let stock = c
            .find(Locator::Css("tr[data-consumer=stock-levels]"))
            .await
            .expect("the projector's row")
            .text()
            .await
            .expect("text");
        // View, status, commits behind, streams behind: ok and nothing left to apply.
        if stock.starts_with("stock-levels ok 0 0") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the redriven commit was never applied: {stock}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    c.close().await.expect("browser closed");
    running.stop();
    stack.stop().await;
}
