//! The overview answers at once, before the console's first snapshot of the tables is read:
//! against an endpoint that accepts connections and never answers (a first snapshot that
//! never completes), the page comes back within a second with the "reading the tables"
//! state, an `aria-live` status, instead of waiting for the snapshot.

use eventfold_local::httpc::Http;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_answers_before_the_first_snapshot_completes() {
    // DynamoDB that takes every connection and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let sdk = eventfold_local::emulator::local_sdk_config(&endpoint).await;
    let template = eventfold_local::Template::load(
        &tests::root().join(eventfold_local::stack::TEMPLATE_PATH),
        "eventfold-first-render",
        "us-east-1",
    )
    .expect("template");
    let running = console::start(
        cli::console::build(&sdk, &template, console::Options::new()).expect("console"),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("serves");
    let http = Http::new(&running.url());

    let asked = Instant::now();
    let page = tokio::time::timeout(Duration::from_secs(5), http.get("/", None))
        .await
        .expect("the overview answered without waiting for the snapshot")
        .expect("get");
    let took = asked.elapsed();
    let body = String::from_utf8_lossy(&page.body);
    assert_eq!(page.status, 200, "{body}");
    assert!(
        body.contains("Reading the tables: 0 pages so far."),
        "{body}"
    );
    assert!(body.contains("aria-live=\"polite\""), "{body}");
    assert!(running.console.latest().is_none(), "no snapshot was read");
    assert!(took < Duration::from_secs(1), "first answer took {took:?}");
    println!("overview before the first snapshot: answered in {took:?}");

    running.stop();
    held.abort();
}
