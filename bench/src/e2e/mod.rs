//! `eventfold-bench e2e`: N orders through the whole local stack (HTTP API, command API,
//! events table, stream publisher, SNS FIFO, SQS FIFO, projector, saga), each until it is
//! confirmed and in the `order-summary` view; then the requests every hop made per order and
//! per API command, from the IAM proxy's record of every request (function, operation,
//! resources), the events and commits per order, and `PlaceOrder` -> confirmed latencies.
//! These are the measured multipliers behind `docs/capacity.md`.
//!
//! An order: `CreateOrder`, two `AddItem` on two SKUs every order shares (stock received
//! before the run), `PlaceOrder` by card; the saga reserves, authorizes and confirms. Only
//! calls between two settled snapshots count (setup and warm-up are outside), the saga's
//! `Schedule` is slowed to a day (its ticks cost time, not orders), and the latencies and
//! event counts are read afterwards with the plain (unrecorded) SDK configuration.

mod report;

pub use report::{E2eReport, OBSERVER, POLL_OPERATIONS, Row, quantile, split_requests};

use anyhow::{Context, Result, bail, ensure};
use eventfold::{EventStore, StreamId};
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::{DynamoEventStore, RequestCounter};
use eventfold_local::httpc::Http;
use eventfold_local::iam::record::Request;
use eventfold_local::{EsmOptions, LocalOptions, LocalStack};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const COMMANDS: &str = "/api/v1/events/commands";
/// The SKUs every order adds one unit of.
const SKUS: [(&str, i64); 2] = [("sku-a", 1250), ("sku-b", 700)];
/// Longest wait for one order to be confirmed in the view.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// How many orders, and how many run at once.
#[derive(Debug, Clone, Copy)]
pub struct E2eOptions {
    /// Orders to run.
    pub orders: u64,
    /// Orders in flight at once (each: its four commands, then polling its view).
    pub concurrency: usize,
}

/// The pollers' options for the run: the template's settings, with the saga's deadline
/// schedule slowed to once a day (a tick is time's cost, not an order's) and no periodic
/// printing.
pub fn esm_options() -> EsmOptions {
    EsmOptions {
        schedule_period: Some(Duration::from_secs(86_400)),
        report_every: None,
        ..EsmOptions::default()
    }
}

/// Starts the local stack (IAM on: the proxy is what counts), runs the orders and prints the
/// report.
pub async fn run(local: LocalOptions, options: E2eOptions) -> Result<()> {
    if !local.iam {
        bail!("e2e counts requests through the IAM proxy: run it without --no-iam");
    }
    let stack = cli::local::start_with(local, esm_options()).await?;
    let report = measure(&stack, options).await;
    stack.stop().await;
    print!("{}", report?.render());
    Ok(())
}

/// What the calls and the pollers' counters say at one moment.
struct Snapshot {
    requests: BTreeMap<Request, u64>,
    /// Invocations of each function's stream and queue sources (not its schedules).
    invocations: BTreeMap<String, u64>,
    /// Records (stream records, messages) each function's sources delivered.
    records: BTreeMap<String, u64>,
    /// CPU time used so far per process: the emulator's, then this one's.
    cpu: Vec<(String, Duration)>,
}

fn snapshot(stack: &LocalStack) -> Result<Snapshot> {
    let iam = stack.iam.as_ref().context("e2e needs IAM on")?;
    let (mut invocations, mut records) = (BTreeMap::new(), BTreeMap::new());
    for source in stack.esm().sources() {
        if source.kind == "Schedule" {
            continue;
        }
        if let Some(s) = stack.esm().source_stats(&source.function, &source.source) {
            *invocations.entry(source.function.clone()).or_default() += s.invocations;
            *records.entry(source.function.clone()).or_default() += s.records_in;
        }
    }
    let mut cpu: Vec<(String, Duration)> = stack
        .emulator()
        .map(|e| e.cpu())
        .unwrap_or_default()
        .into_iter()
        .map(|(serves, used)| (format!("emulator ({serves})"), used))
        .collect();
    if let Some(own) = eventfold_local::emulator::process_cpu(std::process::id()) {
        cpu.push(("the stack".to_owned(), own));
    }
    Ok(Snapshot {
        requests: iam.requests(),
        invocations,
        records,
        cpu,
    })
}

/// Everything that moves when there is work: the non-poll requests and the invocations.
fn activity(s: &Snapshot) -> u64 {
    let calls: u64 = s
        .requests
        .iter()
        .filter(|(r, _)| !POLL_OPERATIONS.contains(&r.operation.as_str()) && r.function != OBSERVER)
        .map(|(_, n)| n)
        .sum();
    calls + s.invocations.values().sum::<u64>()
}

