//! One hot stream, many writers: how many budgeted commands (no expected version, a retry
//! budget, the command API's settings) commit within their budget when the store serves
//! one request at a time, and how long they wait. The store is the memory store behind one
//! lock held for `EVENTFOLD_HOT_LATENCY_US` (default 1000) per request, a model of the
//! serialized emulator (whose rate `eventfold-bench commands` measures for real), so the executor's
//! retry policy can be compared in seconds instead of minutes. Printed, never asserted.
//!
//! `cargo bench -p bench --bench hot_stream` (`EVENTFOLD_HOT_WRITERS` 16,
//! `EVENTFOLD_HOT_COMMANDS` 50 per writer, `EVENTFOLD_HOT_BUDGET_MS` 5000).

use async_trait::async_trait;
use eventfold::{
    AppendOutcome, CommandContext, CommandExecutor, EventEnvelope, EventStore, ExecutorConfig,
    ExpectedVersion, LoadOptions, LoadedStream, MemoryEventStore, Snapshot, StoreError, StreamId,
};
use shop::Inventory;
use shop::inventory::InventoryCommand;
use shop::registry::ShopCaches;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The memory store, one request at a time, each taking `latency`.
#[derive(Clone)]
struct Serialized {
    inner: Arc<MemoryEventStore>,
    lock: Arc<tokio::sync::Mutex<()>>,
    latency: Duration,
}

impl Serialized {
    async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let guard = self.lock.lock().await;
        tokio::time::sleep(self.latency).await;
        guard
    }
}

#[async_trait]
impl EventStore for Serialized {
    async fn load(&self, id: &str, options: LoadOptions) -> Result<LoadedStream, StoreError> {
        let _turn = self.turn().await;
        self.inner.load(id, options).await
    }

    async fn load_range(
        &self,
        id: &str,
        from: u64,
        to: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let _turn = self.turn().await;
        self.inner.load_range(id, from, to, limit).await
    }

    async fn load_after(
        &self,
        id: &str,
        version: ExpectedVersion,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let _turn = self.turn().await;
        self.inner.load_after(id, version).await
    }

    async fn append(
        &self,
        id: &str,
        expected: ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError> {
        let _turn = self.turn().await;
        self.inner.append(id, expected, events, snapshot).await
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let writers = setting("EVENTFOLD_HOT_WRITERS", 16);
    let commands = setting("EVENTFOLD_HOT_COMMANDS", 50);
    let budget = Duration::from_millis(setting("EVENTFOLD_HOT_BUDGET_MS", 5000));
    let latency = Duration::from_micros(setting("EVENTFOLD_HOT_LATENCY_US", 1000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a runtime");
    let store = Serialized {
        inner: Arc::new(MemoryEventStore::new()),
        lock: Arc::new(tokio::sync::Mutex::new(())),
        latency,
    };
    let stream = StreamId::new("bench", "Inventory", "hot").expect("a stream id");
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let exec = CommandExecutor::new(
                store.clone(),
                ExecutorConfig {
                    retry_budget: Some(budget),
                    backoff: Some(Arc::new(|d| Box::pin(tokio::time::sleep(d)))),
                    ..ExecutorConfig::default()
                },
            )
            .caching::<ShopCaches>();
            let stream = stream.clone();
            tasks.push(tokio::spawn(async move {
                let mut waits = Vec::new();
                let mut gave_up = 0u64;
                for i in 0..commands {
                    let ctx = CommandContext::root("bench", "bench", format!("c-{w}-{i}"));
                    let cmd = InventoryCommand::ReceiveStock { quantity: 1 };
                    let at = Instant::now();
                    match exec.execute::<Inventory>(&stream, None, &cmd, &ctx).await {
                        Ok(_) => waits.push(at.elapsed()),
                        Err(_) => gave_up += 1,
                    }
                }
                (waits, gave_up)
            }));
        }
        let mut waits = Vec::new();
        let mut gave_up = 0;
        for t in tasks {
            let (w, g) = t.await.expect("a writer");
            waits.extend(w);
            gave_up += g;
        }
        (waits, gave_up)
    });
    let (mut waits, gave_up) = results;
    waits.sort();
    let total = writers * commands;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "hot stream, {writers} writers x {commands} commands, budget {budget:?}, {latency:?} per serialized request"
    );
    eprintln!(
        "committed {}/{total} ({:.2}%), {:.1} commits/s; wait p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        total - gave_up,
        (total - gave_up) as f64 * 100.0 / total as f64,
        (total - gave_up) as f64 / secs,
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
        percentile(&waits, 1.0),
    );
}
