//! Eventfold against cqrs-es 0.5 in one process, on one workload: `AGGREGATES` orders, each one
//! `CreateOrder` and then `ITEMS` `AddItem`s (over `SKUS` SKUs in turn), sequential, on a tokio
//! current-thread runtime. cqrs-es runs on its `MemStore` (which replays the whole stream on
//! every command); Eventfold on `MemoryEventStore` through `CommandExecutor`, once with the
//! state cache on and once with `cache_capacity: 0` (load and fold every command; snapshots
//! every 100 events, the default). The three runs alternate, `ROUNDS` times, and the best run of
//! each is reported, with Eventfold's ratio to cqrs-es.
//!
//! `cargo bench -p bench --bench versus_cqrs_es` (`-- --quick` for a short run;
//! `EVENTFOLD_BENCH_AGGREGATES` (1000), `EVENTFOLD_BENCH_ITEMS` (100), `EVENTFOLD_BENCH_SKUS`
//! (10: orders end with 10 lines; 100: every item is a new line), `EVENTFOLD_BENCH_ROUNDS` (3)
//! override). `EVENTFOLD_BENCH_ONLY=cqrs-es|cached|uncached` runs one side alone, for a
//! profiler (`perf record`) to see that side's costs only; the others then print no figure.
//!
//! The cqrs-es aggregate keeps the rules the shop's `Order` keeps for these two commands, so
//! both sides decide the same thing: a customer id is required, an order is created once,
//! quantities are positive, prices not negative, a line keeps its unit price, items go into
//! drafts only, and amounts may not overflow. cqrs-es's `MemStore` prints a line per commit; stdout goes wherever the bench's
//! does (redirect it, as the README's command does, to keep the terminal out of the figures).

use cqrs_es::event_sink::EventSink;
use cqrs_es::mem_store::MemStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use eventfold::{CommandContext, CommandExecutor, ExecutorConfig, MemoryEventStore, StreamId};
use serde::{Deserialize, Serialize};
use shop::Order;
use shop::order::OrderCommand;
use shop::registry::ShopCaches;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CqrsOrderEvent {
    OrderCreated {
        customer_id: String,
    },
    ItemAdded {
        sku: String,
        quantity: i64,
        unit_price: i64,
    },
}

impl DomainEvent for CqrsOrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderCreated { .. } => "OrderCreated".into(),
            Self::ItemAdded { .. } => "ItemAdded".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug)]
struct CqrsRejection(&'static str);

impl std::fmt::Display for CqrsRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CqrsRejection {}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Line {
    quantity: i64,
    unit_price: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CqrsOrder {
    customer_id: Option<String>,
    draft: bool,
    lines: BTreeMap<String, Line>,
}

impl CqrsOrder {
    fn total_with(&self, sku: &str, quantity: i64, unit_price: i64) -> Option<i64> {
        let mut total = 0i64;
        for (s, line) in &self.lines {
            let q = if s == sku {
                line.quantity.checked_add(quantity)?
            } else {
                line.quantity
            };
            let p = if s == sku {
                unit_price
            } else {
                line.unit_price
            };
            total = total.checked_add(q.checked_mul(p)?)?;
        }
        if !self.lines.contains_key(sku) {
            total = total.checked_add(quantity.checked_mul(unit_price)?)?;
        }
        Some(total)
    }
}

impl Aggregate for CqrsOrder {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = CqrsOrderEvent;
    type Error = CqrsRejection;
    type Services = ();

    async fn handle(
        &mut self,
        command: OrderCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CqrsRejection> {
        match command {
            // The shared commands carry typed values; this side works on the bare text and
            // integers its events store.
            OrderCommand::CreateOrder { customer_id } => match &self.customer_id {
                Some(existing) if customer_id == existing.as_str() => {}
                Some(_) => return Err(CqrsRejection("order-already-exists")),
                None => {
                    if customer_id.trim().is_empty() {
                        return Err(CqrsRejection("customer-id-required"));
                    }
                    sink.write(
                        CqrsOrderEvent::OrderCreated {
                            customer_id: customer_id.into_string(),
                        },
                        self,
                    )
                    .await;
                }
            },
            OrderCommand::AddItem {
                sku,
                quantity,
                unit_price,
            } => {
                let (sku, unit_price) = (sku.into_string(), unit_price.minor());
                if self.customer_id.is_none() {
                    return Err(CqrsRejection("order-not-created"));
                }
                if !self.draft {
                    return Err(CqrsRejection("order-not-draft"));
                }
                if sku.trim().is_empty() {
                    return Err(CqrsRejection("sku-required"));
                }
                if quantity <= 0 {
                    return Err(CqrsRejection("quantity-must-be-positive"));
                }
                if unit_price < 0 {
                    return Err(CqrsRejection("price-must-not-be-negative"));
                }
                if self
                    .lines
                    .get(&sku)
                    .is_some_and(|line| line.unit_price != unit_price)
                {
                    return Err(CqrsRejection("unit-price-mismatch"));
                }
                if self.total_with(&sku, quantity, unit_price).is_none() {
                    return Err(CqrsRejection("amount-overflow"));
                }
                sink.write(
                    CqrsOrderEvent::ItemAdded {
                        sku,
                        quantity,
                        unit_price,
                    },
                    self,
                )
                .await;
            }
            _ => return Err(CqrsRejection("not in this workload")),
        }
        Ok(())
    }

    fn apply(&mut self, event: CqrsOrderEvent) {
        match event {
            CqrsOrderEvent::OrderCreated { customer_id } => {
                self.customer_id = Some(customer_id);
                self.draft = true;
            }
            CqrsOrderEvent::ItemAdded {
                sku,
                quantity,
                unit_price,
            } => {
                let line = self.lines.entry(sku).or_default();
                line.quantity = line.quantity.saturating_add(quantity);
                line.unit_price = unit_price;
            }
        }
    }
}

struct Workload {
    aggregates: u64,
    items: u64,
    skus: u64,
    rounds: u32,
    only: Option<String>,
}

impl Workload {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick");
        let get = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            aggregates: get("EVENTFOLD_BENCH_AGGREGATES", if quick { 100 } else { 1000 }),
            items: get("EVENTFOLD_BENCH_ITEMS", 100),
            skus: get("EVENTFOLD_BENCH_SKUS", 10),
            rounds: get("EVENTFOLD_BENCH_ROUNDS", if quick { 2 } else { 3 }) as u32,
            only: std::env::var("EVENTFOLD_BENCH_ONLY").ok(),
        }
    }

    fn runs(&self, side: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == side)
    }

    fn commands(&self) -> u64 {
        self.aggregates * (self.items + 1)
    }
}

