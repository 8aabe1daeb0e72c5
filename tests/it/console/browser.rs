//! The console in a real headless Chromium, driven over WebDriver (chromedriver): an order
//! found in Trace down to the views, a poisoned projector flagged (stall and dead letter),
//! the letter discarded in bulk from the page and shown resolved with its audit line, a saga
//! and a stream at an old version opened; keyboard navigation; axe-core on every screen (0
//! serious or critical violations); a screenshot of each screen under
//! `$CARGO_TARGET_DIR/console-screenshots/`; the overview's page weight and first paint.

use super::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// chromedriver, stopped when dropped.
pub(super) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// chromedriver on a free port and a headless Chromium session through it.
pub(super) async fn browser() -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/setup installs chromium and chromium-driver)");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
    );
    let start = Instant::now();
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no WebDriver session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn shots() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tests::root().join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Screenshot `name`, then axe-core on the page: no serious or critical violation.
pub(super) async fn check(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("written");
    let axe = std::fs::read_to_string(
        tests::root().join("tests/browser/node_modules/axe-core/axe.min.js"),
    )
    .expect("axe-core is installed (scripts/setup: tests/browser npm ci)");
    c.execute(&format!("{axe}\nreturn true;"), vec![])
        .await
        .expect("axe injected");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(r => done(r.violations
               .filter(v => v.impact === 'serious' || v.impact === 'critical')
               .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .expect("axe ran");
    assert_eq!(found, json!([]), "axe on {name}");
}

/// Reloads `url` until the page's text contains `text` (at most `limit`).
pub(super) async fn until_text(c: &Client, url: &str, text: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        c.goto(url).await.expect("goto");
        let body = c
            .find(Locator::Css("main"))
            .await
            .expect("main")
            .text()
            .await
            .expect("text");
        if body.contains(text) {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "{url} never showed {text:?}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_traces_an_order_and_clears_a_poisoned_projector_in_chromium() {
    let stack = stack_with(fast()).await;
    let tenant = unique_tenant("browser");
    let api = Http::new(&stack.api_url());
    let token = rw_token(&tenant);
    let rw = console(&stack, true).await;
    let base = rw.url();
    let (_driver, c) = browser().await;
    place_order(&api, &token, "o-1").await;

    // Overview first, once its first snapshot is read (before, it answers at once with a
    // "reading the tables" state that reloads itself: `first_render.rs`): its weight and
    // first paint, then keyboard access (skip link first).
    until_text(
        &c,
        &format!("{base}/"),
        "Commits behind",
        Duration::from_secs(30),
    )
    .await;
    c.goto(&format!("{base}/")).await.expect("overview");
    let perf = c
        .execute(
            "const n = performance.getEntriesByType('navigation')[0];
             const r = performance.getEntriesByType('resource');
             const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
             return {html: n.transferSize, total: n.transferSize + r.reduce((s, e) => s + e.transferSize, 0),
                     decoded: n.decodedBodySize + r.reduce((s, e) => s + e.decodedBodySize, 0),
                     fcp_ms: p ? p.startTime : null, response_end_ms: n.responseEnd,
                     dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd,
                     requests: 1 + r.length};",
            vec![],
        )
        .await
        .expect("performance");
    println!("console overview: {perf}");
    c.find(Locator::Css("body"))
        .await
        .expect("body")
        .send_keys("\u{E004}")
        .await
        .expect("tab");
    let focused = c
        .active_element()
        .await
        .expect("focus")
        .text()
        .await
        .expect("text");
    assert_eq!(
        focused, "Skip to content",
        "the first Tab reaches the skip link"
    );
    check(&c, "overview").await;

    // Trace by order id: every hop, down to the views.
    let trace = until_text(
        &c,
        &format!("{base}/trace?q=o-1"),
        "OrderConfirmed",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        trace.contains(&format!("{tenant}/OrderFulfilment-o-1")),
        "{trace}"
    );
    assert!(trace.contains("view order-summary: applied"), "{trace}");
    check(&c, "trace").await;

    // The saga: its log and the commands it sent.
    c.goto(&format!("{base}/sagas")).await.expect("sagas");
    check(&c, "sagas").await;
    c.find(Locator::LinkText(&format!("{tenant}/OrderFulfilment-o-1")))
        .await
        .expect("the saga is listed")
        .click()
        .await
        .expect("opened");
    let saga = c
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(
        saga.contains("Commands it sent") && saga.contains(&format!("{tenant}/Inventory-book")),
        "{saga}"
    );
    check(&c, "saga").await;

    // A stream at an old version: the order as created, before its line.
    c.goto(&format!("{base}/streams?tenant={tenant}&category=Order"))
        .await
        .expect("streams");
    check(&c, "streams").await;
    c.find(Locator::LinkText(&format!("{tenant}/Order-o-1")))
        .await
        .expect("listed")
        .click()
        .await
        .expect("opened");
    let version = c
        .find(Locator::Css("input[name=v]"))
        .await
        .expect("version field");
    version.clear().await.expect("cleared");
    version.send_keys("1\u{E007}").await.expect("entered");
    let start = Instant::now();
    while !c.current_url().await.expect("url").as_str().contains("v=1") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the form did not submit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = c
        .wait()
        .for_element(Locator::Css("pre[data-testid=state]"))
        .await
        .expect("state")
        .text()
        .await
        .expect("text");
    assert!(state.contains("c-1") && !state.contains("book"), "{state}");
    check(&c, "stream-at-version-1").await;

    // Poison the projector: the stall and the dead letter are flagged on the overview.
    let poisoned = poison(&stack, &tenant).await;
    let letters = format!("{base}/dead-letters?consumer=projector&tenant={tenant}");
    until_text(&c, &letters, &poisoned, Duration::from_secs(120)).await;
    let overview = until_text(&c, &format!("{base}/"), "STALLED", Duration::from_secs(60)).await;
    assert!(overview.contains("need attention"), "{overview}");
    let row = c
        .find(Locator::Css("tr[data-consumer=stock-levels]"))
        .await
        .expect("the projector's row")
        .text()
        .await
        .expect("text");
    assert!(
        row.contains("STALLED") && row.contains("dead letters"),
        "{row}"
    );
    check(&c, "overview-stuck").await;
    c.goto(&format!("{base}/projections"))
        .await
        .expect("projections");
    check(&c, "projections").await;
    c.goto(&format!("{base}/topics")).await.expect("topics");
    check(&c, "topics").await;

    // Bulk discard from the page: select all, give a reason, discard; the letter is resolved.
    c.goto(&letters).await.expect("letters");
    let listed = c
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(listed.contains(&poisoned), "{listed}");
    check(&c, "dead-letters").await;
    c.find(Locator::Id("select-all"))
        .await
        .expect("select all")
        .click()
        .await
        .expect("checked");
    c.find(Locator::Css("input[name=reason]"))
        .await
        .expect("reason")
        .send_keys("bad writer, fixed upstream")
        .await
        .expect("typed");
    c.find(Locator::XPath("//button[text()='Discard selected']"))
        .await
        .expect("discard")
        .click()
        .await
        .expect("clicked");
    let after = c
        .wait()
        .for_element(Locator::Css("p.banner[role=status]"))
        .await
        .expect("banner")
        .text()
        .await
        .expect("text");
    assert_eq!(after, "1 done, 0 failed");
    let main = c
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(
        main.contains("discarded") && main.contains("console:it") && main.contains("bad writer"),
        "{main}"
    );
    until_text(
        &c,
        &format!("{base}/dead-letters?status=open&tenant={tenant}"),
        "0 dead letter(s).",
        Duration::from_secs(10),
    )
    .await;

    c.close().await.expect("browser closed");
    rw.stop();
    stack.stop().await;
}