/// Waits until nothing but polling happens for a second: what the last commits caused
/// (the saga's last steps, their projections) has been done.
async fn settle(stack: &LocalStack) -> Result<()> {
    let start = Instant::now();
    let (mut last, mut quiet_since) = (activity(&snapshot(stack)?), Instant::now());
    while quiet_since.elapsed() < Duration::from_secs(1) {
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the stack did not settle"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = activity(&snapshot(stack)?);
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
    Ok(())
}

async fn post(http: &Http, token: &str, body: Value) -> Result<()> {
    let r = http.post(COMMANDS, Some(token), &body).await?;
    ensure!(r.status < 300, "{body}: {} {}", r.status, r.json);
    Ok(())
}

fn command(aggregate: &str, id: &str, kind: &str, data: Value) -> Value {
    json!({"aggregate_type": aggregate, "aggregate_id": id, "type": kind, "data": data})
}

/// When each order's `PlaceOrder` was sent, and when the view first showed it `Confirmed`
/// (milliseconds after), as the watcher saw them.
#[derive(Default)]
struct Watch {
    orders: std::sync::Mutex<BTreeMap<String, Watched>>,
    confirmed: tokio::sync::Notify,
}

#[derive(Clone, Copy)]
struct Watched {
    placed: Instant,
    view_ms: Option<f64>,
}

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Watched>> {
        self.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn view_ms(&self, id: &str) -> Option<f64> {
        self.lock().get(id).and_then(|w| w.view_ms)
    }
}

/// How often the watcher lists the view.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Lists `order-summary` every [`WATCH_EVERY`] (one request for all the orders in flight, so
/// the watching is the same small load whatever the concurrency) and records when each
/// placed order first shows `Confirmed`, until `done` reaches `total`.
async fn watch(http: Http, token: String, watch: Arc<Watch>, done: Arc<AtomicU64>, total: u64) {
    while done.load(Ordering::Relaxed) < total {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/api/v1/events/queries/order-summary?limit=100".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let Ok(r) = http.get(&path, Some(&token)).await else {
                break;
            };
            let now = Instant::now();
            {
                let mut orders = watch.lock();
                for item in r.json["items"].as_array().into_iter().flatten() {
                    if item["status"] != "Confirmed" {
                        continue;
                    }
                    let id = item["order_id"].as_str().unwrap_or_default();
                    if let Some(w) = orders.get_mut(id)
                        && w.view_ms.is_none()
                    {
                        w.view_ms = Some((now - w.placed).as_secs_f64() * 1000.0);
                    }
                }
            }
            watch.confirmed.notify_waiters();
            cursor = r.json["next"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// One order's four commands, then a wait until the watcher saw it `Confirmed` in
/// `order-summary`: when `PlaceOrder` was sent, and how long until the view showed it.
async fn one_order(
    http: &Http,
    token: &str,
    i: u64,
    watch: &Watch,
) -> Result<(chrono::DateTime<chrono::Utc>, f64)> {
    let id = format!("o-{i}");
    let customer = json!({"customer_id": format!("c-{}", i % 10)});
    post(http, token, command("Order", &id, "CreateOrder", customer)).await?;
    for (sku, price) in SKUS {
        let line = json!({"sku": sku, "quantity": 1, "unit_price": price});
        post(http, token, command("Order", &id, "AddItem", line)).await?;
    }
    let (placed_at, start) = (chrono::Utc::now(), Instant::now());
    watch.lock().insert(
        id.clone(),
        Watched {
            placed: start,
            view_ms: None,
        },
    );
    let by_card = json!({"payment_method": "card"});
    post(http, token, command("Order", &id, "PlaceOrder", by_card)).await?;
    loop {
        let notified = watch.confirmed.notified();
        if let Some(ms) = watch.view_ms(&id) {
            return Ok((placed_at, ms));
        }
        ensure!(
            start.elapsed() < ORDER_TIMEOUT,
            "order {id} not confirmed in order-summary within {ORDER_TIMEOUT:?}"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
    }
}

/// Runs `options.orders` orders on `stack` (started with [`esm_options`] and IAM on) and
/// measures them.
pub async fn measure(stack: &LocalStack, options: E2eOptions) -> Result<E2eReport> {
    ensure!(options.orders > 0, "--orders must be at least 1");
    let http = Http::new(&stack.api_url());
    let tenant = format!("e2e{}", chrono::Utc::now().timestamp_millis());
    let token = stack
        .gateway
        .auth()
        .issue(&tenant, "bench", "events:read events:write", 3600);
    for (sku, _) in SKUS {
        let stock = json!({"quantity": options.orders + 10});
        post(
            &http,
            &token,
            command("Inventory", sku, "ReceiveStock", stock),
        )
        .await?;
    }
    settle(stack).await?;
    let denied_before = stack.iam.as_ref().map_or(0, |i| i.denials().len());
    let before = snapshot(stack)?;
    let started = Instant::now();

    let next = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(Watch::default());
    let watcher = tokio::spawn(watch(
        http.clone(),
        token.clone(),
        watching.clone(),
        finished.clone(),
        options.orders,
    ));
    let mut workers = Vec::new();
    for _ in 0..options.concurrency.max(1) {
        let (http, token, next) = (http.clone(), token.clone(), next.clone());
        let (watching, finished) = (watching.clone(), finished.clone());
        let orders = options.orders;
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    return Ok::<_, anyhow::Error>(done);
                }
                let outcome = one_order(&http, &token, i, &watching).await;
                finished.fetch_add(1, Ordering::Relaxed);
                let (placed_at, view_ms) = outcome?;
                done.push((i, placed_at, view_ms));
            }
        }));
    }
    let mut placed = Vec::new();
    let mut failed = None;
    for w in workers {
        match w.await? {
            Ok(done) => placed.extend(done),
            Err(e) => failed = Some(e),
        }
    }
    // A failed worker leaves orders unstarted: stop the watcher all the same.
    finished.store(options.orders, Ordering::Relaxed);
    watcher.await?;
    if let Some(e) = failed {
        return Err(e);
    }
    settle(stack).await?;
    let after = snapshot(stack)?;
    let seconds = started.elapsed().as_secs_f64();

    let (work, polls, observer) = split_requests(&before.requests, &after.requests);
    let delta = |after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>| {
        after
            .iter()
            .map(|(f, n)| (f.clone(), n - before.get(f).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<_, _>>()
    };
    let invocations = delta(&after.invocations, &before.invocations);
    let records = delta(&after.records, &before.records);
    let mut report = E2eReport {
        orders: options.orders,
        confirmed: placed.len() as u64,
        api_commands: options.orders * 4,
        work,
        polls,
        observer,
        invocations,
        records,
        view_ms: placed.iter().map(|(_, _, ms)| *ms).collect(),
        seconds,
        denials: stack.iam.as_ref().map_or(0, |i| i.denials().len()) - denied_before,
        cpu: after
            .cpu
            .iter()
            .map(|(process, used)| {
                let earlier = before.cpu.iter().find(|(p, _)| p == process);
                let spent = used.saturating_sub(earlier.map_or(Duration::ZERO, |(_, d)| *d));
                (process.clone(), spent.as_secs_f64())
            })
            .collect(),
        ..E2eReport::default()
    };
    read_histories(stack, &tenant, &placed, &mut report).await?;
    Ok(report)
}

/// Reads what the run appended (plain SDK configuration: not recorded): events per stream
/// category, commits, and when each order's `OrderConfirmed` was committed.
async fn read_histories(
    stack: &LocalStack,
    tenant: &str,
    placed: &[(u64, chrono::DateTime<chrono::Utc>, f64)],
    report: &mut E2eReport,
) -> Result<()> {
    let table = stack.resource_name("EventsTable");
    let store = DynamoEventStore::new(
        counted_dynamo_client(&stack.sdk, &RequestCounter::new()),
        table,
    );
    let mut commits: BTreeSet<(String, String)> = BTreeSet::new();
    let mut count = |category: &str, events: &[eventfold::EventEnvelope]| {
        *report.events.entry(category.to_owned()).or_default() += events.len() as u64;
        for e in events {
            commits.insert((e.stream_id.clone(), e.metadata.command_id.clone()));
        }
    };
    // Each order's last event of each type, as ms after its `PlaceOrder` was sent.
    let mut way: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    let since = |placed_at: chrono::DateTime<chrono::Utc>, e: &eventfold::EventEnvelope| {
        (e.occurred_at - placed_at)
            .num_microseconds()
            .unwrap_or_default() as f64
            / 1000.0
    };
    for (i, placed_at, _) in placed {
        let id = format!("o-{i}");
        for category in ["Order", "Payment", "OrderFulfilment"] {
            let stream = StreamId::new(tenant, category, &id)?.to_string();
            let events = store.load_range(&stream, 1, None, None).await?;
            for e in events.iter().filter(|e| e.occurred_at >= *placed_at) {
                let label = format!("{category}: {}", e.event_type);
                way.entry(*i)
                    .or_default()
                    .insert(label, since(*placed_at, e));
            }
            if category == "Order" {
                let confirmed = events
                    .iter()
                    .find(|e| e.event_type == "OrderConfirmed")
                    .with_context(|| format!("{stream} has no OrderConfirmed"))?;
                let ms = (confirmed.occurred_at - *placed_at).num_microseconds();
                report
                    .confirmed_ms
                    .push(ms.unwrap_or_default() as f64 / 1000.0);
            }
            count(category, &events);
        }
    }
    for (sku, _) in SKUS {
        let stream = StreamId::new(tenant, "Inventory", sku)?.to_string();
        // Version 1 is the stock received before the run.
        let events = store.load_range(&stream, 2, None, None).await?;
        for e in &events {
            let order = e.data.get("order_id").and_then(serde_json::Value::as_str);
            let placed = order.and_then(|o| placed.iter().find(|(i, _, _)| format!("o-{i}") == o));
            if let Some((i, placed_at, _)) = placed {
                let label = format!("Inventory: {} (the later SKU)", e.event_type);
                let at = way.entry(*i).or_default().entry(label).or_insert(f64::MIN);
                *at = at.max(since(*placed_at, e));
            }
        }
        count("Inventory", &events);
    }
    for steps in way.into_values() {
        for (label, ms) in steps {
            report.way.entry(label).or_default().push(ms);
        }
    }
    report.commits = commits.len() as u64;
    Ok(())
}