async fn run_cqrs_es(w: &Workload) -> Duration {
    let cqrs = CqrsFramework::new(MemStore::<CqrsOrder>::default(), vec![], ());
    let started = Instant::now();
    for a in 0..w.aggregates {
        let id = format!("o-{a}");
        for command in bench::order_commands(a, w.items, w.skus) {
            cqrs.execute(&id, command)
                .await
                .expect("cqrs-es accepts the workload");
        }
    }
    started.elapsed()
}

async fn run_eventfold(w: &Workload, cache_capacity: usize) -> Duration {
    let executor = CommandExecutor::new(
        MemoryEventStore::new(),
        ExecutorConfig {
            cache_capacity,
            ..ExecutorConfig::default()
        },
    )
    .caching::<ShopCaches>();
    let started = Instant::now();
    for a in 0..w.aggregates {
        let stream = StreamId::new("bench", "Order", &format!("o-{a}")).expect("valid id");
        for (i, command) in bench::order_commands(a, w.items, w.skus).enumerate() {
            let context = CommandContext::root("bench", "bench", format!("o-{a}-{i}"));
            executor
                .execute::<Order>(&stream, None, &command, &context)
                .await
                .expect("eventfold accepts the workload");
        }
    }
    started.elapsed()
}

fn per_second(w: &Workload, d: Duration) -> f64 {
    w.commands() as f64 / d.as_secs_f64()
}

fn main() {
    let w = Workload::from_env();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let (mut cqrs, mut cached, mut uncached) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..w.rounds {
        if w.runs("cqrs-es") {
            cqrs = cqrs.min(runtime.block_on(run_cqrs_es(&w)));
        }
        if w.runs("cached") {
            let capacity = 1024.max(w.aggregates as usize);
            cached = cached.min(runtime.block_on(run_eventfold(&w, capacity)));
        }
        if w.runs("uncached") {
            uncached = uncached.min(runtime.block_on(run_eventfold(&w, 0)));
        }
    }
    let base = per_second(&w, cqrs);
    eprintln!(
        "workload: {} aggregates x (1 CreateOrder + {} AddItem over {} SKUs) = {} commands, sequential, current_thread; best of {} alternating rounds",
        w.aggregates,
        w.items,
        w.skus,
        w.commands(),
        w.rounds
    );
    if cqrs != Duration::MAX {
        eprintln!("cqrs-es 0.5 MemStore           : {base:>10.0} commands/s");
    }
    for (name, d) in [
        ("eventfold, state cache on     ", cached),
        ("eventfold, cache_capacity: 0  ", uncached),
    ] {
        if d == Duration::MAX {
            continue;
        }
        let rate = per_second(&w, d);
        if cqrs == Duration::MAX {
            eprintln!("{name}: {rate:>10.0} commands/s");
        } else {
            eprintln!(
                "{name}: {rate:>10.0} commands/s ({:.2}x cqrs-es)",
                rate / base
            );
        }
    }
}
